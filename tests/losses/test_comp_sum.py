"""Tests of lossjax.losses.comp_sum (comp-sum, GCE/TGCE, Taylor CE, MAE, smooth adversarial)."""

import functools

import _parta_checks as H
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossjax.losses import comp_sum as CS

P = functools.partial
X, Y = H.X34, H.Y3


def _adv(x, y, **kw):
    # smooth adversarial comp-sum with a fixed "adversarial" map of the clean logits
    x = jnp.asarray(x)
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # the adversarial map in >= f32
    xa = 0.7 * xf + 0.2  # affine, so shift invariance and class dropping carry over
    return CS.smooth_adversarial_comp_sum_loss(x, xa, y, nu=0.5, **kw)


# name -> (fn, golden on TV1/TV2 or None)
LOSSES = {
    "comp_sum_tau0": (P(CS.comp_sum_loss, tau=0.0), [0.5174480604, 59.0798391035]),
    "comp_sum_tau1": (P(CS.comp_sum_loss, tau=1.0), [0.4170300163, 4.0956743294]),
    "comp_sum_tau1.5": (P(CS.comp_sum_loss, tau=1.5), [0.3764222977, 1.7419727254]),
    "comp_sum_tau2": (P(CS.comp_sum_loss, tau=2.0), [0.3409988611, 0.9833554814]),
    "gce": (CS.generalized_cross_entropy_loss, [0.3616749650, 1.3473273295]),
    "tgce": (CS.truncated_generalized_cross_entropy_loss, [0.3616749650, 0.5491825619]),
    "taylor1": (P(CS.taylor_cross_entropy_loss, order=1), [0.3409988611, 0.9833554814]),
    "taylor2": (P(CS.taylor_cross_entropy_loss, order=2), [0.3991389728, 1.4668494828]),
    "taylor6": (P(CS.taylor_cross_entropy_loss, order=6), [0.4169205611, 2.3521802333]),
    "mae": (CS.mae_loss, [0.3409988611, 0.9833554814]),
    "mae_scale2": (P(CS.mae_loss, scale=2.0), [0.6819977222, 1.9667109628]),
    "smooth_adv": (_adv, None),
}
NAMES = list(LOSSES)
# the full battery runs on one member per code path (the others share it and are covered by
# their golden values and identities), to keep compile time down
BATTERY = ["comp_sum_tau0", "comp_sum_tau1.5", "tgce", "taylor2", "mae", "smooth_adv"]
# τ < 1 grows like u^{1−τ} and overflows for ±1e4 logits by nature (documented)
BOUNDED = [n for n in BATTERY if n != "comp_sum_tau0"]


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES[n][1] is not None])
def test_golden_values(name):
    fn, gold = LOSSES[name]
    H.assert_golden(fn, gold)


@pytest.mark.parametrize("name", BATTERY)
def test_soft_onehot_equals_integer(name):
    H.assert_soft_onehot_equals_int(LOSSES[name][0])


@pytest.mark.parametrize("name", BATTERY)
def test_jit_vmap_bf16(name):
    fn = LOSSES[name][0]
    H.assert_jit_vmap(fn)
    H.assert_bf16(fn)


@pytest.mark.parametrize("name", BOUNDED)
def test_extreme_logits(name):
    H.assert_extreme_finite(LOSSES[name][0])


@pytest.mark.parametrize("name", BATTERY)
def test_masks(name):
    fn = LOSSES[name][0]
    H.assert_all_masked_zero(fn)
    # the smooth adversarial term depends on score differences, not only on probabilities: a -inf
    # logit there is probability 0 with an infinite score difference, not a masked class
    H.assert_class_mask_drops_class(fn, inf_is_mask=name != "smooth_adv")


@pytest.mark.parametrize("name", [n for n in BATTERY if n != "tgce"])
def test_gradients_float64(name):
    # soft-label gradients: one member per module (one-hot ones are compared to integer)
    H.assert_grad_float64(LOSSES[name][0], soft=name in ("smooth_adv", "taylor2"))


