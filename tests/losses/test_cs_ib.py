"""Tests of lossjax.losses.cs_ib against direct float64 NumPy restatements of the Gram-matrix
estimators (no log space), properties, gradients, masks and bad input."""

import jax
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses import conditional_cs_divergence, cs_ib_loss, cs_qmi


def _gram(a, b, s):
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * s**2))


def _cond_ref(x, y, yh, sx=1.0, sy=1.0, norm="kde"):
    k = _gram(x, x, sx)
    d = k.sum(1) ** 2 if norm == "kde" else (k**2).sum(1)
    t = lambda a, b: ((k * _gram(a, b, sy)).sum(1) / d).sum()  # noqa: E731
    return np.log(t(y, y)) + np.log(t(yh, yh)) - 2 * np.log(t(yh, y))


def _qmi_ref(x, z, sx=1.0, sz=1.0):
    n = len(x)
    k, lz = _gram(x, x, sx), _gram(z, z, sz)
    t1 = (k * lz).sum() / n**2
    t2 = k.sum() * lz.sum() / n**4
    t3 = np.ones(n) @ k @ lz @ np.ones(n) / n**3
    return np.log(t1) + np.log(t2) - 2 * np.log(t3)


RNG = np.random.default_rng(0)
X = RNG.normal(size=(7, 3))
T = np.tanh(X @ RNG.normal(size=(3, 2)))
Y = X[:, :1] * 0.7 + 0.1 * RNG.normal(size=(7, 1))
YH = Y + 0.3 * RNG.normal(size=(7, 1))


def test_against_numpy_oracle_f64():
    with jax.enable_x64(True):
        for norm in ("kde", "released"):
            for sx, sy in ((1.0, 1.0), (0.7, 2.0)):
                np.testing.assert_allclose(
                    conditional_cs_divergence(X, Y, YH, sigma_x=sx, sigma_y=sy, normalization=norm),
                    _cond_ref(X, Y, YH, sx, sy, norm), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cs_qmi(X, T, sigma_x=1.3, sigma_t=0.5), _qmi_ref(X, T, 1.3, 0.5), rtol=1e-10)
        norm_ref = _qmi_ref(X, T) / np.sqrt(_qmi_ref(X, X) * _qmi_ref(T, T))
        np.testing.assert_allclose(cs_qmi(X, T, normalized=True), norm_ref, rtol=1e-10)
        np.testing.assert_allclose(
            cs_ib_loss(X, T, Y, YH, beta=0.3), _cond_ref(X, Y, YH) + 0.3 * _qmi_ref(X, T), rtol=1e-10)
        # 1-D inputs are [n, 1]
        np.testing.assert_allclose(conditional_cs_divergence(X[:, 0], Y[:, 0], YH[:, 0]),
                                   _cond_ref(X[:, :1], Y, YH), rtol=1e-10)


def test_properties():
    with jax.enable_x64(True):
        assert float(conditional_cs_divergence(X, Y, Y)) == pytest.approx(0.0, abs=1e-12)
        # >= 0 on random draws (both normalisations)
        for s in range(4):
            r = np.random.default_rng(10 + s)
            x, y, yh = r.normal(size=(5, 2)) * (s + 0.5), r.normal(size=5), r.normal(size=5) * 2
            for norm in ("kde", "released"):
                assert float(conditional_cs_divergence(x, y, yh, normalization=norm)) >= -1e-12
        # a worse prediction is further away
        assert float(conditional_cs_divergence(X, Y, Y + 2.0)) > float(conditional_cs_divergence(X, Y, YH)) > 0
        # CS-QMI >= 0 on random draws, 0 for a constant representation, symmetric, shift-invariant
        for s in range(5):
            r = np.random.default_rng(s)
            assert float(cs_qmi(r.normal(size=(6, 2)), r.normal(size=(6, 3)))) >= -1e-12
        assert abs(float(cs_qmi(X, np.ones((7, 2))))) < 1e-12
        np.testing.assert_allclose(cs_qmi(X, T, sigma_t=0.5), cs_qmi(T, X, sigma_x=0.5), rtol=1e-12)
        np.testing.assert_allclose(cs_qmi(X, T + 3.0), cs_qmi(X, T), rtol=1e-12)
        # the two normalisations agree when K is constant (x constant): d_j differ by a factor N
        x0 = np.zeros((7, 1))
        np.testing.assert_allclose(conditional_cs_divergence(x0, Y, YH),
                                   conditional_cs_divergence(x0, Y, YH, normalization="released"), rtol=1e-10)
        # far-apart inputs (Gram entries underflow in linear space) stay finite in log space
        big = conditional_cs_divergence(X * 1e3, Y, YH)
        assert np.isfinite(float(big))


