"""Tests of the Hyp-OC losses (Narayan & Patel, FG 2024) against float64 torch restatements of the
released training step (Möbius addition, the arctan pair distance, the 2-class hyperbolic MLR with the
released parametrisation, ``nn.CrossEntropyLoss``), NumPy oracles, gradients, masks and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses import (
    gaussian_pseudo_negatives,
    hyperbolic_one_class_cross_entropy_loss,
    hyperbolic_pairwise_confusion_loss,
    poincare_expmap0,
)

RNG = np.random.default_rng(3)
C = 0.1  # the released configuration's curvature
D = 5
EMB = np.tanh(RNG.normal(size=(6, D))) * 1.2  # inside the ball of radius 1/sqrt(0.1) = 3.16


def _t_madd(x, y, c):
    """Möbius addition over the last axis (Ganea et al. 2018, Eq. 3), torch."""
    xy = (x * y).sum(-1, keepdim=True)
    x2, y2 = (x * x).sum(-1, keepdim=True), (y * y).sum(-1, keepdim=True)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c**2 * x2 * y2)


def _t_hyp_pc(feat, c, fn):
    """The released Hyp-PC step: halves of the batch paired in order, per pair (2/√c)·fn(√c‖(−x)⊕y‖),
    summed and divided by the batch size."""
    import torch

    h = feat.shape[0] // 2
    m = torch.linalg.vector_norm(_t_madd(-feat[:h], feat[h:], c), dim=-1)
    return (fn(np.sqrt(c) * m) * 2.0 / np.sqrt(c)).sum() / feat.shape[0]


def _t_hyp_ce(x, y, p_tan, a_raw, c):
    """The released head: offsets exp0(p), normals a·(1 − c‖p‖²), Ganea's MLR logits, mean CE."""
    import torch

    pn = torch.linalg.vector_norm(p_tan, dim=-1, keepdim=True)
    p = torch.tanh(np.sqrt(c) * pn) * p_tan / (np.sqrt(c) * pn)
    conf = 1 - c * (p * p).sum(-1, keepdim=True)
    a = a_raw * conf
    z = _t_madd(-p[None], x[:, None], c)  # [N, 2, d]
    an = torch.linalg.vector_norm(a, dim=-1)
    lam = 2 / conf[:, 0]
    logits = lam * an / np.sqrt(c) * torch.asinh(2 * np.sqrt(c) * (z * a).sum(-1) / ((1 - c * (z * z).sum(-1)) * an))
    return torch.nn.functional.cross_entropy(logits, y), p, a


def test_hyp_pc_matches_released_step_in_float64_torch():
    import torch

    cot = 1.7
    for distance, fn in (("released", torch.atan), ("geodesic", torch.atanh)):
        e = torch.tensor(EMB, requires_grad=True)
        want = _t_hyp_pc(e, C, fn) * cot
        (g_want,) = torch.autograd.grad(want, (e,))
        with jax.enable_x64(True):
            f = jax.jit(lambda x, d=distance: hyperbolic_pairwise_confusion_loss(x, c=C, distance=d).sum() / 6 * cot)
            got, g = jax.value_and_grad(f)(EMB)
        np.testing.assert_allclose(got, want.item(), rtol=1e-12)
        np.testing.assert_allclose(g, g_want.numpy(), rtol=1e-10, atol=1e-14)
    # the two distances differ (arctan < artanh away from 0) but agree to first order near x = y
    pc = {d: np.asarray(hyperbolic_pairwise_confusion_loss(EMB, c=C, distance=d)) for d in ("geodesic", "released")}
    assert np.all(pc["released"] < pc["geodesic"]) and np.all(pc["released"] > 0)
    near = np.concatenate([EMB[:1], EMB[:1] + 1e-3], 0)
    with jax.enable_x64(True):
        a, b = (float(hyperbolic_pairwise_confusion_loss(near, c=C, distance=d)[0]) for d in ("geodesic", "released"))
    assert b == pytest.approx(a, rel=1e-5) and b < a


