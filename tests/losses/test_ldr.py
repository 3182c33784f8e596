"""Tests of lossjax.losses.ldr (LDR-KL and ALDR-KL)."""

import functools

import _parta_checks as H
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lossjax.losses import comp_sum as CS
from lossjax.losses import ldr as L

P = functools.partial
X, Y = H.X34, H.Y3
LOG3 = np.log(3.0)

LOSSES = {
    "ldr": (L.ldr_kl_loss, [-0.8730182037, 2.0438976825]),
    "ldr_lam0.1": (P(L.ldr_kl_loss, lambda_=0.1), [-0.1098488871, 3.9901387711]),
    "ldr_softplus": (P(L.ldr_kl_loss, normalize="softplus_mean"), [-0.4515225225, 0.8855919885]),
    "ldr_c0_lam1": (P(L.ldr_kl_loss, lambda_=1.0, margin=0.0), [-0.6815822724, 2.9970620407]),
    "ldr_hinge": (P(L.ldr_kl_loss, lambda_=0.0, margin=1.0), [0.0, 5.0]),
}
BATTERY = ["ldr", "ldr_softplus", "ldr_hinge"]


def _aldr(x, y, **kw):
    return L.aldr_kl_loss(x, y, lambda_ref=1.0, **kw)[0]


@pytest.mark.parametrize("name", [n for n in LOSSES if LOSSES[n][1] is not None])
def test_golden_values(name):
    fn, gold = LOSSES[name]
    # λ = 10: float32 absolute error ~ λ·eps (documented)
    H.assert_golden(fn, gold, rtol32=3e-6, atol32=2e-6)


@pytest.mark.parametrize("name", BATTERY)
def test_battery(name):
    fn = LOSSES[name][0]
    H.assert_soft_onehot_equals_int(fn)
    H.assert_jit_vmap(fn)
    H.assert_bf16(fn)
    H.assert_extreme_finite(fn)
    H.assert_all_masked_zero(fn)
    H.assert_class_mask_drops_class(fn, inf_is_mask=False)  # −inf: see test_minus_inf_is_probability_zero
    H.assert_axis(fn)
    H.assert_bad_input(fn)
    if name in ("ldr", "ldr_hinge"):  # score normalisation is not shift invariant by design
        H.assert_shift_invariant(fn)
    H.assert_grad_float64(fn, soft=name in ("ldr_softplus",))


def test_official_code_batch_means():
    # ICML2023_LDR reference classes on TV1+TV2 (golden values verified against that code)
    m = lambda fn: float(jnp.mean(fn(H.TV_X, H.TV_Y)))  # noqa: E731
    assert m(P(L.ldr_kl_loss, lambda_=10.0, margin=0.1, normalize="softplus_mean")) == \
        pytest.approx(0.2170, abs=6e-5)
    assert m(P(L.ldr_kl_loss, lambda_=1.0, margin=0.0)) == pytest.approx(1.1577, abs=6e-5)
    assert m(P(L.ldr_kl_loss, lambda_=0.0, margin=1.0)) == pytest.approx(2.5, abs=1e-6)


def test_limits_and_relations():
    xr = (np.random.default_rng(11).normal(size=(3, 4)) * 3).astype(np.float32)
    yr = np.array([0, 3, 2], np.int32)
    # λ → 0 with c = 1 is the Crammer–Singer hinge of optax
    cs = optax.losses.multiclass_hinge_loss(xr, yr)
    np.testing.assert_allclose(L.ldr_kl_loss(xr, yr, lambda_=0.0, margin=1.0), cs, rtol=1e-6)
    with jax.enable_x64(True):
        x64 = jnp.asarray(xr, jnp.float64)
        tv64 = jnp.asarray(H.TV_X, jnp.float64)
        near = L.ldr_kl_loss(x64, yr, lambda_=1e-3, margin=1.0)
        np.testing.assert_allclose(near, cs, atol=1e-3 * np.log(4) + 1e-9)
        np.testing.assert_allclose(L.ldr_kl_loss(tv64, H.TV_Y, lambda_=1e-3, margin=1.0),
                                   [-0.000405, 4.998901], atol=1e-6)
        # λ → ∞: mean_k z_k (linear, symmetric: Σ_y = c(K−1))
        np.testing.assert_allclose(L.ldr_kl_loss(tv64, H.TV_Y, lambda_=1e4, margin=0.1),
                                   [-0.899973, 1.900142], atol=1e-6)
        z = 0.1 * (np.arange(4) != yr[:, None]) + xr - xr[np.arange(3), yr][:, None]
        np.testing.assert_allclose(L.ldr_kl_loss(x64, yr, lambda_=1e7, margin=0.1),
                                   z.mean(-1), atol=1e-5)
        sym = sum(L.ldr_kl_loss(x64, np.full(3, j), lambda_=1e7, margin=0.1) for j in range(4))
        np.testing.assert_allclose(sym, 0.1 * 3, atol=1e-5)
        # c = 0: λ·CE(x/λ) − λ log K
        for lam in (0.3, 1.0, 4.0):
            ce = optax.losses.softmax_cross_entropy_with_integer_labels(x64 / lam, yr)
            np.testing.assert_allclose(L.ldr_kl_loss(x64, yr, lambda_=lam, margin=0.0),
                                       lam * ce - lam * np.log(4), rtol=1e-12)
        # literal definition λ·log(mean exp(z/λ)) and the bounds −λ log K ≤ ψ ≤ max z
        for lam in (0.05, 0.7, 10.0):
            ref = lam * np.log(np.mean(np.exp(z / lam), -1))
            got = np.asarray(L.ldr_kl_loss(x64, yr, lambda_=lam, margin=0.1))
            np.testing.assert_allclose(got, ref, rtol=1e-12)
            assert np.all(got >= -lam * np.log(4) - 1e-12) and np.all(got <= z.max(-1) + 1e-12)


