"""Task code of the distillation study (:mod:`experiments.distill`): digits, teacher MLP, students.

* :func:`load_features` — digits as 64 standardised features (the fixed 1,297 / 500 split);
* :func:`train_teachers` — the teacher of every seed, trained once and cached (its logits in
  ``<workdir>/teacher_<hash>/logits.npz``);
* :func:`student_loss_fn` — the per-batch student objective of each method (:mod:`lossjax.losses`);
* :func:`train` — the students of one method, every seed at once (``jax.vmap``, one compilation),
  one record per epoch in ``metrics.jsonl`` (``epoch`` 1-based: epochs completed);
* :func:`results_table`, :func:`plot` — the report's pieces (its claims table is
  :func:`experiments.arms.claims_table`: paired t-tests over seeds).

``cfg`` is the study's :class:`experiments.distill.DistillConfig`; results carry per-seed
``metrics`` (``test_accuracy``, ``test_nll``, ``teacher_agreement``, ``train_loss``) as
:func:`experiments.arms.run_arms` expects.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm
from experiments.common.metrics import append_jsonl, fmt_mean_std, mean_std

if TYPE_CHECKING:
    from experiments.distill import DistillConfig

__all__ = ["TEACHER_SEED_OFFSET", "load_features", "train_teachers", "student_loss_fn", "evaluate", "train",
           "results_table", "plot"]

TEACHER_SEED_OFFSET = 1000  # teacher seed = seed + offset (independent of the student's init)


@functools.lru_cache(maxsize=1)
def load_features() -> dict[str, np.ndarray]:
    """Digits as flat 64-d float32 features, standardised with the training-set statistics
    (cached: treat the arrays as read-only)."""
    from experiments.common.data import load_digits_dataset

    ds = load_digits_dataset()
    xtr = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32) / 255.0
    xte = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float32) / 255.0
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-3
    return {"x_train": (xtr - mu) / sd, "y_train": ds.y_train.astype(np.int32),
            "x_test": (xte - mu) / sd, "y_test": ds.y_test.astype(np.int32)}


def _ce_loss(model: Any) -> sm.LossFn:
    def loss(params: Any, batch: dict, step: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, batch["x"])["out"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    return loss


def train_teachers(cfg: DistillConfig, feats: dict, workdir: str, *, progress: bool = True) -> dict:
    """Train (or load the cached) teacher of every seed; returns logits and test accuracies.

    Returns:
      ``{"logits_train": [S, N_train, 10], "logits_test": [S, N_test, 10], "test_accuracy": [S], ...}``
      (logits on *all* training images, so any student subset can be indexed).
    """
    tcfg = cfg.teacher_dict()
    tdir = os.path.join(workdir, f"teacher_{sm.config_hash(tcfg)}")
    done = sm.finished_run(tdir, tcfg)
    if done is not None and os.path.exists(os.path.join(tdir, "logits.npz")):
        z = np.load(os.path.join(tdir, "logits.npz"))
        return dict(done, logits_train=z["logits_train"], logits_test=z["logits_test"])
    os.makedirs(tdir, exist_ok=True)
    t0 = time.perf_counter()
    seeds = [s + TEACHER_SEED_OFFSET for s in cfg.seeds]
    n_all = len(feats["y_train"])
    n = cfg.teacher_n_train or n_all
    if n > n_all:
        raise ValueError(f"`distill.teacher_n_train` must be <= {n_all}, got {n}.")
    bs = min(cfg.teacher_batch_size, n)
    model = sm.MLP(tuple(cfg.teacher_hidden), 10)
    params = sm.init_stacked(model, feats["x_train"].shape[1], seeds)
    tx = sm.make_optimizer(cfg.teacher_learning_rate, cfg.teacher_weight_decay, cfg.teacher_epochs * (n // bs))
    opt = jax.vmap(tx.init)(params)
    epoch_fn = sm.make_epoch_fn(_ce_loss(model), tx, n=n, batch_size=bs)
    data = {"x": jnp.broadcast_to(feats["x_train"][:n], (len(seeds), n, feats["x_train"].shape[1])),
            "y": jnp.broadcast_to(feats["y_train"][:n], (len(seeds), n))}
    for e in range(cfg.teacher_epochs):
        params, opt, loss = epoch_fn(params, opt, data, sm.epoch_keys(seeds, e), jnp.int32(e * (n // bs)))
    apply = sm.make_apply_fn(model, shared_inputs=True)
    lt = np.asarray(apply(params, feats["x_train"])["out"])
    le = np.asarray(apply(params, feats["x_test"])["out"])
    acc = (le.argmax(-1) == feats["y_test"][None]).mean(-1)
    res = {"test_accuracy": acc.tolist(), "train_accuracy": (lt.argmax(-1) == feats["y_train"][None]).mean(-1).tolist(),
           "final_train_loss": np.asarray(loss).tolist(), "num_params": sm.count_params_per_seed(params),
           "wall_time_s": time.perf_counter() - t0, "train_compiles": int(epoch_fn._cache_size())}
    np.savez(os.path.join(tdir, "logits.npz"), logits_train=lt, logits_test=le)
    res = sm.write_run(tdir, tcfg, res)
    if progress:
        print(f"teacher {tuple(cfg.teacher_hidden)}: test acc {fmt_mean_std(100 * acc)} % "
              f"({res['wall_time_s']:.1f} s)", file=sys.stderr, flush=True)
    return dict(res, logits_train=lt, logits_test=le)


def student_loss_fn(cfg: DistillConfig, model: Any, total_steps: int) -> sm.LossFn:
    """The per-batch student objective of ``cfg.method`` (mean over the batch)."""
    L = lossjax.losses
    warmup = max(1, round(cfg.dkd_warmup_frac * total_steps))

    def loss(params: Any, batch: dict, step: jax.Array) -> jax.Array:
        out = model.apply({"params": params}, batch["x"])
        zs, y = out["out"], batch["y"]
        ce = optax.softmax_cross_entropy_with_integer_labels(zs, y)
        m = cfg.method
        if m == "none":
            total = ce
        elif m == "kd":
            total = (1.0 - cfg.kd_alpha) * ce + cfg.kd_alpha * L.kd_loss(zs, batch["t"], temperature=cfg.kd_temperature)
        elif m == "nkd":
            total = ce + L.nkd_loss(zs, batch["t"], y, temperature=cfg.nkd_temperature, gamma=cfg.nkd_gamma)
        elif m == "dkd":
            ramp = jnp.minimum((step + 1).astype(jnp.float32) / warmup, 1.0)
            total = ce + ramp * L.dkd_loss(zs, batch["t"], y, temperature=cfg.dkd_temperature, alpha=cfg.dkd_alpha,
                                           beta=cfg.dkd_beta)
        elif m == "pld":  # PLD replaces CE + KD (its first position is α_y·CE)
            total = L.plackett_luce_distillation_loss(zs, batch["t"], y)
        elif m == "dhkd":  # Dual-Head KD: CE on the main head, BinaryKL-Norm (T = 2) on the auxiliary head
            total = ce + L.binary_kl_norm_loss(out["aux"], batch["t"], temperature=2.0)
        else:  # uskd
            total = ce + L.uskd_loss(zs, out["aux"], y, alpha=cfg.uskd_alpha, beta=cfg.uskd_beta, mu=cfg.uskd_mu,
                                     rank_mode=cfg.uskd_rank_mode)
        return total.mean()

    return loss


def evaluate(apply: Any, params: Any, feats: dict, teacher_test: np.ndarray | None) -> dict:
    """Per-seed test accuracy, test NLL (float64) and, with ``teacher_test`` logits, the
    fraction of test images where student and teacher predict the same class."""
    z = np.asarray(apply(params, feats["x_test"])["out"], dtype=np.float64)
    y = feats["y_test"]
    pred = z.argmax(-1)
    zmax = z.max(-1, keepdims=True)
    logp = z - zmax - np.log(np.exp(z - zmax).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.broadcast_to(y[None, :, None], (*z.shape[:2], 1)), -1)[..., 0].mean(-1)
    out = {"test_accuracy": (pred == y[None]).mean(-1).tolist(), "test_nll": nll.tolist()}
    if teacher_test is not None:
        out["teacher_agreement"] = (pred == teacher_test.argmax(-1)).mean(-1).tolist()
    return out



def train(cfg: DistillConfig, feats: dict, teacher: dict | None, workdir: str, *, progress: bool = True) -> dict:
    """Train the students of ``cfg`` (all seeds at once), one record per epoch (1-based) appended
    to ``workdir/metrics.jsonl`` (an unfinished run's file is restarted).

    ``teacher`` (from :func:`train_teachers`) is required for kd/nkd/dkd/pld/dhkd and, when given,
    also gives the student–teacher agreement on the test set. Returns ``{"metrics": {name: [S
    floats]}, "test_accuracy_curve": [S, epochs], "num_params", "train_compiles", ...}``.
    """
    if cfg.uses_teacher and teacher is None:
        raise ValueError(f"`distill.method` {cfg.method!r} needs a teacher.")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        os.remove(path)  # an unfinished run restarts from scratch (runs take seconds)
    seeds = list(cfg.seeds)
    idx = np.stack([sm.stratified_subset(feats["y_train"], cfg.n_train, s) for s in seeds])
    data = {"x": jnp.asarray(feats["x_train"][idx]), "y": jnp.asarray(feats["y_train"][idx])}
    if teacher is not None:
        data["t"] = jnp.asarray(np.stack([teacher["logits_train"][i][idx[i]] for i in range(len(seeds))]))
    model = sm.MLP(tuple(cfg.student_hidden), 10, aux_out=10 if cfg.method in ("uskd", "dhkd") else 0)
    params = sm.init_stacked(model, feats["x_train"].shape[1], seeds)
    spe = cfg.n_train // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)
    epoch_fn = sm.make_epoch_fn(student_loss_fn(cfg, model, cfg.epochs * spe), tx, n=cfg.n_train,
                                batch_size=cfg.batch_size)
    apply = sm.make_apply_fn(model, shared_inputs=True)
    t_test = teacher["logits_test"] if teacher is not None else None
    curves: list[list[float]] = []
    for e in range(1, cfg.epochs + 1):
        params, opt, loss = epoch_fn(params, opt, data, sm.epoch_keys(seeds, e - 1), jnp.int32((e - 1) * spe))
        ev = evaluate(apply, params, feats, t_test)
        rec = {"epoch": e, "train_loss": np.asarray(loss).tolist(), **ev}
        append_jsonl(path, rec)
        curves.append(ev["test_accuracy"])
        if progress and (e % max(1, cfg.epochs // 4) == 0 or e == cfg.epochs):
            print(f"  {cfg.method:5s} n={cfg.n_train} epoch {e}/{cfg.epochs}: loss "
                  f"{float(np.mean(rec['train_loss'])):.4f}, test acc {100 * np.mean(ev['test_accuracy']):.2f} %",
                  file=sys.stderr, flush=True)
    if not np.all(np.isfinite(np.asarray(loss))):
        raise FloatingPointError(f"{cfg.method}: non-finite training loss {np.asarray(loss).tolist()}.")
    return {"method": cfg.method, "seeds": seeds, "n_train": cfg.n_train,
            "metrics": {**ev, "train_loss": np.asarray(loss).tolist()},
            "test_accuracy_curve": np.asarray(curves).T.tolist(),
            "num_params": sm.count_params_per_seed(params), "train_compiles": int(epoch_fn._cache_size())}


def _pp(values: Any) -> str:
    m, s = mean_std(values)
    return f"{'+' if m >= 0 else ''}{m:.2f} ± {s:.2f}"


def results_table(runs: dict[str, dict], methods: Sequence[str]) -> str:
    """Markdown table of one setting (rows = ``methods`` present in ``runs``); Δ is paired over
    seeds against the ``none`` student."""
    lines = ["| method | student test acc (%) | Δ vs no distillation (pp, paired) | agreement with teacher (%) "
             "| test NLL | per-seed acc | student params |",
             "|---|---|---|---|---|---|---|"]
    base = runs.get("none")
    for m in (m for m in methods if m in runs):
        r = runs[m]["metrics"]
        acc = 100 * np.asarray(r["test_accuracy"])
        agree = fmt_mean_std(100 * np.asarray(r["teacher_agreement"]), 1) if "teacher_agreement" in r else "–"
        delta = (_pp(acc - 100 * np.asarray(base["metrics"]["test_accuracy"]))
                 if base is not None and m != "none" else "–")
        lines.append(f"| {m} | {fmt_mean_std(acc)} | {delta} | {agree} | {fmt_mean_std(r['test_nll'], 3)} "
                     f"| {', '.join(f'{a:.1f}' for a in acc)} | {runs[m]['num_params']} |")
    return "\n".join(lines)


def plot(runs: dict[str, dict], cfg: dict, path: str) -> None:
    """Student test accuracy per epoch (mean ± std over seeds) of one setting's ``runs``."""
    from experiments.common.plots import plot_study

    curves = {m: [[100 * a for a in c] for c in r["test_accuracy_curve"]] for m, r in runs.items()}
    arch = "-".join(map(str, (64, *cfg["student_hidden"], 10)))
    plot_study(curves, path, f"digits, student MLP {arch}, n_train={cfg['n_train']}, "
                             f"{len(cfg['seeds'])} seeds: mean ± std", ylabel="student test accuracy (%)")
