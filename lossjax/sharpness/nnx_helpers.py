"""Flax NNX helpers: BatchNorm/Dropout-correct SAM-family steps for ``nnx.Module``s.

The NNX counterpart of :func:`lossjax.sharpness.flax_sam_grads`. The second SAM pass runs at
``w + ε`` *inside* the optax transformation (``grad_fn``), so it must not touch the live
module: re-merging the module's own ``Variable`` objects inside that inner trace is what
makes the obvious NNX SAM step fail (or work only with ``nnx.merge(..., copy=True)``). Here
both passes are functional: the module is split once into ``(graphdef, params, rng state,
other state)``, every forward merges *pure* arrays into a fresh module, and only the state
chosen by the BatchNorm policy is written back into the live module, at the caller's trace
level. The result works under ``nnx.jit`` with ``nnx.Optimizer`` (whose ``update(model,
grads, **kwargs)`` forwards ``grad_fn=`` to the optax transformation).

Flax is an optional dependency (the ``flax`` / ``experiments`` extras); it is imported only
when a helper is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lossjax.losses import _core

__all__ = ["NNXSAMGrads", "nnx_sam_grads", "nnx_sam_step", "nnx_apply"]

_STATE_POLICIES = ("first", "both")


def _nnx() -> Any:
    """``flax.nnx``, or an ImportError that names the extra to install."""
    hint = "install the `flax` extra, `pip install 'lossjax[flax]'` (also part of the `experiments` extra)"
    try:
        from flax import nnx
    except ImportError as err:
        raise ImportError(f"lossjax's Flax NNX helpers need Flax: {hint}.") from err
    if not hasattr(nnx, "as_pure"):  # the pure-state API these helpers use (tested with 0.12)
        raise ImportError(f"lossjax's Flax NNX helpers need a newer Flax (>= 0.12): {hint}.")
    return nnx


def _require_module(nnx: Any, model: Any, name: str = "model") -> None:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`{name}` must be a flax.nnx.Module, got {type(model).__name__}.")


class NNXSAMGrads(NamedTuple):
    """What a SAM-family step needs from an ``nnx.Module`` (see :func:`nnx_sam_grads`).

    Attributes:
      ascent_grads: ``nnx.State`` of the ``wrt`` variables: the gradient of the batch-mean
        ascent loss at the current parameters (pass 1) -- the ``grads`` of
        ``optimizer.update(model, grads, grad_fn=...)``.
      grad_fn: ``p -> gradient of the batch-mean training loss at p`` on the same batch (pass 2),
        ``p`` and the result shaped like the parameter state the optimizer passes (pure or
        ``Variable`` state).
      logits: model output of pass 1.
      ascent_loss: scalar batch-mean ascent loss of pass 1.
    """

    ascent_grads: Any
    grad_fn: Callable[[Any], Any]
    logits: Any
    ascent_loss: jax.Array


def nnx_sam_grads(
    model: Any,
    inputs: Any,
    labels: Any,
    *,
    loss_fn: Callable[[Any, Any], jax.Array],
    ascent_loss_fn: Callable[[Any, Any], jax.Array] | None = None,
    wrt: Any = None,
    state_update: str = "first",
    call_kwargs: Mapping[str, Any] | None = None,
) -> NNXSAMGrads:
    r"""Pass 1 of a SAM step for a Flax NNX module, and the ``grad_fn`` for pass 2.

    SAM (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
    Generalization", ICLR 2021, arXiv 2010.01412, Alg. 1 and Eq. 2-3) takes two passes on the
    same batch ``B``:

    .. math::
        d = ∇_w \tfrac{1}{|B|}\textstyle\sum_B L_{asc}(f_w(x), y),\qquad
        ε = ρ\, d / \|d\|,\qquad
        g_{SAM} = ∇_w \tfrac{1}{|B|}\textstyle\sum_B L(f_w(x), y)\big|_{w + ε}.

    This function runs pass 1 (``d = ascent_grads``, ``L_asc = ascent_loss_fn``) and returns
    ``grad_fn(p) = ∇ mean loss_fn(f_p(x), y)``; the optax transformation (``sam``, ``asam``,
    ``aace_sam``, ``gsam``, ``friendly_sam``, ...) forms ``ε`` and calls ``grad_fn(w ± ε)``.

    State written back into ``model`` (in place, like calling the module):

    * pass 1's updates of every non-``wrt`` variable (BatchNorm running statistics, RNG
      counters, counters of your own; values sown as ``nnx.Intermediate`` are not kept);
    * ``state_update='first'`` (default; google-research/sam, davda54/sam's ``bypass_bn``, AACE):
      pass 2's updates are discarded -- after the step the running statistics equal those of
      one train-mode forward at ``w``;
    * ``state_update='both'`` (SamsungLabs/ASAM's example, no bypass): pass 2 starts from pass 1's
      statistics and its non-RNG updates are written back when ``grad_fn`` runs, so the
      statistics move twice per step, the second time at ``w ± ε``. ``grad_fn`` then writes into
      the module and must be called at the trace level of the step (true for ``sam``,
      ``asam``, ``aace_sam``, ``gsam``, ``friendly_sam``; not for ``looksam``, which calls it
      under ``lax.cond``, nor under ``vmap`` as in ``grouped_sam_gradient``).

    Dropout: pass 2 replays pass 1's RNG state, so both passes draw the same dropout mask (as
    the linen helper's shared ``rngs``); RNG counters advance once per step. Both passes run
    in whatever mode the module is in -- keep it in train mode (``model.train()``).

    Args:
      model: an ``nnx.Module`` in train mode, called as ``model(inputs, **call_kwargs)``.
      inputs: model input (one positional argument; wrap several in a small module).
      labels: passed to the loss functions.
      loss_fn: ``(logits, labels) -> per-example (or scalar) loss`` of the update pass (CE).
      ascent_loss_fn: loss of pass 1; default ``loss_fn`` (SAM). ``lossjax.losses.aace_loss``
        for AACE-SAM.
      wrt: filter of the trained variables (default ``nnx.Param``); the same filter as the
        ``nnx.Optimizer``'s ``wrt``.
      state_update: ``'first'`` or ``'both'`` (see above).
      call_kwargs: extra keyword arguments of the module call.

    Returns:
      :class:`NNXSAMGrads` ``(ascent_grads, grad_fn, logits, ascent_loss)``.

    Raises:
      ImportError: Flax is not installed (names the ``flax`` extra).
      TypeError: ``model`` is not an ``nnx.Module`` or a loss is not callable.
      ValueError: ``state_update`` is not ``'first'`` or ``'both'``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from lossjax.sharpness import sam
        >>> class Net(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.lin, self.bn = nnx.Linear(2, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)
        ...         self.out = nnx.Linear(4, 3, rngs=rngs)
        ...     def __call__(self, x):
        ...         return self.out(nnx.relu(self.bn(self.lin(x))))
        >>> model = Net(nnx.Rngs(0))
        >>> opt = nnx.Optimizer(model, optax.chain(sam(0.05), optax.sgd(0.1)), wrt=nnx.Param)
        >>> x, y = jnp.arange(16.0).reshape(8, 2), jnp.arange(8) % 3
        >>> ce = optax.softmax_cross_entropy_with_integer_labels
        >>> @nnx.jit
        ... def train_step(model, opt, x, y):
        ...     g = nnx_sam_grads(model, x, y, loss_fn=ce)          # pass 1, keeps BN stats
        ...     opt.update(model, g.ascent_grads, grad_fn=g.grad_fn)  # pass 2 inside
        ...     return g.ascent_loss
        >>> bool(jnp.isfinite(train_step(model, opt, x, y)))
        True
    """
    nnx = _nnx()
    _require_module(nnx, model)
    _core.require_option(state_update, _STATE_POLICIES, "state_update")
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable (logits, labels) -> loss, got {loss_fn!r}.")
    if ascent_loss_fn is None:
        ascent_loss_fn = loss_fn
    elif not callable(ascent_loss_fn):
        raise TypeError(f"`ascent_loss_fn` must be callable or None, got {ascent_loss_fn!r}.")
    wrt = nnx.Param if wrt is None else wrt
    kwargs = dict(call_kwargs or {})

    filters = (wrt, nnx.RngState, nnx.Intermediate, ...)
    graphdef, params, rng0, sown, other0 = nnx.split(model, *filters)
    rng0, sown, other0 = nnx.as_pure(rng0), nnx.as_pure(sown), nnx.as_pure(other0)

    def forward(p: Any, rng: Any, other: Any) -> tuple[Any, tuple[Any, Any]]:
        # a fresh module built from pure arrays: no Variable of the live module is touched
        m = nnx.merge(graphdef, nnx.as_pure(p), rng, sown, other)
        out = m(inputs, **kwargs)
        _, _, new_rng, _, new_other = nnx.split(m, *filters)  # values sown in the call: dropped
        return out, (nnx.as_pure(new_rng), nnx.as_pure(new_other))

    def ascent(p: Any) -> tuple[jax.Array, tuple[Any, Any, Any]]:
        logits, (rng, other) = forward(p, rng0, other0)
        return jnp.mean(ascent_loss_fn(logits, labels)), (logits, rng, other)

    (a_loss, (logits, rng1, other1)), a_grads = jax.value_and_grad(ascent, has_aux=True)(params)
    nnx.update(model, rng1, other1)  # pass 1's statistics and RNG counters are kept

    start = other0 if state_update == "first" else other1

    def train_loss(p: Any) -> tuple[jax.Array, Any]:
        out, (_, other) = forward(p, rng0, start)  # rng0: the same dropout mask as pass 1
        return jnp.mean(loss_fn(out, labels)), other

    def grad_fn(p: Any) -> Any:
        grads, other2 = jax.grad(train_loss, has_aux=True)(p)
        if state_update == "both":
            from flax.errors import TraceContextError

            try:
                nnx.update(model, other2)
            except TraceContextError as err:
                raise ValueError(
                    "state_update='both' writes pass 2's statistics into the module from `grad_fn`, "
                    "so `grad_fn` must be called at the trace level of the step; this "
                    "transformation calls it under a JAX transformation (e.g. looksam's "
                    "lax.cond or a vmap): use state_update='first'."
                ) from err
        return grads

    return NNXSAMGrads(a_grads, grad_fn, logits, a_loss)


def nnx_sam_step(
    model: Any,
    optimizer: Any,
    inputs: Any,
    labels: Any,
    *,
    loss_fn: Callable[[Any, Any], jax.Array],
    ascent_loss_fn: Callable[[Any, Any], jax.Array] | None = None,
    state_update: str = "first",
    call_kwargs: Mapping[str, Any] | None = None,
    **update_kwargs: Any,
) -> NNXSAMGrads:
    r"""One full SAM-family step of an ``nnx.Module`` with its ``nnx.Optimizer``, in place.

    :func:`nnx_sam_grads` (pass 1, ``wrt`` taken from the optimizer) followed by
    ``optimizer.update(model, ascent_grads, grad_fn=grad_fn, **update_kwargs)``, which runs
    pass 2 at ``w ± ε`` inside the optax transformation and applies
    ``w ← BaseOpt(w, ∇L(w ± ε))`` (Foret et al., ICLR 2021, Alg. 1). Call it inside
    ``nnx.jit``. BatchNorm policy and dropout as in :func:`nnx_sam_grads`.

    Args:
      model: the ``nnx.Module`` (train mode).
      optimizer: an ``nnx.Optimizer`` whose transformation starts with a two-pass SAM-family
        transform, e.g. ``optax.chain(aace_sam(0.2), optax.sgd(0.1, momentum=0.9))``.
      inputs, labels, loss_fn, ascent_loss_fn, state_update, call_kwargs: see :func:`nnx_sam_grads`.
      **update_kwargs: further extra arguments of the optax ``update``.

    Returns:
      the :class:`NNXSAMGrads` of pass 1 (``logits`` and ``ascent_loss`` for metrics).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from lossjax.losses import aace_loss
        >>> from lossjax.sharpness import aace_sam
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> opt = nnx.Optimizer(model, optax.chain(aace_sam(0.2), optax.sgd(0.1)), wrt=nnx.Param)
        >>> ce = optax.softmax_cross_entropy_with_integer_labels
        >>> step = nnx.jit(lambda m, o, x, y: nnx_sam_step(m, o, x, y, loss_fn=ce,
        ...                                                 ascent_loss_fn=aace_loss).ascent_loss)
        >>> bool(jnp.isfinite(step(model, opt, jnp.ones((4, 2)), jnp.arange(4) % 3)))
        True
    """
    nnx = _nnx()
    if not isinstance(optimizer, nnx.Optimizer):
        raise TypeError(f"`optimizer` must be a flax.nnx.Optimizer, got {type(optimizer).__name__}.")
    if "grad_fn" in update_kwargs:
        raise TypeError("`grad_fn` is built by nnx_sam_step; do not pass it.")
    g = nnx_sam_grads(
        model, inputs, labels, loss_fn=loss_fn, ascent_loss_fn=ascent_loss_fn, wrt=optimizer.wrt,
        state_update=state_update, call_kwargs=call_kwargs,
    )
    optimizer.update(model, g.ascent_grads, grad_fn=g.grad_fn, **update_kwargs)
    return g


def nnx_apply(model: Any, params: Any, *args: Any, wrt: Any = None, **kwargs: Any) -> Any:
    r"""``model(*args, **kwargs)`` evaluated at other parameters, without changing ``model``.

    ``f_v(x)`` for a parameter state ``v`` shaped like ``nnx.state(model, wrt)`` (pure arrays or
    ``Variable`` state) -- e.g. MESA's EMA teacher ``v ← β v + (1 − β) θ`` (Du et al.,
    "Sharpness-Aware Training for Free", NeurIPS 2022, arXiv 2205.14083, §3.3 Eq. 9-12):
    ``nnx_apply(nnx.view(model, use_running_average=True, deterministic=True),
    mesa_params(nnx.as_pure(optimizer.opt_state)), x)`` (eval mode, as in the official
    code). The module's other state (BatchNorm statistics, RNG state) is read, and every
    update the call makes is discarded.

    Args:
      model: an ``nnx.Module`` (or an ``nnx.view`` of one).
      params: the replacement state of the ``wrt`` variables.
      *args, **kwargs: the module call's arguments.
      wrt: filter of the replaced variables (default ``nnx.Param``).

    Returns:
      the module output.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> zeros = jax.tree.map(jnp.zeros_like, nnx.as_pure(nnx.state(model, nnx.Param)))
        >>> nnx_apply(model, zeros, jnp.ones((1, 2)))
        Array([[0.]], dtype=float32)
    """
    nnx = _nnx()
    _require_module(nnx, model)
    wrt = nnx.Param if wrt is None else wrt
    graphdef, _, rest = nnx.split(model, wrt, ...)
    return nnx.merge(graphdef, nnx.as_pure(params), nnx.as_pure(rest))(*args, **kwargs)