@pytest.mark.parametrize("name", BATTERY)
def test_shift_invariance_and_axis(name):
    fn = LOSSES[name][0]
    H.assert_shift_invariant(fn)
    H.assert_axis(fn)


@pytest.mark.parametrize("name", BATTERY)
def test_bad_input(name):
    H.assert_bad_input(LOSSES[name][0])


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match="`tau`"):
        CS.comp_sum_loss(X, Y, tau=-0.5)
    for q in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="`q`"):
            CS.generalized_cross_entropy_loss(X, Y, q=q)
    with pytest.raises(ValueError, match="`k`"):
        CS.truncated_generalized_cross_entropy_loss(X, Y, k=1.0)
    with pytest.raises(ValueError, match="`order`"):
        CS.taylor_cross_entropy_loss(X, Y, order=0)
    with pytest.raises(TypeError, match="`order`"):
        CS.taylor_cross_entropy_loss(X, Y, order=2.0)
    with pytest.raises(ValueError, match="`scale`"):
        CS.mae_loss(X, Y, scale=-1.0)
    with pytest.raises(ValueError, match="`nu`"):
        CS.smooth_adversarial_comp_sum_loss(X, X, Y, nu=-1.0)
    with pytest.raises(ValueError, match="`adv_logits`"):
        CS.smooth_adversarial_comp_sum_loss(X, X[:, :3], Y, nu=1.0)
    with pytest.raises(TypeError, match="`adv_logits`"):
        CS.smooth_adversarial_comp_sum_loss(X, X.astype(np.int32), Y, nu=1.0)


# ------------------------------------------------------------------------------------------
# comp-sum identities (Mao, Mohri & Zhong, ICML 2023)
# ------------------------------------------------------------------------------------------


def test_tau1_is_optax_cross_entropy():
    x = (np.random.default_rng(3).normal(size=(3, 4)) * 3).astype(np.float32)
    y = np.array([0, 3, 2], np.int32)
    # optax's x − logsumexp loses ~eps·|lse| absolutely where CE is small; ℓu does not
    np.testing.assert_allclose(
        CS.comp_sum_loss(x, y, tau=1.0),
        optax.losses.softmax_cross_entropy_with_integer_labels(x, y), rtol=1e-6, atol=1e-6)
    x64 = x.astype(np.float64)
    ref = -(x64 - x64.max(-1, keepdims=True))[np.arange(3), y] + np.log(
        np.exp(x64 - x64.max(-1, keepdims=True)).sum(-1))
    np.testing.assert_allclose(CS.comp_sum_loss(x, y, tau=1.0), ref, rtol=1e-6)
    t = H.np_softmax(np.random.default_rng(4).normal(size=(3, 4))).astype(np.float32)
    np.testing.assert_allclose(
        CS.comp_sum_loss(x, t, tau=1.0), optax.losses.softmax_cross_entropy(x, t), rtol=1e-5)


def test_tau_closed_forms_match_numpy():
    p = H.np_softmax(X)[np.arange(3), Y]
    u = 1.0 / p - 1.0
    with jax.enable_x64(True):
        x64 = jnp.asarray(X, jnp.float64)
        for tau, ref in [(0.0, u), (0.5, 2 * (np.sqrt(1 + u) - 1)), (1.0, np.log1p(u)),
                         (1.5, 2 * (1 - (1 + u) ** -0.5)), (2.0, u / (1 + u)),
                         (3.0, (1 - p ** 2) / 2)]:
            np.testing.assert_allclose(CS.comp_sum_loss(x64, Y, tau=tau), ref, rtol=1e-12)
        for q in (0.2, 0.5, 0.9):
            np.testing.assert_allclose(CS.comp_sum_loss(x64, Y, tau=1 + q),
                                       CS.generalized_cross_entropy_loss(x64, Y, q=q), rtol=1e-12)


