"""⊥Grad (Prieto et al., arXiv:2501.04697)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax.sharpness import orthograd


def test_values_orthogonality_norm():
    theta, g = jnp.array([3.0, 4.0]), jnp.array([1.0, 2.0])
    out, _ = orthograd(rescale=False).update(g, None, theta)
    np.testing.assert_allclose(out, [-0.32, 0.24], atol=1e-6)
    out, _ = orthograd().update(g, None, theta)
    np.testing.assert_allclose(out, [-1.7888543820, 1.3416407865], rtol=1e-6)
    params = {"a": jax.random.normal(jax.random.key(0), (4, 5)), "b": jnp.zeros(3)}
    grads = {"a": jax.random.normal(jax.random.key(1), (4, 5)), "b": jnp.array([1.0, -2.0, 0.5])}
    out, _ = orthograd().update(grads, None, params)
    np.testing.assert_allclose(jnp.vdot(out["a"], params["a"]), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(out["a"]), jnp.linalg.norm(grads["a"]), rtol=1e-5)
    np.testing.assert_array_equal(out["b"], grads["b"])  # θ = 0 → unchanged
    # g ∥ θ → zero, no NaN
    out, _ = orthograd().update(2.0 * theta, None, theta)
    assert np.all(np.isfinite(out)) and float(jnp.abs(out).max()) < 1e-5


def test_in_chain_with_adamw():
    tx = optax.chain(orthograd(), optax.adamw(1e-2))
    w = jnp.array([1.0, 2.0])
    u, _ = jax.jit(lambda g, s, w: tx.update(g, s, w))(jnp.array([0.5, 0.1]), tx.init(w), w)
    assert u.shape == (2,)
