"""Boundary-aware CE and Skeleton Recall: SciPy morphology / hand-computed oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from lossjax.losses.boundary import boundary_aware_cross_entropy_loss, boundary_weight_map, skeleton_recall_loss

RNG = np.random.default_rng(5)
Y = np.zeros((2, 9, 10), np.int32)
Y[0, 2:6, 3:8] = 1
Y[0, 6:8, 0:3] = 2
Y[1, :, 5:] = 1


def _np_gradient(y, c, r):
    g = np.zeros(y.shape, np.float64)
    for b in range(y.shape[0]):
        for k in range(c):
            m = (y[b] == k).astype(np.float64)
            size = (2 * r + 1,) * m.ndim
            g[b] = np.maximum(g[b], ndimage.grey_dilation(m, size=size) - ndimage.grey_erosion(m, size=size))
    return g


def _np_band(y, c, w0, sigma, dmax):
    bnd = _np_gradient(y, c, 1) > 0
    out = np.ones(y.shape)
    for b in range(y.shape[0]):
        d = ndimage.distance_transform_cdt(~bnd[b], metric="chessboard").astype(np.float64)
        out[b] += np.where(d <= dmax, w0 * np.exp(-(d**2) / (2 * sigma**2)), 0.0)
    return out


def test_weight_maps_match_scipy_morphology():
    y = jnp.asarray(Y)

    @jax.jit
    def run(y):
        return (boundary_weight_map(y, num_classes=3, w0=4.0), boundary_weight_map(y, num_classes=3, width=2, w0=1.0),
                boundary_weight_map(y, num_classes=3, mode="band", w0=10.0, sigma=2.0, max_distance=3),
                boundary_weight_map(jax.nn.one_hot(y, 3), mode="band", w0=10.0, sigma=2.0, max_distance=3))

    g1, g2, band, band_soft = run(y)
    np.testing.assert_allclose(g1, 1 + 4 * _np_gradient(Y, 3, 1))
    np.testing.assert_allclose(g2, 1 + _np_gradient(Y, 3, 2))
    np.testing.assert_allclose(band, _np_band(Y, 3, 10.0, 2.0, 3), rtol=1e-6)
    np.testing.assert_allclose(band_soft, band)  # one-hot soft labels give the same map


def test_weighted_ce_oracle_gradient_masks_errors():
    x = RNG.normal(size=(2, 9, 10, 3))
    w_np = 1 + 10 * _np_gradient(Y, 3, 1)
    ls = x - np.log(np.exp(x).sum(-1, keepdims=True))
    ce = -np.take_along_axis(ls, Y[..., None], -1)[..., 0]
    keep = RNG.uniform(size=Y.shape) > 0.3
    with jax.enable_x64(True):

        @jax.jit
        def run(x):
            f = lambda a: boundary_aware_cross_entropy_loss(a, jnp.asarray(Y))  # noqa: E731
            v, g = jax.value_and_grad(lambda a: f(a).sum())(x)
            vm = boundary_aware_cross_entropy_loss(x, jnp.asarray(Y), where=jnp.asarray(keep))
            v0 = boundary_aware_cross_entropy_loss(x, jnp.asarray(Y), w0=0.0)
            vs = boundary_aware_cross_entropy_loss(x, jax.nn.one_hot(jnp.asarray(Y), 3, dtype=jnp.float64))
            return f(x), g, vm, v0, vs

        v, g, vm, v0, vs = run(jnp.asarray(x))
    np.testing.assert_allclose(v, (w_np * ce).mean((1, 2)), rtol=1e-12)
    p = np.exp(ls)
    want = w_np[..., None] * (p - np.eye(3)[Y]) / (9 * 10)  # d/dx of the weighted mean CE
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(vm, (keep * w_np * ce).sum((1, 2)) / keep.sum((1, 2)), rtol=1e-12)
    np.testing.assert_allclose(v0, ce.mean((1, 2)), rtol=1e-12)
    np.testing.assert_allclose(vs, v, rtol=1e-12)
    xn = jnp.asarray(x, jnp.float32).at[0, 0, 0, 0].set(jnp.nan)
    out = boundary_aware_cross_entropy_loss(xn, jnp.asarray(Y), where=jnp.array([True, False]))
    assert np.isnan(out[0]) and float(out[1]) == 0.0
    with pytest.raises(ValueError, match="labels"):
        boundary_aware_cross_entropy_loss(xn, jnp.asarray(Y).at[0, 0, 0].set(3))
    with pytest.raises(ValueError, match="mode"):
        boundary_weight_map(jnp.asarray(Y), num_classes=3, mode="distance")
    with pytest.raises(ValueError, match="num_classes"):
        boundary_weight_map(jnp.asarray(Y))
    with pytest.raises(ValueError, match="weights"):
        boundary_aware_cross_entropy_loss(xn, jnp.asarray(Y), weights=jnp.ones((2, 9)))


def test_skeleton_recall_hand_values():
    y = np.zeros((2, 7, 7), np.int32)
    y[0, 3, 1:6] = 1  # a 1-pixel line: its own skeleton
    y[1, 3, :] = 1
    q = np.where(y == 1, 0.8, 0.1)
    q[0, 3, 1] = 0.2
    probs = jnp.asarray(np.stack([1 - q, q], -1), jnp.float32)

    @jax.jit
    def run(p):
        v, g = jax.value_and_grad(lambda a: skeleton_recall_loss(a, jnp.asarray(y), dilate=0, smooth=0.0).sum())(p)
        vt = skeleton_recall_loss(p, jnp.asarray(y), dilate=1, smooth=0.0)
        return skeleton_recall_loss(p, jnp.asarray(y), dilate=0, smooth=0.0), g, vt

    v, g, vt = run(probs)
    np.testing.assert_allclose(v, [1 - (0.2 + 4 * 0.8) / 5, 1 - 0.8], rtol=1e-6)
    # gradient: −1/|S| on skeleton pixels of the foreground channel, 0 elsewhere
    want = np.zeros((2, 7, 7, 2))
    want[0, 3, 1:6, 1] = -1 / 5
    want[1, 3, :, 1] = -1 / 7
    np.testing.assert_allclose(g, want, atol=1e-7)
    # tubed skeleton (radius-1 cross): line plus the pixels above/below and the two end pixels
    tube0 = np.zeros((7, 7), bool)
    tube0[2:5, 1:6] = True
    tube0[3, 0] = tube0[3, 6] = True
    np.testing.assert_allclose(vt[0], 1 - (q[0] * tube0).sum() / tube0.sum(), rtol=1e-6)
    empty = skeleton_recall_loss(probs, jnp.zeros((2, 7, 7), jnp.int32))
    np.testing.assert_allclose(empty, 0.0)  # no foreground skeleton: 0
    pn = probs.at[0, 0, 0, 0].set(jnp.nan)
    assert np.isnan(skeleton_recall_loss(pn, jnp.asarray(y))[0])
    with pytest.raises(ValueError, match="dilate"):
        skeleton_recall_loss(probs, jnp.asarray(y), dilate=-1)