def test_traced_tau_matches_static_tau():
    f = jax.jit(lambda x, tau: CS.comp_sum_loss(x, Y, tau=tau))
    for tau in (0.0, 0.5, 1.0, 1.7):
        np.testing.assert_allclose(f(X, tau), CS.comp_sum_loss(X, Y, tau=tau), rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(f(x, 1.0)))(jnp.asarray(X))
    np.testing.assert_allclose(
        g, jax.grad(lambda x: jnp.sum(CS.comp_sum_loss(x, Y)))(jnp.asarray(X)), rtol=1e-6)


def test_monotone_in_tau_and_mae_symmetry():
    vals = [np.asarray(CS.comp_sum_loss(X, Y, tau=t)) for t in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)]
    for a, b in zip(vals, vals[1:]):
        assert np.all(a >= b - 1e-6)
    np.testing.assert_allclose(H.symmetric_sum(P(CS.comp_sum_loss, tau=2.0)), 3.0, rtol=1e-6)
    np.testing.assert_allclose(H.symmetric_sum(P(CS.mae_loss, scale=2.0)), 6.0, rtol=1e-6)
    # not symmetric for τ < 2 (float64 reference: x=[0.3,−2,5,0] gives Σ_y ℓ_1 = 16.766)
    x = np.array([[0.3, -2.0, 5.0, 0.0]], np.float32)
    np.testing.assert_allclose(H.symmetric_sum(CS.comp_sum_loss, x), 16.766, atol=1e-3)


_Q = np.array([0.6, 0.3, 0.1])


@functools.partial(jax.jit, static_argnums=1)
def _minimise_risk(q, tau):
    def risk(x):
        return sum(q[j] * CS.comp_sum_loss(x, jnp.array(j), tau=tau) for j in range(3))

    def body(_, x):
        return x - 0.5 * jax.grad(risk)(x)

    return jax.nn.softmax(jax.lax.fori_loop(0, 3000, body, jnp.zeros(3)))


@pytest.mark.parametrize("tau, expected", [
    (0.0, [0.472734, 0.334273, 0.192993]),
    (1.0, [0.6, 0.3, 0.1]),
    (1.5, [0.782609, 0.195652, 0.021739]),
])
def test_conditional_risk_minimiser(tau, expected):
    got = _minimise_risk(jnp.asarray(_Q, jnp.float32), tau)
    ref = _Q ** (1 / (2 - tau))
    np.testing.assert_allclose(expected, ref / ref.sum(), atol=1e-6)  # closed form
    np.testing.assert_allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------------------------------
# GCE / TGCE / Taylor / MAE
# ------------------------------------------------------------------------------------------


def test_gce_limits():
    with jax.enable_x64(True):
        x64 = jnp.asarray(H.TV_X, jnp.float64)
        small = CS.generalized_cross_entropy_loss(x64, H.TV_Y, q=1e-6)
        np.testing.assert_allclose(small, [0.41702993, 4.09566594], rtol=1e-7)
        np.testing.assert_allclose(small, H.TV_CE, rtol=1e-5)
        np.testing.assert_allclose(CS.generalized_cross_entropy_loss(x64, H.TV_Y, q=1.0),
                                   CS.mae_loss(x64, H.TV_Y), rtol=1e-12)


def test_tgce_truncation_semantics():
    x = jnp.asarray(H.TV_X)
    val, g = jax.value_and_grad(
        lambda z: jnp.sum(CS.truncated_generalized_cross_entropy_loss(z, H.TV_Y)), )(x)
    g_gce = jax.grad(lambda z: jnp.sum(CS.generalized_cross_entropy_loss(z, H.TV_Y)))(x)
    np.testing.assert_array_equal(g[1], 0.0)  # p_y = 0.017 <= k: pruned, no gradient
    np.testing.assert_allclose(g[0], g_gce[0], rtol=1e-6)  # p_y = 0.66 > k: plain GCE
    np.testing.assert_allclose(CS.truncated_generalized_cross_entropy_loss(X, Y, k=0.0),
                               CS.generalized_cross_entropy_loss(X, Y), rtol=1e-6)
    # truncated value is the constant ℓ_q(k) and the loss is continuous at p_y = k
    lo = CS.truncated_generalized_cross_entropy_loss(H.TV_X, H.TV_Y, q=0.5, k=0.9)
    np.testing.assert_allclose(lo, (1 - 0.9 ** 0.5) / 0.5, rtol=1e-6)


