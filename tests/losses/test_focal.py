"""Tests of lossjax.losses.focal (softmax focal, DCE, DCE-focal, class-balanced weights)."""

import functools

import _parta_checks as H
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lossjax.losses import comp_sum as CS
from lossjax.losses import focal as F

P = functools.partial
X, Y = H.X34, H.Y3

LOSSES = {
    "focal": (F.softmax_focal_loss, [0.0484923434, 3.9604679398]),
    "focal_g0.5_alpha": (P(F.softmax_focal_loss, gamma=0.5, alpha=np.array([0.5, 1.0, 2.0, 1.5])),
                         None),
    "dce": (F.dual_cross_entropy_loss, [0.7281071399, 4.8140724712]),
    "dce_b4.5": (P(F.dual_cross_entropy_loss, beta=4.5), [1.8168770726, 7.3284659673]),
    "dce_a2": (P(F.dual_cross_entropy_loss, alpha=2.0), None),
    "dce_focal": (F.dual_cross_entropy_focal_loss, None),
}
BATTERY = ["focal", "focal_g0.5_alpha", "dce_a2", "dce_focal"]


@pytest.mark.parametrize("name", [n for n in LOSSES if LOSSES[n][1] is not None])
def test_golden_values(name):
    fn, gold = LOSSES[name]
    H.assert_golden(fn, gold)


@pytest.mark.parametrize("name", BATTERY)
def test_battery(name):
    fn = LOSSES[name][0]
    H.assert_soft_onehot_equals_int(fn)
    H.assert_jit_vmap(fn)
    H.assert_bf16(fn)
    H.assert_extreme_finite(fn, k1=name != "focal_g0.5_alpha")  # a [4] alpha needs K = 4
    H.assert_all_masked_zero(fn)
    H.assert_shift_invariant(fn)
    H.assert_axis(fn)
    H.assert_bad_input(fn)
    if name != "focal_g0.5_alpha":  # a [K] alpha cannot follow a dropped class
        H.assert_class_mask_drops_class(fn)


@pytest.mark.parametrize("name", BATTERY)
def test_gradients_float64(name):
    # soft-label gradients: one member per module (one-hot ones are compared to integer)
    H.assert_grad_float64(LOSSES[name][0], soft=name in ("dce_focal",))


def test_focal_properties():
    ce = np.asarray(CS.comp_sum_loss(X, Y))
    np.testing.assert_allclose(F.softmax_focal_loss(X, Y, gamma=0.0), ce, rtol=1e-6)
    for g in (0.5, 2.0, 5.0):
        fl = np.asarray(F.softmax_focal_loss(X, Y, gamma=g))
        assert np.all((fl >= 0) & (fl <= ce + 1e-6))
    p = H.np_softmax(X)[np.arange(3), Y]
    with jax.enable_x64(True):
        np.testing.assert_allclose(F.softmax_focal_loss(jnp.asarray(X, jnp.float64), Y, gamma=1.5),
                                   -(1 - p) ** 1.5 * np.log(p), rtol=1e-12)
    # class weights: vector alpha multiplies by α_y, scalar alpha uniformly (kornia semantics)
    a = np.array([0.5, 1.0, 2.0, 1.5], np.float32)
    np.testing.assert_allclose(F.softmax_focal_loss(X, Y, alpha=a),
                               a[Y] * F.softmax_focal_loss(X, Y), rtol=1e-6)
    np.testing.assert_allclose(F.softmax_focal_loss(X, Y, alpha=0.25),
                               0.25 * F.softmax_focal_loss(X, Y), rtol=1e-6)
    t = H.np_softmax(np.random.default_rng(2).normal(size=(3, 4))).astype(np.float32)
    per = np.stack([F.softmax_focal_loss(X, np.full(3, k, np.int32)) for k in range(4)], -1)
    np.testing.assert_allclose(F.softmax_focal_loss(X, t, alpha=a), (t * a * per).sum(-1),
                               rtol=1e-5)


