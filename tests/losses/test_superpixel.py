"""Tests of lossjax.losses.superpixel against a NumPy loop oracle, gradients, masks, bad ids."""

import jax
import numpy as np
import pytest

from lossjax.losses import superpixel_pool


def _ref(x, seg, s, red, keep=None):
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, -1, c)
    seg = seg.reshape(b, -1)
    keep = np.ones(seg.shape, bool) if keep is None else keep.reshape(b, -1)
    out, cnt = np.zeros((b, s, c)), np.zeros((b, s))
    for i in range(b):
        for j in range(s):
            m = (seg[i] == j) & keep[i]
            cnt[i, j] = m.sum()
            if m.any():
                out[i, j] = x[i][m].mean(0) if red == "mean" else x[i][m].max(0)
    return out, cnt


RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4, 2))
SEG = RNG.integers(0, 5, size=(2, 3, 4))


def test_against_oracle_masks_and_grads():
    keep = RNG.uniform(size=(2, 3, 4)) < 0.7
    with jax.enable_x64(True):
        for red in ("mean", "max"):
            for w in (None, keep):
                v, n = superpixel_pool(X, SEG, num_segments=6, reduction=red, where=w)
                rv, rn = _ref(X, SEG, 6, red, w)
                np.testing.assert_allclose(v, rv, rtol=1e-12)
                np.testing.assert_array_equal(n, rn)
        # d(mean)/dx = 1/count on the pixel's segment; max: 1 on the arg-max pixel
        g = jax.grad(lambda x: superpixel_pool(x, SEG, num_segments=6)[0].sum())(X)
        _, rn = _ref(X, SEG, 6, "mean")
        want = 1.0 / np.take_along_axis(rn, SEG.reshape(2, -1), 1).reshape(2, 3, 4)
        np.testing.assert_allclose(g, np.broadcast_to(want[..., None], X.shape), rtol=1e-12)
        gm = jax.grad(lambda x: superpixel_pool(x, SEG, num_segments=6, reduction="max")[0].sum())(X)
        assert gm.sum() == pytest.approx(np.count_nonzero(rn) * 2)


def test_nan_bad_ids_and_bad_input():
    xn = X.astype(np.float32).copy()
    xn[0, 0, 0, 0] = np.nan
    keep = np.ones((2, 3, 4), bool)
    keep[0, 0, 0] = False
    f = jax.jit(lambda x, w: superpixel_pool(x, SEG, num_segments=5, where=w)[0])
    v = f(xn, keep)
    assert np.all(np.isfinite(v))  # the NaN pixel is masked
    g = jax.grad(lambda x: f(x, keep).sum())(xn)
    assert np.all(np.isfinite(g)) and g[0, 0, 0, 0] == 0
    v = f(xn, np.ones((2, 3, 4), bool))
    assert np.isnan(v[0, SEG[0, 0, 0], 0]) and np.all(np.isfinite(v[1]))
    bad = SEG.copy()
    bad[1, 0, 0] = 7
    with pytest.raises(ValueError, match="segments"):
        superpixel_pool(X, bad, num_segments=5)
    out = jax.jit(lambda s: superpixel_pool(X.astype(np.float32), s, num_segments=5)[0])(bad)
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[0]))
    with pytest.raises(ValueError, match="segments"):
        superpixel_pool(X, SEG[:, :2], num_segments=5)
    with pytest.raises(ValueError, match="num_segments"):
        superpixel_pool(X, SEG, num_segments=0)
    with pytest.raises(ValueError, match="reduction"):
        superpixel_pool(X, SEG, num_segments=5, reduction="sum")
    with pytest.raises(TypeError, match="segments"):
        superpixel_pool(X, SEG.astype(np.float32), num_segments=5)