def test_taylor_properties():
    x = X
    ce = np.asarray(CS.comp_sum_loss(x, Y))
    prev = np.zeros(3)
    for order in (1, 2, 3, 8, 20):
        cur = np.asarray(CS.taylor_cross_entropy_loss(x, Y, order=order))
        assert np.all(cur >= prev - 1e-7) and np.all(cur <= ce + 1e-6)
        prev = cur
    with jax.enable_x64(True):
        x64 = jnp.asarray(H.TV_X, jnp.float64)
        t200 = CS.taylor_cross_entropy_loss(x64, H.TV_Y, order=200)
        # p_y = 0.659 ≥ 0.1: converged; p_y = 0.017: still far from CE (slow convergence)
        np.testing.assert_allclose(t200[0], H.TV_CE[0], rtol=1e-9)
        assert t200[1] < H.TV_CE[1] - 1e-3
        s = 1 - H.np_softmax(H.TV_X)[np.arange(2), H.TV_Y]
        ref = sum(s ** k / k for k in range(1, 201))
        np.testing.assert_allclose(t200, ref, rtol=1e-12)


def test_exact_where_naive_rounds_to_zero():
    x = jnp.array([[30.0, 0.0]])
    y = jnp.array([0])
    mae = CS.mae_loss(x, y)
    np.testing.assert_allclose(mae, [9.3576236e-14], rtol=1e-6)
    for fn in (CS.generalized_cross_entropy_loss, P(CS.taylor_cross_entropy_loss, order=3),
               P(CS.comp_sum_loss, tau=2.0), P(CS.comp_sum_loss, tau=1.0)):
        v = fn(x, y)
        assert 0 < float(v[0]) < 1e-12, fn
    np.testing.assert_allclose(CS.generalized_cross_entropy_loss(x, y, q=1.0), mae, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# smooth adversarial comp-sum (Mao, Mohri & Zhong, ICML 2023, Sec. 6)
# ------------------------------------------------------------------------------------------


def test_smooth_adversarial_golden_and_properties():
    x = jnp.array([[2.0, 1.0, 0.1]])
    xa = jnp.array([[1.5, 1.2, 0.4]])
    y = jnp.array([0])
    H.assert_golden(lambda a, b: CS.smooth_adversarial_comp_sum_loss(
                        a, jnp.array([[1.5, 1.2, 0.4]], a.dtype), b, nu=1.0),
                    [1.4800445976], x=np.asarray(x), y=np.asarray(y))
    reg = CS.smooth_adversarial_comp_sum_loss(x, xa, y, nu=1.0) - CS.comp_sum_loss(x, y)
    np.testing.assert_allclose(reg, [1.0630145813], rtol=1e-6)
    # hand check against the literal definition on random data, every label and τ
    xr = (np.random.default_rng(5).normal(size=(3, 4)) * 2).astype(np.float64)
    xar = xr + np.random.default_rng(6).normal(size=(3, 4))
    for tau in (0.5, 2.0):
        for lab in range(4):
            yy = np.full(3, lab, np.int32)
            hbar = lambda z, lab=lab: z[:, [lab]] - np.delete(z, lab, axis=1)  # noqa: E731
            ref = np.linalg.norm(hbar(xar) - hbar(xr), axis=1) * 0.3
            ref = ref + np.asarray(CS.comp_sum_loss(xr.astype(np.float32), yy, tau=tau))
            got = CS.smooth_adversarial_comp_sum_loss(
                xr.astype(np.float32), xar.astype(np.float32), yy, nu=0.3, tau=tau)
            np.testing.assert_allclose(got, ref, rtol=2e-5)
    # the smooth term vanishes for a per-example shift, and its gradient is 0 (not NaN) there
    shift = jnp.array([[3.0], [-1.0], [0.5]])
    np.testing.assert_allclose(
        CS.smooth_adversarial_comp_sum_loss(X, X + shift, Y, nu=2.0), CS.comp_sum_loss(X, Y),
        rtol=1e-5)
    g = jax.grad(lambda a: jnp.sum(CS.smooth_adversarial_comp_sum_loss(X, a, Y, nu=1.0)))(
        jnp.asarray(X))
    np.testing.assert_array_equal(g, 0.0)
    np.testing.assert_allclose(CS.smooth_adversarial_comp_sum_loss(X, X * 2, Y, nu=0.0),
                               CS.comp_sum_loss(X, Y), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# stability vs an independent float64 numpy reference (hypothesis)
# ------------------------------------------------------------------------------------------


def _np_ref(x, y):
    p = H.np_softmax(x)[np.arange(x.shape[0]), y]
    s = 1 - p
    return np.stack([np.log1p(1 / p - 1), (1 - p ** 0.7) / 0.7, s + s ** 2 / 2, s,
                     2 * (1 - np.sqrt(p))])


@jax.jit
def _all_losses(x, y):
    fns = [CS.comp_sum_loss, CS.generalized_cross_entropy_loss,
           P(CS.taylor_cross_entropy_loss, order=2), CS.mae_loss, P(CS.comp_sum_loss, tau=1.5)]

    def total(z):
        vals = jnp.stack([f(z, y) for f in fns])
        return jnp.sum(vals), vals

    (_, vals), g = jax.value_and_grad(total, has_aux=True)(x)
    return vals, g


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (2, 4), elements=st.floats(-1e4, 1e4, width=32)),
       st.integers(0, 3))
