"""A sharded LM train step (MaxText / big_vision style) with lossjax: FSDP + vocab-parallel cross-entropy.

Mesh ``('data', 'fsdp', 'model')`` built by ``jax.make_mesh`` (Explicit axes). The batch is split over
``('data', 'fsdp')``; every weight is FSDP-sharded over ``'fsdp'`` and gathered where it is used; the
output classifier [V, d] is also split over its vocabulary along ``'model'`` and is never gathered over it:
``linear_cross_entropy(..., vocab_axis='model')`` forms each device's logits for its vocabulary shard only
(Megatron-style parallel cross-entropy, Shoeybi et al., arXiv 1909.08053; Cut Cross-Entropy tiles, Wijmans
et al., arXiv 2411.09009). Two train steps:

* ``adamw_step``: one forward/backward and ``optax.adamw``;
* ``sam_step``: the same plus ``lossjax.sam`` in front of AdamW (Foret et al., ICLR 2021), which calls the
  ``grad_fn=`` it is given at the perturbed weights (the second pass on the same batch).

Run (8 simulated CPU devices; on real accelerators drop the flag)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/sharded_lm_step.py --mesh 2,2,2

It prints one JSON line with the per-step losses; ``--compare_single`` also runs the same steps on one
device (a 1x1x1 mesh) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lossjax  # noqa: E402

VOCAB, DIM, SEQ, BATCH = 500, 32, 16, 8  # V = 500 is split evenly over a model axis of 1, 2 or 4

# parameter name -> (shape, sharding): FSDP over 'fsdp'; the classifier also vocab-parallel over 'model'
PARAMS = {
    "embed": ((VOCAB, DIM), P(None, "fsdp")),
    "w_in": ((DIM, 4 * DIM), P("fsdp", None)),
    "w_out": ((4 * DIM, DIM), P(None, "fsdp")),
    "cls": ((VOCAB, DIM), P("model", "fsdp")),
}
BATCH_SPEC = P(("data", "fsdp"), None)


def init_params(mesh, seed: int = 0):
    """Random weights placed with their shardings (from NumPy, so every mesh gets the same values)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, spec) in PARAMS.items():
        w = (rng.standard_normal(shape) / np.sqrt(shape[-1] if name != "w_in" else shape[0])).astype(np.float32)
        out[name] = jax.device_put(w, jax.sharding.NamedSharding(mesh, spec))
    return out


def make_batch(mesh, step: int):
    """Sequences with a learnable rule (t_{i+1} = 7 t_i + 3 mod V) from random starts; split over the batch."""
    rng = np.random.default_rng(100 + step)
    tokens = np.zeros((BATCH, SEQ), np.int32)
    tokens[:, 0] = rng.integers(0, VOCAB, BATCH)
    for i in range(1, SEQ):
        tokens[:, i] = (7 * tokens[:, i - 1] + 3) % VOCAB
    return jax.device_put(tokens, jax.sharding.NamedSharding(mesh, BATCH_SPEC))


def loss_fn(params, tokens):
    """Next-token loss of a one-block embedding + MLP LM; the head is the vocab-parallel linear CE."""
    embed = jax.sharding.reshard(params["embed"], P())  # FSDP: gather the weights where they are used
    w_in = jax.sharding.reshard(params["w_in"], P())
    w_out = jax.sharding.reshard(params["w_out"], P())
    h = embed.at[tokens].get(out_sharding=P(*BATCH_SPEC, None))  # [B, T, d], rows split like the batch
    h = h + jax.nn.gelu(h @ w_in) @ w_out
    # targets are the tokens themselves: shift=1 scores position p against token p + 1
    return lossjax.linear_cross_entropy(h, params["cls"], tokens, shift=1, vocab_axis="model")


def make_steps(lr: float = 3e-2, rho: float = 0.05):
    """``(tx, adamw_step)`` and ``(tx_sam, sam_step)``: jitted ``(params, opt_state, tokens) -> (...)``."""
    tx = optax.adamw(lr, weight_decay=1e-4)
    tx_sam = optax.chain(lossjax.sam(rho), optax.adamw(lr, weight_decay=1e-4))

    @jax.jit
    def adamw_step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def sam_step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        grad_fn = jax.grad(lambda p: loss_fn(p, tokens))  # the loss on the same batch, at SAM's w + eps
        updates, opt_state = tx_sam.update(grads, opt_state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), opt_state, loss

    return (tx, adamw_step), (tx_sam, sam_step)


def train(mesh, steps: int) -> dict:
    """Losses of ``steps`` AdamW steps and ``steps`` SAM + AdamW steps, from the same initial weights."""
    out = {}
    with jax.set_mesh(mesh):
        for name, (tx, step) in zip(("adamw", "sam"), make_steps()):
            params = init_params(mesh)
            opt_state = tx.init(params)
            losses = []
            for i in range(steps):
                params, opt_state, loss = step(params, opt_state, make_batch(mesh, i))
                losses.append(float(loss))
            out[name] = losses
            out[name + "_cls_grad_spec"] = str(tuple(jax.typeof(params["cls"]).sharding.spec))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="sharded LM train step with lossjax (FSDP + vocab-parallel CE)")
    ap.add_argument("--mesh", default="2,2,2", help="sizes of the ('data', 'fsdp', 'model') axes")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compare_single", action="store_true", help="also run on a 1x1x1 mesh of one device")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.mesh.split(","))
    mesh = jax.make_mesh(shape, ("data", "fsdp", "model"))
    res = dict(mesh=dict(zip(mesh.axis_names, shape)), devices=mesh.size, **train(mesh, args.steps))
    if args.compare_single:
        one = jax.make_mesh((1, 1, 1), ("data", "fsdp", "model"), devices=jax.devices()[:1])
        res["single_device"] = train(one, args.steps)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
