"""SAF and MESA (Du et al., "Sharpness-Aware Training for Free", NeurIPS 2022, arXiv 2205.14083).

Both add a trajectory loss ``λ · mean_batch τ²·KL(softmax(ŷ/τ) ‖ softmax(z/τ))`` to the CE loss
(:func:`lossjax.losses.trajectory.trajectory_kl_loss`); an optax transformation cannot add a
loss term, so the transformations here only keep the *reference* in the optimizer state:

* :func:`saf` records this epoch's logits of every example (by sample index) in a buffer
  ``[N, Ẽ+1, C]``; :func:`saf_targets` reads the logits recorded ``Ẽ`` epochs ago.
  Cost: no extra pass (throughput ≈ 99 % of SGD in the paper).
* :func:`mesa` keeps an EMA ``v ← β v + (1 − β) θ`` of the parameters; the reference is the
  EMA model's output on the current batch (:func:`mesa_params`, :func:`mesa_targets`): one
  extra forward pass (≈ 85 % throughput in the paper).

Both gate the term strictly: active only when ``start_epoch < epoch < end_epoch`` (official
defaults 5 and 300), as in the official AngusDujw/SAF code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from lossjax.losses import _core
from lossjax.losses.trajectory import trajectory_kl_loss
from lossjax.sharpness import _tree as T

__all__ = [
    "SAFState",
    "MESAState",
    "TrajectoryTargets",
    "saf",
    "saf_targets",
    "find_saf_state",
    "mesa",
    "mesa_params",
    "mesa_targets",
    "find_mesa_state",
]

_EMPTY = np.iinfo(np.int32).min
_NO_END = np.iinfo(np.int32).max


class TrajectoryTargets(NamedTuple):
    """Reference logits for the SAF/MESA term of one batch.

    Attributes:
      logits: ``[B, C]`` reference logits ``ŷ`` (zeros where not available), float32 or
        float64 for a float64 buffer / float64 EMA logits.
      weight: ``[B]`` per-example weight (dtype of ``logits``): ``λ`` where the term is active
        (gate open and, for SAF, a record from exactly ``Ẽ`` epochs ago exists), 0 elsewhere.
      tau: temperature τ (float32, float64 under ``jax_enable_x64``).
    """

    logits: jax.Array
    weight: jax.Array
    tau: jax.Array

    def penalty(self, logits: ArrayLike, *, axis: int = -1) -> jax.Array:
        """``Σ_i w_i · τ²·KL(softmax(ŷ_i/τ) ‖ softmax(z_i/τ)) / B``: add it to the mean CE.

        ``B`` is the batch size (the official ``.sum(-1).mean()``); rows with weight 0 add 0.
        A NaN in an active row (reference or current logits) makes the penalty NaN.
        """
        z = jnp.asarray(logits)
        if z.ndim < 1:
            raise ValueError("`logits` must have a class axis; got a scalar.")
        row_shape = tuple(d for i, d in enumerate(z.shape) if i != axis % z.ndim)
        w = jnp.broadcast_to(self.weight, row_shape)
        active = w > 0
        # inactive rows (no record yet, gate closed) are zeroed so that nothing there reaches
        # the value or the gradient; a NaN in an active reference row makes the penalty NaN
        ref = jnp.asarray(self.logits)
        ref = jnp.where(jnp.expand_dims(active, axis), ref, jnp.zeros_like(ref))
        kl = trajectory_kl_loss(z, ref, tau=self.tau, axis=axis)
        # NaN value *and* NaN gradient in such a row (a plain `where` would give a 0 gradient)
        bad = jnp.any(jnp.isnan(ref), axis=axis)
        poison = jnp.where(bad, jnp.nan, 0.0).astype(kl.dtype)
        kl = kl + poison * jnp.sum(jnp.where(jnp.expand_dims(bad, axis), z, 0), axis=axis).astype(kl.dtype)
        return jnp.sum(jnp.where(active, w * kl, 0.0)) / max(kl.size, 1)


def _hp(value: Any) -> jax.Array:
    """A hyperparameter as a state scalar: float32, float64 under ``jax_enable_x64``."""
    x = jnp.asarray(value)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _explicit_sharding(x: Any) -> Any:
    """The sharding of ``x`` when it is sharded over Explicit mesh axes (under ``jit`` on a mesh
    built by ``jax.make_mesh``, whose axes are Explicit by default), else None."""
    sh = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sh, "spec", None)
    if spec is None or all(s is None for s in spec):
        return None
    return sh


def _replicate(x: jax.Array) -> jax.Array:
    """All-gather an explicitly sharded batch array (the buffers are replicated)."""
    sh = _explicit_sharding(x)
    return x if sh is None else jax.sharding.reshard(x, NamedSharding(sh.mesh, PartitionSpec()))


def _gate(epoch: jax.Array, start: jax.Array, end: jax.Array) -> jax.Array:
    return (epoch > start) & (epoch < end)


# --------------------------------------------------------------------------------------------
# SAF
# --------------------------------------------------------------------------------------------


class SAFState(NamedTuple):
    """State of :func:`saf`.

    Attributes:
      logits: ``[N, Ẽ+1, C]`` buffer of recorded logits; epoch ``e`` writes slot
        ``e mod (Ẽ+1)``.
      epochs: ``[N, Ẽ+1]`` int32 epoch at which each slot was written (int32 min = never), so
        a reference is used only if it was recorded exactly ``Ẽ`` epochs ago.
      lam: λ. tau: τ (float32; float64 under ``jax_enable_x64``).
      start_epoch: int32 gate start (exclusive). end_epoch: int32 gate end (exclusive).
    """

    logits: jax.Array
    epochs: jax.Array
    lam: jax.Array
    tau: jax.Array
    start_epoch: jax.Array
    end_epoch: jax.Array


def saf(
    lam: float = 0.3,
    tau: float = 5.0,
    delay_epochs: int = 2,
    start_epoch: int = 5,
    end_epoch: int | None = None,
    *,
    num_examples: int,
    num_classes: int,
    buffer_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Sharpness-Aware training for Free (SAF): a trajectory-loss buffer in the optimizer state.

    .. math::
        L = L_{CE}(f_θ(x_i), y_i) + λ\,\frac{τ^2}{|B|}\sum_i
            \mathrm{KL}\big(\mathrm{softmax}(ŷ_i^{(e−Ẽ)}/τ)\,\|\,\mathrm{softmax}(f_θ(x_i)/τ)\big)
        \quad\text{if } E_{start} < e < E_{end}

    ``ŷ_i^{(e−Ẽ)}`` are the logits produced for example ``i`` during epoch ``e − Ẽ``. The
    transform passes ``updates`` through unchanged and records ``logits`` (stop-gradient) at
    ``sample_idx`` for ``epoch``; read the references with :func:`saf_targets` before the
    forward pass. Place it anywhere in the chain: ``optax.chain(saf(...), optax.sgd(...))``.

    Defaults follow the paper/``run.sh`` for ImageNet (λ = 0.3, τ = 5, Ẽ = 2, E_start = 5;
    the code's defaults are λ = 0.16, Ẽ = 3). Memory: ``N·(Ẽ+1)·C`` entries of
    ``buffer_dtype`` (CIFAR-100: 57 MiB in float32; ``jnp.bfloat16`` halves it). Every example
    must be visited once per epoch for its reference to exist; padded rows may use an index
    ``>= num_examples`` (ignored).

    Args:
      lam: λ, weight of the KL term.
      tau: temperature τ.
      delay_epochs: Ẽ ≥ 1.
      start_epoch: the term is active for ``epoch > start_epoch`` ...
      end_epoch: ... and ``epoch < end_epoch`` (None: no end).
      num_examples: N, size of the training set (sample indices lie in ``[0, N)``).
      num_classes: C.
      buffer_dtype: dtype of the logits buffer (e.g. ``"bfloat16"``; a string so that
        ``optax.inject_hyperparams`` does not mistake a dtype class for a schedule).

    Returns:
      ``GradientTransformationExtraArgs``; ``update(updates, state, params=None, *, logits,
      sample_idx, epoch)`` with ``logits [B, C]``, ``sample_idx`` int ``[B]``, ``epoch`` an int
      scalar (0-based epoch counter).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> tx = optax.chain(saf(delay_epochs=1, start_epoch=0, num_examples=4, num_classes=3),
        ...                  optax.sgd(0.1))
        >>> w = jnp.zeros(3); s = tx.init(w); idx = jnp.array([0, 2])
        >>> _, s = tx.update(w, s, w, logits=jnp.ones((2, 3)), sample_idx=idx, epoch=0)
        >>> saf_targets(s, idx, 1).weight     # recorded at epoch 0, used at epoch 0 + Ẽ = 1
        Array([0.3, 0.3], dtype=float32)
        >>> saf_targets(s, idx, 2).weight     # not later
        Array([0., 0.], dtype=float32)
    """
    _core.require_nonnegative(lam, "lam")
    _core.require_positive(tau, "tau")
    for v, n in ((delay_epochs, "delay_epochs"), (num_examples, "num_examples"), (num_classes, "num_classes")):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{n}` must be a positive int, got {v!r}.")
    if not isinstance(start_epoch, (int, np.integer)):
        raise TypeError(f"`start_epoch` must be an int, got {start_epoch!r}.")
    if end_epoch is not None and not isinstance(end_epoch, (int, np.integer)):
        raise TypeError(f"`end_epoch` must be an int or None, got {end_epoch!r}.")
    slots = int(delay_epochs) + 1

    def init_fn(params: Any) -> SAFState:
        del params
        return SAFState(
            jnp.zeros((int(num_examples), slots, int(num_classes)), jnp.dtype(buffer_dtype)),
            jnp.full((int(num_examples), slots), _EMPTY, jnp.int32),
            _hp(lam),
            _hp(tau),
            jnp.asarray(start_epoch, jnp.int32),
            jnp.asarray(_NO_END if end_epoch is None else end_epoch, jnp.int32),
        )

    def update_fn(
        updates: Any,
        state: SAFState,
        params: Any = None,
        *,
        logits: ArrayLike | None = None,
        sample_idx: ArrayLike | None = None,
        epoch: ArrayLike | None = None,
        **extra: Any,
    ) -> tuple[Any, SAFState]:
        del params, extra
        for v, n in ((logits, "logits"), (sample_idx, "sample_idx"), (epoch, "epoch")):
            if v is None:
                raise ValueError(
                    f"lossjax.saf: `update` needs the keyword argument `{n}` "
                    "(tx.update(grads, state, params, logits=..., sample_idx=..., epoch=...))."
                )
        z = jnp.asarray(logits)
        idx = jnp.asarray(sample_idx)
        _core.require_integer(idx, "sample_idx")
        if z.ndim != 2 or z.shape[-1] != state.logits.shape[-1] or idx.shape != z.shape[:1]:
            raise ValueError(
                f"`logits` must be [B, {state.logits.shape[-1]}] and `sample_idx` [B]; got "
                f"{z.shape} and {idx.shape}."
            )
        ep = jnp.asarray(epoch, jnp.int32)
        slot = ep % state.epochs.shape[1]
        idx = idx.astype(jnp.int32)
        idx = jnp.where(idx < 0, state.logits.shape[0], idx)  # negatives are padding, not wrap-around
        z, idx = _replicate(z), _replicate(idx)  # batch-sharded rows into the replicated buffer
        buf = state.logits.at[idx, slot].set(jax.lax.stop_gradient(z).astype(state.logits.dtype), mode="drop")
        eps = state.epochs.at[idx, slot].set(jnp.broadcast_to(ep, idx.shape), mode="drop")
        return updates, state._replace(
            logits=buf, epochs=eps, lam=jnp.asarray(lam, state.lam.dtype), tau=jnp.asarray(tau, state.tau.dtype)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_saf_state(opt_state: Any) -> SAFState:
    """The :class:`SAFState` inside a (chain / inject_hyperparams / masked) optimizer state.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(saf(num_examples=4, num_classes=3), optax.sgd(0.1))
      >>> type(find_saf_state(tx.init({"w": jnp.ones(2)}))).__name__
      'SAFState'
    """
    return T.find_state(opt_state, SAFState, "saf")


def saf_targets(opt_state: Any, sample_idx: ArrayLike, epoch: ArrayLike) -> TrajectoryTargets:
    """References for SAF at ``epoch``: the logits recorded for ``sample_idx`` at ``epoch − Ẽ``.

    The weight is ``λ`` where ``start_epoch < epoch < end_epoch`` and a record from exactly
    epoch ``epoch − Ẽ`` exists, else 0. Call it *before* ``tx.update`` of the same step (which
    overwrites the slot of ``epoch``; with ``Ẽ + 1`` slots the two never coincide).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(saf(lam=0.3, tau=5.0, delay_epochs=1, start_epoch=1, num_examples=4,
      ...                      num_classes=3), optax.sgd(0.1))
      >>> t = saf_targets(tx.init({"w": jnp.ones(2)}), jnp.array([0, 1]), 0)
      >>> t.logits.shape, [float(v) for v in t.weight]   # before start_epoch: weight 0
      ((2, 3), [0.0, 0.0])
    """
    st = find_saf_state(opt_state)
    slots = st.epochs.shape[1]
    delay = slots - 1
    ep = jnp.asarray(epoch, jnp.int32)
    src = ep - delay
    slot = src % slots
    idx = jnp.asarray(sample_idx).astype(jnp.int32)
    idx = jnp.where(idx < 0, st.logits.shape[0], idx)
    sh = _explicit_sharding(idx)  # batch-sharded indices: the rows come back sharded like them
    rows = {} if sh is None else {"out_sharding": NamedSharding(sh.mesh, PartitionSpec(*sh.spec, None))}
    ref = st.logits.at[idx, slot].get(mode="fill", fill_value=0, **rows)
    ref = ref.astype(T.cdtype(ref))  # float32, float64 for a float64 buffer
    stamp = st.epochs.at[idx, slot].get(mode="fill", fill_value=_EMPTY, **({} if sh is None else {"out_sharding": sh}))
    ok = (stamp == src) & (src >= 0) & _gate(ep, st.start_epoch, st.end_epoch)
    return TrajectoryTargets(ref, jnp.where(ok, st.lam, 0.0).astype(ref.dtype), st.tau)


# --------------------------------------------------------------------------------------------
# MESA
# --------------------------------------------------------------------------------------------


class MESAState(NamedTuple):
    """State of :func:`mesa`.

    Attributes:
      count: int32 updates taken.
      ema: EMA ``v`` of the parameters (float32, float64 for float64 leaves).
      lam: λ. tau: τ (float32; float64 under ``jax_enable_x64``).
      start_epoch: int32 gate start (exclusive). end_epoch: int32 gate end (exclusive).
    """

    count: jax.Array
    ema: Any
    lam: jax.Array
    tau: jax.Array
    start_epoch: jax.Array
    end_epoch: jax.Array


def mesa(
    lam: float = 0.8,
    tau: float = 5.0,
    decay: float = 0.9998,
    start_epoch: int = 5,
    end_epoch: int | None = None,
    *,
    after_update: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Memory-Efficient Sharpness-Aware training (MESA): an EMA teacher in the optimizer state.

    .. math::
        v ← β v + (1 − β)\, θ_{new},\qquad
        L = L_{CE} + λ\,\frac{τ^2}{|B|}\sum_i \mathrm{KL}\big(\mathrm{softmax}(f_v(x_i)/τ)\,\|\,
        \mathrm{softmax}(f_θ(x_i)/τ)\big)\quad(E_{start} < e < E_{end})

    ``v`` starts as a copy of the parameters (timm ``ModelEmaV2``). With ``after_update=True``
    (default) the transform must be placed **last** in the chain, where ``params + updates``
    are the new parameters -- the official order (EMA updated after ``optimizer.step()``):
    ``optax.chain(optax.sgd(lr, momentum=0.9), mesa(0.8))``. With ``after_update=False`` it
    averages the incoming ``params`` instead (any position; the EMA lags one step). The updates
    pass through unchanged. The official code runs the EMA model in eval mode (BatchNorm with
    the EMA's running statistics); this transform averages only the parameters you pass it.

    Train step::

        targets = mesa_targets(opt_state, apply_eval(mesa_params(opt_state), x), epoch)
        loss = lambda p: ce(apply(p, x), y).mean() + targets.penalty(apply(p, x))

    Args:
      lam: λ (0.8 in the paper for MESA; the code default is 0.3).
      tau: τ.
      decay: β ∈ (0, 1) (paper: β ∈ (0.9, 1); official 0.9998).
      start_epoch, end_epoch: the strict gate.
      after_update: see above.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> tx = optax.chain(optax.sgd(1.0), mesa(decay=0.5))
        >>> w = jnp.array([1.0]); s = tx.init(w)
        >>> u, s = tx.update(jnp.array([1.0]), s, w)   # new params = 0
        >>> mesa_params(s)
        Array([0.5], dtype=float32)
    """
    _core.require_nonnegative(lam, "lam")
    _core.require_positive(tau, "tau")
    _core.require_range(decay, "decay", 0.0, 1.0, low_inclusive=True, high_inclusive=False)

    def init_fn(params: Any) -> MESAState:
        return MESAState(
            jnp.zeros([], jnp.int32),
            T.to_compute(params),
            _hp(lam),
            _hp(tau),
            jnp.asarray(start_epoch, jnp.int32),
            jnp.asarray(_NO_END if end_epoch is None else end_epoch, jnp.int32),
        )

    def update_fn(updates: Any, state: MESAState, params: Any = None, **extra: Any) -> tuple[Any, MESAState]:
        del extra
        T.require_params(params, "mesa")
        if after_update:
            T.require_position("mesa", "last")
        new = jax.tree.map(lambda w, u: w + u, params, updates) if after_update else params
        ema = jax.tree.map(
            lambda v, w: jnp.asarray(decay, v.dtype) * v + jnp.asarray(1.0 - decay, v.dtype) * w.astype(v.dtype),
            state.ema,
            new,
        )
        return updates, state._replace(
            count=optax.safe_int32_increment(state.count), ema=ema,
            lam=jnp.asarray(lam, state.lam.dtype), tau=jnp.asarray(tau, state.tau.dtype),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_mesa_state(opt_state: Any) -> MESAState:
    """The :class:`MESAState` inside a (chain / inject_hyperparams / masked) optimizer state.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.sgd(0.1), mesa(lam=0.8, tau=5.0))
      >>> type(find_mesa_state(tx.init({"w": jnp.ones(2)}))).__name__
      'MESAState'
    """
    return T.find_state(opt_state, MESAState, "mesa")


def mesa_params(opt_state: Any) -> Any:
    """The EMA parameters ``v`` kept by :func:`mesa`, for the teacher forward pass.

    Float32, float64 for float64 parameters.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.sgd(0.1), mesa(lam=0.8, tau=5.0))
      >>> [float(v) for v in mesa_params(tx.init({"w": jnp.ones(2)}))["w"]]   # EMA starts at params
      [1.0, 1.0]
    """
    return find_mesa_state(opt_state).ema


def mesa_targets(opt_state: Any, ema_logits: ArrayLike, epoch: ArrayLike) -> TrajectoryTargets:
    """References for MESA: the EMA model's logits ``[B, C]`` with weight ``λ`` while the gate
    ``start_epoch < epoch < end_epoch`` is open (0 otherwise). The logits get no gradient.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.sgd(0.1), mesa(lam=0.8, tau=5.0))
      >>> t = mesa_targets(tx.init({"w": jnp.ones(2)}), jnp.zeros((2, 3)), 0)
      >>> t.logits.shape, float(t.tau)
      ((2, 3), 5.0)
    """
    st = find_mesa_state(opt_state)
    z = jax.lax.stop_gradient(jnp.asarray(ema_logits))
    z = z.astype(T.cdtype(z))  # float32, float64 for float64 logits
    on = _gate(jnp.asarray(epoch, jnp.int32), st.start_epoch, st.end_epoch)
    w = jnp.broadcast_to(jnp.where(on, st.lam, 0.0), z.shape[:-1]).astype(z.dtype)
    return TrajectoryTargets(z, w, st.tau)
