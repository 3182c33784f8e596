"""Tri-BCE (FCN): NumPy float64 restatement, gradients with and without stop-gradient weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.tri_bce import tri_bce_loss


def _bce(x, y):
    p = 1 / (1 + np.exp(-x))
    return np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _np_tri(f, a, b, y, sg_w=None):
    lf, la, lb = _bce(f, y), _bce(a, y), _bce(b, y)
    wa, wb = (max(0.0, la - lf), max(0.0, lb - lf)) if sg_w is None else sg_w
    return lf + wa * la + wb * lb


def test_float64_oracle_and_gradients():
    rng = np.random.default_rng(7)
    f, a, b = rng.normal(size=6) * 2, rng.normal(size=6), rng.normal(size=6) * 0.1
    y = rng.integers(0, 2, size=6)
    ys = rng.uniform(size=6)
    w = (max(0.0, _bce(a, y) - _bce(f, y)), max(0.0, _bce(b, y) - _bce(f, y)))
    with jax.enable_x64(True):

        @jax.jit
        def run(f, a, b):
            g_sg = jax.grad(lambda *z: tri_bce_loss(*z, jnp.asarray(y)), argnums=(0, 1, 2))(f, a, b)
            g_full = jax.grad(lambda *z: tri_bce_loss(*z, jnp.asarray(y), stop_gradient_weights=False),
                              argnums=(0, 1, 2))(f, a, b)
            return tri_bce_loss(f, a, b, jnp.asarray(y)), tri_bce_loss(f, a, b, jnp.asarray(ys)), g_sg, g_full

        v, vs, g_sg, g_full = run(jnp.asarray(f), jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(v, _np_tri(f, a, b, y), rtol=1e-12)
    np.testing.assert_allclose(vs, _np_tri(f, a, b, ys), rtol=1e-12)
    args = [f, a, b]
    for i in range(3):
        def h(z, i=i, sg=None):
            zz = list(args)
            zz[i] = z
            return _np_tri(*zz, y, sg)
        np.testing.assert_allclose(g_sg[i], fd_grad(lambda z: h(z, sg=w), args[i]), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(g_full[i], fd_grad(h, args[i]), rtol=1e-6, atol=1e-9)


def test_masks_extremes_errors():
    z = jnp.array([2.0, -2.0, jnp.nan])
    y = jnp.array([1, 0, 1])
    m = jnp.array([True, True, False])
    v, g = jax.jit(jax.value_and_grad(lambda a: tri_bce_loss(a, a, jnp.zeros(3), y, where=m)))(z)
    L = np.log1p(np.exp(-2.0))
    np.testing.assert_allclose(v, L + (np.log(2) - L) * np.log(2), rtol=1e-6)
    assert float(g[2]) == 0.0 and np.all(np.isfinite(g))
    assert np.isnan(tri_bce_loss(z, z, z, y))
    big = tri_bce_loss(jnp.array([1e4, -1e4]), jnp.array([1e4, -1e4]), jnp.array([1e4, -1e4]), jnp.array([1, 0]))
    assert float(big) == 0.0  # log-sigmoid form: no log(0)
    assert float(tri_bce_loss(z, z, z, y, where=jnp.zeros(3, bool))) == 0.0
    with pytest.raises(ValueError, match="labels"):
        tri_bce_loss(z, z, z, jnp.array([2, 0, 1]))
    with pytest.raises(ValueError, match="logits_b"):
        tri_bce_loss(z, z, z[:2], y)
