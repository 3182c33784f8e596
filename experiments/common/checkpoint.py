"""Checkpoints on orbax-checkpoint: keep-last-k plus the best epoch, atomic, optionally async.

Layout: ``<workdir>/checkpoints/<step>/`` (``step`` = optimizer steps taken), one orbax
checkpoint per save with two items:

* ``state`` — the ``TrainState`` pytree (``params``, ``batch_stats``, ``opt_state``, ...),
  written with ``StandardSave`` (OCDBT/Zarr via TensorStore), readable without lossjax::

      import orbax.checkpoint as ocp
      mngr = ocp.CheckpointManager("<workdir>/checkpoints")
      state = mngr.restore(mngr.latest_step(),
                           args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

* ``meta`` — JSON: ``epoch`` (completed epochs), ``step_in_epoch``, the partial epoch sums
  of a mid-epoch save, the last metrics record, the wall time and the run's config.

Orbax writes into a temporary directory and renames it when complete (a reader never sees a
half-written step), coordinates several processes (each writes its shards, one finalises),
and applies the preservation policy: the last ``keep`` steps plus the step with the best
``best_metric`` (:class:`orbax.checkpoint.checkpoint_managers.AnyPreservationPolicy` of
``LatestN`` and ``BestN``).

Earlier runs wrote one ``checkpoint.msgpack`` file (``flax.serialization``); such a workdir is
still resumed from it (:func:`read_legacy_meta`, :func:`load_legacy_checkpoint`) and new saves
go to ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

import jax
import numpy as np

__all__ = ["CheckpointStore", "atomic_write", "read_checkpoint_meta", "load_params_numpy", "read_legacy_meta",
           "load_legacy_checkpoint", "CHECKPOINT_DIR", "LEGACY_CHECKPOINT_NAME"]

CHECKPOINT_DIR = "checkpoints"
LEGACY_CHECKPOINT_NAME = "checkpoint.msgpack"


def atomic_write(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ocp():
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # pragma: no cover - orbax comes with the experiments extra
        raise ImportError("checkpoints need orbax-checkpoint: pip install 'lossjax[experiments]'.") from e
    return ocp


class CheckpointStore:
    """The run's orbax ``CheckpointManager`` (every process must create and call it alike).

    Args:
      workdir: the run's directory; checkpoints go to ``<workdir>/checkpoints``.
      keep: keep the last ``keep`` checkpoints (>= 1).
      best_metric: also keep the checkpoint with the best value of this metric (``None``: off).
      best_mode: ``'max'`` or ``'min'``.
      async_save: write in a background thread (the arrays are copied to host memory first,
        so training continues at once); :meth:`wait` / :meth:`close` finish the write.
    """

    def __init__(self, workdir: str, *, keep: int = 2, best_metric: str | None = "test_accuracy",
                 best_mode: str = "max", async_save: bool = False) -> None:
        if keep < 1:
            raise ValueError(f"`keep` must be >= 1, got {keep}.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"`best_mode` must be 'max' or 'min', got {best_mode!r}.")
        ocp = _ocp()
        from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

        if jax.process_count() > 1:
            _use_coordination_barriers()

        self.workdir = workdir
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
        self.best_metric = best_metric
        policies: list = [pp.LatestN(n=keep)]
        self._sign = sign = 1.0 if best_mode == "max" else -1.0
        if best_metric:
            policies.append(pp.BestN(get_metric_fn=lambda m: sign * float(m[best_metric]), n=1,
                                     keep_checkpoints_without_metrics=False))
        # best_fn also makes orbax write each step's metrics to disk, so the best step is still
        # known (and kept) after a restart.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies), enable_async_checkpointing=async_save,
            best_fn=(lambda m: float(m[best_metric])) if best_metric else None, best_mode=best_mode,
            create=True, cleanup_tmp_directories=True)
        self._mngr = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    # -- reading ---------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric`` (None if no kept step has metrics)."""
        if not self.best_metric:
            return None
        scored = []
        for step in self._mngr.all_steps():
            m = self._mngr.metrics(step)
            if m and m.get(self.best_metric) is not None:
                scored.append((self._sign * float(m[self.best_metric]), step))
        return max(scored)[1] if scored else None

    def latest_meta(self) -> dict | None:
        """The metadata of the newest checkpoint, else of a legacy ``checkpoint.msgpack``, else None."""
        step = self.latest_step()
        if step is None:
            return read_legacy_meta(self.workdir)
        ocp = _ocp()
        try:
            return dict(self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"checkpoint {self.directory}/{step} is unreadable ({e}). Use another --workdir "
                             f"or delete it.") from e

    def restore(self, state: Any, replicated: jax.sharding.Sharding) -> tuple[Any, dict] | None:
        """``(state, meta)`` of the newest checkpoint, shaped and placed like ``state`` (arrays
        on ``replicated``), or None if the workdir has none.

        Raises:
          ValueError: the checkpoint is corrupt or its arrays do not match ``state``.
        """
        step = self.latest_step()
        if step is None:
            legacy = load_legacy_checkpoint(self.workdir, jax.device_get(state))
            if legacy is None:
                return None
            from experiments.common.steps import put_replicated

            return put_replicated(legacy[0], replicated), legacy[1]
        ocp = _ocp()
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), state)
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"checkpoint {self.directory}/{step} is unreadable or does not match this config "
                             f"({type(e).__name__}: {e}). Use another --workdir or delete it.") from e
        return out["state"], dict(out["meta"])

    # -- writing ---------------------------------------------------------------------------

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> bool:
        """Save ``state`` and ``meta`` as step ``step`` (skipped if that step exists: every
        state is a function of its step, so it would be the same); ``metrics`` (JSON numbers)
        rank the checkpoint for ``best_metric``."""
        if step in self._mngr.all_steps():
            return False
        ocp = _ocp()
        m = None
        if metrics is not None and self.best_metric and metrics.get(self.best_metric) is not None:
            m = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        with _quiet_absl("tracked_metric"):  # a mid-epoch save has no metrics, by design
            return bool(self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                      meta=ocp.args.JsonSave(meta)),
                                        metrics=m, force=True))

    def wait(self) -> None:
        """Block until an async save has finished."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


@contextlib.contextmanager
def _quiet_absl(fragment: str):
    """Drop absl log records containing ``fragment`` inside the block."""
    import logging

    logger = logging.getLogger("absl")

    def keep(record: logging.LogRecord) -> bool:
        return fragment not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _use_coordination_barriers() -> None:
    """Let orbax synchronise processes with the coordination service's barriers (which wait up
    to minutes) instead of collectives (on CPU, gloo gives up after ~30 s when processes reach
    a sync point far apart, e.g. one of them still compiling)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    if "experimental_orbax_use_distributed_barrier" in flags.FLAGS:
        flags.FLAGS.experimental_orbax_use_distributed_barrier = True