def test_focal_gradient_finite_where_naive_is_nan():
    x = jnp.array([[40.0, 0.0]])
    y = jnp.array([0])

    def naive(z):
        pz = jax.nn.softmax(z)[0, 0]
        return -((1 - pz) ** 0.5) * jnp.log(pz)

    assert np.isnan(np.asarray(jax.grad(naive)(x))).any()
    g = jax.grad(lambda z: jnp.sum(F.softmax_focal_loss(z, y, gamma=0.5)))(x)
    assert np.all(np.isfinite(g))
    with jax.enable_x64(True):
        # d/dx0 of s^0.5·softplus(ℓu), s = sigmoid(ℓu), ℓu = −40; analytic in float64
        lu = -40.0
        s = 1 / (1 + np.exp(-lu))
        sp = np.log1p(np.exp(lu))
        dlu = 0.5 * s ** 0.5 * (1 - s) * sp + s ** 0.5 * s  # d/dℓu
        np.testing.assert_allclose(g[0, 0], -dlu, rtol=1e-5)
        np.testing.assert_allclose(g[0, 1], dlu, rtol=1e-5)


def test_focal_matches_apl_focal_batch_mean():
    # Active-Passive-Losses FocalLoss(gamma=2) on TV1+TV2 (golden values from the official code;
    # inputs in docs/design/test_vectors.md §1)
    assert float(jnp.mean(F.softmax_focal_loss(H.TV_X, H.TV_Y))) == pytest.approx(2.0045, abs=6e-5)


def test_dce_properties():
    ce = np.asarray(CS.comp_sum_loss(X, Y))
    np.testing.assert_allclose(F.dual_cross_entropy_loss(X, Y, beta=0.0), ce, rtol=1e-6)
    p = H.np_softmax(X)
    mask = np.arange(4) != Y[:, None]
    with jax.enable_x64(True):
        x64 = jnp.asarray(X, jnp.float64)
        for a, b in ((1.0, 1.0), (2.0, 0.3), (0.5, 2.0)):
            ref = -np.log(p[np.arange(3), Y]) + b * (np.log(a + p) * mask).sum(-1)
            np.testing.assert_allclose(F.dual_cross_entropy_loss(x64, Y, alpha=a, beta=b), ref,
                                       rtol=1e-12)
    # near one-hot predictions: regulariser → (K−1)·log α
    x1 = np.array([[40.0, 0.0, 0.0, 0.0]], np.float32)
    reg = F.dual_cross_entropy_loss(x1, np.array([0]), alpha=2.0) - CS.comp_sum_loss(
        x1, np.array([0]))
    np.testing.assert_allclose(reg, 3 * np.log(2.0), rtol=1e-6)
    # soft labels: the formula itself (linear in t)
    t = H.np_softmax(np.random.default_rng(3).normal(size=(3, 4)))
    ref = -(t * np.log(p)).sum(-1) + 0.7 * ((1 - t) * np.log(1.5 + p)).sum(-1)
    np.testing.assert_allclose(F.dual_cross_entropy_loss(X, t.astype(np.float32), alpha=1.5,
                                                         beta=0.7), ref, rtol=1e-5)


def test_dce_focal_is_focal_plus_regulariser():
    for g, b, a in ((2.0, 0.5, 1.0), (0.0, 1.3, 2.0), (1.0, 0.2, 1.0)):
        dce_reg = F.dual_cross_entropy_loss(X, Y, alpha=a, beta=b) - CS.comp_sum_loss(X, Y)
        np.testing.assert_allclose(
            F.dual_cross_entropy_focal_loss(X, Y, gamma=g, alpha=a, beta=b),
            F.softmax_focal_loss(X, Y, gamma=g) + dce_reg, rtol=1e-5)
    w = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(
        F.dual_cross_entropy_focal_loss(X, Y, beta=0.0, focal_alpha=w),
        F.softmax_focal_loss(X, Y, alpha=w), rtol=1e-6)


