"""Tests of lossjax.losses.regression (Farebrother et al., ICML 2024): HL-Gauss, two-hot, C51 projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.stats import norm

from lossjax.losses import regression as R

HL_REF = [5e-06, 1.077e-03, 4.0436e-02, 0.303060, 0.480098, 0.163619, 1.1546e-02, 1.59e-04, 0, 0]


def _np_hl(y, lo, hi, m, sigma):
    e = np.linspace(lo, hi, m + 1)
    y = np.clip(y, lo, hi)
    p = norm.cdf((e[1:] - y) / sigma) - norm.cdf((e[:-1] - y) / sigma)
    return p / (norm.cdf((hi - y) / sigma) - norm.cdf((lo - y) / sigma))


def test_hl_gauss_frozen_and_scipy_f64():
    with jax.enable_x64(True):
        p = R.hl_gauss_probs(np.float64(4.3), v_min=0.0, v_max=10.0, num_bins=10, sigma=0.75)
        np.testing.assert_allclose(p, HL_REF, atol=6e-7)  # reference given to 4-6 digits
        np.testing.assert_allclose(p, _np_hl(4.3, 0, 10, 10, 0.75), atol=1e-12)
        np.testing.assert_allclose(float(p.sum()), 1.0, atol=1e-12)
        np.testing.assert_allclose(float(R.bins_to_value(jnp.log(p), v_min=0.0, v_max=10.0)), 4.3000046, atol=1e-6)
        # y at an endpoint: half-Gaussian, mean biased inward (float64 reference: 0.690)
        p0 = R.hl_gauss_probs(np.float64(0.0), v_min=0.0, v_max=10.0, num_bins=10, sigma=0.75)
        np.testing.assert_allclose(float(R.bins_to_value(jnp.log(p0), v_min=0.0, v_max=10.0)), 0.690, atol=5e-4)
        # default sigma = 0.75 * bin width; vectorised targets incl. out-of-support (clipped)
        ys = np.array([[-3.0, 0.4], [7.7, 12.0]])
        pv = R.hl_gauss_probs(ys, v_min=0.0, v_max=10.0, num_bins=10)
        assert pv.shape == (2, 2, 10)
        for idx in np.ndindex(2, 2):
            np.testing.assert_allclose(pv[idx], _np_hl(ys[idx], 0, 10, 10, 0.75), atol=1e-12)


def test_hl_gauss_upper_tail_no_cancellation():
    # far upper-tail bins: the naive Φ(b) − Φ(a) with Φ ≈ 1 rounds to 0 in float32
    p = R.hl_gauss_probs(jnp.float32(1.0), v_min=0.0, v_max=10.0, num_bins=10, sigma=0.75)
    ref = _np_hl(1.0, 0, 10, 10, 0.75)
    mask = ref > 1e-12
    np.testing.assert_allclose(np.asarray(p)[mask], ref[mask], rtol=1e-4)
    # the 7e-16 bin is resolved (float32 ndtr is ~7% accurate that deep in the tail); the naive
    # difference 1 - 1 gives exactly 0 there
    np.testing.assert_allclose(float(p[7]), ref[7], rtol=0.1)
    assert np.all(np.isfinite(p)) and np.all(np.asarray(p) >= 0)


@settings(max_examples=25, deadline=None)
@given(st.floats(-0.5, 9.5 - 1e-6))
def test_two_hot_readout_recovers_target(y):
    with jax.enable_x64(True):
        p = R.two_hot_probs(np.float64(y), v_min=-1.0, v_max=10.0, num_bins=11)
        c = R.bin_centers(-1.0, 10.0, 11, jnp.float64)
        np.testing.assert_allclose(float(p @ c), y, atol=1e-12)
        np.testing.assert_allclose(float(p.sum()), 1.0, atol=1e-12)
        assert int((np.asarray(p) > 0).sum()) <= 2
        v = R.bins_to_value(jnp.log(p), v_min=-1.0, v_max=10.0)
        np.testing.assert_allclose(float(v), y, atol=1e-12)


def test_two_hot_frozen_and_support():
    p = R.two_hot_probs(jnp.float32(4.3), v_min=0.0, v_max=10.0, num_bins=10)
    np.testing.assert_allclose(p, [0, 0, 0, 0.2, 0.8, 0, 0, 0, 0, 0], atol=1e-6)
    # explicit non-uniform support; clipping outside
    sup = jnp.array([-2.0, 0.0, 1.0, 5.0])
    np.testing.assert_allclose(R.two_hot_probs(jnp.array([3.0, -9.0, 9.0]), support=sup),
                               [[0, 0, 0.5, 0.5], [1, 0, 0, 0], [0, 0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(R.two_hot_probs(jnp.array([3.0]), support=jnp.array([1.0])), [[1.0]])


def test_categorical_projection_conserves_mass_and_mean():
    with jax.enable_x64(True):
        z = np.linspace(-5, 5, 21)
        rng = np.random.default_rng(0)
        q = rng.dirichlet(np.ones(21), size=3)
        tz = 0.3 + 0.9 * z  # inside the support: no clipping
        proj = R.categorical_projection(np.broadcast_to(tz, q.shape), q, support=z)
        np.testing.assert_allclose(proj.sum(-1), 1.0, atol=1e-12)
        np.testing.assert_allclose(proj @ z, q @ tz, atol=1e-12)
        # single atom = two-hot
        one = R.categorical_projection(np.array([[2.3]]), np.array([[1.0]]), support=z)
        np.testing.assert_allclose(one[0], R.two_hot_probs(np.float64(2.3), support=z), atol=1e-12)
        # uniform-support spelling matches the explicit one
        np.testing.assert_allclose(
            R.categorical_projection(tz, q[0], v_min=-5.25, v_max=5.25, num_bins=21),
            R.categorical_projection(tz, q[0], support=z), atol=1e-12)


_hl_jit = jax.jit(lambda x, y, w: R.hl_gauss_loss(x, y, v_min=0.0, v_max=10.0, where=w))


def test_losses_oracle_jit_vmap_where_bf16():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)
    y = jnp.array([4.3, 0.0, 9.9, 5.5], jnp.float32)
    w = jnp.array([True, True, False, True])
    probs = R.hl_gauss_probs(y, v_min=0.0, v_max=10.0, num_bins=10)
    ref = -(np.asarray(probs) * np.asarray(jax.nn.log_softmax(x))).sum(-1)
    np.testing.assert_allclose(R.hl_gauss_loss(x, y, v_min=0.0, v_max=10.0), ref, rtol=1e-6)
    out = _hl_jit(x, y, w)
    np.testing.assert_allclose(out, np.where(w, ref, 0.0), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(_hl_jit)(x[None], y[None], w[None])[0], out, rtol=1e-6)
    # axis handling
    np.testing.assert_allclose(R.hl_gauss_loss(x.T, y, v_min=0.0, v_max=10.0, axis=0), ref, rtol=1e-6)
    # two-hot CE equals the optax soft-label CE
    import optax
    th = R.two_hot_probs(y, v_min=0.0, v_max=10.0, num_bins=10)
    np.testing.assert_allclose(R.two_hot_loss(x, y, v_min=0.0, v_max=10.0),
                               optax.losses.softmax_cross_entropy(x, th), rtol=1e-6)
    # bf16 logits: float32 result of the rounded input
    xb = x.astype(jnp.bfloat16)
    got = R.hl_gauss_loss(xb, y, v_min=0.0, v_max=10.0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, R.hl_gauss_loss(xb.astype(jnp.float32), y, v_min=0.0, v_max=10.0), rtol=1e-6)


def test_extreme_logits_masks_and_gradients():
    x = jnp.array([[1e4, -1e4, 0.0, 0.0, 0.0], [-jnp.inf, 0.0, -jnp.inf, -jnp.inf, -jnp.inf]])
    y = jnp.array([0.5, 1.5])
    fn = jax.jit(jax.value_and_grad(lambda z: R.two_hot_loss(z, y, v_min=0.0, v_max=5.0,
                                                             where=jnp.array([True, False])).sum()))
    v, g = fn(x)
    assert np.isfinite(float(v)) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g[1]), 0.0)
    v2 = R.bins_to_value(x, v_min=0.0, v_max=5.0)
    np.testing.assert_allclose(v2, [0.5, 1.5], atol=1e-6)
    with jax.enable_x64(True):
        xs = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6)))
        ys = jnp.array([0.7, 2.2, 5.9])
        check_grads(jax.jit(lambda z: R.hl_gauss_loss(z, ys, v_min=0.0, v_max=6.0).sum()
                            + R.bins_to_value(z, v_min=0.0, v_max=6.0).sum()), (xs,), order=1, modes=["rev"])


def test_errors():
    x = jnp.zeros((2, 10))
    with pytest.raises(ValueError, match="targets"):
        R.hl_gauss_loss(x, jnp.zeros(3), v_min=0.0, v_max=1.0)
    with pytest.raises(TypeError, match="targets"):
        R.two_hot_loss(x, jnp.zeros(2, jnp.int32), v_min=0.0, v_max=1.0)
    with pytest.raises(ValueError, match="v_max"):
        R.hl_gauss_probs(jnp.zeros(2), v_min=1.0, v_max=0.0, num_bins=3)
    with pytest.raises(ValueError, match="num_bins"):
        R.two_hot_probs(jnp.zeros(2), v_min=0.0, v_max=1.0, num_bins=0)
    with pytest.raises(ValueError, match="sigma"):
        R.hl_gauss_probs(jnp.zeros(2), v_min=0.0, v_max=1.0, num_bins=3, sigma=-1.0)
    with pytest.raises(ValueError, match="support"):
        R.two_hot_probs(jnp.zeros(2), support=jnp.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="support"):
        R.two_hot_loss(x, jnp.zeros(2), support=jnp.arange(4.0))
    with pytest.raises(ValueError, match="atom_probs"):
        R.categorical_projection(jnp.zeros((2, 3)), jnp.zeros((2, 4)), support=jnp.arange(3.0))
    with pytest.raises(TypeError, match="logits"):
        R.bins_to_value(jnp.zeros((2, 3), jnp.int32), v_min=0.0, v_max=1.0)
