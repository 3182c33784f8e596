"""GSAM, Friendly-SAM, LookSAM, Momentum-SAM, SAM-ON: acceptance check 14 of docs/design/sam_family.md §5."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lossjax.sharpness import friendly_sam, gsam, looksam, msam, msam_params, sam

A = jnp.array([1.0, 10.0])
f = lambda w: 0.5 * jnp.sum(A * w**2) + jnp.sum(jnp.sin(3 * w))  # noqa: E731
quad = lambda w: 0.5 * jnp.sum(A * w**2)  # noqa: E731
g = jax.grad(f)


def run(tx, steps=6, w0=(1.0, 1.0)):
    w0 = jnp.asarray(w0)

    @jax.jit
    def go(w):
        def body(c, _):
            w, s = c
            u, s = tx.update(g(w), s, w, grad_fn=g)
            w = optax.apply_updates(w, u)
            return (w, s), w

        return jax.lax.scan(body, (w, tx.init(w)), None, length=steps)[1]

    return go(w0)


def sgd_chain(t):
    return optax.chain(t, optax.sgd(0.05, momentum=0.9))


def test_gsam_closed_form_and_reduction():
    w = jnp.ones(2)
    gq = jax.grad(quad)
    out, _ = gsam(0.1, alpha=0.5).update(gq(w), gsam(0.1).init(w), w, grad_fn=gq)
    np.testing.assert_allclose(out, [0.96956666, 10.99874664], atol=1e-6)
    # g_perp from GSAM's decomposition (Zhuang et al. 2022): g_adv − out = α g_⊥
    g_adv = jnp.array([1.0099503719, 10.9950371902])
    np.testing.assert_allclose((g_adv - out) / 0.5, [0.08076742, -0.00741890], atol=1e-6)
    np.testing.assert_allclose(run(sgd_chain(gsam(0.1, alpha=0.0))), run(sgd_chain(sam(0.1))), rtol=1e-6)


def test_gsam_rho_follows_lr():
    from lossjax.sharpness import gsam_rho_schedule

    lr = optax.linear_schedule(0.1, 0.0, 100)
    rs = gsam_rho_schedule(lr, rho_max=0.6, rho_min=0.1, lr_max=0.1, lr_min=0.0)
    np.testing.assert_allclose([rs(0), rs(50), rs(100)], [0.6, 0.35, 0.1], atol=1e-6)


def test_friendly_sam_reductions_and_momentum():
    np.testing.assert_allclose(run(sgd_chain(friendly_sam(0.1, sigma=0.0))), run(sgd_chain(sam(0.1))), rtol=1e-6)
    # second step perturbs along g2 − σ m1 with m1 = g1 (first step sets m = g)
    w = jnp.array([1.0, 1.0])
    tx = friendly_sam(0.1, sigma=1.0, lmbda=0.6)
    s = tx.init(w)
    g1 = g(w)
    _, s = tx.update(g1, s, w, grad_fn=g)
    np.testing.assert_allclose(s.momentum, g1, rtol=1e-6)
    w2 = jnp.array([0.5, -0.2])
    eps_seen = tx.update(g(w2), s, w2, grad_fn=lambda p: p - w2)[0]
    d = g(w2) - g1
    np.testing.assert_allclose(eps_seen, 0.1 * d / jnp.linalg.norm(d), atol=1e-6)
    _, s2 = tx.update(g(w2), s, w2, grad_fn=g)
    np.testing.assert_allclose(s2.momentum, 0.6 * g1 + 0.4 * g(w2), rtol=1e-6)


def test_looksam_k1_is_sam_and_reuse_step():
    np.testing.assert_allclose(run(sgd_chain(looksam(0.1, k=1))), run(sgd_chain(sam(0.1))), rtol=1e-6)
    w = jnp.array([1.0, 1.0])
    tx = looksam(0.1, k=3, alpha=0.7)
    s = tx.init(w)
    calls = []

    def gf(p):
        calls.append(1)
        return g(p)

    ga, s = tx.update(g(w), s, w, grad_fn=gf)
    gv = ga - jnp.vdot(ga, g(w)) / jnp.vdot(g(w), g(w)) * g(w)
    np.testing.assert_allclose(s.direction, gv / jnp.linalg.norm(gv), rtol=1e-5)
    np.testing.assert_allclose(jnp.vdot(s.direction, g(w)) / jnp.linalg.norm(g(w)), 0.0, atol=1e-5)
    w2 = jnp.array([0.9, 0.3])
    out, s = tx.update(g(w2), s, w2, grad_fn=gf)  # reuse step
    np.testing.assert_allclose(out, g(w2) + 0.7 * jnp.linalg.norm(g(w2)) * gv / jnp.linalg.norm(gv), rtol=1e-5)
    assert float(s.perturbation_norm) == 0.0


@pytest.mark.parametrize("mom", [0.0, 0.9])
def test_msam_rho_zero_is_sgd_momentum(mom):
    tx1, tx2 = msam(learning_rate=0.05, rho=0.0, momentum=mom), optax.sgd(0.05, momentum=mom)

    @jax.jit
    def go(w):
        def body(c, _):
            w1, s1, w2, s2 = c
            u1, s1 = tx1.update(g(msam_params(s1, w1)), s1, w1)
            u2, s2 = tx2.update(g(w2), s2, w2)
            return (optax.apply_updates(w1, u1), s1, optax.apply_updates(w2, u2), s2), None

        c, _ = jax.lax.scan(body, (w, tx1.init(w), w, tx2.init(w)), None, length=10)
        return c[0], c[2]

    a, b = go(jnp.array([1.0, -0.5]))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_msam_perturbed_point_and_weight_decay():
    w = jnp.array([1.0, 2.0])
    tx = msam(learning_rate=0.1, rho=0.5, momentum=0.9, weight_decay=0.01)
    s = tx.init(w)
    np.testing.assert_array_equal(msam_params(s, w), w)  # v = 0 at the start
    _, s = tx.update(jnp.array([3.0, 4.0]), s, w)
    np.testing.assert_allclose(s.momentum, [3.01, 4.02], rtol=1e-6)
    v = s.momentum
    np.testing.assert_allclose(msam_params(s, w), w - 0.5 * v / jnp.linalg.norm(v), rtol=1e-6)
    wt = msam_params(s, w)
    u, s2 = tx.update(jnp.zeros(2), s, w)
    np.testing.assert_allclose(s2.momentum, 0.9 * v + 0.01 * wt, rtol=1e-6)
    np.testing.assert_allclose(u, -0.1 * s2.momentum, rtol=1e-6)