def test_class_balanced_weights():
    n = np.array([100, 10, 1])
    np.testing.assert_allclose(F.class_balanced_weights(n, beta=0.999),
                               [0.02836301, 0.27125554, 2.70038144], rtol=1e-6)
    np.testing.assert_allclose(F.class_balanced_weights(n, beta=0.9),
                               [0.23932924, 0.36744197, 2.39322879], rtol=1e-6)
    with jax.enable_x64(True):
        w64 = F.class_balanced_weights(np.array([100.0, 10.0, 1.0]), beta=0.9999)
        e = (1 - 0.9999 ** n) / (1 - 0.9999)
        ref = (1 / e) / (1 / e).sum() * 3
        np.testing.assert_allclose(w64, ref, rtol=1e-12)
    np.testing.assert_allclose(F.class_balanced_weights(n, beta=0.9999), ref, rtol=1e-6)
    np.testing.assert_allclose(F.class_balanced_weights(n, beta=0.0), 1.0, rtol=1e-6)
    inv = 1 / n
    np.testing.assert_allclose(F.class_balanced_weights(n, beta=1.0), inv / inv.sum() * 3,
                               rtol=1e-6)
    # zero-count classes get weight 0; the present classes keep mean 1
    w = F.class_balanced_weights(np.array([100, 0, 1]), beta=0.99)
    assert float(w[1]) == 0.0
    np.testing.assert_allclose(float(w.sum()), 2.0, rtol=1e-6)
    # jit with a traced beta
    np.testing.assert_allclose(jax.jit(lambda b: F.class_balanced_weights(n, beta=b))(0.9),
                               [0.23932924, 0.36744197, 2.39322879], rtol=1e-5)
    with pytest.raises(ValueError, match="`beta`"):
        F.class_balanced_weights(n, beta=1.5)
    with pytest.raises(ValueError, match="`samples_per_class`"):
        F.class_balanced_weights(np.array([3, -1]))
    with pytest.raises(ValueError, match="`samples_per_class`"):
        F.class_balanced_weights(np.ones((2, 2)))


def test_per_example_class_weights_apply():
    w = F.class_balanced_weights(np.array([100, 10, 1, 5]), beta=0.999)
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(X, Y)
    np.testing.assert_allclose(F.per_example_class_weights(w, Y) * ce, np.asarray(w)[Y] * ce,
                               rtol=1e-6)
    t = jax.nn.one_hot(Y, 4)
    np.testing.assert_allclose(F.per_example_class_weights(w, t), np.asarray(w)[Y], rtol=1e-6)
    np.testing.assert_allclose(F.per_example_class_weights(w, t.T, axis=0), np.asarray(w)[Y],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="`labels`"):
        F.per_example_class_weights(w, jnp.ones((3, 5)))
    with pytest.raises(TypeError, match="`class_weights`"):
        F.per_example_class_weights(jnp.array([1, 2]), Y)


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match="`gamma`"):
        F.softmax_focal_loss(X, Y, gamma=-1.0)
    with pytest.raises(ValueError, match="`alpha`"):
        F.softmax_focal_loss(X, Y, alpha=np.ones(3))
    with pytest.raises(ValueError, match="`alpha`"):
        F.softmax_focal_loss(X, Y, alpha=-np.ones(4))
    with pytest.raises(ValueError, match="`alpha`"):
        F.dual_cross_entropy_loss(X, Y, alpha=0.0)
    with pytest.raises(ValueError, match="`beta`"):
        F.dual_cross_entropy_loss(X, Y, beta=-1.0)
    with pytest.raises(ValueError, match="`focal_alpha`"):
        F.dual_cross_entropy_focal_loss(X, Y, focal_alpha=np.ones((2, 4)))


def test_focal_gradient_at_float32_extremes():
    # p_y ≈ 0 at logits ±3e38: −log p_y ≈ 3e38 and the focal weight is 1; its gradient must be the
    # float64 one (the product rule once gave γ·3e38 = inf times σ(−ℓu) = 0, a NaN)
    x = np.array([[-3e38, 3e38, 3e38, -1.0], [3e38, -3e38, 0.0, 1.0]], np.float32)
    y = np.array([3, 0])
    for fn in (F.softmax_focal_loss, F.dual_cross_entropy_focal_loss):
        g = jax.grad(lambda a, fn=fn: jnp.sum(fn(a, y)))(x)
        with jax.enable_x64(True):
            g64 = jax.grad(lambda a, fn=fn: jnp.sum(fn(a, y)))(jnp.asarray(x, jnp.float64))
        np.testing.assert_allclose(g, g64, atol=1e-6)
        np.testing.assert_allclose(g[0], [0.0, 0.5, 0.5, -1.0], atol=1e-6)