def test_grads_masks_jit_nan():
    # gradients vs central differences of the float64 NumPy oracle
    with jax.enable_x64(True):
        g_yh, g_t = jax.jit(jax.grad(lambda yh, t: cs_ib_loss(X, t, Y, yh, beta=0.5), (0, 1)))(YH, T)
        np.testing.assert_allclose(g_yh, fd_grad(lambda yh: _cond_ref(X, Y, yh), YH), atol=1e-7)
        np.testing.assert_allclose(g_t, 0.5 * fd_grad(lambda t: _qmi_ref(X, t), T), atol=1e-7)
        g_c = jax.jit(jax.grad(lambda yh: conditional_cs_divergence(X, Y, yh, normalization="released")))(YH)
        np.testing.assert_allclose(g_c, fd_grad(lambda yh: _cond_ref(X, Y, yh, norm="released"), YH), atol=1e-7)
    # where: masked rows are removed (equal to dropping them), and a NaN there reaches nothing
    vg = jax.jit(jax.value_and_grad(lambda yh, t, w: cs_ib_loss(X, t, Y, yh, beta=0.5, where=w), (0, 1)))
    w = np.array([True] * 5 + [False] * 2)
    yh_nan = YH.astype(np.float32).copy()
    yh_nan[6, 0] = np.nan
    t32 = T.astype(np.float32)
    v, (g, _) = vg(yh_nan, t32, w)
    np.testing.assert_allclose(v, _cond_ref(X[:5], Y[:5], YH[:5]) + 0.5 * _qmi_ref(X[:5], T[:5]), rtol=2e-5)
    assert np.all(np.isfinite(g)) and np.all(g[5:] == 0)
    # an unmasked NaN propagates (prediction and representation); all-masked gives 0, zero gradient
    assert np.isnan(float(vg(yh_nan, t32, np.ones(7, bool))[0]))
    t_nan = t32.copy()
    t_nan[2, 1] = np.nan
    assert np.isnan(float(vg(YH.astype(np.float32), t_nan, np.ones(7, bool))[0]))
    v0, (g0, gt0) = vg(YH.astype(np.float32), t32, np.zeros(7, bool))
    assert float(v0) == 0.0 and np.all(g0 == 0) and np.all(gt0 == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="y_hat"):
        conditional_cs_divergence(X, Y, YH[:, 0])
    with pytest.raises(ValueError, match="y"):
        conditional_cs_divergence(X, Y[:5], YH[:5])
    with pytest.raises(ValueError, match="sigma_x"):
        cs_qmi(X, T, sigma_x=0.0)
    with pytest.raises(ValueError, match="normalization"):
        conditional_cs_divergence(X, Y, YH, normalization="x")
    with pytest.raises(ValueError, match="beta"):
        cs_ib_loss(X, T, Y, YH, beta=-1.0)
    with pytest.raises(ValueError, match="where"):
        cs_qmi(X, T, where=np.ones(3, bool))
    with pytest.raises(ValueError, match="x"):
        cs_qmi(np.zeros((2, 3, 4)), T)
    with pytest.raises(TypeError, match="x"):
        cs_qmi(np.zeros((7, 2), np.int32), T)
