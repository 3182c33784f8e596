"""Shared checks for per-example classification losses (used by the part-A loss tests:
test_comp_sum.py, test_robust.py, test_ldr.py, test_focal.py).

Every check takes ``fn(logits, labels, **kw) -> [...]``; shapes are tiny and fixed so that each
loss compiles a handful of shapes only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

# standard test vectors (docs/design/test_vectors.md §1)
TV_X = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]], np.float32)
TV_Y = np.array([0, 1], np.int32)
TV_CE = np.array([0.4170300163, 4.0956743294])

RNG = np.random.default_rng(20240607)
X34 = (RNG.normal(size=(3, 4)) * 2).astype(np.float32)
Y3 = np.array([0, 3, 1], np.int32)

# same shape as X34 so that eager-mode primitives compiled for X34 are reused
EXTREME_X = np.array(
    [[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, -1e4], [-np.inf, 3.0, -np.inf, -np.inf]],
    np.float32,
)
EXTREME_Y = np.array([0, 0, 1], np.int32)


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_golden(fn, expected, x=TV_X, y=TV_Y, rtol32=2e-6, atol32=1e-7, rtol64=1e-8):
    """float64 inputs under x64 to ``rtol64``; float32 to ``rtol32``."""
    expected = np.asarray(expected, np.float64)
    with jax.enable_x64(True):
        out64 = fn(jnp.asarray(np.asarray(x, np.float64)), jnp.asarray(y))
        assert out64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out64), expected, rtol=rtol64, atol=1e-10)
    out32 = fn(jnp.asarray(x, jnp.float32), jnp.asarray(y))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out32), expected, rtol=rtol32, atol=atol32)


def assert_soft_onehot_equals_int(fn, x=X34, y=Y3, atol=1e-6):
    k = np.shape(x)[-1]
    np.testing.assert_allclose(
        fn(x, jax.nn.one_hot(y, k)), fn(x, y), rtol=2e-6, atol=atol
    )
    # gradients too
    g_int = jax.grad(lambda z: jnp.sum(fn(z, y)))(jnp.asarray(x))
    g_soft = jax.grad(lambda z: jnp.sum(fn(z, jax.nn.one_hot(y, k))))(jnp.asarray(x))
    np.testing.assert_allclose(g_soft, g_int, rtol=1e-5, atol=1e-6)


def assert_jit_vmap(fn, x=X34, y=Y3):
    eager = fn(x, y)
    np.testing.assert_allclose(jax.jit(fn)(x, y), eager, rtol=1e-6, atol=1e-7)
    xs = np.stack([x, x[::-1]])
    ys = np.stack([y, y[::-1]])
    batched = jax.vmap(fn)(xs, ys)
    np.testing.assert_allclose(batched[0], eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batched[1], fn(x[::-1], y[::-1]), rtol=1e-6, atol=1e-7)


def assert_bf16(fn, x=X34, y=Y3):
    xb = jnp.asarray(x, jnp.bfloat16)
    out = fn(xb, y)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, fn(xb.astype(jnp.float32), y), rtol=1e-6, atol=1e-7)


def assert_extreme_finite(fn, x=EXTREME_X, y=EXTREME_Y, k1=True):
    """±1e4, rows of −inf except the label, and (optionally) K = 1 → finite values/gradients."""
    val, grad = jax.value_and_grad(lambda z: jnp.sum(fn(z, jnp.asarray(y))))(jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(fn(x, y)))), fn(x, y)
    assert np.isfinite(val)
    assert np.all(np.isfinite(grad)), grad
    gs = jax.grad(lambda z: jnp.sum(fn(z, jax.nn.one_hot(y, x.shape[-1]))))(jnp.asarray(x))
    assert np.all(np.isfinite(gs)), gs
    if k1:
        x1 = jnp.array([[3.0], [-2.0]])
        y1 = jnp.array([0, 0])
        v1, g1 = jax.value_and_grad(lambda z: jnp.sum(fn(z, y1)))(x1)
        assert float(v1) == 0.0
        np.testing.assert_array_equal(g1, 0.0)


def assert_all_masked_zero(fn, x=X34, y=Y3):
    for w in (jnp.zeros(np.shape(y), bool), jnp.zeros(np.shape(x), bool)):
        val, g = jax.value_and_grad(lambda z, w=w: jnp.sum(fn(z, y, where=w)))(jnp.asarray(x))
        np.testing.assert_array_equal(fn(x, y, where=w), 0.0)
        assert float(val) == 0.0
        np.testing.assert_array_equal(g, 0.0)
    # a NaN in a masked row does not leak into the value or the other rows' gradients
    xn = np.array(x, copy=True)
    xn[0, 1] = np.nan
    w = jnp.asarray(np.arange(np.shape(y)[0]) > 0)
    val, g = jax.value_and_grad(lambda z: jnp.sum(fn(z, y, where=w)))(jnp.asarray(xn))
    assert np.isfinite(val)
    assert np.all(np.isfinite(g[1:]))
    np.testing.assert_allclose(fn(xn, y, where=w)[1:], fn(x, y)[1:], rtol=1e-6)


def assert_class_mask_drops_class(fn, x=X34, y=Y3, drop=2, inf_is_mask=True):
    """A per-class ``where`` equals removing that class; for losses that depend on a class only
    through its probability, a −inf logit (probability 0) behaves the same. Losses that sum a
    per-class term over classes (the normalized losses) take the −inf limit instead
    (``inf_is_mask=False``; docs/conventions.md), checked in test_nonfinite.py."""
    assert not np.any(y == drop)
    k = x.shape[-1]
    w = np.ones(x.shape, bool)
    w[:, drop] = False
    keep = [j for j in range(k) if j != drop]
    y_red = np.array([keep.index(v) for v in y], np.int32)
    ref = fn(x[:, keep], y_red)
    np.testing.assert_allclose(fn(x, y, where=jnp.asarray(w)), ref, rtol=2e-6, atol=1e-7)
    if inf_is_mask:
        x_inf = np.array(x, copy=True)
        x_inf[:, drop] = -np.inf
        np.testing.assert_allclose(fn(x_inf, y), ref, rtol=2e-6, atol=1e-7)
    g = jax.grad(lambda z: jnp.sum(fn(z, y, where=jnp.asarray(w))))(jnp.asarray(x))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[:, drop], 0.0)


def assert_grad_float64(fn, x=X34, y=Y3, soft=False):
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.asarray(x, np.float64))
        check_grads(lambda z: fn(z, jnp.asarray(y)), (x64,), order=1, modes=["rev"],
                    atol=1e-6, rtol=1e-6)
        if soft:
            t = jnp.asarray(np_softmax(RNG_T.normal(size=np.shape(x))))
            check_grads(lambda z: fn(z, t), (x64,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


RNG_T = np.random.default_rng(7)


def assert_shift_invariant(fn, x=X34, y=Y3):
    np.testing.assert_allclose(fn(x + 7.5, y), fn(x, y), rtol=1e-5, atol=1e-6)
    shifts = np.array([[-3.0], [11.0], [0.25]], np.float32)
    np.testing.assert_allclose(fn(x + shifts, y), fn(x, y), rtol=1e-5, atol=1e-6)


def assert_axis(fn, x=X34, y=Y3):
    np.testing.assert_allclose(fn(x.T, y, axis=0), fn(x, y), rtol=1e-6, atol=1e-7)


def assert_bad_input(fn):
    import pytest

    with pytest.raises(TypeError, match="`logits`"):
        fn(jnp.array([[1, 2, 3]]), jnp.array([0]))
    with pytest.raises(ValueError, match="`labels`"):
        fn(TV_X, jnp.array([[0], [1]]))
    with pytest.raises(TypeError, match="`labels`"):
        fn(TV_X, jnp.array([True, False]))
    with pytest.raises(ValueError, match="`where`"):
        fn(TV_X, TV_Y, where=jnp.ones((3,), bool))


def symmetric_sum(fn, x=X34):
    """``Σ_y L(x, y)`` for every row."""
    k = x.shape[-1]
    return sum(np.asarray(fn(x, np.full(x.shape[:-1], j, np.int32))) for j in range(k))