def test_hyp_ce_matches_released_head_in_float64_torch():
    import torch

    real = np.asarray(poincare_expmap0(RNG.normal(size=(4, D)) * 3, c=C, clip_r=2.0), np.float64)
    neg = np.asarray(poincare_expmap0(RNG.normal(size=(3, D)) * 3, c=C, clip_r=2.0), np.float64)
    p_tan, a_raw = RNG.normal(size=(2, D)) * 0.5, RNG.normal(size=(2, D))
    x = torch.tensor(np.concatenate([real, neg]), requires_grad=True)
    want, p, a = _t_hyp_ce(x, torch.tensor([0] * 4 + [1] * 3), torch.tensor(p_tan), torch.tensor(a_raw), C)
    (g_want,) = torch.autograd.grad(want, (x,))
    with jax.enable_x64(True):
        off, nor = p.detach().numpy(), a.detach().numpy()

        def f(r, n):
            return hyperbolic_one_class_cross_entropy_loss(r, n, off, nor, c=C).mean()

        got, (gr, gn) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(real, neg)
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([gr, gn]), g_want.numpy(), rtol=1e-9, atol=1e-14)
    # a mask drops rows; where= covers the concatenated rows (real first)
    w = np.array([True, False, True, True, True, True, False])
    out = hyperbolic_one_class_cross_entropy_loss(real, neg, off, nor, c=C, where=w)
    full = hyperbolic_one_class_cross_entropy_loss(real, neg, off, nor, c=C)
    np.testing.assert_allclose(out, np.where(w, full, 0.0), rtol=1e-6)


def test_expmap0_feature_clipping_matches_numpy():
    v = RNG.normal(size=(6, 3)) * np.array([[0.1], [0.5], [1.0], [3.0], [10.0], [100.0]])
    with jax.enable_x64(True):
        got = poincare_expmap0(v, c=C, clip_r=2.0)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        vc = v * np.minimum(1.0, 2.0 / n)
        nc = np.linalg.norm(vc, axis=1, keepdims=True)
        np.testing.assert_allclose(got, np.tanh(np.sqrt(C) * nc) * vc / (np.sqrt(C) * nc), rtol=1e-12)
        short = n[:, 0] < 2.0  # unclipped rows equal the plain map
        np.testing.assert_allclose(got[short], poincare_expmap0(v[short], c=C), rtol=1e-14)
        np.testing.assert_allclose(np.linalg.norm(got[~short], axis=1), np.tanh(2 * np.sqrt(C)) / np.sqrt(C),
                                   rtol=1e-12)
    g = jax.grad(lambda u: poincare_expmap0(u, c=C, clip_r=2.0).sum())(jnp.zeros(3))
    np.testing.assert_allclose(g, 1.0)  # identity Jacobian at 0
    assert np.isnan(poincare_expmap0(jnp.array([np.nan, 1.0]), clip_r=2.0)).all()
    with pytest.raises(ValueError, match="clip_r"):
        poincare_expmap0(v, clip_r=0.0)


def test_hyp_pc_grads_match_finite_differences():
    def ref(x, fn):
        h = x.shape[0] // 2
        m = []
        for u, v in zip(x[:h], x[h:]):
            xy, x2, y2 = -u @ v, u @ u, v @ v
            z = ((1 + 2 * C * xy + C * y2) * -u + (1 - C * x2) * v) / (1 + 2 * C * xy + C**2 * x2 * y2)
            m.append(np.linalg.norm(z))
        return float(np.sum(fn(np.sqrt(C) * np.array(m)) * 2 / np.sqrt(C) * np.arange(1, h + 1)))

    for distance, fn in (("geodesic", np.arctanh), ("released", np.arctan)):
        with jax.enable_x64(True):
            g = jax.grad(lambda x, d=distance: jnp.sum(
                hyperbolic_pairwise_confusion_loss(x, c=C, distance=d) * jnp.arange(1, 4)))(EMB)
        np.testing.assert_allclose(g, fd_grad(lambda x, fn=fn: ref(x, fn), EMB), rtol=1e-6, atol=1e-8)


