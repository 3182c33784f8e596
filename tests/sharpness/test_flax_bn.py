"""BatchNorm policy (acceptance check 12): running statistics come from the first pass only."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax.losses.aace import aace_loss
from lossjax.sharpness import aace_sam, flax_sam_grads


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(6)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(3)(nn.relu(x))


def ce(z, y):
    return optax.softmax_cross_entropy_with_integer_labels(z, y)


def test_batch_stats_from_first_pass_only():
    net = Net()
    x = jax.random.normal(jax.random.key(0), (16, 4)) * 3.0 + 1.0
    y = jnp.arange(16) % 3
    v = net.init(jax.random.key(1), x, train=False)
    params, stats = v["params"], v["batch_stats"]
    tx = optax.chain(aace_sam(2.0), optax.sgd(0.1))

    @jax.jit
    def step(params, stats, opt_state):
        g = flax_sam_grads(net.apply, params, {"batch_stats": stats}, x, y, loss_fn=ce,
                           ascent_loss_fn=aace_loss, apply_kwargs={"train": True})
        u, opt_state = tx.update(g.ascent_grads, opt_state, params, grad_fn=g.grad_fn)
        return optax.apply_updates(params, u), g.model_state["batch_stats"], opt_state, g.grad_fn(params)

    new_params, new_stats, _, _ = step(params, stats, tx.init(params))
    # reference: one train-mode forward at w
    fwd = jax.jit(lambda p: net.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])[1])
    ref = fwd(params)
    for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(ref["batch_stats"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)  # jit vs eager ulps
    # a forward at the perturbed point would have given different statistics (the test can fail)
    w_adv = jax.tree.map(lambda p, q: p + 10.0 * (q - p) + 0.5, params, new_params)
    other = fwd(w_adv)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(ref)))
    assert diff > 1e-3
    # params moved
    assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)))


def test_grad_fn_is_train_loss_gradient():
    net = Net()
    x = jax.random.normal(jax.random.key(2), (8, 4))
    y = jnp.arange(8) % 3
    v = net.init(jax.random.key(3), x, train=False)

    def ref_loss(p):
        z, _ = net.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return ce(z, y).mean()

    @jax.jit
    def both(params):
        g = flax_sam_grads(net.apply, params, {"batch_stats": v["batch_stats"]}, x, y, loss_fn=ce,
                           apply_kwargs={"train": True})
        return g.grad_fn(params), g.ascent_grads, g.ascent_loss, jax.grad(ref_loss)(params), ref_loss(params)

    gf, ga, al, ref, rl = both(v["params"])
    for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(ref)):  # ascent = CE by default
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(al, rl, rtol=1e-6)
