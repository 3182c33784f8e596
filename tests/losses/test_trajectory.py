"""trajectory_kl_loss (SAF/MESA): check 15 of docs/design/sam_family.md §5, values, gradient, masks, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lossjax.losses.trajectory import trajectory_kl_loss


def test_values_gradient_and_zero_at_self():
    z = jnp.array([2.0, -1.0, 0.5])
    ref = jnp.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(trajectory_kl_loss(z, ref, tau=5.0), 0.34462882, rtol=3e-6)  # float32 KL: ~16 ulp
    g = jax.grad(lambda q: 0.3 * trajectory_kl_loss(q, ref, tau=5.0))(z)
    np.testing.assert_allclose(g, [0.08639905, -0.10609394, 0.01969490], atol=1e-7)
    assert float(trajectory_kl_loss(z, z)) == 0.0
    # reference gets no gradient
    assert float(jnp.abs(jax.grad(lambda r: trajectory_kl_loss(z, r))(ref)).max()) == 0.0


def test_float64_oracle_and_grad_check():
    with jax.enable_x64(True):
        z = jnp.array([[0.3, -2.0, 1.5, 0.0]], jnp.float64)
        r = jnp.array([[1.0, 0.5, -1.0, 2.0]], jnp.float64)
        tau = 2.0
        q = np.exp(np.asarray(r[0]) / tau) / np.exp(np.asarray(r[0]) / tau).sum()
        lp = np.asarray(z[0]) / tau - np.log(np.exp(np.asarray(z[0]) / tau).sum())
        expected = tau**2 * np.sum(q * (np.log(q) - lp))
        np.testing.assert_allclose(trajectory_kl_loss(z, r, tau=tau)[0], expected, rtol=1e-12)
        check_grads(lambda x: trajectory_kl_loss(x, r, tau=tau), (z,), order=2, modes=["rev"])


def test_masks_extremes_dtypes_vmap():
    z = jnp.array([[1e4, 0.0, -1e4], [0.0, 1.0, 2.0]])
    r = jnp.array([[0.0, 1e4, 0.0], [0.0, 1.0, 2.0]])
    v = trajectory_kl_loss(z, r)
    g = jax.grad(lambda x: trajectory_kl_loss(x, r).sum())(z)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    m = trajectory_kl_loss(z, r, where=jnp.array([False, True]))
    assert float(m[0]) == 0.0
    cm = jnp.array([[True, True, False], [True, True, True]])
    vc = trajectory_kl_loss(z.at[0, 2].set(jnp.inf), r, where=cm)
    assert np.all(np.isfinite(vc))
    assert trajectory_kl_loss(z.astype(jnp.bfloat16), r.astype(jnp.bfloat16)).dtype == jnp.float32
    np.testing.assert_allclose(jax.vmap(trajectory_kl_loss)(z, r), v, rtol=1e-6)
    np.testing.assert_allclose(trajectory_kl_loss(z.T, r.T, axis=0), v, rtol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        trajectory_kl_loss(z, r, tau=0.0)
    with pytest.raises(ValueError, match="targets"):
        trajectory_kl_loss(z, r[:, :2])
