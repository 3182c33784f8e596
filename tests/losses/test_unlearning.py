"""unlearning_joint_loss: NumPy float64 restatement of −α·CE_forget + β·(CE or KL)_retain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.unlearning import unlearning_joint_loss


def _ls(x):
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_joint(xf, yf, xr, tr, retain="ce", a=1.0, b=1.0, cap=None):
    cf = -np.take_along_axis(_ls(xf), yf[..., None], -1).mean()
    cf = cf if cap is None else min(cf, cap)
    if retain == "ce":
        r = -np.take_along_axis(_ls(xr), tr[..., None], -1).mean()
    else:
        q = np.exp(_ls(tr))
        r = (q * (_ls(tr) - _ls(xr))).sum(-1).mean()
    return -a * cf + b * r


def test_float64_oracle_and_gradients():
    rng = np.random.default_rng(10)
    xf, xr, ref = rng.normal(size=(2, 3, 5)), rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    yf, yr = rng.integers(0, 5, size=(2, 3)), rng.integers(0, 5, size=4)
    with jax.enable_x64(True):

        @jax.jit
        def run(xf, xr):
            f_ce = lambda a, b: unlearning_joint_loss(a, jnp.asarray(yf), b, jnp.asarray(yr),  # noqa: E731
                                                      forget_weight=0.7, retain_weight=2.0)
            f_kl = lambda a, b: unlearning_joint_loss(a, jnp.asarray(yf), b, jnp.asarray(ref), retain="kl")  # noqa: E731
            capped = jax.value_and_grad(
                lambda a: unlearning_joint_loss(a, jnp.asarray(yf), xr, jnp.asarray(yr), forget_cap=0.5))(xf)
            return (jax.value_and_grad(f_ce, argnums=(0, 1))(xf, xr), jax.value_and_grad(f_kl, argnums=(0, 1))(xf, xr),
                    capped, unlearning_joint_loss(xf, jnp.asarray(yf), xr, jnp.asarray(ref), retain="kl",
                                                  retain_weight=1.0, forget_weight=0.0))

        (v1, g1), (v2, g2), (vc, gc), v_kl_only = run(jnp.asarray(xf), jnp.asarray(xr))
    np.testing.assert_allclose(v1, _np_joint(xf, yf, xr, yr, a=0.7, b=2.0), rtol=1e-12)
    fd_f = fd_grad(lambda a: _np_joint(a, yf, xr, yr, a=0.7, b=2.0), xf)
    fd_r = fd_grad(lambda b: _np_joint(xf, yf, b, yr, a=0.7, b=2.0), xr)
    np.testing.assert_allclose(g1[0], fd_f, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g1[1], fd_r, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(v2, _np_joint(xf, yf, xr, ref, "kl"), rtol=1e-12)
    np.testing.assert_allclose(g2[1], fd_grad(lambda b: _np_joint(xf, yf, b, ref, "kl"), xr), rtol=1e-6, atol=1e-9)
    assert _np_joint(xf, yf, xr, yr) < _np_joint(xf, yf, xr, yr, cap=10.0) + 1e-12  # sanity of the oracle
    np.testing.assert_allclose(vc, _np_joint(xf, yf, xr, yr, cap=0.5), rtol=1e-12)
    assert float(np.abs(gc).max()) == 0.0  # forget CE above the cap: the ascent stops
    np.testing.assert_allclose(v_kl_only, _np_joint(xf, yf, xr, ref, "kl", a=0.0), rtol=1e-12)
    # the gradient on the forget logits is the negated CE gradient (ascent)
    p = np.exp(_ls(xf))
    np.testing.assert_allclose(g2[0], -(p - np.eye(5)[yf]) / 6, atol=1e-12)


def test_masks_nan_errors():
    f = jnp.zeros((2, 4)).at[1, 0].set(jnp.nan)
    r = jnp.zeros((3, 4))
    v = unlearning_joint_loss(f, jnp.array([0, 1]), r, jnp.array([0, 1, 2]), where_forget=jnp.array([True, False]))
    assert float(v) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(unlearning_joint_loss(f, jnp.array([0, 1]), r, jnp.array([0, 1, 2])))
    with pytest.raises(ValueError, match="forget_labels"):
        unlearning_joint_loss(f, jnp.array([0, 4]), r, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="retain"):
        unlearning_joint_loss(f, jnp.array([0, 1]), r, jnp.array([0, 1, 2]), retain="mse")
    with pytest.raises(TypeError, match="retain_targets"):
        unlearning_joint_loss(f, jnp.array([0, 1]), r, jnp.array([0, 1, 2]), retain="kl")
