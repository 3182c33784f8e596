"""Tests of lossjax.losses.sauna: hand-worked bars, a brute-force float64 oracle (distances by
explicit search over pixel pairs, windows by explicit loops), properties and bad input."""

import itertools
import math

import jax
import numpy as np
import pytest

from lossjax.losses import sauna_jaccard_loss, sauna_transform, stable_focal_l1_loss


def _brute(mask):
    """Restatement of the released mode-"h" transform with brute-force distances (float64)."""
    fg = np.asarray(mask) != 0
    if not fg.any():
        return np.full(fg.shape, -1.0)
    if fg.all():
        return np.ones(fg.shape)
    idx = list(itertools.product(*[range(s) for s in fg.shape]))
    fgp = np.array([i for i in idx if fg[i]], float)
    bgp = np.array([i for i in idx if not fg[i]], float)
    d_f = np.zeros(fg.shape)
    d_b = np.zeros(fg.shape)
    for i in idx:
        other = bgp if fg[i] else fgp
        d = np.sqrt(((other - np.array(i, float)) ** 2).sum(1)).min()
        (d_f if fg[i] else d_b)[i] = d
    m = d_f.max()
    db = np.minimum(d_b, m)

    def pool(x, size):
        k = math.ceil(size)
        k = k + 1 if k % 2 == 0 else k
        r = k // 2
        out = np.empty_like(x)
        for i in idx:
            sl = tuple(slice(max(j - r, 0), j + r + 1) for j in i)
            out[i] = x[sl].max()
        return out

    b = (d_f - db) / (m + 1e-6)
    t = np.where(fg, pool(d_f, m) / (m + 1e-6), np.clip(pool(db, db.max()) / (m + 1e-6), 0, 1))
    c = b.copy()
    for i in idx:
        if t[i] > 0:
            c[i] = b[i] + (1.0 - t[i]) * (1 if b[i] > 0 else -1)
    return np.clip(c, -1, 1)


def _bar(width, n=13, rows=7):
    m = np.zeros((rows, n), bool)
    lo = (n - width) // 2
    m[:, lo:lo + width] = True
    return m


def test_bar_of_known_thickness_hand_worked():
    # Vertical bar 5 px wide on a 7x13 image: D_f = 1,2,3,2,1 across (m = 3), window k = 3.
    c = sauna_transform(_bar(5), dtype=np.float64)
    row = c[3]
    e = 1e-6
    # background columns 0..3 (distance 4,3,2,1 to the bar), bar columns 4..8
    # column 2: B = -2/m, but its window reaches a distance-3 pixel, so T = m/(m+ε) ≈ 1, C ≈ B
    want = [-1.0, -1.0, -2 / (3 + e) - (1 - 3 / (3 + e)), -1 / (3 + e) - (1 - 2 / (3 + e)),
            1 / (3 + e) + 1 - 2 / (3 + e), 2 / (3 + e) + 1 - 3 / (3 + e), 1.0]
    np.testing.assert_allclose(row[:7], want, atol=1e-12)
    np.testing.assert_allclose(row, row[::-1], atol=1e-12)  # symmetric bar
    assert row[6] == pytest.approx(1.0)  # centre line
    assert row[4] == pytest.approx(2 / 3, abs=1e-6)  # boundary pixel inside the bar
    assert row[3] == pytest.approx(-2 / 3, abs=1e-6)  # first background pixel
    np.testing.assert_array_equal(c, np.broadcast_to(row, c.shape))  # no dependence along the bar


def test_thin_and_thick_bars_centre_one_sign_and_range():
    for w in (1, 2, 3, 7):
        mask = _bar(w)
        c = sauna_transform(mask, dtype=np.float64)
        assert np.all((c > 0) == mask), w  # sign convention: > 0 exactly on the foreground
        assert c.min() >= -1.0 and c.max() <= 1.0
        assert c.max() == pytest.approx(1.0, abs=1e-6)  # centre line
    # one-pixel vessel: m = 1, window 1 -> the vessel pixel is 1, its neighbours -1 + ... = -1
    c1 = sauna_transform(_bar(1), dtype=np.float64)[0]
    np.testing.assert_allclose(c1[6], 1.0, atol=1e-5)
    assert np.all(c1[:6] <= -0.99)


def test_against_brute_force_oracle():
    rng = np.random.default_rng(0)
    masks = [(rng.uniform(size=(6, 7)) < p) for p in (0.3, 0.6)]
    blob = np.zeros((8, 8), bool)
    blob[2:6, 1:7] = True
    blob[0:8, 3] = True  # a cross: diagonal distances matter
    masks.append(blob)
    for m in masks:
        np.testing.assert_allclose(sauna_transform(m, dtype=np.float64), _brute(m), atol=1e-12)
    # batch of masks (each with its own m) and a 3-D volume
    batch = np.stack(masks[:2])
    got = sauna_transform(batch, spatial_ndim=2, dtype=np.float64)
    np.testing.assert_allclose(got, np.stack([_brute(m) for m in masks[:2]]), atol=1e-12)
    vol = rng.uniform(size=(3, 4, 5)) < 0.5
    np.testing.assert_allclose(sauna_transform(vol, dtype=np.float64), _brute(vol), atol=1e-12)


def test_degenerate_masks_dtype_and_bad_input():
    assert np.all(sauna_transform(np.zeros((3, 4))) == -1.0)
    assert np.all(sauna_transform(np.ones((3, 4))) == 1.0)
    out = sauna_transform(np.array([[0, 255, 255, 0]], np.uint8))  # 0/255 images as saved to disk
    assert out.dtype == np.float32 and np.all((out > 0) == [[False, True, True, False]])
    with pytest.raises(ValueError, match="mask"):
        sauna_transform(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="mask"):
        sauna_transform(np.array(1.0))
    with pytest.raises(ValueError, match="mask"):
        sauna_transform(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="spatial_ndim"):
        sauna_transform(np.zeros((2, 3)), spatial_ndim=3)
    with pytest.raises(ValueError, match="dtype"):
        sauna_transform(np.zeros((2, 3)), dtype=np.int32)


def test_output_feeds_the_sauna_losses():
    mask = np.stack([_bar(3, n=9, rows=4), _bar(5, n=9, rows=4)])
    g = sauna_transform(mask, spatial_ndim=2)
    np.testing.assert_allclose(sauna_jaccard_loss(g, g), [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(sauna_jaccard_loss(-g, g), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(stable_focal_l1_loss(g, g), [0.0, 0.0], atol=1e-6)
    logits = np.random.default_rng(1).normal(size=g.shape).astype(np.float32)
    val, grad = jax.value_and_grad(lambda z: sauna_jaccard_loss(z, g, from_logits=True).sum())(logits)
    assert np.isfinite(val) and np.all(np.isfinite(grad)) and np.any(grad != 0)
    assert np.all(np.isfinite(jax.grad(lambda z: stable_focal_l1_loss(z, g, from_logits=True).sum())(logits)))
