"""Training helpers for small models on flat features, several seeds at once (``jax.vmap``).

Used by :mod:`experiments.tasks.distill` and :mod:`experiments.tasks.regression` (the model itself is the
kit's :class:`experiments.kit.mlp.MLP`, re-exported here):

* :func:`init_stacked` — parameters of one model per seed, stacked along a leading axis.
* :func:`make_epoch_fn` — one jitted, seed-vmapped training epoch (``lax.scan`` over shuffled
  minibatches) for any ``loss_fn(params, batch, step) -> scalar``; it compiles once per loss.
* :func:`make_apply_fn` — the jitted, seed-vmapped forward pass for evaluation.
* :func:`stratified_subset`, :func:`config_hash`, :func:`count_params_per_seed` — small utilities.

The finished-run contract is :mod:`experiments.kit.runs` (``finished_run``/``write_run``, re-exported).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.common.metrics import fmt_mean_std, mean_std  # noqa: F401 (re-exported)
from experiments.kit.mlp import MLP  # noqa: F401 (re-exported)
from experiments.kit.runs import finished_run, write_run  # noqa: F401 (re-exported)

__all__ = [
    "MLP",
    "init_stacked",
    "make_optimizer",
    "make_epoch_fn",
    "run_epochs",
    "make_apply_fn",
    "epoch_keys",
    "stratified_subset",
    "finished_run",
    "write_run",
    "mean_std",
    "fmt_mean_std",
    "config_hash",
    "count_params_per_seed",
]

LossFn = Callable[[Any, dict, jax.Array], jax.Array]


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal truncated to [-2, 2] (rejection sampling)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out


def init_stacked(model: nn.Module, in_dim: int, seeds: Sequence[int]) -> Any:
    """Parameters of ``model`` for each seed, stacked on axis 0 (NumPy, so nothing compiles).

    The parameter tree comes from ``jax.eval_shape(model.init, ...)``; every 2-D leaf (a Dense
    kernel ``[fan_in, fan_out]``) is drawn as Flax's default ``lecun_normal`` (truncated normal
    with variance ``1/fan_in``) from ``np.random.default_rng(seed)``, every other leaf (biases)
    is zero. Compiling the vmapped ``model.init`` instead costs seconds on a small CPU.
    """
    if len(seeds) == 0:
        raise ValueError("`seeds` must not be empty.")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, in_dim), jnp.float32)))["params"]
    leaves, treedef = jax.tree.flatten(shapes)
    stacked = []
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    for leaf in leaves:
        if len(leaf.shape) == 2:
            # 0.8796 = std of a standard normal truncated to [-2, 2] (as in jax.nn.initializers)
            std = np.sqrt(1.0 / leaf.shape[0]) / 0.87962566103423978
            vals = [std * _truncated_normal(r, leaf.shape) for r in rngs]
        else:
            vals = [np.zeros(leaf.shape) for _ in rngs]
        stacked.append(jnp.asarray(np.stack(vals), dtype=leaf.dtype))
    return jax.tree.unflatten(treedef, stacked)


def make_optimizer(learning_rate: float, weight_decay: float, total_steps: int) -> optax.GradientTransformation:
    """AdamW with a cosine decay of the learning rate to 0 over ``total_steps``."""
    if learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate}.")
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1, got {total_steps}.")
    return optax.adamw(optax.cosine_decay_schedule(learning_rate, total_steps), weight_decay=weight_decay)


def make_epoch_fn(loss_fn: LossFn, tx: optax.GradientTransformation, *, n: int, batch_size: int) -> Callable:
    """A jitted epoch ``(params, opt_state, data, keys, step0) -> (params, opt_state, mean_loss)``.

    Every argument but ``step0`` (a shared int32 step counter at the start of the epoch) carries
    a leading seed axis: ``data`` is a dict of ``[S, n, ...]`` arrays and ``keys`` ``[S, 2]``
    uint32 key data. Each seed draws its own permutation; the last partial batch is dropped
    (``n // batch_size`` steps). ``loss_fn(params, batch, step)`` sees one seed's minibatch.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"`batch_size` must lie in [1, n={n}], got {batch_size}.")
    steps = n // batch_size

    def one_seed(params: Any, opt_state: Any, data: dict, key: jax.Array, step0: jax.Array):
        perm = jax.random.permutation(jax.random.wrap_key_data(key), n)[: steps * batch_size]

        def body(carry, idx):
            p, o, step = carry
            batch = jax.tree.map(lambda a: a[idx], data)
            loss, g = jax.value_and_grad(loss_fn)(p, batch, step)
            upd, o = tx.update(g, o, p)
            return (optax.apply_updates(p, upd), o, step + 1), loss

        (params, opt_state, _), losses = jax.lax.scan(body, (params, opt_state, step0),
                                                      perm.reshape(steps, batch_size))
        return params, opt_state, losses.mean()

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, 0, None)))


