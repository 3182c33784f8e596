"""Jitted train and eval steps for every optimizer kind, and data-parallel sharding.

One train step = one optimizer update; it is compiled once per run (the batch shape is
fixed, the epoch is a traced int32 scalar). Data parallelism is GSPMD: the batch is sharded
over a 1-D ``('data',)`` mesh of all devices of all processes (``AxisType.Auto`` — ``jax.make_mesh``
defaults to Explicit axes since JAX 0.8.1), state replicated; XLA inserts the all-reduces, so
the result equals the single-device step (global SAM, m = global batch, synchronised BatchNorm
statistics). m-sharpness (m < batch) is a config value (``optim.group_size``), computed with
``jax.vmap`` over groups of m examples, independent of the device count.

BatchNorm: both SAM passes normalise with batch statistics; the running statistics come from
the first (clean) pass only (``lossjax.sharpness.flax_sam_grads``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lossjax.sharpness as lsh
from experiments.common.optim import OptimSetup
from lossjax.losses.aace import aace_loss

__all__ = ["TrainState", "make_train_step", "make_eval_step", "make_mesh", "shardings", "init_state",
           "normalize_images", "put_batch", "put_replicated"]

_GROUP_AXIS = "m_sharpness_groups"


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (all arrays; serialisable)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_batch_stats: Any  # MESA teacher's BatchNorm statistics (EMA); {} otherwise


def normalize_images(x: jax.Array, mean: tuple, std: tuple) -> jax.Array:
    """uint8 ``[B, H, W, C]`` → float32 ``(x/255 − mean)/std``."""
    x = x.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def init_state(model: nn.Module, setup: OptimSetup, image_shape: tuple, seed: int,
               init_fn: Callable | None = None) -> TrainState:
    """Initialise parameters (key ``seed``), BatchNorm statistics and optimizer state.

    ``init_fn(key) -> variables`` may be passed to reuse a compiled ``model.init``."""
    if init_fn is None:
        init_fn = jax.jit(lambda k: model.init(k, jnp.zeros((1, *image_shape), jnp.float32), train=False))
    variables = init_fn(jax.random.key(seed))
    params = variables["params"]
    bs = variables.get("batch_stats", {})
    opt_state = setup.tx.init(params)
    ema_bs = bs if setup.kind == "mesa" else {}
    state = TrainState(jnp.zeros([], jnp.int32), params, bs, opt_state, ema_bs)
    # Optimizer states may alias the parameters (e.g. MESA's EMA starts as a copy): give every
    # leaf its own buffer so the state can be donated to the jitted step.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), state)


def _ce(logits: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    if smoothing:
        t = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
        return optax.softmax_cross_entropy(logits, t)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_train_step(model: nn.Module, setup: OptimSetup, *, mean: tuple, std: tuple, label_smoothing: float,
                    mesa_decay: float = 0.9998, group_size: int = 0, aace_mode: str = "ada",
                    aace_th: float = 0.0, seed: int = 0, dropout: bool = False) -> Callable:
    """The (un-jitted) train step ``(state, batch) -> (state, metrics)``.

    ``batch`` is a dict with ``x`` uint8 ``[B,H,W,C]``, ``y`` int32 ``[B]``, ``idx`` int32
    ``[B]`` (sample indices, for SAF) and ``epoch`` (int32 scalar). ``metrics`` holds batch
    *sums* (``loss``, ``correct``, ``count``) and per-step scalars (``ascent_norm``,
    ``perturbation_norm``, ``lr``) so that epochs aggregate exactly.
    """
    ls = float(label_smoothing)
    ce = lambda z, y: _ce(z, y, ls)  # noqa: E731
    if setup.ascent == "aace":
        ascent_fn = lambda z, y: aace_loss(z, y, th=aace_th, mode=aace_mode)  # noqa: E731
    else:
        ascent_fn = None  # = ce

    def rngs_for(step: jax.Array) -> dict | None:
        return {"dropout": jax.random.fold_in(jax.random.key(seed), step)} if dropout else None

    def apply_train(params: Any, bs: Any, x: jax.Array, rngs: dict | None) -> tuple[jax.Array, Any]:
        extra = {} if rngs is None else {"rngs": rngs}
        logits, new = model.apply({"params": params, "batch_stats": bs}, x, train=True, mutable=["batch_stats"],
                                  **extra)
        return logits, new["batch_stats"]

    def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        x = normalize_images(batch["x"], mean, std)
        y = batch["y"]
        epoch = batch["epoch"]
        rngs = rngs_for(state.step)
        params = state.params
        ema_bs = state.ema_batch_stats
        zero = jnp.zeros([], jnp.float32)
        ascent_norm = perturbation_norm = zero

        if setup.kind == "sam":
            g = lsh.flax_sam_grads(model.apply, params, {"batch_stats": state.batch_stats}, x, y,
                                   loss_fn=ce, ascent_loss_fn=ascent_fn, rngs=rngs,
                                   apply_kwargs={"train": True})
            updates, opt_state = setup.tx.update(g.ascent_grads, state.opt_state, params, grad_fn=g.grad_fn)
            sst = lsh.find_sam_state(opt_state)
            ascent_norm, perturbation_norm = sst.ascent_norm, sst.perturbation_norm
            logits, new_bs = g.logits, g.model_state["batch_stats"]
        elif setup.kind == "grouped":
            b = x.shape[0]
            k = b // group_size
            xg = x.reshape(k, group_size, *x.shape[1:])
            yg = y.reshape(k, group_size)

            def one_group(xi: jax.Array, yi: jax.Array):
                g = lsh.flax_sam_grads(model.apply, params, {"batch_stats": state.batch_stats}, xi, yi,
                                       loss_fn=ce, ascent_loss_fn=ascent_fn, rngs=rngs,
                                       apply_kwargs={"train": True})
                out = lsh.sam_gradient(g.ascent_grads, params, g.grad_fn, axis_name=_GROUP_AXIS,
                                       **setup.sam_kwargs)
                bs_mean = jax.lax.pmean(g.model_state["batch_stats"], _GROUP_AXIS)
                return out.grads, out.ascent_norm, out.perturbation_norm, bs_mean, g.logits

            grads, ascent_norm, perturbation_norm, new_bs, logits = jax.vmap(
                one_group, axis_name=_GROUP_AXIS, out_axes=(None, None, None, None, 0))(xg, yg)
            logits = logits.reshape(b, -1)
            updates, opt_state = setup.tx.update(grads, state.opt_state, params)
        else:
            if setup.kind == "saf":
                targets = lsh.saf_targets(state.opt_state, batch["idx"], epoch)
            elif setup.kind == "mesa":
                ema_params = lsh.mesa_params(state.opt_state)
                teacher = model.apply({"params": ema_params, "batch_stats": ema_bs}, x, train=False)
                targets = lsh.mesa_targets(state.opt_state, teacher, epoch)
            else:
                targets = None

            def loss_fn(p: Any):
                z, nbs = apply_train(p, state.batch_stats, x, rngs)
                loss = jnp.mean(ce(z, y))
                if targets is not None:
                    loss = loss + targets.penalty(z)
                return loss, (z, nbs)

            (_, (logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            ascent_norm = optax.tree.norm(grads).astype(jnp.float32)
            extra = {}
            if setup.kind == "saf":
                extra = dict(logits=logits, sample_idx=batch["idx"], epoch=epoch)
            updates, opt_state = setup.tx.update(grads, state.opt_state, params, **extra)
            if setup.kind == "mesa":
                ema_bs = jax.tree.map(lambda e, n: mesa_decay * e + (1.0 - mesa_decay) * n, ema_bs, new_bs)

        new_params = optax.apply_updates(params, updates)
        per_ex = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        metrics = {
            "loss": jnp.sum(per_ex),
            "correct": jnp.sum(correct),
            "count": jnp.asarray(y.shape[0], jnp.float32),
            "ascent_norm": jnp.asarray(ascent_norm, jnp.float32),
            "perturbation_norm": jnp.asarray(perturbation_norm, jnp.float32),
            "lr": jnp.asarray(setup.schedule(state.step), jnp.float32),
        }
        new_state = TrainState(state.step + 1, new_params, new_bs, opt_state, ema_bs)
        return new_state, metrics

    return step_fn


def make_eval_step(model: nn.Module, *, mean: tuple, std: tuple) -> Callable:
    """``(params, batch_stats, batch) -> {'loss', 'correct', 'count'}`` masked sums (eval mode)."""

    def eval_fn(params: Any, batch_stats: Any, batch: dict) -> dict:
        x = normalize_images(batch["x"], mean, std)
        logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        m = batch["mask"]
        per = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        correct = (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32)
        return {"loss": jnp.sum(per * m), "correct": jnp.sum(correct * m), "count": jnp.sum(m)}

    return eval_fn


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """1-D ``('data',)`` mesh over ``devices`` (default: every device of every process,
    ``jax.devices()``), Auto axis type."""
    devices = list(devices if devices is not None else jax.devices())
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def shardings(mesh: jax.sharding.Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded) shardings on ``mesh``."""
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def put_batch(batch: dict, batch_sharding: NamedSharding, replicated: NamedSharding,
              global_batch: int | None = None) -> dict:
    """Place a host batch: arrays with a leading batch axis sharded, scalars replicated.

    With several processes each one passes only its rows (``global_batch`` is the size of the
    whole batch) and ``jax.make_array_from_process_local_data`` joins them into one global
    array; with one process this is a plain ``device_put``."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        if v.ndim:
            shape = (global_batch if global_batch is not None else v.shape[0], *v.shape[1:])
            out[k] = jax.make_array_from_process_local_data(batch_sharding, v, shape)
        else:
            out[k] = jax.make_array_from_process_local_data(replicated, v)
    return out


def put_replicated(tree: Any, replicated: NamedSharding) -> Any:
    """Copy a pytree (identical on every process) onto every device of ``replicated``'s mesh."""
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a)),
                        jax.device_get(tree))