def test_hyp_pc_masks_nan_edges_and_transforms():
    x = EMB.astype(np.float32)
    w = np.array([True, True, False, True, True, True])  # pair 2 = rows (2, 5) is dropped
    full = hyperbolic_pairwise_confusion_loss(x, c=C)
    got = hyperbolic_pairwise_confusion_loss(x, c=C, where=w)
    np.testing.assert_allclose(got, np.where([True, True, False], full, 0.0), rtol=1e-6)
    # a NaN in a masked row reaches neither the value nor the gradient
    xn = x.copy()
    xn[2] = np.nan
    val, g = jax.value_and_grad(lambda u: hyperbolic_pairwise_confusion_loss(u, c=C, where=w).sum())(xn)
    assert np.isfinite(val) and np.all(np.isfinite(g)) and np.all(g[2] == 0) and np.all(g[5] == 0)
    # NaN in, NaN out; a point outside the ball is NaN for both distances; empty mask gives zeros
    out = np.asarray(hyperbolic_pairwise_confusion_loss(xn, c=C))
    assert np.isnan(out[2]) and np.isfinite(out[[0, 1]]).all()
    outside = x.copy()
    outside[0] = 4.0  # c‖x‖² = 8 > 1
    for d in ("geodesic", "released"):
        assert np.isnan(hyperbolic_pairwise_confusion_loss(outside, c=C, distance=d)[0])
        np.testing.assert_array_equal(hyperbolic_pairwise_confusion_loss(x, c=C, distance=d, where=np.zeros(6, bool)),
                                      0.0)
    # identical pairs: zero loss with a finite (zero) gradient
    same = np.concatenate([x[:3], x[:3]])
    for d in ("geodesic", "released"):
        v, g = jax.value_and_grad(lambda u, d=d: hyperbolic_pairwise_confusion_loss(u, c=C, distance=d).sum())(same)
        assert float(v) == 0.0 and np.all(np.isfinite(g))
    # jit, vmap over a leading axis, bf16 in -> float32 out close to the float32 value
    stacked = np.stack([x, x[::-1]])
    np.testing.assert_allclose(jax.vmap(lambda u: hyperbolic_pairwise_confusion_loss(u, c=C))(stacked),
                               hyperbolic_pairwise_confusion_loss(stacked, c=C), rtol=1e-6)
    half = jax.jit(lambda u: hyperbolic_pairwise_confusion_loss(u, c=C))(x.astype(jnp.bfloat16))
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, full, rtol=2e-2)


def test_pseudo_negatives_follow_the_released_recursion():
    f = RNG.normal(size=(8, 3)).astype(np.float32) + 2.0
    prev = np.array([1.0, -1.0, 0.5], np.float32)
    s, mu, fbar = gaussian_pseudo_negatives(jax.random.key(1), f, prev, alpha=0.8, variance=4.0, num=20000)
    np.testing.assert_allclose(fbar, f.mean(0), rtol=1e-6)
    np.testing.assert_allclose(mu, 0.8 * prev + 0.2 * f.mean(0), rtol=1e-6)
    assert s.shape == (20000, 3)
    np.testing.assert_allclose(s.mean(0), mu, atol=0.05)  # 4 sigma of the mean of 20000 draws of sd 2
    np.testing.assert_allclose(s.var(0), 4.0, rtol=0.05)
    assert gaussian_pseudo_negatives(jax.random.key(1), f, prev)[0].shape == (8, 3)  # num defaults to B
    g = jax.grad(lambda u: gaussian_pseudo_negatives(jax.random.key(0), u, jnp.zeros(3))[0].sum())(f)
    np.testing.assert_array_equal(g, 0.0)  # samples carry no gradient
    # batched: one centre per leading index
    s2, mu2, _ = gaussian_pseudo_negatives(jax.random.key(2), np.stack([f, f + 1]), np.zeros((2, 3)), alpha=0.0)
    np.testing.assert_allclose(mu2[1] - mu2[0], 1.0, rtol=1e-6)
    assert s2.shape == (2, 8, 3)


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        hyperbolic_pairwise_confusion_loss(EMB[:5])
    with pytest.raises(ValueError, match="embeddings"):
        hyperbolic_pairwise_confusion_loss(EMB[0])
    with pytest.raises(ValueError, match="distance"):
        hyperbolic_pairwise_confusion_loss(EMB, distance="chordal")
    with pytest.raises(ValueError, match="`c`"):
        hyperbolic_pairwise_confusion_loss(EMB, c=0.0)
    with pytest.raises(ValueError, match="where"):
        hyperbolic_pairwise_confusion_loss(EMB, where=np.ones(5, bool))
    with pytest.raises(TypeError, match="embeddings"):
        hyperbolic_pairwise_confusion_loss(np.ones((4, 2), np.int32))
    p, a = np.zeros((2, 2)), np.eye(2)
    with pytest.raises(ValueError, match="offsets"):
        hyperbolic_one_class_cross_entropy_loss(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((3, 2)), np.eye(3, 2))
    with pytest.raises(ValueError, match="pseudo_negative"):
        hyperbolic_one_class_cross_entropy_loss(np.zeros((2, 2)), np.zeros((2, 3)), p, a)
    with pytest.raises(ValueError, match="alpha"):
        gaussian_pseudo_negatives(jax.random.key(0), np.zeros((2, 2)), np.zeros(2), alpha=1.5)
    with pytest.raises(ValueError, match="previous_mean"):
        gaussian_pseudo_negatives(jax.random.key(0), np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="variance"):
        gaussian_pseudo_negatives(jax.random.key(0), np.zeros((2, 2)), np.zeros(2), variance=0.0)
