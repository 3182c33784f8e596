"""Sharpness-aware training as chainable optax transformations.

Two-pass methods (SAM, ASAM, AACE-SAM, GSAM, Friendly-SAM, SAM-ON via ``perturb_mask``,
LookSAM) are ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the gradient of
the *ascent loss* at ``params`` as ``updates`` and a keyword-only closure ``grad_fn(p) ->
grads`` (the training-loss gradient on the same batch). One ``update`` call is one full SAM
step; the transform returns the SAM gradient, which the rest of the chain sees::

    updates, opt_state = tx.update(ascent_grads, opt_state, params, grad_fn=grad_fn)

Ordering rule, checked at the first ``update`` (trace time, so also under ``jit``): a two-pass
transform is the **first** member of its ``optax.chain`` (weight decay, clipping and the
optimizer after it), never inside ``optax.MultiSteps``; :func:`msam` (a complete optimizer, all
arguments keyword-only) and :func:`mesa` are the **last** member; ``grad_fn`` must return a
gradient pytree shaped like ``params`` (``jax.grad(loss)``, not the loss or
``jax.value_and_grad``). Each violation raises an error that names the fix.

One-pass methods: SAF (:func:`saf`, a trajectory buffer in the optimizer state, extra args
``logits=, sample_idx=, epoch=``), MESA (:func:`mesa`, an EMA of the parameters), Momentum-SAM
(:func:`msam`, gradient taken at :func:`msam_params`), ⊥Grad (:func:`orthograd`).

Complete train step (Flax linen model with BatchNorm, AACE-SAM, official AACE recipe)::

    import jax, jax.numpy as jnp, optax
    import lossjax
    from lossjax.losses.aace import aace_loss
    from lossjax.sharpness import aace_sam, flax_sam_grads

    def ce(logits, labels):                       # per-example CE
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]

    tx = optax.chain(aace_sam(rho=0.2),            # or sam(0.05), asam(0.5), gsam(...), ...
                     optax.add_decayed_weights(5e-4),
                     optax.sgd(schedule, momentum=0.9))
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, batch_stats, opt_state, x, y):
        g = flax_sam_grads(model.apply, params, {"batch_stats": batch_stats}, x, y,
                           loss_fn=ce, ascent_loss_fn=aace_loss,   # ascent_loss_fn=None -> CE
                           apply_kwargs={"train": True})
        # g.ascent_grads: ∇ mean AACE at params (pass 1; BN statistics kept from this pass)
        # g.grad_fn: p -> ∇ mean CE at p on the same batch (BN statistics discarded)
        updates, opt_state = tx.update(g.ascent_grads, opt_state, params, grad_fn=g.grad_fn)
        params = optax.apply_updates(params, updates)
        return params, g.model_state["batch_stats"], opt_state, g.logits

    sam_state = lossjax.sharpness.find_sam_state(opt_state)   # .ascent_norm, .perturbation_norm

Without Flax/BatchNorm: ``grads = jax.grad(loss)(params)``;
``tx.update(grads, opt_state, params, grad_fn=jax.grad(loss))`` where ``loss`` closes over the
batch (build the closure *inside* the jitted step: no retracing).

SAF (one backward pass; the user line is ``optax.chain(saf(...), optax.sgd(...))``)::

    tx = optax.chain(saf(lam=0.3, tau=5.0, delay_epochs=2, start_epoch=5,
                         num_examples=N, num_classes=C), optax.sgd(lr, momentum=0.9))

    @jax.jit
    def train_step(params, opt_state, x, y, idx, epoch):
        targets = saf_targets(opt_state, idx, epoch)      # recorded logits, weights λ·gate
        def loss(p):
            logits = apply(p, x)
            return ce(logits, y).mean() + targets.penalty(logits), logits
        (l, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params,
                                       logits=logits, sample_idx=idx, epoch=epoch)
        return optax.apply_updates(params, updates), opt_state

MESA: ``tx = optax.chain(optax.sgd(lr, momentum=0.9), mesa(lam=0.8, tau=5.0))`` (MESA
*last*), then ``ema = mesa_params(opt_state)``; ``targets = mesa_targets(opt_state,
apply(ema, x), epoch)`` and the same ``targets.penalty(logits)`` term (one extra forward).

m-sharpness (Foret et al. §4.1): :func:`grouped_sam_gradient` (one device, vmap over groups of
``m`` examples) or ``sam(..., axis_name='data')`` inside ``jax.shard_map`` with the ascent
gradient taken w.r.t. :func:`per_replica` ``(params, 'data')``.
"""

from lossjax.sharpness.flax_helpers import FlaxSAMGrads, flax_sam_grads
from lossjax.sharpness.msharpness import grouped_sam_gradient, per_replica
from lossjax.sharpness.nnx_helpers import NNXSAMGrads, nnx_apply, nnx_sam_grads, nnx_sam_step
from lossjax.sharpness.orthograd import orthograd
from lossjax.sharpness.saf import (
    MESAState,
    SAFState,
    TrajectoryTargets,
    find_mesa_state,
    find_saf_state,
    mesa,
    mesa_params,
    mesa_targets,
    saf,
    saf_targets,
)
from lossjax.sharpness.sam import (
    SAMOutput,
    SAMState,
    aace_sam,
    asam,
    asam_default_mask,
    sam,
    sam_gradient,
)
from lossjax.sharpness.variants import (
    FriendlySAMState,
    LookSAMState,
    MSAMState,
    find_sam_state,
    friendly_sam,
    gsam,
    gsam_rho_schedule,
    looksam,
    msam,
    msam_params,
)

__all__ = [
    # core
    "sam",
    "asam",
    "aace_sam",
    "sam_gradient",
    "asam_default_mask",
    "SAMState",
    "SAMOutput",
    "find_sam_state",
    # variants
    "gsam",
    "gsam_rho_schedule",
    "friendly_sam",
    "FriendlySAMState",
    "looksam",
    "LookSAMState",
    "msam",
    "msam_params",
    "MSAMState",
    # m-sharpness / multi-device
    "grouped_sam_gradient",
    "per_replica",
    # Flax / BatchNorm
    "flax_sam_grads",
    "FlaxSAMGrads",
    # Flax NNX
    "nnx_sam_grads",
    "nnx_sam_step",
    "nnx_apply",
    "NNXSAMGrads",
    # SAF / MESA
    "saf",
    "saf_targets",
    "SAFState",
    "find_saf_state",
    "mesa",
    "mesa_params",
    "mesa_targets",
    "MESAState",
    "find_mesa_state",
    "TrajectoryTargets",
    # ⊥Grad
    "orthograd",
]