def test_normalisations_match_literal_code_maths():
    sp = np.log1p(np.exp(X.astype(np.float64)))
    f_sp = sp / sp.mean(-1, keepdims=True)
    f_l1 = X / np.abs(X).mean(-1, keepdims=True)
    for f, norm in ((f_sp, "softplus_mean"), (f_l1, "l1")):
        np.testing.assert_allclose(L.ldr_kl_loss(X, Y, lambda_=2.0, normalize=norm),
                                   L.ldr_kl_loss(f.astype(np.float32), Y, lambda_=2.0),
                                   rtol=2e-6, atol=1e-6)


def test_per_example_lambda_array():
    lam = jnp.array([0.5, 2.0, 10.0])
    got = L.ldr_kl_loss(X, Y, lambda_=lam)
    for i in range(3):
        np.testing.assert_allclose(got[i], L.ldr_kl_loss(X[i:i + 1], Y[i:i + 1],
                                                         lambda_=float(lam[i]))[0], rtol=1e-6)


def test_ldr_errors():
    with pytest.raises(ValueError, match="`lambda_`"):
        L.ldr_kl_loss(X, Y, lambda_=-1.0)
    with pytest.raises(ValueError, match="`margin`"):
        L.ldr_kl_loss(X, Y, margin=-0.1)
    with pytest.raises(ValueError, match="`normalize`"):
        L.ldr_kl_loss(X, Y, normalize="softmax")


# ------------------------------------------------------------------------------------------
# ALDR-KL
# ------------------------------------------------------------------------------------------


def _np_aldr_official(x, y, lam, lam0, alpha, c):
    """float64 restatement of the official one-step update (Optimization-AI/ICML2023_LDR), for the oracle."""
    x = np.asarray(x, np.float64)
    k = x.shape[-1]
    f = x / (np.abs(x).sum(-1, keepdims=True) / k)
    q = np.exp(f / lam[:, None])
    q = q / q.sum(-1, keepdims=True) + 1e-5
    q = q / q.sum(-1, keepdims=True)
    kl = (q * np.log(q * k)).sum(-1)
    new = lam0 - lam0 * kl / (alpha * np.log(k))
    z = c * (np.arange(k) != y[:, None]) + f - f[np.arange(len(y)), y][:, None]
    psi = new * np.log(np.mean(np.exp(z / new[:, None]), -1))
    return psi - alpha * np.log(k) / (2 * lam0) * (new - lam0) ** 2, new


def test_aldr_golden_official():
    with jax.enable_x64(True):
        loss, lam = L.aldr_kl_loss(jnp.asarray(H.TV_X, jnp.float64), H.TV_Y, lambda_ref=1.0,
                                   alpha=2.0, margin=0.1)
        np.testing.assert_allclose(lam, [0.89141927, 0.78547281], rtol=1e-7)
        np.testing.assert_allclose(loss, [-0.61903872, 1.9625044], rtol=1e-7)
    loss32, lam32 = L.aldr_kl_loss(H.TV_X, H.TV_Y, lambda_ref=1.0, alpha=2.0, margin=0.1)
    np.testing.assert_allclose(lam32, [0.89141927, 0.78547281], rtol=2e-6)
    np.testing.assert_allclose(loss32, [-0.61903872, 1.9625044], rtol=2e-6)
    assert float(jnp.mean(loss32)) == pytest.approx(0.6717, abs=6e-5)  # ALDRLoss_V1 batch mean
    # random data, stored λ, other hyper-parameters vs the float64 restatement
    stored = np.array([7.0, 9.5, 10.0])
    ref_loss, ref_lam = _np_aldr_official(X, Y, stored, 10.0, 3.0, 0.2)
    loss, lam = L.aldr_kl_loss(X, Y, jnp.asarray(stored, jnp.float32), lambda_ref=10.0,
                               alpha=3.0, margin=0.2)
    np.testing.assert_allclose(lam, ref_lam, rtol=2e-6)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=2e-6)


