"""Chain-order traps and bad arguments of the SAM family: each used to train silently wrong.

Ordering rule (README "Ten lines"): a two-pass SAM transform is the first member of its chain,
a complete optimizer (msam) or a transform that reads the final update (mesa) the last one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lossjax import sharpness as S

W = jnp.array([1.0, -2.0])


def quad(w):
    return 0.5 * jnp.sum(w**2)


gquad = jax.grad(quad)
ident = lambda p: p  # noqa: E731  the gradient of ½‖w‖²

TWO_PASS = {
    "sam": lambda: S.sam(0.1),
    "asam": lambda: S.asam(0.1),
    "aace_sam": lambda: S.aace_sam(0.2),
    "gsam": lambda: S.gsam(0.1, alpha=0.3),
    "friendly_sam": lambda: S.friendly_sam(0.1),
    "looksam": lambda: S.looksam(0.1, k=2),
}


# --- SAM after something else -------------------------------------------------------------------


def test_aace_sam_after_sgd_is_refused_and_the_documented_order_still_works():
    w = jnp.array([1.0])
    # the example: with sgd first, aace_sam returned +1.02 (gradient ascent)
    bad = optax.chain(optax.sgd(0.1), S.aace_sam(0.2))
    with pytest.raises(ValueError, match=r"FIRST transformation.*number 2 of 2"):
        bad.update(w, bad.init(w), w, grad_fn=ident)
    good = optax.chain(S.aace_sam(rho=0.2), optax.sgd(0.1, momentum=0.9))
    u, _ = good.update(w, good.init(w), w, grad_fn=ident)
    # w_adv = w − ρ g_A = 0.8; SAM gradient = w_adv; first momentum step: u = −0.1 · 0.8
    np.testing.assert_allclose(u, [-0.08], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(TWO_PASS))
def test_weight_decay_before_sam_is_refused(name):
    tx = optax.chain(optax.add_decayed_weights(1e-2), TWO_PASS[name](), optax.sgd(0.1))
    with pytest.raises(ValueError, match=rf"lossjax\.{name} must be the FIRST.*add_decayed_weights"):
        tx.update(gquad(W), tx.init(W), W, grad_fn=gquad)


def test_nested_and_named_chains_and_jit():
    inner = optax.chain(S.sam(0.1), optax.add_decayed_weights(1e-2))
    ok = optax.chain(inner, optax.sgd(0.1))  # SAM first at every level
    ok.update(gquad(W), ok.init(W), W, grad_fn=gquad)
    bad = optax.chain(optax.clip_by_global_norm(1.0), inner, optax.sgd(0.1))
    with pytest.raises(ValueError, match="number 2 of 3"):
        bad.update(gquad(W), bad.init(W), W, grad_fn=gquad)
    named = optax.named_chain(("wd", optax.add_decayed_weights(1e-2)), ("sam", S.sam(0.1)))
    with pytest.raises(ValueError, match="FIRST"):
        named.update(gquad(W), named.init(W), W, grad_fn=gquad)
    # the check runs at trace time, so it also fires under jit
    step = jax.jit(lambda w, s: bad.update(gquad(w), s, w, grad_fn=gquad))
    with pytest.raises(ValueError, match="FIRST"):
        step(W, bad.init(W))


def test_multisteps_around_sam_is_refused():
    tx = optax.MultiSteps(optax.chain(S.sam(0.1), optax.sgd(0.1)), every_k_schedule=2)
    with pytest.raises(ValueError, match="MultiSteps"):
        tx.update(gquad(W), tx.init(W), W, grad_fn=gquad)


# --- grad_fn / updates that are not gradients ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(TWO_PASS))
def test_value_and_grad_or_loss_as_grad_fn(name):
    params = {"a": jnp.ones(2), "b": jnp.full((3,), 0.5)}
    loss = lambda p: quad(p["a"]) + quad(p["b"])  # noqa: E731
    tx = TWO_PASS[name]()
    g = jax.grad(loss)(params)
    with pytest.raises(TypeError, match=r"value_and_grad.*grad_fn=lambda p: jax\.value_and_grad"):
        tx.update(g, tx.init(params), params, grad_fn=jax.value_and_grad(loss))
    with pytest.raises(TypeError, match=r"a scalar, as a loss function gives.*jax\.grad\(loss\)"):
        tx.update(g, tx.init(params), params, grad_fn=loss)
    with pytest.raises(TypeError, match="`updates` is"):
        tx.update(jax.value_and_grad(loss)(params), tx.init(params), params, grad_fn=jax.grad(loss))


# --- msam ----------------------------------------------------------------------------------------


def test_msam_is_keyword_only_last_and_refuses_grad_fn():
    with pytest.raises(TypeError, match=r"keyword arguments only.*learning_rate="):
        S.msam(0.05)
    with pytest.raises(TypeError, match="learning_rate"):
        S.msam(rho=0.1)
    # chained before sgd it used to give +0.01·w on Σw² (ascent)
    tx = optax.chain(S.msam(learning_rate=0.1, rho=0.1), optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"msam must be the LAST.*complete optimizer"):
        tx.update(gquad(W), tx.init(W), W)
    tx = S.msam(learning_rate=0.1, rho=0.1)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(gquad(W), tx.init(W), W, grad_fn=gquad)
    # gradient transforms before it are fine: clip then msam == msam on the clipped gradient
    tx = optax.chain(optax.clip_by_global_norm(1.0), S.msam(learning_rate=0.1, rho=0.0, momentum=0.0))
    u, _ = tx.update(gquad(W), tx.init(W), W)
    np.testing.assert_allclose(u, -0.1 * W / jnp.linalg.norm(W), rtol=1e-6)


# --- MESA ----------------------------------------------------------------------------------------


def test_mesa_first_is_refused_unless_it_averages_params():
    tx = optax.chain(S.mesa(decay=0.5), optax.sgd(1.0))
    with pytest.raises(ValueError, match=r"mesa must be the LAST.*after_update=False"):
        tx.update(gquad(W), tx.init(W), W)
    tx = optax.chain(S.mesa(decay=0.5, after_update=False), optax.sgd(1.0))
    _, s = tx.update(gquad(W), tx.init(W), W)
    np.testing.assert_allclose(S.mesa_params(s), W, rtol=1e-6)  # EMA of the incoming params


# --- radius ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -0.1])
def test_all_seven_refuse_a_non_finite_or_negative_rho(bad):
    makers = [
        lambda r: S.sam(r), lambda r: S.asam(r), lambda r: S.aace_sam(r), lambda r: S.gsam(r),
        lambda r: S.friendly_sam(r), lambda r: S.looksam(r), lambda r: S.msam(learning_rate=0.1, rho=r),
    ]
    for make in makers:
        with pytest.raises(ValueError, match="`rho` must be finite and >= 0"):
            make(bad)
    with pytest.raises(ValueError, match="rho"):
        S.sam_gradient(W, W, gquad, rho=float("inf"))
    with pytest.raises(ValueError, match="rho_max"):
        S.gsam_rho_schedule(optax.constant_schedule(0.1), rho_max=float("inf"), rho_min=0.0, lr_max=0.1, lr_min=0.0)
