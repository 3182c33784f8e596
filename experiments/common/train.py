"""The training loop: data → jitted step → per-epoch eval, JSONL, TensorBoard, checkpoints.

Workdir contract (big_vision-style):

* ``config.gin`` (operative gin config), ``config.json``, ``cmdline.txt``, ``env.json`` —
  written once the run is accepted (after a resume's config check), by process 0;
* ``metrics.jsonl`` — one record per epoch: ``epoch`` (1-based, the number the console
  prints), ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
  ``ascent_norm`` (mean ‖∇ ascent loss‖; for one-pass methods ‖∇ loss‖),
  ``perturbation_norm`` (mean ‖ε‖), ``lr``, ``images_per_s`` (training throughput, compile
  excluded; ``null`` for a one-step epoch), ``epoch_time_s``, ``wall_time_s``;
* ``tb/`` — the same scalars as TensorBoard event files (``tensorboard --logdir <workdir>/tb``);
* ``checkpoints/<step>/`` — orbax checkpoints (``experiments.common.checkpoint``): after every
  epoch (the last ``keep`` plus the best test accuracy are kept) and on Ctrl-C or SIGTERM
  (mid-epoch, with the step and the partial epoch sums). Rerunning the same command resumes
  and reaches the same final state as an uninterrupted run, since every batch is a function
  of ``(seed, epoch, step)``;
* ``results.json`` and ``curves.png`` at the end.

Console: one line per epoch always; a tqdm bar within the epoch only on a terminal.
Several processes (``experiments.common.distributed``): one global mesh and batch; process 0
writes the files and prints, orbax coordinates the checkpoints.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import augment as aug
from experiments.common import distributed as D
from experiments.common import steps as S
from experiments.common.checkpoint import CHECKPOINT_DIR, LEGACY_CHECKPOINT_NAME, CheckpointStore, atomic_write
from experiments.common.config import ExperimentConfig
from experiments.common.data import Dataset, load_dataset
from experiments.common.metrics import TensorBoardWriter, append_jsonl, env_info, reconcile_jsonl, write_json
from experiments.common.models import build_model, count_params
from experiments.common.optim import build_optimizer

__all__ = ["Trainer", "train_and_evaluate", "Preempted", "ResumeRefused"]

# Fields that may change between a run and its resumption.
_RESUME_FREE = {("train", "progress"), ("train", "plots"), ("train", "interrupt_after_steps"),
                ("train", "eval_every"), ("train", "checkpoint"), ("data", "data_dir")}

_METRIC_KEYS = ("loss", "correct", "count", "ascent_norm", "perturbation_norm", "lr", "steps")
_META_FORMAT = 2  # orbax checkpoints, 1-based epochs in metrics.jsonl


def _config_diff(a: dict, b: dict) -> list[str]:
    out = []
    for sec in a:
        for k in a[sec]:
            if (sec, k) in _RESUME_FREE:
                continue
            va, vb = a[sec][k], b.get(sec, {}).get(k)
            if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)):
                va, vb = list(va), list(vb)
            if va != vb:
                out.append(f"{sec}.{k}: checkpoint {vb!r} vs now {va!r}")
    return out


_COMPILED: dict = {}


class _StopRequested(Exception):
    """Raised between two steps after Ctrl-C / SIGTERM (or the test hook)."""


class ResumeRefused(ValueError):
    """The workdir holds a checkpoint of a different config (nothing was written)."""


class Preempted(KeyboardInterrupt):
    """The run stopped on SIGTERM after writing a checkpoint (rerun the command to resume)."""


class Trainer:
    """One run. Build it, then call :meth:`run`. Exposes the jitted functions (``train_step``,
    ``eval_step``) so tests can check that each compiled exactly once.

    Args:
      cfg: the run's config.
      workdir: output directory (resumed from if it holds a checkpoint).
      dataset: use this dataset instead of loading ``cfg.data.dataset``.
      devices: the mesh's devices (default: every device of every process).
      keep_checkpoints: keep the last k epoch checkpoints (plus the best test accuracy).
      async_checkpoint: write checkpoints in the background (orbax async save).
      tensorboard: also write TensorBoard event files to ``<workdir>/tb``.
    """

    def __init__(self, cfg: ExperimentConfig, workdir: str, *, dataset: Dataset | None = None,
                 devices: list | None = None, keep_checkpoints: int = 2, async_checkpoint: bool = False,
                 tensorboard: bool = True) -> None:
        self.cfg = cfg
        self.workdir = workdir
        if keep_checkpoints < 1:
            raise ValueError(f"`keep_checkpoints` must be >= 1, got {keep_checkpoints}.")
        self.keep_checkpoints = keep_checkpoints
        self.async_checkpoint = async_checkpoint
        self.tensorboard = tensorboard
        self.primary = D.is_primary()
        d = cfg.data
        ds = dataset if dataset is not None else load_dataset(d.dataset, d.data_dir or None)
        if d.n_train or d.n_test:
            ds = ds.subset(d.n_train or None, d.n_test or None)
        self.ds = ds
        self.mesh = S.make_mesh(devices)
        self.replicated, self.batch_sharding = S.shardings(self.mesh)
        ndev = self.mesh.devices.size
        self.eval_batch_size = d.eval_batch_size or d.batch_size
        for name, bsz in (("data.batch_size", d.batch_size), ("data.eval_batch_size", self.eval_batch_size)):
            if bsz % ndev:
                raise ValueError(f"`{name}`={bsz} must be divisible by the number of devices ({ndev}).")
        # This process's rows of every training / evaluation batch.
        self.train_rows = D.local_rows(self.batch_sharding, d.batch_size)
        self.eval_rows = D.local_rows(self.batch_sharding, self.eval_batch_size)
        if cfg.optim.group_size and d.batch_size % cfg.optim.group_size:
            raise ValueError(f"`optim.group_size`={cfg.optim.group_size} must divide `data.batch_size`={d.batch_size}.")
        self.steps_per_epoch = aug.steps_per_epoch(len(ds.x_train), d.batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"`data.batch_size`={d.batch_size} exceeds the {len(ds.x_train)} training examples.")
        self.augment = d.augment
        self.model = build_model(cfg.model, ds.num_classes)
        o = cfg.optim
        # Runs that share everything the step depends on share its compiled functions (seeds of
        # a study, a resumed run, tests); the step never closes over per-run arrays.
        key = (cfg.model, o, d.batch_size, self.eval_batch_size, cfg.train.epochs,
               cfg.train.seed if cfg.model.dropout > 0 else None, ds.name, ds.image_shape, ds.num_classes,
               tuple(ds.mean), tuple(ds.std), len(ds.x_train), tuple(self.mesh.devices.flat))
        cached = _COMPILED.get(key)
        if cached is None:
            setup = build_optimizer(o, steps_per_epoch=self.steps_per_epoch, epochs=cfg.train.epochs,
                                    num_examples=len(ds.x_train), num_classes=ds.num_classes)
            step_fn = S.make_train_step(
                self.model, setup, mean=ds.mean, std=ds.std, label_smoothing=o.label_smoothing,
                mesa_decay=o.mesa_decay, group_size=o.group_size, aace_mode=o.aace_mode, aace_th=o.aace_th,
                seed=cfg.train.seed, dropout=cfg.model.dropout > 0)
            train_step = jax.jit(step_fn, out_shardings=self.replicated, donate_argnums=(0,))
            eval_step = jax.jit(S.make_eval_step(self.model, mean=ds.mean, std=ds.std),
                                out_shardings=self.replicated)
            init_fn = jax.jit(lambda k: self.model.init(k, jnp.zeros((1, *ds.image_shape), jnp.float32),
                                                         train=False))
            cached = (setup, train_step, eval_step, init_fn)
            if len(_COMPILED) > 32:
                _COMPILED.clear()
            _COMPILED[key] = cached
        self.setup, step_jit, self.eval_step, init_fn = cached
        state = S.init_state(self.model, self.setup, ds.image_shape, cfg.train.seed, init_fn=init_fn)
        self.num_params = count_params(state.params)
        self.state = S.put_replicated(state, self.replicated)
        self.train_step = step_jit

    # ------------------------------------------------------------------------------------------

    def _put(self, batch: dict, global_batch: int) -> dict:
        return S.put_batch(batch, self.batch_sharding, self.replicated, global_batch)

    def evaluate(self) -> dict:
        sums = None
        for b in aug.eval_batches(self.ds.x_test, self.ds.y_test, self.eval_batch_size, rows=self.eval_rows):
            batch = self._put({"x": b.x, "y": b.y, "mask": b.mask}, self.eval_batch_size)
            m = self.eval_step(self.state.params, self.state.batch_stats, batch)
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
        sums = jax.device_get(sums)
        n = max(float(sums["count"]), 1.0)
        return {"test_loss": float(sums["loss"]) / n, "test_accuracy": float(sums["correct"]) / n}

    def _write_side_files(self, argv: list[str] | None) -> None:
        if not self.primary:
            return
        os.makedirs(self.workdir, exist_ok=True)
        try:
            op = gin.operative_config_str()
        except Exception:  # noqa: BLE001
            op = ""
        atomic_write(os.path.join(self.workdir, "config.gin"), op or gin.config_str())
        write_json(os.path.join(self.workdir, "config.json"), self.cfg.to_dict())
        atomic_write(os.path.join(self.workdir, "cmdline.txt"), " ".join(argv if argv is not None else sys.argv) + "\n")
        write_json(os.path.join(self.workdir, "env.json"), env_info())

    def _open_store(self) -> CheckpointStore | None:
        wd = self.workdir
        if (self.cfg.train.checkpoint or os.path.isdir(os.path.join(wd, CHECKPOINT_DIR))
                or os.path.exists(os.path.join(wd, LEGACY_CHECKPOINT_NAME))):
            return CheckpointStore(self.workdir, keep=self.keep_checkpoints, async_save=self.async_checkpoint)
        return None

    def _log(self, msg: str) -> None:
        if self.primary:
            print(msg, file=sys.stderr, flush=True)

    def run(self, argv: list[str] | None = None) -> dict:
        """Train (resuming from the workdir's checkpoint if any), evaluate, write results.

        Raises:
          ValueError: the workdir holds a checkpoint of a different config (nothing is written).
          KeyboardInterrupt: stopped by Ctrl-C after writing a checkpoint (:class:`Preempted`
            on SIGTERM).
        """
        cfg, t = self.cfg, self.cfg.train
        self._stop_requested = None
        old_handlers = self._install_handlers()  # before anything is written: a signal stops cleanly
        store = None
        try:
            store = self._open_store()
            return self._run(cfg, t, store, argv)
        finally:
            self._restore_handlers(old_handlers)
            if store is not None:
                store.close()

    def _run(self, cfg: ExperimentConfig, t: Any, store: CheckpointStore | None, argv: list[str] | None) -> dict:
        metrics_path = os.path.join(self.workdir, "metrics.jsonl")
        start_epoch, start_step, accum, prev_wall = 0, 0, None, 0.0
        meta0 = store.latest_meta() if store is not None else None
        if meta0 is not None:
            diff = _config_diff(cfg.to_dict(), meta0.get("config", {}))
            if diff:
                raise ResumeRefused("workdir " + self.workdir + " holds a checkpoint of a different config: "
                                 + "; ".join(diff) + ". Use another --workdir.")
        # The run is accepted: only now describe it in the workdir.
        self._write_side_files(argv)
        restored = None
        if meta0 is not None:
            restored = store.restore(self.state, self.replicated)
        if restored is not None:
            self.state, meta = restored
            start_epoch, start_step = int(meta["epoch"]), int(meta["step_in_epoch"])
            accum = meta.get("accum")
            prev_wall = float(meta.get("wall_time_s", 0.0))
            shift = 0 if meta.get("format") == _META_FORMAT else 1  # earlier versions: 0-based epochs
            last = meta.get("last_record")
            if last is not None and shift:
                last = dict(last, epoch=last["epoch"] + shift)
            records = reconcile_jsonl(metrics_path, start_epoch, last, write=self.primary, shift=shift)
            self._log(f"[resume] {self.workdir}: {start_epoch} epochs + {start_step} steps done "
                      f"({len(records)} epochs logged)")
        else:
            records = reconcile_jsonl(metrics_path, 0, None, write=self.primary)

        tb = TensorBoardWriter(os.path.join(self.workdir, "tb")) if (self.tensorboard and self.primary) else None
        t_start = time.perf_counter() - prev_wall
        steps_this_process = 0
        epoch, next_step = start_epoch, start_step
        sums, dev_sums = accum, None
        spe = self.steps_per_epoch
        d = cfg.data
        last_record = records[-1] if records else None
        saved_at_stop = False
        bar_on = bool(t.progress and self.primary and sys.stderr.isatty())
        D.barrier(f"train_start_{start_epoch}_{start_step}")
        try:
            for epoch in range(start_epoch, t.epochs):
                perm = aug.epoch_permutation(len(self.ds.x_train), t.seed, epoch)
                sums = dict(accum) if accum else {k: 0.0 for k in _METRIC_KEYS}
                dev_sums = None
                accum = None
                first = start_step if epoch == start_epoch else 0
                bar = None
                if bar_on:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=spe, initial=first, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False,
                               dynamic_ncols=True)
                t_ep = time.perf_counter()
                timed_images, t_timed = 0, None
                stop_at_epoch_end = False
                for step in range(first, spe):
                    b = aug.train_batch(self.ds.x_train, self.ds.y_train, batch_size=d.batch_size, seed=t.seed,
                                        epoch=epoch, step=step, augment=self.augment, perm=perm,
                                        rows=self.train_rows)
                    batch = self._put({"x": b.x, "y": b.y, "idx": b.idx, "epoch": np.int32(epoch)}, d.batch_size)
                    self.state, m = self.train_step(self.state, batch)
                    m = dict(m, steps=jnp.ones([], jnp.float32))
                    dev_sums = m if dev_sums is None else jax.tree.map(jnp.add, dev_sums, m)
                    next_step = step + 1
                    steps_this_process += 1
                    if step == first:  # exclude compilation / the pipeline start from images/s
                        jax.block_until_ready(self.state)
                        t_timed = time.perf_counter()
                    else:
                        timed_images += d.batch_size
                    if bar is not None:
                        bar.update(1)
                        if step % 10 == 0 or step == spe - 1:
                            h = jax.device_get(dev_sums)
                            n = max(float(h["count"]) + sums["count"], 1.0)
                            el = time.perf_counter() - (t_timed or t_ep)
                            bar.set_postfix(loss=f"{(float(h['loss']) + sums['loss']) / n:.4f}",
                                            acc=f"{(float(h['correct']) + sums['correct']) / n:.4f}",
                                            img_s=f"{timed_images / el:.0f}" if el > 0 and timed_images else "-")
                    if t.interrupt_after_steps and steps_this_process >= t.interrupt_after_steps:
                        self._stop_requested = self._stop_requested or "interrupt_after_steps"
                    # Every process must stop after the same step (the steps are collectives).
                    if D.any_process(self._stop_requested is not None, self.batch_sharding):
                        self._stop_requested = self._stop_requested or "another process"
                        if step < spe - 1:
                            raise _StopRequested
                        stop_at_epoch_end = True  # the epoch is complete: close it normally
                jax.block_until_ready(self.state)
                t_end = time.perf_counter()
                if bar is not None:
                    bar.close()
                sums = self._merge(sums, dev_sums)
                dev_sums = None
                n = max(sums["count"], 1.0)
                ns = max(sums["steps"], 1.0)
                rec: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": sums["loss"] / n,
                    "train_accuracy": sums["correct"] / n,
                    "ascent_norm": sums["ascent_norm"] / ns,
                    "perturbation_norm": sums["perturbation_norm"] / ns,
                    "lr": sums["lr"] / ns,
                    "images_per_s": (timed_images / (t_end - t_timed)) if (t_timed and timed_images) else None,
                    "epoch_time_s": t_end - t_ep,
                }
                evaluated = (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs
                if evaluated:
                    rec.update(self.evaluate())
                else:
                    rec.update(test_loss=None, test_accuracy=None)
                rec["wall_time_s"] = time.perf_counter() - t_start
                last_record = rec
                records.append(rec)
                if store is not None and t.checkpoint:
                    self._save(store, epoch + 1, 0, None, rec, rec["wall_time_s"], rec if evaluated else None)
                if self.primary:
                    append_jsonl(metrics_path, rec)
                    if tb is not None:
                        tb.write(rec)
                ta, ips = rec.get("test_accuracy"), rec["images_per_s"]
                self._log(f"epoch {epoch + 1:3d}/{t.epochs}  loss {rec['train_loss']:.4f}  "
                          f"acc {rec['train_accuracy']:.4f}  test_acc {'-' if ta is None else f'{ta:.4f}'}  "
                          f"|g| {rec['ascent_norm']:.3g}  |eps| {rec['perturbation_norm']:.3g}  "
                          f"img/s {'-' if ips is None else f'{ips:.0f}'}  {rec['epoch_time_s']:.1f}s")
                start_step = 0
                if stop_at_epoch_end:
                    saved_at_stop = True
                    raise _StopRequested
        except _StopRequested:
            # Stopped cleanly between two steps: save the exact position (mid-epoch) and the
            # partial epoch sums; the resumed run continues bit-for-bit.
            jax.block_until_ready(self.state)
            if store is not None and t.checkpoint:
                if not saved_at_stop:
                    sums = self._merge(sums or {k: 0.0 for k in _METRIC_KEYS}, dev_sums)
                    self._save(store, epoch, next_step, sums, last_record, time.perf_counter() - t_start, None)
                store.wait()
                pos = f"epoch {epoch + 1}" if saved_at_stop else f"epoch {epoch + 1}, step {next_step}/{spe}"
                self._log(f"\n[stopped: {self._stop_requested}] checkpoint written to {self.workdir} after "
                          f"{pos}; rerun the same command to resume.")
            if self._stop_requested == "SIGTERM":
                raise Preempted from None
            raise KeyboardInterrupt from None
        finally:
            if tb is not None:
                tb.close()
        return self._finish(records, time.perf_counter() - t_start)

    def _install_handlers(self) -> dict:
        """Ctrl-C or SIGTERM (a scheduler's preemption notice): finish the current step,
        checkpoint, stop. A second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop_requested is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            if self._stop_requested is None:
                self._stop_requested = name
                what = "Ctrl-C" if signum == signal.SIGINT else name
                self._log(f"\n[{what}] finishing this step and writing a checkpoint"
                          + (" (press again to abort)" if signum == signal.SIGINT else ""))

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_handlers(old: dict) -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    @staticmethod
    def _merge(sums: dict, dev_sums: dict | None) -> dict:
        if dev_sums is None:
            return sums
        h = jax.device_get(dev_sums)
        return {k: float(sums.get(k, 0.0)) + float(h[k]) for k in _METRIC_KEYS}

    def _save(self, store: CheckpointStore, epoch: int, step: int, accum: dict | None, last_record: dict | None,
              wall: float, metrics: dict | None) -> None:
        meta = {"format": _META_FORMAT, "epoch": epoch, "step_in_epoch": step, "accum": accum,
                "last_record": last_record, "wall_time_s": wall, "config": self.cfg.to_dict()}
        store.save(epoch * self.steps_per_epoch + step, self.state, meta, metrics)

    def _finish(self, records: list[dict], wall: float) -> dict:
        cfg = self.cfg
        tested = [r for r in records if r.get("test_accuracy") is not None]
        ips = [r["images_per_s"] for r in records if r.get("images_per_s")]
        final = records[-1] if records else {}
        res = {
            "dataset": cfg.data.dataset,
            "model": cfg.model.name,
            "optimizer": cfg.optim.name,
            "seed": cfg.train.seed,
            "epochs": cfg.train.epochs,
            "num_params": self.num_params,
            "final_test_accuracy": final.get("test_accuracy"),
            "final_test_loss": final.get("test_loss"),
            "best_test_accuracy": max((r["test_accuracy"] for r in tested), default=None),
            "final_train_loss": final.get("train_loss"),
            "final_train_accuracy": final.get("train_accuracy"),
            "wall_time_s": wall,
            "images_per_s_median": float(np.median(ips)) if ips else None,
            "device": str(jax.local_devices()[0].device_kind),
            "num_devices": int(self.mesh.devices.size),
            "num_processes": jax.process_count(),
            "train_step_compiles": int(self.train_step._cache_size()),
        }
        if not self.primary:
            return res
        write_json(os.path.join(self.workdir, "results.json"), res)
        if cfg.train.plots and records:
            from experiments.common.plots import plot_run

            plot_run(records, os.path.join(self.workdir, "curves.png"),
                     f"{cfg.data.dataset} / {cfg.model.name} / {cfg.optim.name} / seed {cfg.train.seed}")
        return res


def train_and_evaluate(cfg: ExperimentConfig, workdir: str, *, dataset: Dataset | None = None,
                       argv: list[str] | None = None, **trainer_kwargs: Any) -> dict:
    """Train and evaluate one run described by ``cfg`` in ``workdir`` (resumes if possible).

    ``trainer_kwargs`` go to :class:`Trainer` (``keep_checkpoints``, ``async_checkpoint``,
    ``tensorboard``, ``devices``)."""
    return Trainer(cfg, workdir, dataset=dataset, **trainer_kwargs).run(argv)