def test_aldr_properties():
    for alpha in (1.5, 2.0, 5.0):
        _, lam = L.aldr_kl_loss(H.EXTREME_X * 0.01, H.EXTREME_Y, lambda_ref=10.0, alpha=alpha)
        assert np.all((lam >= 10 * (1 - 1 / alpha) - 1e-5) & (lam <= 10 + 1e-6))
    _, lam = L.aldr_kl_loss(np.ones((3, 4), np.float32), Y, lambda_ref=10.0)
    np.testing.assert_allclose(lam, 10.0, rtol=1e-6)  # uniform scores: KL = 0, λ unchanged
    # masked rows keep their stored λ and give loss 0
    stored = jnp.array([3.0, 4.0, 5.0])
    w = jnp.array([True, False, True])
    loss, lam = L.aldr_kl_loss(X, Y, stored, lambda_ref=4.0, where=w)
    assert float(loss[1]) == 0.0 and float(lam[1]) == 4.0
    # the gradient is that of ψ_λ at the returned (stop-gradient) λ; λ carries none
    loss_fn = lambda z: jnp.sum(L.aldr_kl_loss(z, Y, stored, lambda_ref=4.0)[0])  # noqa: E731
    _, lam = L.aldr_kl_loss(X, Y, stored, lambda_ref=4.0)
    g = jax.grad(loss_fn)(jnp.asarray(X))
    g_ref = jax.grad(lambda z: jnp.sum(L.ldr_kl_loss(z, Y, lambda_=lam, normalize="l1")))(
        jnp.asarray(X))
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)
    g_lam = jax.grad(lambda z: jnp.sum(L.aldr_kl_loss(z, Y, stored, lambda_ref=4.0)[1]))(
        jnp.asarray(X))
    np.testing.assert_array_equal(g_lam, 0.0)
    with jax.enable_x64(True):
        lam64 = jnp.asarray(np.asarray(lam, np.float64))
        H.assert_grad_float64(lambda z, y: L.ldr_kl_loss(z, y, lambda_=lam64, normalize="l1"),
                              soft=False)


def test_aldr_exact_mode_reaches_the_inner_maximum():
    # precomputed in float64: exact max over λ on raw TV1 logits (λ0=1, α=2, c=.1) is −0.6322616 at λ*≈0.8728
    with jax.enable_x64(True):
        x64 = jnp.asarray(H.TV_X, jnp.float64)
        loss, lam = L.aldr_kl_loss(x64, H.TV_Y, lambda_ref=1.0, alpha=2.0, margin=0.1,
                                   normalize=None, mode="exact", num_inner_steps=60)
        np.testing.assert_allclose(loss[0], -0.6322616, atol=1e-6)
        np.testing.assert_allclose(lam[0], 0.8728, atol=1e-4)
        # objective maximised over a dense λ grid on [λ0(1−1/α), λ0] (float64 oracle)
        grid = np.linspace(0.5, 1.0, 20001)[:, None]
        for i in range(2):
            z = 0.1 * (np.arange(3) != H.TV_Y[i]) + H.TV_X[i] - H.TV_X[i, H.TV_Y[i]]
            obj = grid[:, 0] * np.log(np.mean(np.exp(z / grid), -1)) - LOG3 * (grid[:, 0] - 1) ** 2
            assert float(loss[i]) == pytest.approx(obj.max(), abs=1e-6)
        # and it is ≥ ψ at λ0 (the inner max can only increase the value)
        assert np.all(np.asarray(loss) >= np.asarray(
            L.ldr_kl_loss(x64, H.TV_Y, lambda_=1.0, margin=0.1)) - 1e-12)


def test_aldr_battery():
    H.assert_jit_vmap(_aldr)
    H.assert_bf16(_aldr)
    val, g = jax.value_and_grad(lambda z: jnp.sum(_aldr(z, H.EXTREME_Y)))(jnp.asarray(H.EXTREME_X))
    assert np.isfinite(val) and np.all(np.isfinite(g))
    v1, g1 = jax.value_and_grad(lambda z: jnp.sum(_aldr(z, jnp.array([0, 0]))))(jnp.ones((2, 1)))
    assert float(v1) == 0.0 and np.all(g1 == 0.0)
    H.assert_all_masked_zero(_aldr)
    H.assert_class_mask_drops_class(_aldr, inf_is_mask=False)
    H.assert_axis(_aldr)


