"""Tests of lossjax.losses.hyperbolic against float64 NumPy restatements (the Möbius-addition
forms of Ganea et al. 2018), limits, gradients, masks and bad input."""

import jax
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses import (
    hyperbolic_cross_entropy_loss,
    hyperbolic_mlr_logits,
    poincare_distance,
    poincare_expmap0,
)


def _madd(x, y, c):
    xy, x2, y2 = x @ y, x @ x, y @ y
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c**2 * x2 * y2)


def _dist_ref(x, y, c):  # the artanh / Möbius form (the implementation uses the arsinh form)
    return 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * np.linalg.norm(_madd(-x, y, c)))


def _logits_ref(x, p, a, c):
    out = np.zeros((x.shape[0], p.shape[0]))
    for i in range(x.shape[0]):
        for k in range(p.shape[0]):
            z = _madd(-p[k], x[i], c)
            lam = 2 / (1 - c * p[k] @ p[k])
            na = np.linalg.norm(a[k])
            out[i, k] = lam * na / np.sqrt(c) * np.arcsinh(2 * np.sqrt(c) * (z @ a[k]) / ((1 - c * z @ z) * na))
    return out


def _ce_ref(x, y, p, a, c):
    z = _logits_ref(x, p, a, c)
    z = z - z.max(1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


RNG = np.random.default_rng(0)
C = 0.7
X = RNG.normal(size=(5, 3)) * 0.3
P = RNG.normal(size=(4, 3)) * 0.2
A = RNG.normal(size=(4, 3))
Yl = np.array([0, 3, 1, 2, 3])


def test_against_numpy_oracle_f64():
    with jax.enable_x64(True):
        d = poincare_distance(X[:, None, :], X[None, :, :], c=C)
        ref = np.array([[_dist_ref(u, v, C) for v in X] for u in X])
        np.testing.assert_allclose(d, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hyperbolic_mlr_logits(X, P, A, c=C), _logits_ref(X, P, A, C), rtol=1e-10)
        np.testing.assert_allclose(hyperbolic_cross_entropy_loss(X, Yl, P, A, c=C), _ce_ref(X, Yl, P, A, C),
                                   rtol=1e-10)
        v = RNG.normal(size=(3, 3))
        n = np.linalg.norm(v, axis=1, keepdims=True)
        np.testing.assert_allclose(poincare_expmap0(v, c=C), np.tanh(np.sqrt(C) * n) * v / (np.sqrt(C) * n),
                                   rtol=1e-10)
        # d(0, exp0(v)) = 2‖v‖ (the exponential map is an isometry along rays, λ_0 = 2)
        np.testing.assert_allclose(poincare_distance(np.zeros(3), poincare_expmap0(v * 0.5, c=C), c=C),
                                   n[:, 0], rtol=1e-9)


def test_limits_and_properties():
    with jax.enable_x64(True):
        # c -> 0: Euclidean limits
        np.testing.assert_allclose(poincare_distance(X[0], X[1], c=1e-10), 2 * np.linalg.norm(X[0] - X[1]),
                                   rtol=1e-6)
        np.testing.assert_allclose(hyperbolic_mlr_logits(X, P, A, c=1e-10), 4 * ((X[:, None] - P[None]) * A).sum(-1),
                                   rtol=1e-6)
        # metric: zero on the diagonal, symmetric, triangle inequality
        d = np.asarray(poincare_distance(X[:, None, :], X[None, :, :], c=C))
        assert np.all(np.diag(d) == 0) and np.allclose(d, d.T)
        assert np.all(d[:, :, None] <= d[:, None, :] + d.T[None, :, :] + 1e-12)
        # a zero normal gives logit 0; outside the ball -> NaN (never clipped)
        assert np.all(np.asarray(hyperbolic_mlr_logits(X, P, A * np.array([[0], [1], [1], [1]]), c=C))[:, 0] == 0)
        assert np.isnan(float(poincare_distance(np.array([2.0, 0.0]), np.zeros(2))))
        assert np.all(np.isnan(np.asarray(hyperbolic_mlr_logits(np.array([[1.5, 0.0, 0.0]]), P, A))))
        # expmap0 stays strictly inside the ball for huge inputs
        big = poincare_expmap0(np.array([[1e6, 0.0], [0.0, -1e30]]), c=4.0)
        assert np.all(np.linalg.norm(np.asarray(big), axis=1) < 0.5)


def test_grads_soft_labels_masks_nan():
    with jax.enable_x64(True):
        g = jax.jit(jax.grad(lambda x, p, a: hyperbolic_cross_entropy_loss(x, Yl, p, a, c=C).sum(), (0, 1, 2)))
        gx, gp, ga = g(X, P, A)
        np.testing.assert_allclose(gx, fd_grad(lambda x: _ce_ref(x, Yl, P, A, C).sum(), X), atol=1e-7)
        np.testing.assert_allclose(gp, fd_grad(lambda p: _ce_ref(X, Yl, p, A, C).sum(), P), atol=1e-7)
        np.testing.assert_allclose(ga, fd_grad(lambda a: _ce_ref(X, Yl, P, a, C).sum(), A), atol=1e-7)
        # distance gradient is finite (zero) at x = y
        gd = jax.grad(lambda x: poincare_distance(x, X[0], c=C))(X[0])
        assert np.all(gd == 0)
        gz = jax.grad(lambda v: poincare_expmap0(v).sum())(np.zeros(3))
        np.testing.assert_allclose(gz, np.ones(3))
    # soft one-hot labels equal integer labels; where masks rows (NaN there reaches nothing)
    f32 = X.astype(np.float32)
    soft = np.eye(4, dtype=np.float32)[Yl]
    np.testing.assert_allclose(hyperbolic_cross_entropy_loss(f32, soft, P, A),
                               hyperbolic_cross_entropy_loss(f32, Yl, P, A), rtol=1e-6)
    xn = f32.copy()
    xn[4, 1] = np.nan
    w = np.array([True, True, True, True, False])
    vg = jax.jit(jax.value_and_grad(lambda x, w: hyperbolic_cross_entropy_loss(x, Yl, P, A, where=w).sum()))
    v, g = vg(xn, w)
    np.testing.assert_allclose(v, _ce_ref(X[:4], Yl[:4], P, A, 1.0).sum(), rtol=1e-5)
    assert np.all(np.isfinite(g)) and np.all(g[4] == 0)
    v, _ = vg(xn, np.ones(5, bool))
    assert np.isnan(float(v))


def test_bad_input():
    with pytest.raises(ValueError, match="c"):
        poincare_distance(X[0], X[1], c=0.0)
    with pytest.raises(ValueError, match="offsets"):
        hyperbolic_mlr_logits(X, P[:, :2], A[:, :2])
    with pytest.raises(ValueError, match="normals"):
        hyperbolic_mlr_logits(X, P, A[:3])
    with pytest.raises(ValueError, match="labels"):
        hyperbolic_cross_entropy_loss(X, np.array([0, 1, 2, 3, 4]), P, A)
    with pytest.raises(TypeError, match="v"):
        poincare_expmap0(np.ones(3, np.int32))
    with pytest.raises(ValueError, match="v"):
        poincare_expmap0(np.float32(1.0))
