"""Tests of lossjax.losses.robust (RCE/SCE, NCE/NFL/NGCE/NMAE, Active-Passive)."""

import functools
import math

import _parta_checks as H
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lossjax.losses import comp_sum as CS
from lossjax.losses import focal as F
from lossjax.losses import robust as R

P = functools.partial
X, Y = H.X34, H.Y3
LN = math.log(1e-4)

LOSSES = {
    "rce": (R.reverse_cross_entropy_loss, [1.3639954445, 3.9334219256]),
    "rce_ln": (P(R.reverse_cross_entropy_loss, log_zero=LN), [3.1407155773, 9.0570386903]),
    "sce": (R.symmetric_cross_entropy_loss, [1.4056984461, 4.3429893585]),
    "sce_ln": (P(R.symmetric_cross_entropy_loss, log_zero=LN), [3.1824185789, 9.4666061232]),
    "nce": (R.normalized_cross_entropy_loss, [0.1004627728, 0.6034566756]),
    "nfl": (R.normalized_focal_loss, [0.0662335734, 0.6165541402]),
    "ngce": (R.normalized_generalized_cross_entropy_loss, [0.1502694549, 0.5110728837]),
    "nmae": (R.normalized_mae_loss, [0.1704994306, 0.4916777407]),
    "nce+rce": (P(R.active_passive_loss, log_zero=LN), [3.2411783501, 9.6604953658]),
    "nce+mae": (P(R.active_passive_loss, passive="mae"), [0.4414616339, 1.5868121569]),
    "nfl+rce": (P(R.active_passive_loss, active="nfl"), None),
}
BATTERY = ["sce", "nce", "nfl", "nmae", "nfl+rce"]
NORMALIZED = ["nce", "nfl", "ngce", "nmae", "nce+rce", "nfl+rce"]


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
    H.assert_extreme_finite(fn, k1=name not in NORMALIZED)
    H.assert_all_masked_zero(fn)
    H.assert_class_mask_drops_class(fn, inf_is_mask=name not in NORMALIZED)
    H.assert_shift_invariant(fn)
    H.assert_axis(fn)
    H.assert_bad_input(fn)


@pytest.mark.parametrize("name", BATTERY)
def test_gradients_float64(name):
    # soft-label gradients: one member per module (one-hot ones are compared to integer)
    H.assert_grad_float64(LOSSES[name][0], soft=name in ("nfl+rce",))


def test_apl_batch_mean_oracles():
    # batch means of the Active-Passive reference classes on TV1+TV2 (golden values from the official code)
    x, y = H.TV_X, H.TV_Y
    for fn, mean in [
        (P(R.reverse_cross_entropy_loss, log_zero=LN), 6.0989),
        (P(R.symmetric_cross_entropy_loss, alpha=0.1, beta=1.0, log_zero=LN), 6.3245),
        (CS.mae_loss, 0.6622),
        (R.normalized_cross_entropy_loss, 0.3520),
        (R.normalized_focal_loss, 0.3414),
        (R.normalized_generalized_cross_entropy_loss, 0.3307),
        (P(R.active_passive_loss, log_zero=LN), 6.4508),
        (P(R.active_passive_loss, active="fl", gamma=2.0, beta=0.0), 2.0045),
    ]:
        assert float(jnp.mean(fn(x, y))) == pytest.approx(mean, abs=6e-5)


