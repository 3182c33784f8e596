"""The training loop: data → jitted step → per-epoch eval, JSONL, checkpoints, results, plots.

Workdir contract (big_vision-style):

* ``config.gin`` (operative gin config), ``config.json``, ``cmdline.txt``, ``env.json``;
* ``metrics.jsonl`` — one record per epoch: ``epoch``, ``train_loss``, ``train_accuracy``,
  ``test_loss``, ``test_accuracy``, ``ascent_norm`` (mean ‖∇ ascent loss‖; for one-pass
  methods ‖∇ loss‖), ``perturbation_norm`` (mean ‖ε‖), ``lr``, ``images_per_s`` (training
  throughput, compile excluded), ``epoch_time_s``, ``wall_time_s``;
* ``checkpoint.msgpack`` — written after every epoch and on Ctrl-C (mid-epoch, with the step
  and the partial epoch sums); rerunning with the same workdir resumes and reaches the same
  final state as an uninterrupted run, since every batch is a function of
  ``(seed, epoch, step)``;
* ``results.json`` and ``curves.png`` at the end.
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
from experiments.common.checkpoint import atomic_write, load_checkpoint, read_checkpoint_meta, save_checkpoint
from experiments.common.config import ExperimentConfig
from experiments.common.data import Dataset, load_dataset
from experiments.common.metrics import append_jsonl, env_info, reconcile_jsonl, write_json
from experiments.common.models import build_model, count_params
from experiments.common.optim import build_optimizer
from experiments.common import steps as S

__all__ = ["Trainer", "train_and_evaluate"]

# Fields that may change between a run and its resumption.
_RESUME_FREE = {("train", "progress"), ("train", "plots"), ("train", "interrupt_after_steps"),
                ("train", "eval_every"), ("train", "checkpoint"), ("data", "data_dir")}

_METRIC_KEYS = ("loss", "correct", "count", "ascent_norm", "perturbation_norm", "lr", "steps")


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
    """Raised between two steps after Ctrl-C (or the test hook)."""


class Trainer:
    """One run. Build it, then call :meth:`run`. Exposes the jitted functions (``train_step``,
    ``eval_step``) so tests can check that each compiled exactly once."""

    def __init__(self, cfg: ExperimentConfig, workdir: str, *, dataset: Dataset | None = None,
                 devices: list | None = None) -> None:
        self.cfg = cfg
        self.workdir = workdir
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
        self.state = jax.device_put(state, self.replicated)
        self.num_params = count_params(state.params)
        self.train_step = step_jit

    # ------------------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        sums = None
        for b in aug.eval_batches(self.ds.x_test, self.ds.y_test, self.eval_batch_size):
            batch = S.put_batch({"x": b.x, "y": b.y, "mask": b.mask}, self.batch_sharding, self.replicated)
            m = self.eval_step(self.state.params, self.state.batch_stats, batch)
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
        sums = jax.device_get(sums)
        n = max(float(sums["count"]), 1.0)
        return {"test_loss": float(sums["loss"]) / n, "test_accuracy": float(sums["correct"]) / n}

    def _write_side_files(self, argv: list[str] | None) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        try:
            op = gin.operative_config_str()
        except Exception:  # noqa: BLE001
            op = ""
        atomic_write(os.path.join(self.workdir, "config.gin"), op or gin.config_str())
        write_json(os.path.join(self.workdir, "config.json"), self.cfg.to_dict())
        atomic_write(os.path.join(self.workdir, "cmdline.txt"), " ".join(argv if argv is not None else sys.argv) + "\n")
        write_json(os.path.join(self.workdir, "env.json"), env_info())

    def run(self, argv: list[str] | None = None) -> dict:
        """Train (resuming from the workdir's checkpoint if any), evaluate, write results."""
        cfg, t = self.cfg, self.cfg.train
        self._write_side_files(argv)
        metrics_path = os.path.join(self.workdir, "metrics.jsonl")
        start_epoch, start_step, accum, prev_wall = 0, 0, None, 0.0
        meta0 = read_checkpoint_meta(self.workdir)
        if meta0 is not None:
            diff = _config_diff(cfg.to_dict(), meta0.get("config", {}))
            if diff:
                raise ValueError("workdir " + self.workdir + " holds a checkpoint of a different config: "
                                 + "; ".join(diff) + ". Use another --workdir.")
        restored = load_checkpoint(self.workdir, jax.device_get(self.state)) if meta0 is not None else None
        if restored is not None:
            state, meta = restored
            self.state = jax.device_put(state, self.replicated)
            start_epoch, start_step = int(meta["epoch"]), int(meta["step_in_epoch"])
            accum = meta.get("accum")
            prev_wall = float(meta.get("wall_time_s", 0.0))
            records = reconcile_jsonl(metrics_path, start_epoch, meta.get("last_record"))
            print(f"[resume] {self.workdir}: epoch {start_epoch}, step {start_step} "
                  f"({len(records)} epochs logged)", file=sys.stderr)
        else:
            records = reconcile_jsonl(metrics_path, 0, None)

        t_start = time.perf_counter() - prev_wall
        steps_this_process = 0
        epoch, next_step = start_epoch, start_step
        sums, dev_sums = accum, None
        self._stop_requested = False
        old_handler = self._install_sigint()
        spe = self.steps_per_epoch
        d = cfg.data
        last_record = records[-1] if records else None
        try:
            for epoch in range(start_epoch, t.epochs):
                perm = aug.epoch_permutation(len(self.ds.x_train), t.seed, epoch)
                sums = dict(accum) if accum else {k: 0.0 for k in _METRIC_KEYS}
                dev_sums = None
                accum = None
                first = start_step if epoch == start_epoch else 0
                bar = None
                if t.progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=spe, initial=first, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False,
                               dynamic_ncols=True)
                t_ep = time.perf_counter()
                timed_images, t_timed = 0, None
                for step in range(first, spe):
                    b = aug.train_batch(self.ds.x_train, self.ds.y_train, batch_size=d.batch_size, seed=t.seed,
                                        epoch=epoch, step=step, augment=self.augment, perm=perm)
                    batch = S.put_batch({"x": b.x, "y": b.y, "idx": b.idx, "epoch": np.int32(epoch)},
                                        self.batch_sharding, self.replicated)
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
                        self._stop_requested = True
                    if self._stop_requested:
                        raise _StopRequested
                jax.block_until_ready(self.state)
                t_end = time.perf_counter()
                if bar is not None:
                    bar.close()
                sums = self._merge(sums, dev_sums)
                dev_sums = None
                n = max(sums["count"], 1.0)
                ns = max(sums["steps"], 1.0)
                rec: dict[str, Any] = {
                    "epoch": epoch,
                    "train_loss": sums["loss"] / n,
                    "train_accuracy": sums["correct"] / n,
                    "ascent_norm": sums["ascent_norm"] / ns,
                    "perturbation_norm": sums["perturbation_norm"] / ns,
                    "lr": sums["lr"] / ns,
                    "images_per_s": (timed_images / (t_end - t_timed)) if (t_timed and timed_images) else None,
                    "epoch_time_s": t_end - t_ep,
                }
                if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                    rec.update(self.evaluate())
                else:
                    rec.update(test_loss=None, test_accuracy=None)
                rec["wall_time_s"] = time.perf_counter() - t_start
                last_record = rec
                records.append(rec)
                if t.checkpoint:
                    self._save(epoch + 1, 0, None, rec, rec["wall_time_s"])
                append_jsonl(metrics_path, rec)
                if t.progress:
                    ta = rec.get("test_accuracy")
                    print(f"epoch {epoch + 1:3d}/{t.epochs}  loss {rec['train_loss']:.4f}  "
                          f"acc {rec['train_accuracy']:.4f}  test_acc {ta if ta is None else round(ta, 4)}  "
                          f"|g| {rec['ascent_norm']:.3g}  |eps| {rec['perturbation_norm']:.3g}  "
                          f"img/s {rec['images_per_s'] or 0:.0f}", file=sys.stderr)
                start_step = 0
        except _StopRequested:
            # Stopped cleanly between two steps: save the exact position (mid-epoch) and the
            # partial epoch sums; the resumed run continues bit-for-bit.
            sums = self._merge(sums or {k: 0.0 for k in _METRIC_KEYS}, dev_sums)
            jax.block_until_ready(self.state)
            if t.checkpoint:
                self._save(epoch, next_step, sums, last_record, time.perf_counter() - t_start)
                print(f"\n[interrupted] checkpoint written to {self.workdir} at epoch {epoch}, step "
                      f"{next_step}; rerun the same command to resume.", file=sys.stderr)
            raise KeyboardInterrupt from None
        finally:
            self._restore_sigint(old_handler)
        return self._finish(records, time.perf_counter() - t_start)

    def _install_sigint(self) -> Any:
        """First Ctrl-C: finish the current step, checkpoint, stop. Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\n[Ctrl-C] finishing this step and writing a checkpoint (press again to abort)",
                  file=sys.stderr)

        return signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _restore_sigint(old: Any) -> None:
        if old is not None:
            signal.signal(signal.SIGINT, old)

    @staticmethod
    def _merge(sums: dict, dev_sums: dict | None) -> dict:
        if dev_sums is None:
            return sums
        h = jax.device_get(dev_sums)
        return {k: float(sums.get(k, 0.0)) + float(h[k]) for k in _METRIC_KEYS}

    def _save(self, epoch: int, step: int, accum: dict | None, last_record: dict | None, wall: float) -> None:
        meta = {"epoch": epoch, "step_in_epoch": step, "accum": accum, "last_record": last_record,
                "wall_time_s": wall, "config": self.cfg.to_dict()}
        save_checkpoint(self.workdir, self.state, meta)

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
            "train_step_compiles": int(self.train_step._cache_size()),
        }
        write_json(os.path.join(self.workdir, "results.json"), res)
        if cfg.train.plots and records:
            from experiments.common.plots import plot_run

            plot_run(records, os.path.join(self.workdir, "curves.png"),
                     f"{cfg.data.dataset} / {cfg.model.name} / {cfg.optim.name} / seed {cfg.train.seed}")
        return res


def train_and_evaluate(cfg: ExperimentConfig, workdir: str, *, dataset: Dataset | None = None,
                       argv: list[str] | None = None) -> dict:
    """Train and evaluate one run described by ``cfg`` in ``workdir`` (resumes if possible)."""
    return Trainer(cfg, workdir, dataset=dataset).run(argv)