def read_checkpoint_meta(workdir: str) -> dict | None:
    """The metadata of the newest checkpoint of ``workdir`` (orbax or legacy; None if none)."""
    if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        return read_legacy_meta(workdir)
    store = CheckpointStore(workdir)
    try:
        return store.latest_meta()
    finally:
        store.close()


def load_params_numpy(workdir: str, step: int | None = None) -> Any:
    """The ``state`` pytree of a checkpoint as host NumPy arrays (newest step by default), on
    any machine (no devices or processes of the writing run needed)."""
    ocp = _ocp()
    directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    with ocp.CheckpointManager(directory, item_names=("state", "meta"), item_handlers=handlers,
                               options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {directory}.")
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                              mngr.item_metadata(step)["state"])
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    return jax.tree.map(np.asarray, state)


# ---------------------------------------------------------------------------------------------
# checkpoints of earlier versions: one msgpack file (flax.serialization)
# ---------------------------------------------------------------------------------------------


def read_legacy_meta(workdir: str) -> dict | None:
    """The metadata of an earlier run's ``checkpoint.msgpack`` (None if there is none)."""
    path = os.path.join(workdir, LEGACY_CHECKPOINT_NAME)
    if not os.path.exists(path):
        return None
    from flax import serialization

    try:
        with open(path, "rb") as f:
            return json.loads(serialization.msgpack_restore(f.read())["meta"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"legacy checkpoint {path} (from an earlier version of the runner) is unreadable "
                         f"({type(e).__name__}: {e}). Use another --workdir or delete it.") from e


def load_legacy_checkpoint(workdir: str, template: Any) -> tuple[Any, dict] | None:
    """Restore ``(state, meta)`` from an earlier run's ``checkpoint.msgpack``, shaped like
    ``template`` (host arrays), or None if there is none.

    Raises:
      ValueError: the file is corrupt or does not match ``template``.
    """
    path = os.path.join(workdir, LEGACY_CHECKPOINT_NAME)
    if not os.path.exists(path):
        return None
    from flax import serialization

    try:
        with open(path, "rb") as f:
            payload = serialization.msgpack_restore(f.read())
        meta = json.loads(payload["meta"])
        state = serialization.from_state_dict(template, payload["state"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"legacy checkpoint {path} (from an earlier version of the runner) is unreadable or "
                         f"does not match this config ({type(e).__name__}: {e}). Use another --workdir or "
                         f"delete it.") from e
    bad = [(a.shape, np.shape(b)) for a, b in zip(jax.tree.leaves(template), jax.tree.leaves(state))
           if tuple(a.shape) != tuple(np.shape(b))]
    if bad:
        raise ValueError(f"legacy checkpoint {path}: array shapes differ from this config's model/optimizer "
                         f"({bad[:3]}). Use another --workdir.")
    return state, meta