def test_symmetry_sums():
    for name in ("nce", "nfl", "ngce"):
        np.testing.assert_allclose(H.symmetric_sum(LOSSES[name][0]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(H.symmetric_sum(R.reverse_cross_entropy_loss), 4.0 * 3, rtol=1e-6)
    np.testing.assert_allclose(H.symmetric_sum(R.normalized_mae_loss), 1.0, rtol=1e-6)
    # NFL with γ=0 is NCE; uniform logits → 1/K; NCE ∈ [0, 1]
    np.testing.assert_allclose(R.normalized_focal_loss(X, Y, gamma=0.0),
                               R.normalized_cross_entropy_loss(X, Y), rtol=1e-6)
    np.testing.assert_allclose(R.normalized_cross_entropy_loss(np.zeros((3, 4), np.float32), Y),
                               0.25, rtol=1e-6)
    v = np.asarray(R.normalized_cross_entropy_loss(H.EXTREME_X, H.EXTREME_Y))
    assert np.all((v >= 0) & (v <= 1))


def test_normalized_against_numpy():
    p = H.np_softmax(X)
    r = np.arange(3)
    logp = np.log(p)
    fl = (1 - p) ** 0.5 * -logp
    gce = 1 - p ** 0.7
    with jax.enable_x64(True):
        x64 = jnp.asarray(X, jnp.float64)
        np.testing.assert_allclose(R.normalized_cross_entropy_loss(x64, Y),
                                   logp[r, Y] / logp.sum(-1), rtol=1e-12)
        np.testing.assert_allclose(R.normalized_focal_loss(x64, Y),
                                   fl[r, Y] / fl.sum(-1), rtol=1e-12)
        np.testing.assert_allclose(R.normalized_generalized_cross_entropy_loss(x64, Y),
                                   gce[r, Y] / (4 - (p ** 0.7).sum(-1)), rtol=1e-12)


def test_stop_gradient_normalizer():
    x = jnp.asarray(X)
    for fn in (R.normalized_cross_entropy_loss, R.normalized_focal_loss,
               R.normalized_generalized_cross_entropy_loss):
        a = fn(x, Y)
        b = fn(x, Y, stop_gradient_normalizer=True)
        np.testing.assert_allclose(a, b, rtol=1e-7)
        ga = jax.grad(lambda z, fn=fn: jnp.sum(fn(z, Y)))(x)
        gb = jax.grad(lambda z, fn=fn: jnp.sum(fn(z, Y, stop_gradient_normalizer=True)))(x)
        assert np.max(np.abs(ga - gb)) > 1e-3
    # NCE with a detached normaliser: gradient of CE / constant
    den = -np.log(H.np_softmax(X)).sum(-1)
    g_ce = jax.grad(lambda z: jnp.sum(CS.comp_sum_loss(z, Y) / den))(x)
    gb = jax.grad(lambda z: jnp.sum(R.normalized_cross_entropy_loss(
        z, Y, stop_gradient_normalizer=True)))(x)
    np.testing.assert_allclose(gb, g_ce, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("active", R.ACTIVE_LOSSES)
def test_apl_is_the_weighted_sum(active):
    singles = {
        "ce": CS.comp_sum_loss,
        "fl": P(F.softmax_focal_loss, gamma=0.5),
        "gce": CS.generalized_cross_entropy_loss,
        "nce": R.normalized_cross_entropy_loss,
        "nfl": R.normalized_focal_loss,
        "ngce": R.normalized_generalized_cross_entropy_loss,
    }
    passives = {"mae": CS.mae_loss, "rce": R.reverse_cross_entropy_loss,
                "nmae": R.normalized_mae_loss, "nrce": R.normalized_mae_loss}
    for passive, pfn in passives.items():
        got = R.active_passive_loss(X, Y, active=active, passive=passive, alpha=10.0, beta=0.1)
        np.testing.assert_allclose(got, 10.0 * singles[active](X, Y) + 0.1 * pfn(X, Y),
                                   rtol=1e-6)


def test_nrce_equals_normalized_rce():
    rce = H.symmetric_sum(R.reverse_cross_entropy_loss)
    np.testing.assert_allclose(R.normalized_mae_loss(X, Y),
                               R.reverse_cross_entropy_loss(X, Y) / rce, rtol=1e-6)


def test_k1_refused_and_effective_k1_is_zero():
    x1 = jnp.ones((2, 1))
    for name in ("nce", "nfl", "ngce", "nmae", "nce+rce"):
        with pytest.raises(ValueError, match="`logits`"):
            LOSSES[name][0](x1, jnp.array([0, 0]))
    w = jnp.array([[True, False, False, False]] * 3)
    y0 = jnp.zeros((3,), jnp.int32)
    for name in NORMALIZED:
        val, g = jax.value_and_grad(lambda z, name=name: jnp.sum(LOSSES[name][0](z, y0, where=w)))(
            jnp.asarray(X))
        assert float(val) == 0.0
        np.testing.assert_array_equal(g, 0.0)


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match="`log_zero`"):
        R.reverse_cross_entropy_loss(X, Y, log_zero=1.0)
    with pytest.raises(ValueError, match="`alpha`"):
        R.symmetric_cross_entropy_loss(X, Y, alpha=-1.0)
    with pytest.raises(ValueError, match="`gamma`"):
        R.normalized_focal_loss(X, Y, gamma=-0.5)
    with pytest.raises(ValueError, match="`q`"):
        R.normalized_generalized_cross_entropy_loss(X, Y, q=0.0)
    with pytest.raises(ValueError, match="`active`"):
        R.active_passive_loss(X, Y, active="mse")
    with pytest.raises(ValueError, match="`passive`"):
        R.active_passive_loss(X, Y, passive="ce")
    with pytest.raises(ValueError, match="`beta`"):
        R.active_passive_loss(X, Y, beta=-1.0)
