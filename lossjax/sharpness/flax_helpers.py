"""Flax (linen) helper: the two SAM passes and which of them updates the BatchNorm statistics.

google-research/sam keeps the model state (BatchNorm running statistics) of the clean pass and
throws away the state of the pass at ``w + ε``; davda54/sam's ``bypass_bn`` (momentum 0 in the
second pass) does the same in PyTorch: ``state_update="first"`` (the default). The official
SamsungLabs/ASAM example and SAM-ON (Mueller et al., NeurIPS 2023) update the running statistics
in both passes, the second time at the perturbed weights: ``state_update="both"``. Both passes
normalise with batch statistics (train mode) either way.

This module never imports Flax: it only calls the ``apply_fn`` it is given (a linen
``model.apply`` or any function with the same calling convention), so it works without Flax
installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jax_extend_core

__all__ = ["FlaxSAMGrads", "flax_sam_grads"]


def _trace_state() -> Any:
    """An opaque token of the current JAX trace (compares equal at the same trace level)."""
    get = getattr(jax_extend_core, "get_opaque_trace_state", None)
    return None if get is None else get(convention="lossjax")


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

    def final_model_state(self) -> Any:
        """The model state to keep after the SAM step.

        With ``state_update="first"`` this is :attr:`model_state` (pass 1 only). With
        ``state_update="both"`` it is the state after the second pass too (pass 1's statistics
        updated once more at the perturbed point); call it after ``tx.update(...,
        grad_fn=g.grad_fn)`` in the same traced function. ``grad_fn`` must have been called
        exactly once, outside ``lax.cond``/``vmap`` (true of sam, asam, aace_sam, gsam and
        friendly_sam; not of looksam's reuse steps or grouped m-sharpness).
        """
        record = getattr(self.grad_fn, "_lossjax_second_pass_states", None)
        if record is None:
            return self.model_state
        if len(record) != 1:
            raise RuntimeError(
                "flax_sam_grads(state_update='both'): `grad_fn` was called "
                f"{len(record)} times, expected once; call final_model_state() after exactly one "
                "tx.update(..., grad_fn=g.grad_fn) with a two-pass transform (sam, asam, aace_sam, "
                "gsam, friendly_sam)."
            )
        return {**self.model_state, **record[0]}


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
    state_update: str = "first",
) -> FlaxSAMGrads:
    r"""Pass 1 of a SAM step for a Flax linen model, and the ``grad_fn`` for pass 2.

    .. math::
        g_A = ∇_w \overline{A}(f_w(x), y),\qquad
        \texttt{grad\_fn}(p) = ∇_p \overline{L}(f_p(x), y)

    (Foret et al., ICLR 2021, Alg. 1: both gradients on the same batch ``x``; ``A`` is the
    ascent loss, ``L`` the training loss.)

    Pass 1: ``apply_fn({'params': params, **model_state}, inputs, mutable=mutable, **kwargs)``,
    ``ascent_grads = ∇ mean(ascent_loss_fn(logits, labels))``, and the new model state is kept.
    ``grad_fn(p)`` runs the same forward at ``p`` (train mode, same ``rngs`` -- e.g. the same
    dropout mask) and returns ``∇ mean(loss_fn(logits, labels))``; its mutated collections are
    discarded (``state_update="first"``, the google-research/sam and davda54/sam policy), so after
    a full SAM step the running statistics equal those of one train-mode forward pass at
    ``params``. With ``state_update="both"`` (the SamsungLabs/ASAM example and SAM-ON policy) the
    second pass starts from pass 1's statistics and its update is kept: read the result with
    :meth:`FlaxSAMGrads.final_model_state` after ``tx.update``.

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
      state_update: ``"first"`` (statistics from pass 1 only) or ``"both"`` (updated by both
        passes).

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
        >>> g2 = flax_sam_grads(Net().apply, v['params'], {'batch_stats': v['batch_stats']}, x, y,
        ...                     loss_fn=ce, apply_kwargs={'train': True}, state_update='both')
        >>> _ = tx.update(g2.ascent_grads, tx.init(v['params']), v['params'], grad_fn=g2.grad_fn)
        >>> sorted(g2.final_model_state())      # statistics updated by both passes (ASAM, SAM-ON)
        ['batch_stats']
    """
    if state_update not in ("first", "both"):
        raise ValueError(f"`state_update` must be 'first' or 'both', got {state_update!r}.")
    if ascent_loss_fn is None:
        ascent_loss_fn = loss_fn
    state = dict(model_state or {})
    kwargs = dict(apply_kwargs or {})
    mutable = list(mutable)

    def forward(p: Any, start: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        variables = {"params": p, **start}
        extra = {} if rngs is None else {"rngs": rngs}
        if mutable:
            out, new = apply_fn(variables, inputs, mutable=mutable, **extra, **kwargs)
            return out, dict(new)
        return apply_fn(variables, inputs, **extra, **kwargs), {}

    def ascent(p: Any) -> tuple[jax.Array, tuple[Any, dict[str, Any]]]:
        logits, new = forward(p, state)
        return jnp.mean(ascent_loss_fn(logits, labels)), (logits, new)

    (a_loss, (logits, new_state)), a_grads = jax.value_and_grad(ascent, has_aux=True)(params)
    after_first = {**state, **new_state}

    if state_update == "first":

        def train_loss(p: Any) -> jax.Array:
            out, _discarded = forward(p, state)  # statistics of the perturbed pass are thrown away
            return jnp.mean(loss_fn(out, labels))

        return FlaxSAMGrads(a_grads, jax.grad(train_loss), after_first, logits, a_loss)

    record: list[Any] = []

    def train_loss_aux(p: Any) -> tuple[jax.Array, dict[str, Any]]:
        out, new = forward(p, after_first)  # second update of the running statistics, at p
        return jnp.mean(loss_fn(out, labels)), new

    level = _trace_state()

    def grad_fn(p: Any) -> Any:
        if _trace_state() != level:  # the state would escape a lax.cond / vmap trace
            raise ValueError(
                "flax_sam_grads(state_update='both'): `grad_fn` is called under a JAX "
                "transformation (e.g. looksam's lax.cond or grouped_sam_gradient's vmap), so pass "
                "2's statistics cannot be returned from it; use state_update='first' there."
            )
        grads, new = jax.grad(train_loss_aux, has_aux=True)(p)
        record.append(jax.lax.stop_gradient(new))
        return grads

    grad_fn._lossjax_second_pass_states = record  # type: ignore[attr-defined]
    return FlaxSAMGrads(a_grads, grad_fn, after_first, logits, a_loss)