def test_aldr_errors():
    for alpha in (1.0, 0.5):
        with pytest.raises(ValueError, match="`alpha`"):
            L.aldr_kl_loss(X, Y, alpha=alpha)
    with pytest.raises(ValueError, match="`lambda_ref`"):
        L.aldr_kl_loss(X, Y, lambda_ref=0.0)
    with pytest.raises(ValueError, match="`mode`"):
        L.aldr_kl_loss(X, Y, mode="paper")
    with pytest.raises(ValueError, match="`lambdas`"):
        L.aldr_kl_loss(X, Y, jnp.ones((4,)))
    with pytest.raises(TypeError, match="`lambdas`"):
        L.aldr_kl_loss(X, Y, jnp.ones((3,), jnp.int32))
    with pytest.raises(TypeError, match="`labels`"):
        L.aldr_kl_loss(X, jax.nn.one_hot(Y, 4))
    with pytest.raises(ValueError, match="`num_inner_steps`"):
        L.aldr_kl_loss(X, Y, num_inner_steps=0)
    with pytest.raises(ValueError, match="`normalize`"):
        L.aldr_kl_loss(X, Y, normalize="l2")


def test_ldr_c0_is_scaled_ce_float32():
    np.testing.assert_allclose(L.ldr_kl_loss(X, Y, lambda_=1.0, margin=0.0),
                               CS.comp_sum_loss(X, Y) - np.log(4), rtol=1e-5, atol=1e-6)


def test_minus_inf_is_probability_zero():
    """A −inf logit is a class of probability 0 that stays in ``K`` (docs/conventions.md), and
    ``±inf`` / ``±3e38`` logits go through the score normalisations as their limit."""
    x = np.array(X, copy=True)
    x[:, 2] = -np.inf  # Y has no label 2
    keep = [0, 1, 3]
    y_red = np.array([keep.index(v) for v in Y], np.int32)
    # ψ_K = λ log((1/K) Σ_{k≠2} e^{z_k/λ}) = ψ over the other classes + λ log((K−1)/K)
    lam = 10.0
    want = L.ldr_kl_loss(X[:, keep], y_red, lambda_=lam) + lam * np.log(3 / 4)
    val, g = jax.value_and_grad(lambda z: jnp.sum(L.ldr_kl_loss(z, Y, lambda_=lam)))(jnp.asarray(x))
    np.testing.assert_allclose(L.ldr_kl_loss(x, Y, lambda_=lam), want, rtol=2e-6, atol=2e-6)
    assert np.all(np.isfinite(g)) and np.all(g[:, 2] == 0)
    # 'l1': one −inf entry takes the whole normalised mass −K (finite entries tend to 0, with
    # zero gradient), so the loss equals that of the raw scores −K·e_2
    lim = np.zeros_like(X)
    lim[:, 2] = -4.0
    got, g = jax.value_and_grad(lambda z: jnp.sum(_aldr(z, Y, normalize="l1")))(jnp.asarray(x))
    np.testing.assert_allclose(_aldr(x, Y, normalize="l1"), _aldr(lim, Y, normalize=None), rtol=1e-6)
    np.testing.assert_array_equal(g, 0.0)
    # 'softplus_mean': softplus(−inf) = 0 is a score of 0 (float64 oracle at −1e300), and rows of
    # ±3e38 (float64 oracle) stay finite
    xs = np.concatenate([x[:2], np.array([[3e38, -3e38, 0.0, 1.0]], np.float32)])
    sp = P(L.ldr_kl_loss, normalize="softplus_mean")
    with jax.enable_x64(True):
        x64 = np.where(np.isneginf(xs), -1e300, xs.astype(np.float64))
        v64, g64 = jax.value_and_grad(lambda z: jnp.sum(sp(z, Y)))(jnp.asarray(x64))
        v64 = sp(jnp.asarray(x64), Y)
    val, g = jax.value_and_grad(lambda z: jnp.sum(sp(z, Y)))(jnp.asarray(xs))
    np.testing.assert_allclose(sp(xs, Y), v64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, g64, rtol=1e-4, atol=1e-5)
    # l1 at ±3e38: the mean |x| does not overflow (f = x / mean|x| = [2, −2, 0, ~0])
    big = np.array([[3e38, -3e38, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(
        _aldr(big, Y[:1], normalize="l1"), _aldr(np.array([[2.0, -2.0, 0.0, 0.0]], np.float32), Y[:1],
                                                  normalize=None), rtol=1e-6)
