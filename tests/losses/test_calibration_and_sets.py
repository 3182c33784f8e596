"""Tests of CA calibration, DCO, self-adjusting Dice/Tversky, AnyLoss and EnsLoss (papers cited in
each function's docstring)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _partb_checks import X34, Y3, run_battery
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossjax.losses.anyloss import ANYLOSS_METRICS, anyloss, anyloss_loss
from lossjax.losses.calibration import correctness_aware_loss
from lossjax.losses.coverage import dco_gradient_factor, dco_loss, dco_loss_from_log_prob
from lossjax.losses.ensloss import ensloss_derivatives, ensloss_surrogate
from lossjax.losses.self_adjusting_dice import self_adjusting_dice_loss, tversky_loss

CA = jax.jit(correctness_aware_loss, static_argnames=("balance", "axis"))
DCO = jax.jit(dco_loss, static_argnames=("n", "axis"))
DCOF = jax.jit(dco_gradient_factor, static_argnames=("n", "axis"))
DCOLP = jax.jit(dco_loss_from_log_prob, static_argnames=("n",))
SAD = jax.jit(self_adjusting_dice_loss,
              static_argnames=("alpha", "smooth", "square_denominator", "set_level", "axis"))
TVK = jax.jit(tversky_loss, static_argnames=("alpha", "beta", "smooth", "set_level", "axis"))
ANY = jax.jit(anyloss, static_argnames=("amplify", "metric", "beta", "eps"))
ENS = jax.jit(ensloss_surrogate, static_argnames=("boxcox_lambda", "clip"))
ENSG = jax.jit(ensloss_derivatives, static_argnames=("boxcox_lambda", "clip"))

TV_X = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
TV_Y = np.array([0, 1], np.int32)
TVB_X = np.array([2.0, -1.0, 0.3], np.float32)
TVB_Y = np.array([1, 0, 1], np.int32)
CE = optax.softmax_cross_entropy_with_integer_labels

# ------------------------------------------------------------------ CA


CA_X = np.array([[2, 1, 0.1], [0.5, -1, 3], [0.2, 0.1, 0]], np.float32)
CA_Y = np.array([0, 1, 1], np.int32)


def test_ca_golden():
    with jax.enable_x64(True):
        x = jnp.asarray(CA_X, jnp.float64)
        for t, unw, bal in [(1.0, 0.3589784183, 0.2983038696), (2.0, 0.2885193202, 0.2784682630)]:
            np.testing.assert_allclose(CA(x, CA_Y, t, balance=False), unw, rtol=1e-9)
            np.testing.assert_allclose(CA(x, CA_Y, t), bal, rtol=1e-9)
    np.testing.assert_allclose(CA(CA_X, CA_Y, 1.0), 0.2983038696, rtol=1e-6)


def _np_ca(x, y, t, balance):
    x = np.asarray(x, np.float64) / np.asarray(t, np.float64)[..., None]
    p = np.exp(x - x.max(-1, keepdims=True))
    c = (p / p.sum(-1, keepdims=True)).max(-1)
    r = (np.argmax(x, -1) == y).astype(np.float64)
    a = r.mean()
    w = np.where(r == 1, 1 - a, a) if balance else np.ones_like(r)
    return (w * (c - r) ** 2).sum() / w.sum()


def test_ca_oracle_gradient_masks_and_empty_groups():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = rng.integers(0, 4, 6).astype(np.int32)
    t = rng.uniform(0.5, 3, 6).astype(np.float32)
    for bal in (True, False):
        np.testing.assert_allclose(CA(x, y, t, balance=bal), _np_ca(x, y, t, bal), rtol=1e-5)
    with jax.enable_x64(True):
        jax.test_util.check_grads(lambda tt: CA(jnp.asarray(x, jnp.float64), y, tt),
                                  (jnp.asarray(t, jnp.float64),), order=1, modes=["rev"])
    # where removes samples (also from the accuracy)
    keep = np.array([1, 1, 0, 1, 0, 1], bool)
    np.testing.assert_allclose(CA(x, y, t, where=keep), _np_ca(x[keep], y[keep], t[keep], True),
                               rtol=1e-5)
    val, g = jax.value_and_grad(lambda tt: CA(x, y, tt, where=np.zeros(6, bool)))(jnp.asarray(t))
    assert float(val) == 0.0 and np.all(g == 0.0)
    # all correct: balanced weights vanish; falls back to the mean over the one group
    y_ok = np.argmax(x, -1).astype(np.int32)
    np.testing.assert_allclose(CA(x, y_ok, t), CA(x, y_ok, t, balance=False), rtol=1e-6)
    assert np.isfinite(float(CA(x, (y_ok + 1) % 4, t)))
    # bf16 logits: float32 of the rounded input
    xb = jnp.asarray(x, jnp.bfloat16)
    np.testing.assert_allclose(CA(xb, y, t), CA(xb.astype(jnp.float32), y, t), rtol=1e-6)
    # jit == eager, vmap over groups
    np.testing.assert_allclose(correctness_aware_loss(x, y, t), CA(x, y, t), rtol=1e-6)
    vm = jax.jit(jax.vmap(lambda a, b, c: correctness_aware_loss(a, b, c)))(
        np.stack([x, x]), np.stack([y, y_ok]), np.stack([t, t]))
    np.testing.assert_allclose(vm, [CA(x, y, t), CA(x, y_ok, t)], rtol=1e-6)
    # extreme logits stay finite
    xe = np.array([[1e4, -1e4, 0], [-np.inf, 3, -np.inf], [0, 0, 0]], np.float32)
    val, g = jax.value_and_grad(lambda tt: CA(xe, np.array([0, 1, 2], np.int32), tt))(
        jnp.ones(3))
    assert np.isfinite(val) and np.all(np.isfinite(g))


def test_ca_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        correctness_aware_loss(CA_X, CA_Y, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="temperature"):
        correctness_aware_loss(CA_X, CA_Y, np.ones(2))
    with pytest.raises(TypeError, match="labels"):
        correctness_aware_loss(CA_X, jax.nn.one_hot(CA_Y, 3), 1.0)
    with pytest.raises(ValueError, match="labels"):
        correctness_aware_loss(CA_X, CA_Y[:2], 1.0)


# ------------------------------------------------------------------ DCO


def test_dco_golden_and_factor():
    with jax.enable_x64(True):
        x = jnp.asarray(TV_X)
        np.testing.assert_allclose(DCO(x, TV_Y, n=1), [0.4170300163, 4.0956743294], rtol=1e-10)
        np.testing.assert_allclose(DCO(x, TV_Y, n=4), [0.0136133327, 2.7343807914], rtol=1e-9)
        np.testing.assert_allclose(DCO(x, TV_Y, n=16), [3.3423110394e-08, 1.4459785716],
                                   rtol=1e-8)
        np.testing.assert_allclose(DCOF(x, TV_Y, n=4), [0.1059539464, 0.9749657251], rtol=1e-9)
        np.testing.assert_allclose(DCOF(x, TV_Y, n=16), [1.0334752728e-06, 0.8790829981],
                                   rtol=1e-8)
        np.testing.assert_allclose(DCOF(x, TV_Y, n=1), [1.0, 1.0], rtol=1e-12)


def test_dco_properties_gradient_factorisation_and_log_prob_form():
    x, y = X34, Y3
    ce = CE(x, y)
    np.testing.assert_allclose(DCO(x, y, n=1), ce, rtol=1e-5)
    prev = DCO(x, y, n=1)
    for n in (2, 4, 16, 256):
        cur = DCO(x, y, n=n)
        assert np.all(cur <= prev + 1e-7) and np.all(cur <= ce + 1e-6)
        prev = cur
    with jax.enable_x64(True):
        x64 = jnp.asarray(x, jnp.float64)
        for n in (3, 16):
            g_dco = jax.grad(lambda z, n=n: DCO(z, y, n=n).sum())(x64)
            g_ce = jax.grad(lambda z: CE(z, y).sum())(x64)
            np.testing.assert_allclose(g_dco, DCOF(x64, y, n=n)[:, None] * g_ce, rtol=1e-9,
                                       atol=1e-15)
        lp = -CE(x64, y)
        np.testing.assert_allclose(DCOLP(lp, n=5), DCO(x64, y, n=5), rtol=1e-10)
        # log-prob form against a direct float64 formula where that one is accurate
        lps = jnp.array([-3.0, -1.0, -0.1, -1e-3])  # (1 − e^lp) is accurate here
        direct = -np.log1p(-(1 - np.exp(np.asarray(lps))) ** 4)
        np.testing.assert_allclose(DCOLP(lps, n=4), direct, rtol=1e-8)


def test_dco_extremes_float32():
    x = jnp.array([[30.0, 0.0], [-200.0, 0.0], [1e4, 0.0], [-1e4, 0.0]])
    y = jnp.zeros(4, jnp.int32)
    val = DCO(x, y, n=16)
    # p -> 1 underflows gracefully to 0; p -> 0 gives -log p - log N
    np.testing.assert_allclose(val, [0.0, 200 - np.log(16), 0.0, 1e4 - np.log(16)], rtol=1e-6,
                               atol=1e-30)
    np.testing.assert_allclose(DCO(jnp.array([[30.0, 0.0]]), jnp.array([0]), n=1), 9.3576e-14,
                               rtol=1e-4)
    lp = jnp.array([-1e4, -200.0, -30.0, -1e-9, -1e-30, 0.0, 1.0])
    v, g = jax.value_and_grad(lambda l: DCOLP(l, n=4).sum())(lp)
    out = DCOLP(lp, n=4)
    np.testing.assert_allclose(out[:3], -np.asarray(lp[:3]) - np.log(4), rtol=1e-6)
    np.testing.assert_allclose(out[3:5], [np.log1p(0) + 1e-9 ** 4 * 0 + 9.99999e-37 * 0 + 1e-36,
                                          1e-120 * 0], atol=1e-35)
    assert np.all(out[5:] == 0.0) and np.all(np.isfinite(g))


def test_dco_battery_and_bad_n():
    v1, g1 = run_battery(functools.partial(dco_loss, n=4))
    np.testing.assert_allclose(v1, 0.0)
    np.testing.assert_allclose(g1, 0.0)
    t = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75], [1, 0, 0, 0]], np.float32)
    per = np.stack([DCO(X34, np.full(3, k, np.int32), n=4) for k in range(4)], -1)
    np.testing.assert_allclose(DCO(X34, t, n=4), (t * per).sum(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="`n`"):
        dco_loss(X34, Y3, n=0)
    with pytest.raises(TypeError, match="log_prob"):
        dco_loss_from_log_prob(np.zeros(3, np.int32), n=2)


_dco_stab = jax.jit(jax.value_and_grad(lambda x, y: jnp.sum(dco_loss(x, y, n=8))))


def test_dco_stability_regression_near_saturation():
    # ℓu ≈ 45: the quotients log1p(u)/u and expm1(a)/a have derivatives that underflow (was inf)
    x = np.array([[2468.0, 2512.0, 2512.0, 2512.0]] + [[2512.0] * 4] * 2, np.float32)
    val, g = _dco_stab(x, Y3)
    assert np.isfinite(val) and np.all(np.isfinite(g))
    with jax.enable_x64(True):
        x64 = jnp.asarray(x[:1] - 2512.0, jnp.float64)
        g64 = jax.grad(lambda z: DCO(z, Y3[:1], n=8).sum())(x64)
    np.testing.assert_allclose(g[0], g64[0], rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (3, 4), elements=st.floats(-1e4, 1e4, width=32)))
def test_dco_stability_hypothesis(x):
    val, g = _dco_stab(x, Y3)
    assert np.isfinite(val) and np.all(np.isfinite(g))


# ------------------------------------------------------------------ Dice / Tversky


def test_dice_tversky_golden_binary():
    x = TVB_X[:, None]
    for alpha, sq, ref in [(0.0, False, [0.04137845, 0.21194156, 0.16530083]),
                           (1.0, False, [0.42518249, 0.16430718, 0.33662541]),
                           (0.0, True, [0.00511900, 0.06745081, 0.07772549])]:
        np.testing.assert_allclose(
            SAD(x, TVB_Y, alpha=alpha, square_denominator=sq, set_level=False), ref, rtol=2e-6,
            atol=5e-9)
    np.testing.assert_allclose(TVK(x, TVB_Y, alpha=0.3, beta=0.7, set_level=False),
                               [0.04248059, 0.07465878, 0.15910112], rtol=2e-6)
    with jax.enable_x64(True):
        x64 = jnp.asarray([[2.0], [-1.0], [0.3]], jnp.float64)  # not the float32-rounded 0.3
        np.testing.assert_allclose(SAD(x64, TVB_Y, alpha=0.0), 0.1722418815, rtol=1e-9)
        np.testing.assert_allclose(SAD(x64, TVB_Y, alpha=1.0), 0.5209, atol=5e-5)
        np.testing.assert_allclose(TVK(x64, TVB_Y, alpha=0.5, beta=0.5), 0.1421516588, rtol=1e-9)
    # label layouts: [N] int, [N, 1] float
    np.testing.assert_allclose(SAD(x, TVB_Y[:, None].astype(np.float32), alpha=0.0), 0.1722418815,
                               rtol=1e-6)


def test_dice_tversky_multiclass_against_optax_and_masks():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4)).astype(np.float32) * 2
    y = rng.integers(0, 4, 6).astype(np.int32)
    oh = jax.nn.one_hot(y, 4)
    for a, b in [(0.3, 0.7), (0.5, 0.5), (1.0, 0.0)]:
        np.testing.assert_allclose(TVK(x, y, alpha=a, beta=b),
                                   optax.losses.dice_loss(x[None], oh[None], alpha=a, beta=b)[0],
                                   rtol=1e-6)
    np.testing.assert_allclose(TVK(x, oh), TVK(x, y), rtol=1e-6)
    np.testing.assert_allclose(SAD(x, oh), SAD(x, y), rtol=1e-6)
    # set-level where == dropping the items; all-masked gives 0 with zero gradient
    keep = np.array([1, 0, 1, 1, 0, 1], bool)
    for fn in (SAD, TVK):
        np.testing.assert_allclose(fn(x, y, where=keep), fn(x[keep], y[keep]), rtol=1e-6)
        val, g = jax.value_and_grad(lambda z, fn=fn: fn(z, y, where=np.zeros(6, bool)))(jnp.asarray(x))
        assert float(val) == 0.0 and np.all(g == 0.0)
    # numpy oracle of the multi-class self-adjusting set-level form
    p = np.asarray(jax.nn.softmax(x.astype(np.float64)))
    pt = (1 - p) ** 2.0 * p
    ohn = np.asarray(oh, np.float64)
    ref = np.mean(1 - (2 * (pt * ohn).sum(0) + 1.0) / (pt.sum(0) + ohn.sum(0) + 1.0))
    np.testing.assert_allclose(SAD(x, y, alpha=2.0), ref, rtol=1e-5)


def test_dice_tversky_gradients_and_extremes():
    with jax.enable_x64(True):
        x64 = jnp.asarray(X34, jnp.float64)
        for fn in (lambda z: SAD(z, Y3, alpha=0.5), lambda z: TVK(z, Y3),
                   lambda z: SAD(z[:, :1], jnp.array([1, 0, 1]), alpha=1.0)):
            jax.test_util.check_grads(fn, (x64,), order=1, modes=["rev"])
    xe = jnp.array([[1e4, -1e4, 0.0], [-jnp.inf, 3.0, -jnp.inf], [40.0, 0.0, 0.0]])
    for fn in (lambda z: SAD(z, jnp.array([0, 1, 1]), alpha=0.5),
               lambda z: TVK(z, jnp.array([0, 1, 1])),
               lambda z: SAD(z, jnp.array([0, 1, 1]), alpha=0.0, set_level=False).sum()):
        v, g = jax.value_and_grad(fn)(xe)
        assert np.isfinite(v) and np.all(np.isfinite(g))
    # binary extremes, bf16
    xb = jnp.array([[1e4], [-1e4], [0.0]])
    v, g = jax.value_and_grad(lambda z: SAD(z, TVB_Y, alpha=0.5))(xb)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    xbf = jnp.asarray(X34, jnp.bfloat16)
    np.testing.assert_allclose(SAD(xbf, Y3), SAD(xbf.astype(jnp.float32), Y3), rtol=1e-6)


def test_dice_per_example_battery():
    run_battery(functools.partial(self_adjusting_dice_loss, alpha=0.5, set_level=False),
                extreme=False)



def test_dice_bad_inputs():
    with pytest.raises(ValueError, match="alpha"):
        self_adjusting_dice_loss(X34, Y3, alpha=-1.0)
    with pytest.raises(ValueError, match="smooth"):
        tversky_loss(X34, Y3, smooth=0.0)
    with pytest.raises(ValueError, match="labels"):
        self_adjusting_dice_loss(TVB_X[:, None], TVB_Y[:2])
    with pytest.raises(TypeError, match="logits"):
        tversky_loss(np.zeros((3, 1), np.int32), TVB_Y)


# ------------------------------------------------------------------ AnyLoss


def test_anyloss_golden_and_limits():
    got10 = {m: float(ANY(TVB_X, TVB_Y, amplify=10.0, metric=m)) for m in ANYLOSS_METRICS}
    np.testing.assert_allclose(got10["f1"], 0.1158433934, rtol=1e-6)
    np.testing.assert_allclose(got10["fbeta"], got10["f1"], rtol=1e-7)
    np.testing.assert_allclose(got10["balanced_accuracy"], 0.1310643322, rtol=1e-6)
    np.testing.assert_allclose(got10["accuracy"], 0.1446662008, rtol=1e-6)
    np.testing.assert_allclose(ANY(TVB_X, TVB_Y, amplify=50.0), 0.0059428338, rtol=1e-5)
    np.testing.assert_allclose(ANY(TVB_X, TVB_Y, amplify=50.0, metric="balanced_accuracy"),
                               0.0059101703, rtol=1e-5)
    # gmean surrogate, numpy
    a = 1 / (1 + np.exp(-10 * (1 / (1 + np.exp(-TVB_X.astype(np.float64))) - 0.5)))
    tp = (TVB_Y * a).sum()
    tn = 3 - 2 - a.sum() + tp
    np.testing.assert_allclose(got10["gmean"], 1 - tp * tn / (2 * 1 + 1e-5), rtol=1e-6)
    # L -> inf: 1 - hard metric at 0.5
    x = np.array([2.0, -1.0, 0.3, -0.2, 1.5, -3.0], np.float32)
    y = np.array([1, 0, 0, 1, 1, 0], np.int32)
    pred = (x > 0).astype(float)
    tp, fp, fn = (pred * y).sum(), (pred * (1 - y)).sum(), ((1 - pred) * y).sum()
    np.testing.assert_allclose(ANY(x, y, amplify=1e5), 1 - 2 * tp / (2 * tp + fp + fn), atol=1e-4)
    np.testing.assert_allclose(ANY(x, y, amplify=1e5, metric="accuracy"), 2 / 6, atol=1e-4)
    # permutation invariance, masks, fbeta
    perm = np.array([3, 1, 5, 0, 2, 4])
    np.testing.assert_allclose(ANY(x[perm], y[perm], amplify=10.0), ANY(x, y, amplify=10.0),
                               rtol=1e-6)
    keep = np.array([1, 1, 0, 1, 0, 1], bool)
    for m in ANYLOSS_METRICS:
        np.testing.assert_allclose(ANY(x, y, amplify=10.0, metric=m, where=keep),
                                   ANY(x[keep], y[keep], amplify=10.0, metric=m), rtol=1e-6)
    val, g = jax.value_and_grad(lambda z: ANY(z, y, amplify=10.0, where=np.zeros(6, bool)))(
        jnp.asarray(x))
    assert float(val) == 0.0 and np.all(g == 0.0)
    f2 = float(ANY(x, y, amplify=1e5, metric="fbeta", beta=2.0))
    np.testing.assert_allclose(f2, 1 - 5 * tp / (5 * tp + 4 * fn + fp), atol=1e-4)
    assert anyloss_loss is anyloss


def test_anyloss_gradient_jit_vmap_bf16_extreme_and_errors():
    x = np.array([2.0, -1.0, 0.3, -0.2, 1.5, -3.0], np.float32)
    y = np.array([1, 0, 0, 1, 1, 0], np.int32)
    with jax.enable_x64(True):
        for m in ANYLOSS_METRICS:
            jax.test_util.check_grads(lambda z, m=m: ANY(z, y, amplify=5.0, metric=m),
                                      (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"])
    np.testing.assert_allclose(anyloss(x, y, amplify=10.0), ANY(x, y, amplify=10.0), rtol=1e-6)
    vm = jax.jit(jax.vmap(lambda a, b: anyloss(a, b, amplify=10.0)))(np.stack([x, -x]),
                                                                       np.stack([y, y]))
    np.testing.assert_allclose(vm, [ANY(x, y, amplify=10.0), ANY(-x, y, amplify=10.0)], rtol=1e-6)
    xb = jnp.asarray(x, jnp.bfloat16)
    np.testing.assert_allclose(ANY(xb, y, amplify=10.0),
                               ANY(xb.astype(jnp.float32), y, amplify=10.0), rtol=1e-6)
    v, g = jax.value_and_grad(lambda z: ANY(z, y, amplify=10.0))(
        jnp.array([1e4, -1e4, jnp.inf, -jnp.inf, 0.0, 3.0]))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    with pytest.raises(ValueError, match="metric"):
        anyloss(x, y, amplify=10.0, metric="auc")
    with pytest.raises(ValueError, match="amplify"):
        anyloss(x, y, amplify=0.0)
    with pytest.raises(TypeError, match="amplify"):
        anyloss(x, y)  # pylint: disable=missing-kwoa
    with pytest.raises(ValueError, match="labels"):
        anyloss(x, y[:3], amplify=10.0)
    with pytest.raises(ValueError, match="where"):
        anyloss(x, y, amplify=10.0, where=np.ones(3, bool))


# ------------------------------------------------------------------ EnsLoss


def test_ensloss_properties():
    rng = np.random.default_rng(7)
    f = (rng.normal(size=12) * 2).astype(np.float32)
    y = rng.integers(0, 2, 12).astype(np.int32)
    sign = 2.0 * y - 1.0
    z = f * sign
    for seed in range(4):
        key = jax.random.PRNGKey(seed)
        g = np.asarray(ENSG(f, y, key))
        grad = np.asarray(jax.grad(ENS)(jnp.asarray(f), y, key))
        np.testing.assert_allclose(grad, g * sign / 12, rtol=1e-6)
        assert np.all(g < -1e-6 + 1e-12) and np.all(g >= -1.0 - 1e-6 - 1e-7)
        order = np.argsort(z)
        assert np.all(np.diff(g[order]) >= -1e-7)  # non-decreasing in margin: convex φ
        big = z > 1
        assert np.all(np.abs(g[big]) <= 1 / z[big] + 1e-6 + 1e-7)
        # the pre-tail derivatives are the sorted clipped draws
        v = np.asarray(jax.random.normal(key, (12,), jnp.float32))
        pre = np.where(big, (g + 1e-6) * np.where(big, z, 1), g + 1e-6)
        np.testing.assert_allclose(np.sort(pre), np.sort(np.maximum(-np.exp(v), -1.0)), rtol=1e-5,
                                   atol=1e-6)
    k = jax.random.PRNGKey(0)
    assert float(ENS(f, y, k)) == float(ENS(f, y, k))
    assert float(ENS(f, y, k)) != float(ENS(f, y, jax.random.PRNGKey(1)))
    np.testing.assert_allclose(ensloss_surrogate(f, y, k), ENS(f, y, k), rtol=1e-6)
    # Box-Cox lambda != 0
    g = np.asarray(ENSG(f, y, k, boxcox_lambda=0.5))
    assert np.all(g < 0) and np.all(g >= -1.0 - 2e-6)


def test_ensloss_masks_vmap_extremes_and_errors():
    f = np.array([2.0, -1.0, 0.3, 5.0, -3.0, 0.9], np.float32)
    y = np.array([1, 0, 1, 1, 1, 0], np.int32)
    keep = np.array([1, 1, 0, 1, 0, 1], bool)
    key = jax.random.PRNGKey(3)
    g = np.asarray(ENSG(f, y, key, where=keep))
    assert np.all(g[~keep] == 0.0) and np.all(g[keep] < 0)
    grad = np.asarray(jax.grad(ENS)(jnp.asarray(f), y, key, where=keep))
    np.testing.assert_allclose(grad, g * (2 * y - 1) / keep.sum(), rtol=1e-6)
    # valid items get the sorted draws at the valid positions only
    v = np.asarray(jax.random.normal(key, (6,), jnp.float32))[keep]
    z = (f * (2 * y - 1))[keep]
    gk = g[keep] + 1e-6
    pre = np.where(z > 1, gk * z, gk)
    np.testing.assert_allclose(np.sort(pre), np.sort(np.maximum(-np.exp(v), -1.0)), rtol=1e-5,
                               atol=1e-6)
    val, gr = jax.value_and_grad(ENS)(jnp.asarray(f), y, key, where=np.zeros(6, bool))
    assert float(val) == 0.0 and np.all(gr == 0.0)
    keys = jax.random.split(key, 2)
    vm = jax.jit(jax.vmap(lambda a, kk: ensloss_surrogate(a, y, kk)))(np.stack([f, f]), keys)
    np.testing.assert_allclose(vm, [ENS(f, y, keys[0]), ENS(f, y, keys[1])], rtol=1e-6)
    fe = jnp.array([1e4, -1e4, 0.0, 1e30, -1e30, 1.0])
    v, gr = jax.value_and_grad(ENS)(fe, y, key)
    assert np.all(np.isfinite(gr))
    xb = jnp.asarray(f, jnp.bfloat16)
    np.testing.assert_allclose(ENS(xb, y, key), ENS(xb.astype(jnp.float32), y, key), rtol=1e-6)
    with pytest.raises(ValueError, match="clip"):
        ensloss_surrogate(f, y, key, clip=0.5)
    with pytest.raises(TypeError, match="labels"):
        ensloss_surrogate(f, y.astype(np.float32), key)
    with pytest.raises(ValueError, match="labels"):
        ensloss_surrogate(f, y[:3], key)
    with pytest.raises(TypeError, match="key"):
        ensloss_surrogate(f, y)  # the PRNG key is required