def test_stability_hypothesis(x, lab):
    y = np.array([lab, 3 - lab], np.int32)
    vals, g = _all_losses(jnp.asarray(x), jnp.asarray(y))
    assert np.all(np.isfinite(vals)) and np.all(np.isfinite(g))
    xm = np.clip(x, -20, 20)  # moderate range: compare against float64 numpy closed forms
    vals_m, _ = _all_losses(jnp.asarray(xm), jnp.asarray(y))
    np.testing.assert_allclose(vals_m, _np_ref(xm, y), rtol=2e-5, atol=1e-6)


def test_smooth_adversarial_extremes_and_neg_inf():
    # ±3e38 logits: the score-difference norm (≈ 4e38, beyond float32) is +inf and its gradient
    # the float64 one; a -inf logit is probability 0, not a masked class: the loss is +inf with
    # the limit gradient (the float64 gradient at -1e30, where only the sign pattern of δ counts)
    x = np.array([[3e38, -3e38, 0.0, 1.0], [-0.4, -np.inf, 1.1, -0.7]], np.float32)
    y = np.array([0, 0])
    f = lambda a: CS.smooth_adversarial_comp_sum_loss(a, a[:, ::-1], y, nu=0.5)  # noqa: E731
    v = np.asarray(f(x))
    g = np.asarray(jax.jacrev(lambda a: f(a))(x))  # [row, row', K]
    with jax.enable_x64(True):
        x64 = np.where(np.isinf(x), -1e30, x).astype(np.float64)
        v64 = np.asarray(f(x64))
        g64 = np.asarray(jax.jacrev(lambda a: f(a))(x64))
    assert v[0] == np.inf and v[1] == np.inf and v64[0] > 3.4e38
    np.testing.assert_allclose(g[0, 0], g64[0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g[1, 1], g64[1, 1], rtol=1e-5, atol=1e-6)
