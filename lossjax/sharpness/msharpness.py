"""m-sharpness: SAM perturbations computed per group of ``m`` examples.

Foret et al. (ICLR 2021) §4.1 compute the SAM gradient independently on each accelerator
(``m`` = per-device batch, 32 for their CIFAR runs) and average the results; smaller ``m``
generalises better. A single-device run with batch ``B`` is ``m = B``. Two ways to get
``m < B`` here:

* one device: :func:`grouped_sam_gradient` (``vmap`` over ``B/m`` groups; same FLOPs);
* several devices: run the train step under ``jax.shard_map`` over the batch axis, take the
  ascent gradient w.r.t. :func:`per_replica` ``(params, axis)`` and build the SAM transform
  with ``axis_name=axis``.

The replicated-parameter trap (verified with jax 0.10.2): inside ``jax.shard_map`` the gradient
w.r.t. a replicated (unvarying) parameter comes back already **summed over the mesh axis**, so a
"local" perturbation silently becomes the global one (and ``ρ g/‖g‖`` hides the factor).
Marking the parameters as varying with ``jax.lax.pcast(params, axis, to='varying')`` first
gives the per-device gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lossjax.sharpness.sam import SAMOutput, sam_gradient

__all__ = ["grouped_sam_gradient", "per_replica"]

_GROUP_AXIS = "lossjax_sam_groups"


def per_replica(params: Any, axis_name: str | tuple[str, ...]) -> Any:
    """Mark replicated ``params`` as varying over ``axis_name`` (inside ``jax.shard_map``).

    ``jax.grad`` w.r.t. the result is the per-device gradient of the per-device loss, not the
    mesh-summed one. Use it for the *ascent* gradient of m-sharpness::

        def step(params, opt_state, x, y):               # under jax.shard_map, batch sharded
            loss = lambda p: ce(apply(p, x), y).mean()   # local mean over the shard
            g = jax.grad(loss)(per_replica(params, "data"))
            updates, opt_state = tx.update(g, opt_state, params, grad_fn=jax.grad(loss))
            return optax.apply_updates(params, updates), opt_state

        tx = optax.chain(lossjax.sam(0.05, axis_name="data"), optax.sgd(0.1, momentum=0.9))

    The transform ``pmean``-s the SAM gradient (and the logged norms) over ``"data"``, so the
    returned parameters and optimizer state stay replicated (``out_specs=P()``).

    FSDP-sharded parameters (``in_specs=P("data", ...)`` for the parameters and the optimizer
    state): gather the weights inside the step -- ``jax.lax.all_gather`` returns them *varying*,
    so the gradient w.r.t. the gathered weights is already this device's own -- take the SAM
    gradient of this device's batch with :func:`lossjax.sharpness.sam_gradient` (no
    ``axis_name``: nothing is averaged yet) and reduce-scatter it back to the shards, where the
    base optimizer runs on the shards::

        def step(shards, opt_state, x, y):               # jax.shard_map, params P("data", ...)
            w = jax.tree.map(lambda q: jax.lax.all_gather(q, "data", axis=0, tiled=True), shards)
            loss = lambda p: ce(apply(p, x), y).mean()
            g = lossjax.sharpness.sam_gradient(jax.grad(loss)(w), w, jax.grad(loss), rho=0.05).grads
            g = jax.tree.map(lambda a: jax.lax.psum_scatter(a, "data", scatter_dimension=0,
                                                             tiled=True) / n_devices, g)
            updates, opt_state = base_tx.update(g, opt_state, shards)   # e.g. optax.sgd(...)
            return optax.apply_updates(shards, updates), opt_state

    Each device holds one full perturbed copy of the weights during the step (inherent to
    per-device perturbations). Under plain ``jit`` (no ``shard_map``) with FSDP parameters the
    chained transforms work unchanged and give global SAM (``m`` = global batch).

    Example (outside ``shard_map`` it is an error: the axis name is unbound)::

        >>> per_replica  # doctest: +ELLIPSIS
        <function per_replica at ...>
    """
    return jax.lax.pcast(params, axis_name, to="varying")


def grouped_sam_gradient(
    ascent_grad_fn: Callable[[Any, Any], Any],
    grad_fn: Callable[[Any, Any], Any],
    params: Any,
    batch: Any,
    *,
    group_size: int,
    rho: Any = 0.05,
    **sam_kwargs: Any,
) -> SAMOutput:
    r"""The m-sharpness SAM gradient on one device: mean over groups of ``m = group_size``.

    .. math::
        g = \frac{1}{k}\sum_{j=1}^{k} ∇L_{G_j}(w + ε_j),\qquad
        ε_j = ρ\,\frac{∇A_{G_j}(w)}{\|∇A_{G_j}(w)\|}

    where the batch is split into ``k = B/m`` consecutive groups ``G_j`` (``A`` is the ascent
    loss, ``L`` the training loss, both means over the group). ``group_size = B`` is plain SAM.
    Implemented as ``jax.vmap`` over groups of :func:`lossjax.sharpness.sam_gradient` with a
    named axis, i.e. the same code path as the per-device perturbation under ``shard_map``.

    Use the result as the gradient of the base optimizer (the SAM transform is *replaced*, not
    chained)::

        out = grouped_sam_gradient(lambda p, b: jax.grad(loss)(p, b),
                                   lambda p, b: jax.grad(loss)(p, b),
                                   params, (x, y), group_size=32, rho=0.05)
        updates, opt_state = base_tx.update(out.grads, opt_state, params)

    The same helper gives correct gradient accumulation for SAM (ε per micro-batch): feed
    ``out.grads`` of each micro-batch to ``optax.MultiSteps(base_tx)``.

    Args:
      ascent_grad_fn: ``(params, group_batch) -> grads`` of the ascent loss (CE for SAM, AACE
        for AACE-SAM).
      grad_fn: ``(params, group_batch) -> grads`` of the training loss.
      params: parameters (shared by all groups).
      batch: pytree of arrays with a leading batch axis ``B`` divisible by ``group_size``.
      group_size: ``m``.
      rho: radius.
      **sam_kwargs: the other options of :func:`lossjax.sharpness.sam_gradient`
        (``normalize``, ``direction``, ``adaptive``, ``eta``, ``adaptive_mask``,
        ``perturb_mask``, ``norm_eps``); AACE-SAM is ``normalize=False, direction='descent'``.

    Returns:
      :class:`lossjax.sharpness.SAMOutput` with the group-averaged gradient and the
      group-averaged ``ascent_norm`` / ``perturbation_norm``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> c = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
        >>> loss = lambda w, b: jnp.mean(0.5 * jnp.sum((w - b) ** 2, axis=-1))
        >>> g = jax.grad(loss)
        >>> out = grouped_sam_gradient(g, g, jnp.array([0.0, 1.0]), c, group_size=1, rho=0.1)
        >>> [round(float(v), 6) for v in out.grads]
        [0.0, 1.070711]
    """
    if "axis_name" in sam_kwargs or "sync_ascent" in sam_kwargs:
        raise TypeError("grouped_sam_gradient sets `axis_name` itself; do not pass it.")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"`group_size` must be a positive int, got {group_size!r}.")
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("`batch` has no arrays.")
    b = jnp.shape(leaves[0])[0]
    for x in leaves:
        if jnp.shape(x)[0] != b:
            raise ValueError("All leaves of `batch` must share the leading batch size.")
    if b % group_size:
        raise ValueError(f"`group_size`={group_size} must divide the batch size {b}.")
    k = b // group_size
    grouped = jax.tree.map(lambda x: jnp.reshape(x, (k, group_size) + jnp.shape(x)[1:]), batch)

    def one_group(gb: Any) -> SAMOutput:
        g = ascent_grad_fn(params, gb)
        return sam_gradient(g, params, lambda p: grad_fn(p, gb), rho=rho, axis_name=_GROUP_AXIS, **sam_kwargs)

    return jax.vmap(one_group, axis_name=_GROUP_AXIS, out_axes=None)(grouped)
