"""Tests of lossjax.losses.neural_collapse (Papyan, Han & Donoho, PNAS 2020: NC1-NC4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lossjax.losses.neural_collapse import neural_collapse

C, D = 4, 6
RNG = np.random.default_rng(0)


def _etf(scale=3.0):
    """Simplex ETF means [C, D] (rows centred, equal norms, cos = -1/(C-1)), randomly rotated."""
    m = np.eye(C) - 1.0 / C
    q, _ = np.linalg.qr(RNG.normal(size=(D, D)))
    return scale * np.sqrt(C / (C - 1)) * m @ q[:C]


def _np_nc(h, y, w, b):
    mu = np.stack([h[y == c].mean(0) for c in range(C)])
    mg = mu.mean(0)
    m = mu - mg
    sw = sum(np.outer(h[i] - mu[y[i]], h[i] - mu[y[i]]) for i in range(len(y))) / len(y)
    sb = m.T @ m / C
    nc1 = np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / C
    norms = np.linalg.norm(m, axis=1)
    u = m / norms[:, None]
    cos = (u @ u.T)[~np.eye(C, dtype=bool)]
    g = m @ m.T
    etf = np.linalg.norm(g / np.linalg.norm(g) - (np.eye(C) - 1.0 / C) / np.sqrt(C - 1))
    nc3 = np.sum((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)
    pred = np.argmax(h @ w.T + b, 1)
    ncc = np.argmin(((h[:, None] - mu[None]) ** 2).sum(-1), 1)
    return [nc1, norms.std() / norms.mean(), cos.std(), np.abs(cos + 1 / (C - 1)).mean(), etf, nc3,
            (pred != ncc).mean()]


def test_exact_collapse_gives_zeros_f64():
    with jax.enable_x64(True):
        mu = _etf()
        y = np.repeat(np.arange(C), 3)
        h = mu[y]
        nc = neural_collapse(h, y, 2.0 * mu, np.zeros(C), num_classes=C)
        np.testing.assert_allclose(np.array(nc), 0.0, atol=1e-10)
        # a global offset of the features changes nothing except the classifier's decisions' bias
        nc2 = neural_collapse(h + 5.0, y, num_classes=C)
        np.testing.assert_allclose(np.array(nc2[:5]), 0.0, atol=1e-10)
        assert np.isnan(float(nc2.nc3)) and np.isnan(float(nc2.nc4))


def test_against_numpy_oracle_f64_and_jit():
    with jax.enable_x64(True):
        y = np.repeat(np.arange(C), 5)
        h = _etf()[y] + 0.7 * RNG.normal(size=(len(y), D))
        w = RNG.normal(size=(C, D))
        b = RNG.normal(size=C)
        got = neural_collapse(h, y, w, b, num_classes=C)
        np.testing.assert_allclose(np.array(got), _np_nc(h, y, w, b), rtol=1e-9, atol=1e-12)
        jit_nc = jax.jit(neural_collapse, static_argnames="num_classes")
        np.testing.assert_allclose(np.array(jit_nc(h, y, w, b, num_classes=C)), np.array(got), rtol=1e-9)
        # where-masked samples equal the sliced computation; empty classes are skipped
        keep = np.ones(len(y), bool)
        keep[-3:] = False
        np.testing.assert_allclose(
            np.array(neural_collapse(h, y, w, b, num_classes=C, where=jnp.asarray(keep))),
            np.array(neural_collapse(h[keep], y[keep], w, b, num_classes=C)), rtol=1e-9)
        sub = y < 3
        five = neural_collapse(h[sub], y[sub], num_classes=C + 1)  # classes 3, 4 absent
        assert np.all(np.isfinite(np.array(five[:5])))


def test_float32_and_noise_monotone():
    y = np.repeat(np.arange(C), 8)
    mu = _etf()
    noise = RNG.normal(size=(len(y), D))
    vals = [float(neural_collapse(jnp.asarray(mu[y] + s * noise, jnp.float32), y, num_classes=C).nc1)
            for s in (0.1, 0.5, 1.0)]
    assert vals[0] < vals[1] < vals[2]


def test_errors():
    h = jnp.zeros((6, 3))
    y = jnp.arange(6) % 3
    with pytest.raises(ValueError, match="num_classes"):
        neural_collapse(h, y, num_classes=1)
    with pytest.raises(ValueError, match="features"):
        neural_collapse(h[0], y, num_classes=3)
    with pytest.raises(TypeError, match="labels"):
        neural_collapse(h, y.astype(jnp.float32), num_classes=3)
    with pytest.raises(ValueError, match="weights"):
        neural_collapse(h, y, jnp.zeros((3, 4)), num_classes=3)
    with pytest.raises(ValueError, match="bias"):
        neural_collapse(h, y, jnp.zeros((3, 3)), jnp.zeros(2), num_classes=3)
