"""Tests of StableMax (lossjax.losses.stablemax) and the Softmax-Collapse diagnostics
(lossjax.losses.diagnostics); Prieto et al., arXiv:2501.04697."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _partb_checks import X34, Y3, run_battery
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossjax.losses.diagnostics import softmax_collapse_fraction, zero_loss_fraction
from lossjax.losses.stablemax import (
    log_stablemax,
    stablemax,
    stablemax_cross_entropy_loss,
    stablemax_log_transform,
)

SM = jax.jit(stablemax, static_argnames=("axis",))
SMCE = jax.jit(stablemax_cross_entropy_loss, static_argnames=("axis",))
SC = jax.jit(softmax_collapse_fraction, static_argnames=("axis", "dtype"))
ZL = jax.jit(zero_loss_fraction, static_argnames=("axis",))

TV_X = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
TV_Y = np.array([0, 1], np.int32)


def _np_s(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, x + 1.0, 1.0 / (1.0 - np.minimum(x, 0.0)))


def _np_stablemax(x):
    s = _np_s(x)
    return s / s.sum(-1, keepdims=True)


def test_golden_values_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(TV_X)
        np.testing.assert_allclose(SM(x), [[0.4918032787, 0.3278688525, 0.1803278689],
                                           [0.25, 0.0833333333, 0.6666666667]], rtol=1e-9)
        np.testing.assert_allclose(SMCE(x, TV_Y), [0.7096764825, 2.4849066498], rtol=1e-9)
        np.testing.assert_allclose(SMCE(x, TV_Y), [np.log(6.1 / 3), np.log(12.0)], rtol=1e-12)


def test_identity_with_softmax_of_g_and_numpy_oracle():
    x = np.random.default_rng(0).normal(size=(6, 5)) * np.array([0.1, 1, 10, 100, 1e4])
    with jax.enable_x64(True):
        got = SM(jnp.asarray(x))
        np.testing.assert_allclose(got, _np_stablemax(x), rtol=1e-13)
        g = np.sign(x) * np.log1p(np.abs(x))
        np.testing.assert_allclose(got, jax.nn.softmax(jnp.asarray(g)), rtol=1e-13)
        y = np.argmax(x, -1).astype(np.int32)
        ce = -np.log(np.take_along_axis(_np_stablemax(x), y[:, None], -1)[:, 0])
        np.testing.assert_allclose(SMCE(jnp.asarray(x), y), ce, rtol=1e-10)
    # float32 against the float64 oracle
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(SM(x32), _np_stablemax(x32), rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(jnp.exp(log_stablemax(x32)), _np_stablemax(x32), rtol=2e-6)


def test_properties_order_linear_region_shift_and_g_gradient():
    x = np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32) * 5
    np.testing.assert_array_equal(np.argmax(SM(x), -1), np.argmax(jax.nn.softmax(x), -1))
    np.testing.assert_array_equal(np.argsort(SM(x), -1), np.argsort(x, -1))
    xp = np.abs(x)
    np.testing.assert_allclose(SM(xp), (xp + 1) / (xp + 1).sum(-1, keepdims=True), rtol=1e-6)
    assert not np.allclose(SM(x + 3.0), SM(x), atol=1e-3)  # not shift-invariant, by design
    # regression: sign(x)*log1p|x| has gradient 0 at 0 in JAX; the true value is 1
    assert float(jax.grad(stablemax_log_transform)(0.0)) == 1.0
    assert float(jax.grad(lambda v: jnp.sign(v) * jnp.log1p(jnp.abs(v)))(0.0)) == 0.0
    # s is C^1 at 0: one-sided slopes agree
    h = 1e-3
    gl = jax.grad(stablemax_log_transform)(-h)
    gr = jax.grad(stablemax_log_transform)(h)
    np.testing.assert_allclose(gl, gr, rtol=3e-3)
    # axis argument and soft labels
    np.testing.assert_allclose(SM(x.T, axis=0).T, SM(x), rtol=1e-6)
    t = jax.nn.one_hot(np.arange(8) % 6, 6)
    np.testing.assert_allclose(SMCE(x, t), SMCE(x, (np.arange(8) % 6).astype(np.int32)),
                               rtol=1e-6)
    tt = np.full((8, 6), 1 / 6, np.float32)
    np.testing.assert_allclose(SMCE(x, tt), -np.log(_np_stablemax(x)).mean(-1), rtol=1e-5)


def test_stays_finite_and_nonzero_where_softmax_collapses():
    x = jnp.array([[1e4, 0.0, -1e4], [40.0, 0.0, 0.0], [0.0, -17.0, -20.0]], jnp.float32)
    y = jnp.array([0, 0, 0])
    ce = optax.softmax_cross_entropy_with_integer_labels
    g_soft = jax.grad(lambda z: ce(z, y).sum())(x)
    # softmax collapsed: loss exactly 0 and no push on the label logit (p_y rounds to 1)
    assert np.all(np.asarray(ce(x, y)) == 0.0) and np.all(np.asarray(g_soft)[:, 0] == 0.0)
    assert np.all(np.asarray(g_soft)[0] == 0.0)
    val = SMCE(x, y)
    g = jax.grad(lambda z: SMCE(z, y).sum())(x)
    ref = -np.log(np.take_along_axis(_np_stablemax(np.asarray(x)), np.asarray(y)[:, None], -1))
    np.testing.assert_allclose(val, ref[:, 0], rtol=1e-5)
    assert np.all(val > 0) and np.all(np.isfinite(g))
    assert np.all(np.abs(np.asarray(g)).sum(-1) > 0)
    # the pushes on the label logit are still negative (loss still decreasing)
    assert np.all(np.asarray(g)[:, 0] < 0)


def test_stablemax_battery():
    v1, g1 = run_battery(stablemax_cross_entropy_loss)
    np.testing.assert_allclose(v1, 0.0)
    np.testing.assert_allclose(g1, 0.0)


def test_stablemax_masks_equal_dropping_classes_and_bad_inputs():
    cm = np.ones((3, 4), bool)
    cm[:, 2] = False
    np.testing.assert_allclose(SMCE(X34, Y3, where=cm), SMCE(np.delete(X34, 2, 1), np.array([0, 2, 1], np.int32)),
                               rtol=1e-6)
    with pytest.raises(TypeError, match="`x`"):
        stablemax(np.ones(3, np.int32))
    with pytest.raises(ValueError, match="`x`"):
        log_stablemax(np.float32(1.0))


_stab = jax.jit(jax.value_and_grad(lambda x, y: jnp.sum(stablemax_cross_entropy_loss(x, y))))


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (3, 4), elements=st.floats(-1e4, 1e4, width=32)))
def test_stability_hypothesis(x):
    val, g = _stab(x, Y3)
    assert np.isfinite(val) and np.all(np.isfinite(g))
    assert float(val) > 0.0  # s grows linearly: the loss never rounds to 0 at this range


# ------------------------------------------------------------------ Softmax Collapse metrics


def test_collapse_thresholds_float32():
    x = np.array([[0, -17, -20], [0, -16, -20], [40, 0, 0]], np.float32)
    np.testing.assert_allclose(SC(x), 2 / 3, rtol=1e-6)
    assert float(SC(np.array([[100.0, 0.0]], np.float32))) == 1.0
    assert float(SC(x[:1])) == 1.0 and float(SC(x[1:2])) == 0.0
    ce = optax.softmax_cross_entropy_with_integer_labels(x, np.zeros(3, np.int32))
    assert float(ce[0]) == 0.0
    np.testing.assert_allclose(ce[1], 1.1920928e-07, rtol=1e-6)
    np.testing.assert_allclose(ZL(x, np.zeros(3, np.int32)), 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(ZL(jax.nn.one_hot(np.zeros(3, np.int32), 3) * 0 + x,
                                  jax.nn.one_hot(np.zeros(3, np.int32), 3)), 2 / 3,
                               rtol=1e-6)


def test_collapse_depends_on_dtype_and_masks():
    x = np.array([[0.0, -6.0, -20.0]], np.float32)
    assert float(SC(x)) == 0.0
    assert float(SC(jnp.asarray(x, jnp.bfloat16))) == 1.0  # bf16: half-ulp of 1 is 2^-8
    assert float(SC(x, dtype=jnp.bfloat16)) == 1.0
    with jax.enable_x64(True):
        assert float(SC(np.array([[0.0, -17.0, -20.0]]))) == 0.0  # float64 does not collapse
    x2 = np.array([[0, -16, -20], [0, -17, -20]], np.float32)
    assert float(SC(x2, where=np.array([True, False]))) == 0.0
    cm = np.array([[True, False, True], [True, True, True]])
    assert float(SC(x2, where=cm)) == 1.0  # dropping the -16 class collapses row 0
    assert float(SC(x2, where=np.zeros(2, bool))) == 0.0
    assert float(jax.grad(lambda z: SC(z))(jnp.asarray(x2)).sum()) == 0.0


def test_zero_loss_fraction_from_losses():
    losses = np.array([0.0, 1e-30, 0.0, 2.0], np.float32)
    assert float(ZL(losses)) == 0.5
    assert float(ZL(losses, where=np.array([True, True, False, False]))) == 0.5
    assert float(ZL(losses, where=np.zeros(4, bool))) == 0.0
    with pytest.raises(ValueError, match="where"):
        zero_loss_fraction(losses, where=np.ones(3, bool))
    with pytest.raises(TypeError, match="values"):
        zero_loss_fraction(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="labels"):
        zero_loss_fraction(np.zeros((3, 4), np.float32), np.zeros(2, np.int32))
