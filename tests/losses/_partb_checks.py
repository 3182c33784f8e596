"""Shared battery of checks for per-example losses (used by the part-B loss tests)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

RNG = np.random.default_rng(1234)
X34 = RNG.normal(size=(3, 4)).astype(np.float32) * 2
Y3 = np.array([0, 3, 1], np.int32)
EXTREME_X = np.array(
    [[1e4, -1e4, 0.0, 5.0], [-np.inf, 3.0, -np.inf, -np.inf], [-1e4, 1e4, 1e4, -1e4]],
    np.float32,
)
EXTREME_Y = np.array([0, 1, 0], np.int32)


def assert_grad_float64(fn, x=X34, y=Y3):
    """Reverse-mode gradient vs float64 finite differences."""
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.asarray(x, np.float64))
        check_grads(lambda z: jnp.sum(fn(z, jnp.asarray(y))), (x64,), order=1, modes=["rev"],
                    atol=1e-5, rtol=1e-5)


def assert_jit_vmap(fn, x=X34, y=Y3):
    eager = fn(x, y)
    np.testing.assert_allclose(jax.jit(fn)(x, y), eager, rtol=1e-6, atol=1e-7)
    xs = np.stack([x, x[::-1]])
    ys = np.stack([y, y[::-1]])
    batched = jax.jit(jax.vmap(fn))(xs, ys)
    np.testing.assert_allclose(batched[0], eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batched[1], jax.jit(fn)(x[::-1], y[::-1]), rtol=1e-6, atol=1e-7)


def assert_bf16(fn, x=X34, y=Y3):
    xb = jnp.asarray(x, jnp.bfloat16)
    out = fn(xb, y)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, fn(xb.astype(jnp.float32), y), rtol=1e-6, atol=1e-7)


def _vg(fn, y):
    """One jitted value-and-grad (per-example values as aux) reused for every mask/extreme case."""

    def total(z, w):
        out = fn(z, y, where=w)
        return jnp.sum(out), out

    return jax.jit(jax.value_and_grad(total, has_aux=True))


def assert_extreme_finite(fn, x=EXTREME_X, y=EXTREME_Y):
    (val, out), grad = _vg(fn, y)(jnp.asarray(x), np.ones(x.shape[0], bool))
    assert np.all(np.isfinite(out)), out
    assert np.isfinite(val)
    assert np.all(np.isfinite(grad)), grad
    # K = 1
    x1 = jnp.array([[3.0], [-2.0]])
    (_, v1), g1 = _vg(fn, jnp.array([0, 0]))(x1, np.ones(2, bool))
    assert np.all(np.isfinite(v1)) and np.all(np.isfinite(g1))
    return v1, g1


def assert_masks(fn, x=X34, y=Y3):
    vg = _vg(fn, y)
    rows = np.array([True, False, True])
    (_, full), _ = vg(jnp.asarray(x), np.ones(3, bool))
    (_, out), _ = vg(jnp.asarray(x), rows)
    np.testing.assert_allclose(out[1], 0.0)
    np.testing.assert_allclose(out[rows], full[rows], rtol=1e-6)
    (val, _), grad = vg(jnp.asarray(x), np.zeros(3, bool))
    assert float(val) == 0.0
    assert np.all(grad == 0.0)
    # NaN in a masked row cannot leak
    xn = np.array(x)
    xn[1] = np.nan
    (_, out), g = vg(jnp.asarray(xn), rows)
    assert np.all(np.isfinite(np.asarray(g)[rows])) and np.all(np.isfinite(out))


def assert_bad_inputs(fn, x=X34, y=Y3):
    import pytest

    with pytest.raises(ValueError, match="labels"):
        fn(x, y[:2])
    with pytest.raises(ValueError, match="labels"):
        fn(x, y[:, None])
    with pytest.raises(TypeError, match="logits"):
        fn(np.zeros((3, 4), np.int32), y)
    with pytest.raises(ValueError, match="where"):
        fn(x, y, where=np.ones((2,), bool))
    with pytest.raises(TypeError, match="where"):
        fn(x, y, where=np.ones((3,), np.int32))


def run_battery(fn, *, extreme=True):
    """Run every check; all but the eager-vs-jit comparison use one jitted ``fn``."""
    jf = jax.jit(fn)
    assert_grad_float64(jf)
    assert_jit_vmap(fn)
    assert_bf16(jf)
    assert_masks(fn)
    assert_bad_inputs(jf)
    if extreme:
        return assert_extreme_finite(fn)
    return None