def run_epochs(epoch: Callable, params: Any, opt_state: Any, data: dict, seeds: Sequence[int], epochs: int,
               steps_per_epoch: int, *, what: str,
               after_epoch: Callable[[int, Any], None] | None = None) -> tuple[Any, Any, list[list[float]]]:
    """Run ``epochs`` epochs of a :func:`make_epoch_fn` ``epoch`` (shuffled by :func:`epoch_keys`).

    ``after_epoch(e, params)`` runs after epoch ``e`` (0-based). Returns ``(params, opt_state, curve)``
    with ``curve[e]`` the per-seed mean training loss of epoch ``e``; raises ``FloatingPointError``
    naming ``what`` when the last epoch's loss is not finite for some seed.
    """
    curve = []
    for e in range(epochs):
        params, opt_state, loss = epoch(params, opt_state, data, epoch_keys(seeds, e), jnp.int32(e * steps_per_epoch))
        curve.append(np.asarray(loss).tolist())
        if after_epoch is not None:
            after_epoch(e, params)
    if curve and not np.all(np.isfinite(curve[-1])):
        raise FloatingPointError(f"{what}: non-finite training loss {curve[-1]}.")
    return params, opt_state, curve


def make_apply_fn(model: nn.Module, *, shared_inputs: bool) -> Callable:
    """Jitted ``(params [S, ...], x) -> outputs [S, ...]``; ``x`` is ``[N, d]`` for every seed
    when ``shared_inputs`` else ``[S, N, d]``."""
    return jax.jit(jax.vmap(lambda p, x: model.apply({"params": p}, x), in_axes=(0, None if shared_inputs else 0)))


def epoch_keys(seeds: Sequence[int], epoch: int, salt: int = 0) -> jax.Array:
    """``[S, 2]`` key data for the shuffling of ``epoch`` (a pure function of seed, epoch, salt)."""
    return jnp.stack([jax.random.key_data(jax.random.fold_in(jax.random.fold_in(jax.random.key(int(s)), salt), epoch))
                      for s in seeds])


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples with classes as balanced as possible (seeded).

    Raises:
      ValueError: ``n`` is not in ``[1, len(labels)]`` or a class is too small.
    """
    labels = np.asarray(labels)
    if not 1 <= n <= len(labels):
        raise ValueError(f"`n` must lie in [1, {len(labels)}], got {n}.")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = np.full(len(classes), n // len(classes))
    per[rng.permutation(len(classes))[: n % len(classes)]] += 1
    out = []
    for c, k in zip(classes, per):
        idx = np.flatnonzero(labels == c)
        if k > len(idx):
            raise ValueError(f"class {c} has {len(idx)} examples, {k} requested (n={n}).")
        out.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(out))


def count_params_per_seed(stacked_params: Any) -> int:
    """Number of scalar parameters of one model in a seed-stacked pytree."""
    return int(sum(x.size // x.shape[0] for x in jax.tree.leaves(stacked_params)))


def config_hash(d: dict) -> str:
    """Short stable hash of a JSON-able dict (for cache directory names)."""
    import hashlib

    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
