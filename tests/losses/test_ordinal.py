"""ordinal_logits / ordinal_cross_entropy_loss (Rasch partial-credit model): NumPy float64 oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.ordinal import ordinal_cross_entropy_loss, ordinal_logits


def _np_ce(s, tau, y):
    """Masters' partial-credit model, written from P(x) ∝ exp Σ_{j≤x}(β − δ_j) with a loop."""
    out = []
    for i in range(len(s)):
        t = tau if tau.ndim == 1 else tau[i]
        z = [0.0]
        for k in range(len(t)):
            z.append(z[-1] + s[i] - t[k])
        z = np.array(z)
        out.append(np.log(np.exp(z).sum()) - z[y[i]])
    return np.array(out)


def test_float64_oracle_gradients_and_properties():
    rng = np.random.default_rng(1)
    s, tau, tau_b = rng.normal(size=4), np.sort(rng.normal(size=3)), rng.normal(size=(4, 3))
    y = np.array([0, 3, 1, 2])
    soft = rng.dirichlet(np.ones(4), size=4)
    with jax.enable_x64(True):

        @jax.jit
        def run(s, tau, tau_b):
            f = lambda a, b: ordinal_cross_entropy_loss(a, b, jnp.asarray(y)).sum()  # noqa: E731
            v, (gs, gt) = jax.value_and_grad(f, argnums=(0, 1))(s, tau)
            vb = ordinal_cross_entropy_loss(s, tau_b, jnp.asarray(y))
            vs = ordinal_cross_entropy_loss(s, tau, jnp.asarray(soft))
            return v, gs, gt, vb, vs, ordinal_logits(s, tau)

        v, gs, gt, vb, vs, z = run(jnp.asarray(s), jnp.asarray(tau), jnp.asarray(tau_b))
    np.testing.assert_allclose(v, _np_ce(s, tau, y).sum(), rtol=1e-12)
    np.testing.assert_allclose(vb, _np_ce(s, tau_b, y), rtol=1e-12)  # per-example thresholds
    np.testing.assert_allclose(gt, fd_grad(lambda t: _np_ce(s, t, y).sum(), tau), rtol=1e-6, atol=1e-9)
    # ∂ℓ/∂s = E_P[k] − y (the ordinal pull towards the labelled rank)
    z = np.asarray(z)
    P = np.exp(z - np.log(np.exp(z).sum(-1, keepdims=True)))
    np.testing.assert_allclose(gs, P @ np.arange(4) - y, atol=1e-12)
    # adjacent-category log-odds are linear in s: log P(k)/P(k−1) = s − τ_k
    np.testing.assert_allclose(np.diff(np.log(P), axis=-1), s[:, None] - tau[None, :], atol=1e-12)
    # soft labels: the expectation over classes
    per_class = np.stack([_np_ce(s, tau, np.full(4, k)) for k in range(4)], -1)
    np.testing.assert_allclose(vs, (soft * per_class).sum(-1), rtol=1e-12)


def test_dichotomous_rasch_masks_nan_errors():
    s = jnp.array([0.3, -1.0, jnp.nan, 2.0])
    tau = jnp.array([0.5])

    @jax.jit
    def run(s):
        v = ordinal_cross_entropy_loss(s, tau, jnp.array([1, 0, 1, 1]), where=jnp.array([True, True, True, False]))
        g = jax.grad(lambda a: ordinal_cross_entropy_loss(a, tau, jnp.array([1, 0, 1, 1]),
                                                          where=jnp.array([True, True, False, True])).sum())(s)
        return v, g, jax.vmap(lambda a: ordinal_cross_entropy_loss(a, tau, jnp.array(1)))(s)

    v, g, vv = run(s)
    # K = 2 is the logistic Rasch model: P(1) = σ(s − τ)
    np.testing.assert_allclose(v[0], np.log1p(np.exp(-(0.3 - 0.5))), rtol=1e-6)
    np.testing.assert_allclose(v[1], np.log1p(np.exp(-1.0 - 0.5)), rtol=1e-6)
    np.testing.assert_allclose(vv[0], v[0], rtol=1e-6)
    assert np.isnan(v[2]) and float(v[3]) == 0.0
    assert np.all(np.isfinite(g)) and float(g[2]) == 0.0
    with pytest.raises(ValueError, match="labels"):
        ordinal_cross_entropy_loss(s, tau, jnp.array([0, 2, 0, 0]))
    with pytest.raises(ValueError, match="thresholds"):
        ordinal_logits(s, jnp.zeros((3, 2)))
    with pytest.raises(TypeError, match="scores"):
        ordinal_logits(jnp.array([1, 2]), tau)
