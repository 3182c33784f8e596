"""Tests of the two z-losses (lossjax.losses.zloss): de Brébisson & Vincent 2016; PaLM 2022."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _partb_checks import X34, Y3, run_battery
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossjax.losses.zloss import (
    cross_entropy_with_z_loss,
    logsumexp_squared_penalty,
    spherical_z_loss,
)

TV_X = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
TV_Y = np.array([0, 1], np.int32)

SZ = jax.jit(spherical_z_loss, static_argnames=("a", "b", "eps", "axis"))
LP = jax.jit(logsumexp_squared_penalty, static_argnames=("axis",))
CEZ = jax.jit(cross_entropy_with_z_loss, static_argnames=("z_loss", "axis"))


def _np_spherical(x, y, a=1.0, b=0.0, eps=1e-12):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    sd = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True))
    z = (x - mu) / (sd + eps)
    zy = np.take_along_axis(z, np.asarray(y)[..., None], -1)[..., 0]
    return np.logaddexp(0.0, a * (b - zy)) / a, zy


# ------------------------------------------------------------------ spherical Z-loss


def test_spherical_golden_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(TV_X)
        np.testing.assert_allclose(SZ(x, TV_Y), [0.2528979777, 1.3957257418],
                                   rtol=1e-9)
        np.testing.assert_allclose(SZ(x, TV_Y, a=0.5, b=1.0),
                                   [1.2672353618, 2.7083957665], rtol=1e-9)
        _, zy = _np_spherical(TV_X, TV_Y)
        np.testing.assert_allclose(zy, [1.2456566608, -1.1111677990], rtol=1e-9)


def test_spherical_float32_matches_numpy_oracle():
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32) * 3
    y = np.array([0, 6, 2, 3, 1], np.int32)
    for a, b in [(1.0, 0.0), (0.5, 1.0), (4.0, -0.5)]:
        np.testing.assert_allclose(SZ(x, y, a=a, b=b), _np_spherical(x, y, a, b)[0],
                                   rtol=2e-6, atol=1e-7)


def test_spherical_affine_invariance_and_limits():
    x = X34
    base = SZ(x, Y3)
    np.testing.assert_allclose(SZ(3 * x + 7, Y3), base, rtol=1e-5)
    np.testing.assert_allclose(SZ(0.25 * x - 3.0, Y3), base, rtol=1e-5)
    np.testing.assert_allclose(SZ(1e30 * x, Y3), base, rtol=1e-5)
    # negative scale is NOT an invariance (it flips the order)
    assert not np.allclose(SZ(-x, Y3), base)
    # L -> 0 as a (z_y - b) -> inf: make label the argmax with z_y > b = 0
    y_top = np.argmax(x, -1).astype(np.int32)
    assert np.all(SZ(x, y_top, a=200.0) < 1e-6)
    # constant rows: z = 0, L = softplus(a b)/a; gradient finite
    c = np.full((2, 5), 3.25, np.float32)
    np.testing.assert_allclose(SZ(c, np.array([0, 4]), a=2.0, b=0.5),
                               np.log1p(np.e) / 2.0, rtol=1e-6)
    g = jax.grad(lambda z: SZ(z, jnp.array([0, 4])).sum())(jnp.asarray(c))
    assert np.all(np.isfinite(g))


def test_spherical_bounded_range_and_gradient():
    x = np.random.default_rng(3).normal(size=(64, 6)).astype(np.float32) * 10
    y = np.random.default_rng(4).integers(0, 6, 64).astype(np.int32)
    zy_max = np.sqrt(5.0)
    loss = SZ(x, y)
    assert np.all(loss >= np.log1p(np.exp(-zy_max)) - 1e-6)
    assert np.all(loss <= np.log1p(np.exp(zy_max)) + 1e-6)


def test_spherical_soft_labels_class_mask_and_excluded_classes():
    x = X34
    np.testing.assert_allclose(SZ(x, jax.nn.one_hot(Y3, 4)), SZ(x, Y3),
                               rtol=1e-6)
    t = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75], [1, 0, 0, 0]], np.float32)
    per = np.stack([SZ(x, np.full(3, k, np.int32)) for k in range(4)], -1)
    np.testing.assert_allclose(SZ(x, t), (t * per).sum(-1), rtol=1e-6)
    # a per-class mask is the same as deleting the class
    cm = np.ones((3, 4), bool)
    cm[:, 2] = False
    y = np.array([0, 3, 1], np.int32)
    y_red = np.array([0, 2, 1], np.int32)
    red = SZ(np.delete(x, 2, axis=1), y_red)
    np.testing.assert_allclose(SZ(x, y, where=cm), red, rtol=1e-6)


def test_spherical_nonfinite_limits():
    """A −inf logit is a class of probability 0, not a mask (docs/conventions.md): as x_j → −∞,
    μ ≈ −L/K and σ ≈ L√(K−1)/K, so z_k → 1/√(K−1) for the finite classes and z_j → −√(K−1)
    (hand-derived), with zero gradient; no finite class: NaN; ±3e38 equals the float64 value."""
    xi = np.array(X34)
    xi[:, 2] = -np.inf
    y = np.array([0, 2, 1], np.int32)  # row 1: the label is the −inf class
    want = np.log1p(np.exp([-1 / np.sqrt(3), np.sqrt(3), -1 / np.sqrt(3)]))
    val, g = jax.value_and_grad(lambda z: jnp.sum(SZ(z, y)))(jnp.asarray(xi))
    np.testing.assert_allclose(SZ(xi, y), want, rtol=1e-6)
    np.testing.assert_array_equal(g, 0.0)
    assert np.isnan(SZ(np.full((1, 4), -np.inf, np.float32), np.array([0]))[0])
    big = np.array([[3e38, -3e38, 0.0, 1.0], [-3e38, 3e38, 3e38, -1.0], [1e30, -2e30, 0.0, 5e29]], np.float32)
    # scale invariance is the oracle: the same rows divided by 3e38, 3e38 and 5e29
    small = np.array([[1.0, -1.0, 0.0, 0.0], [-1.0, 1.0, 1.0, 0.0], [2.0, -4.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(SZ(big, Y3), SZ(small, Y3), rtol=1e-6)
    g = jax.grad(lambda z: jnp.sum(SZ(z, Y3)))(jnp.asarray(big))
    assert np.all(np.isfinite(g)) and np.all(np.abs(g) < 1e-29)  # (1/scale)·∇L(small)
    # the (log Z)² penalty: gradient 2·log Z·softmax, the overflowing 2·3e38 only where p = 1
    pen = jax.grad(lambda z: jnp.sum(logsumexp_squared_penalty(z)))
    np.testing.assert_array_equal(pen(jnp.asarray(big[:1])), [[np.inf, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(pen(jnp.array([[1e18, -1e18, 0.0, 1.0]])), [[2e18, 0.0, 0.0, 0.0]], rtol=1e-6)


def test_spherical_battery():
    v1, g1 = run_battery(spherical_z_loss)
    np.testing.assert_allclose(v1, np.log(2.0), rtol=1e-6)  # K=1: z = 0
    np.testing.assert_allclose(g1, 0.0)


def test_spherical_bad_hyperparameters():
    with pytest.raises(ValueError, match="`a`"):
        spherical_z_loss(X34, Y3, a=0.0)
    with pytest.raises(ValueError, match="`eps`"):
        spherical_z_loss(X34, Y3, eps=-1.0)
    with pytest.raises(ValueError, match="axis"):
        spherical_z_loss(X34, Y3, axis=3)


def test_spherical_axis_argument():
    np.testing.assert_allclose(SZ(X34.T, Y3, axis=0), SZ(X34, Y3),
                               rtol=1e-6)


# ------------------------------------------------------------------ log Z penalty / T5X z-loss


def test_penalty_golden_and_gradient_formula():
    with jax.enable_x64(True):
        x = jnp.asarray(TV_X)
        pen = LP(x)
        np.testing.assert_allclose(np.sqrt(pen), [2.4170300163, 3.0956743294], rtol=1e-10)
        np.testing.assert_allclose(1e-4 * pen, [5.842034e-4, 9.58320e-4], rtol=1e-5)
        g = jax.grad(lambda z: LP(z).sum())(x)
        lse = jax.scipy.special.logsumexp(x, axis=-1, keepdims=True)
        np.testing.assert_allclose(g, 2 * lse * jax.nn.softmax(x), rtol=1e-10)


def test_penalty_zero_iff_normalised_and_not_shift_invariant():
    x = jnp.asarray(X34)
    np.testing.assert_allclose(LP(jax.nn.log_softmax(x)), 0.0, atol=1e-10)
    assert np.all(np.abs(LP(x + 1.0) - LP(x)) > 1e-3)


def test_penalty_masks_and_extremes():
    x = jnp.asarray(X34)
    cm = np.ones((3, 4), bool)
    cm[:, 1] = False
    np.testing.assert_allclose(LP(x, where=cm),
                               LP(np.delete(X34, 1, axis=1)), rtol=1e-6)
    rows = np.array([True, False, True])
    out = LP(x, where=rows)
    assert out[1] == 0.0
    cm_empty = np.zeros((3, 4), bool)
    val, g = jax.value_and_grad(lambda z: LP(z, where=cm_empty).sum())(x)
    assert float(val) == 0.0 and np.all(g == 0.0)
    xe = jnp.array([[1e4, 0.0], [-jnp.inf, -jnp.inf]])
    val = LP(xe)
    np.testing.assert_allclose(val, [1e8, 0.0], rtol=1e-6)
    g = jax.grad(lambda z: LP(z).sum())(xe)
    assert np.all(np.isfinite(g))
    xb = jnp.asarray(X34, jnp.bfloat16)
    np.testing.assert_allclose(LP(xb),
                               LP(xb.astype(jnp.float32)), rtol=1e-6)
    with pytest.raises(TypeError, match="logits"):
        logsumexp_squared_penalty(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="where"):
        LP(x, where=np.ones((4,), bool))


def _total(x, y, where=None):
    return cross_entropy_with_z_loss(x, y, z_loss=1e-2, where=where)[0]


def test_ce_with_z_loss_parts():
    total, aux = CEZ(X34, Y3)
    ce = optax.softmax_cross_entropy_with_integer_labels(X34, Y3)
    np.testing.assert_allclose(total - aux, ce, rtol=1e-5)
    np.testing.assert_allclose(aux, 1e-4 * LP(X34), rtol=1e-6)
    t = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75], [1, 0, 0, 0]], np.float32)
    total_s, aux_s = CEZ(X34, t, z_loss=0.0)
    np.testing.assert_allclose(total_s, optax.softmax_cross_entropy(X34, t), rtol=1e-5)
    np.testing.assert_allclose(aux_s, 0.0)
    with pytest.raises(ValueError, match="z_loss"):
        cross_entropy_with_z_loss(X34, Y3, z_loss=-1.0)
    with jax.enable_x64(True):
        tot, aux = CEZ(jnp.asarray(TV_X), TV_Y)
        np.testing.assert_allclose(tot, [0.4170300163 + 5.8420341e-4, 4.0956743294 + 9.5832e-4],
                                   rtol=1e-6)


def test_ce_with_z_loss_battery():
    v1, g1 = run_battery(_total)
    np.testing.assert_allclose(v1, 1e-2 * np.array([9.0, 4.0]), rtol=1e-6)  # CE = 0 at K = 1


_stab = jax.jit(jax.value_and_grad(
    lambda x, y: jnp.sum(SZ(x, y) + _total(x, y))))


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (3, 4), elements=st.floats(-1e4, 1e4, width=32)))
def test_stability_hypothesis(x):
    val, g = _stab(x, Y3)
    assert np.isfinite(val) and np.all(np.isfinite(g))
