"""Flax (linen) helper: the two SAM passes with BatchNorm statistics from the first pass only.

google-research/sam keeps the model state (BatchNorm running statistics) of the clean pass and
throws away the state of the pass at ``w + ε``; davda54/sam's ``bypass_bn`` (momentum 0 in the
second pass) does the same in PyTorch. Both passes normalise with batch statistics (train
mode). Without the bypass the running statistics are updated twice, once at perturbed weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["FlaxSAMGrads", "flax_sam_grads"]


class FlaxSAMGrads(NamedTuple):
    """What a SAM-family train step needs from the model.

    Attributes:
      ascent_grads: gradient of the batch-mean ascent loss at ``params`` (pass 1) -- the
        ``updates`` argument of ``tx.update``.
      grad_fn: closure ``p -> gradient of the batch-mean training loss at p`` on the same batch,
        in train mode, whose mutated collections are discarded -- the ``grad_fn`` extra argument.
      model_state: the model state (e.g. ``{'batch_stats': ...}``) updated by pass 1 only.
      logits: model output of pass 1 (for metrics or SAF's ``logits=``).
      ascent_loss: scalar batch-mean ascent loss of pass 1.
    """

    ascent_grads: Any
    grad_fn: Callable[[Any], Any]
    model_state: Any
    logits: Any
    ascent_loss: jax.Array


def flax_sam_grads(
    apply_fn: Callable[..., Any],
    params: Any,
    model_state: Mapping[str, Any] | None,
    inputs: Any,
    labels: Any,
    *,
    loss_fn: Callable[[Any, Any], jax.Array],
    ascent_loss_fn: Callable[[Any, Any], jax.Array] | None = None,
    rngs: Mapping[str, jax.Array] | None = None,
    apply_kwargs: Mapping[str, Any] | None = None,
    mutable: Sequence[str] = ("batch_stats",),
) -> FlaxSAMGrads:
    """Pass 1 of a SAM step for a Flax linen model, and the ``grad_fn`` for pass 2.

    Pass 1: ``apply_fn({'params': params, **model_state}, inputs, mutable=mutable, **kwargs)``,
    ``ascent_grads = ∇ mean(ascent_loss_fn(logits, labels))``, and the new model state is kept.
    ``grad_fn(p)`` runs the same forward at ``p`` (train mode, same ``rngs`` -- e.g. the same
    dropout mask) and returns ``∇ mean(loss_fn(logits, labels))``; its mutated collections are
    discarded, so after a full SAM step the running statistics equal those of one train-mode
    forward pass at ``params``.

    Args:
      apply_fn: ``model.apply``.
      params: the ``'params'`` collection.
      model_state: the other collections (``{'batch_stats': ...}``), or None/{}.
      inputs: model inputs (a single positional argument; wrap several in a closure).
      labels: passed to the loss functions.
      loss_fn: ``(logits, labels) -> per-example (or scalar) loss`` of the update pass (CE).
      ascent_loss_fn: loss of pass 1; default ``loss_fn`` (SAM). ``lossjax.losses.aace.aace_loss``
        for AACE-SAM.
      rngs: Flax rngs (e.g. ``{'dropout': key}``), used by both passes.
      apply_kwargs: extra keyword arguments of ``apply_fn`` (``{'train': True}``).
      mutable: collections updated in train mode; ``()`` for models without BatchNorm.

    Returns:
      :class:`FlaxSAMGrads`.

    Example:
        >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
        >>> from lossjax.sharpness import sam
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x, train):
        ...         x = nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))
        ...         return nn.Dense(3)(x)
        >>> x, y = jnp.ones((8, 2)) * jnp.arange(8.0)[:, None], jnp.arange(8) % 3
        >>> v = Net().init(jax.random.key(0), x, train=False)
        >>> ce = lambda z, t: optax.softmax_cross_entropy_with_integer_labels(z, t)
        >>> g = flax_sam_grads(Net().apply, v['params'], {'batch_stats': v['batch_stats']}, x, y,
        ...                    loss_fn=ce, apply_kwargs={'train': True})
        >>> tx = optax.chain(sam(0.05), optax.sgd(0.1))
        >>> updates, s = tx.update(g.ascent_grads, tx.init(v['params']), v['params'],
        ...                        grad_fn=g.grad_fn)
        >>> sorted(g.model_state)
        ['batch_stats']
    """
    if ascent_loss_fn is None:
        ascent_loss_fn = loss_fn
    state = dict(model_state or {})
    kwargs = dict(apply_kwargs or {})
    mutable = list(mutable)

    def forward(p: Any) -> tuple[Any, dict[str, Any]]:
        variables = {"params": p, **state}
        extra = {} if rngs is None else {"rngs": rngs}
        if mutable:
            out, new = apply_fn(variables, inputs, mutable=mutable, **extra, **kwargs)
            return out, dict(new)
        return apply_fn(variables, inputs, **extra, **kwargs), {}

    def ascent(p: Any) -> tuple[jax.Array, tuple[Any, dict[str, Any]]]:
        logits, new = forward(p)
        return jnp.mean(ascent_loss_fn(logits, labels)), (logits, new)

    (a_loss, (logits, new_state)), a_grads = jax.value_and_grad(ascent, has_aux=True)(params)

    def train_loss(p: Any) -> jax.Array:
        out, _discarded = forward(p)  # statistics of the perturbed pass are thrown away
        return jnp.mean(loss_fn(out, labels))

    grad_fn = jax.grad(train_loss)
    return FlaxSAMGrads(a_grads, grad_fn, {**state, **new_state}, logits, a_loss)
