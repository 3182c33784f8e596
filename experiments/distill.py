"""Knowledge distillation on digits: no distillation vs KD vs NKD vs DKD vs USKD (self-KD) vs PLD vs Dual-Head KD.

Usage::

    python -m experiments.distill                    # full study -> runs/distill/distill.md
    python -m experiments.distill --write_report     # ... and regenerate experiments/results/distill.md
    python -m experiments.distill --smoke            # tiny MLPs, one setting (seconds)
    python -m experiments.distill --config configs/distill/kd.gin --config.distill.n_train=300

The flags are those of every study (:mod:`experiments.kit.cli`).

Setting (data-limited student): a teacher MLP (64-256-256-10) is trained once per seed on all
1,297 training digits and its logits are cached; each student, a small MLP (64-32-10), sees only
``n_train`` labelled training digits (10 per class by default, a different stratified subset per
seed) together with the cached teacher logits *on those same images*. USKD gets no teacher: it
adds a weak linear head on the student's penultimate (32-d) features. Test accuracy is on the
fixed 500-image test split. The seeds are trained together (``jax.vmap``), so every method
compiles its training epoch once.

With no ``--config`` the full study runs every ``configs/distill/<method>.gin`` in the main
setting and again with ``n_train = 300``, skipping runs whose ``results.json`` exists, and
writes ``distill.md``, ``distill.json`` and ``distill.png`` into the report directory. Overrides
``--config.distill.<field>=<value>`` apply to every run (the second setting keeps its own
``n_train``). Workdir layout:
``<workdir>/teacher_<hash>/`` (teacher logits, ``logits.npz``) and
``<workdir>/n<n_train>/<method>/`` (``metrics.jsonl``, ``results.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm
from experiments.common.metrics import append_jsonl, env_info, write_json
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report, stats

__all__ = ["DistillConfig", "METHODS", "parse_distill_config", "load_features", "train_teachers",
           "run_method", "run_study", "main"]

METHODS = ("none", "kd", "nkd", "dkd", "uskd", "pld", "dhkd")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs", "distill")
# The full study: (label, extra gin bindings) per setting; the first one is the headline.
STUDY_SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (("main", ()), ("n_train=300", ("distill.n_train = 300",)))
# --smoke: tiny MLPs, two seeds, a few epochs, the main setting only (same code path).
SMOKE_BINDINGS = ("distill.seeds = (0, 1)", "distill.n_train = 20", "distill.student_hidden = (8,)",
                  "distill.epochs = 3", "distill.batch_size = 10", "distill.teacher_hidden = (16,)",
                  "distill.teacher_epochs = 2", "distill.teacher_n_train = 200")
SMOKE_SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (("main", ()),)
_TEACHER_SEED_OFFSET = 1000  # teacher seed = seed + offset (independent of the student's init)
_TEACHER_FIELDS = ("seeds", "teacher_hidden", "teacher_epochs", "teacher_batch_size", "teacher_learning_rate",
                   "teacher_weight_decay", "teacher_n_train")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """One distillation run over several seeds (gin selector ``distill``).

    Attributes:
      method: ``none`` (CE only), ``kd``, ``nkd``, ``dkd``, ``uskd``, ``pld`` (Plackett–Luce
        distillation instead of CE) or ``dhkd`` (CE on the main head + BinaryKL-Norm, T = 2, on an
        auxiliary head: Dual-Head KD).
      seeds: seeds (student init and subset; teacher init uses seed + 1000); trained together.
      n_train: labelled training digits the student sees (stratified subset per seed).
      student_hidden, teacher_hidden: hidden widths of the MLPs.
      epochs, batch_size, learning_rate, weight_decay: student recipe (AdamW, cosine decay to 0).
      teacher_epochs, teacher_batch_size, teacher_learning_rate, teacher_weight_decay: teacher recipe.
      teacher_n_train: training digits the teacher sees (0 = all 1,297).
      kd_temperature, kd_alpha: KD ``(1 − α)·CE + α·T²·KL`` (mdistiller CIFAR: T 4, α 0.9).
      nkd_temperature, nkd_gamma: NKD, added to CE (cls_KD CIFAR-100: T 3, γ 3.5).
      dkd_temperature, dkd_alpha, dkd_beta, dkd_warmup_frac: DKD, added to CE with a linear
        warm-up over this fraction of the steps (mdistiller CIFAR: T 4, α 1, β 8, 20 of 240 epochs).
      uskd_alpha, uskd_beta, uskd_mu, uskd_rank_mode: USKD, added to CE (cls_KD CIFAR-100:
        α 0.1, β 0.1, μ 0.1; released ranking).
    """

    method: str = "none"
    seeds: tuple = (0, 1, 2)
    n_train: int = 100
    student_hidden: tuple = (32,)
    epochs: int = 200
    batch_size: int = 20
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    teacher_hidden: tuple = (256, 256)
    teacher_epochs: int = 60
    teacher_batch_size: int = 64
    teacher_learning_rate: float = 1e-3
    teacher_weight_decay: float = 1e-4
    teacher_n_train: int = 0
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    nkd_temperature: float = 3.0
    nkd_gamma: float = 3.5
    dkd_temperature: float = 4.0
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    dkd_warmup_frac: float = 20 / 240
    uskd_alpha: float = 0.1
    uskd_beta: float = 0.1
    uskd_mu: float = 0.1
    uskd_rank_mode: str = "reference"

    def __post_init__(self) -> None:
        check_field_types(self, "distill")
        if self.method not in METHODS:
            raise ValueError(f"`distill.method` must be one of {METHODS}, got {self.method!r}.")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ValueError(f"`distill.seeds` must be a non-empty tuple of ints, got {self.seeds!r}.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`distill.seeds` must be distinct, got {self.seeds!r}.")
        for f in ("student_hidden", "teacher_hidden"):
            v = getattr(self, f)
            if not v or not all(isinstance(w, int) and w >= 1 for w in v):
                raise ValueError(f"`distill.{f}` must be a non-empty tuple of positive ints, got {v!r}.")
        for f in ("n_train", "epochs", "batch_size", "teacher_epochs", "teacher_batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"`distill.{f}` must be >= 1, got {getattr(self, f)}.")
        if self.n_train < 10:
            raise ValueError(f"`distill.n_train` must be >= 10 (one per class), got {self.n_train}.")
        if self.batch_size > self.n_train:
            raise ValueError(f"`distill.batch_size` ({self.batch_size}) must be <= `distill.n_train` ({self.n_train}).")
        if self.teacher_n_train < 0:
            raise ValueError(f"`distill.teacher_n_train` must be >= 0, got {self.teacher_n_train}.")
        for f in ("learning_rate", "teacher_learning_rate", "kd_temperature", "nkd_temperature", "dkd_temperature"):
            if getattr(self, f) <= 0:
                raise ValueError(f"`distill.{f}` must be > 0, got {getattr(self, f)}.")
        for f in ("weight_decay", "teacher_weight_decay", "nkd_gamma", "dkd_alpha", "dkd_beta", "uskd_alpha",
                  "uskd_beta", "uskd_mu"):
            if getattr(self, f) < 0:
                raise ValueError(f"`distill.{f}` must be >= 0, got {getattr(self, f)}.")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError(f"`distill.kd_alpha` must lie in [0, 1], got {self.kd_alpha}.")
        if not 0.0 <= self.dkd_warmup_frac <= 1.0:
            raise ValueError(f"`distill.dkd_warmup_frac` must lie in [0, 1], got {self.dkd_warmup_frac}.")
        if self.uskd_rank_mode not in ("reference", "probs", "weak_probs"):
            raise ValueError("`distill.uskd_rank_mode` must be 'reference', 'probs' or 'weak_probs', "
                             f"got {self.uskd_rank_mode!r}.")

    @property
    def uses_teacher(self) -> bool:
        return self.method in ("kd", "nkd", "dkd", "pld", "dhkd")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def teacher_dict(self) -> dict:
        return {k: getattr(self, k) for k in _TEACHER_FIELDS}


_GinDistill = gin.external_configurable(DistillConfig, name="distill")


def parse_distill_config(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> DistillConfig:
    """Parse gin ``files`` then ``bindings`` into a :class:`DistillConfig` (errors name the file)."""
    return cli.parse_study_config(files, bindings, _GinDistill)


# ---------------------------------------------------------------------------------------------
# data and teacher
# ---------------------------------------------------------------------------------------------


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


def train_teachers(cfg: DistillConfig, feats: dict, workdir: str) -> dict:
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
    seeds = [s + _TEACHER_SEED_OFFSET for s in cfg.seeds]
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
    print(f"teacher {tuple(cfg.teacher_hidden)}: test acc {sm.fmt_mean_std(100 * acc)} % "
          f"({res['wall_time_s']:.1f} s)", file=sys.stderr, flush=True)
    return dict(res, logits_train=lt, logits_test=le)


# ---------------------------------------------------------------------------------------------
# students
# ---------------------------------------------------------------------------------------------


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


def _evaluate(apply: Any, params: Any, feats: dict, teacher_test: np.ndarray | None) -> dict:
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


def run_method(cfg: DistillConfig, workdir: str, feats: dict, teacher: dict | None, *, progress: bool = True) -> dict:
    """Train the students of ``cfg`` (all seeds at once) in ``workdir``; skipped if finished.

    ``teacher`` (from :func:`train_teachers`) is required for kd/nkd/dkd and, when given, is
    also used to report student–teacher agreement on the test set.
    """
    conf = cfg.to_dict()
    done = sm.finished_run(workdir, conf)
    if done is not None:
        return dict(done, skipped=True)
    if cfg.uses_teacher and teacher is None:
        raise ValueError(f"`distill.method` {cfg.method!r} needs a teacher.")
    os.makedirs(workdir, exist_ok=True)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)  # an unfinished run restarts from scratch (runs take seconds)
    write_json(os.path.join(workdir, "env.json"), env_info())
    t0 = time.perf_counter()
    seeds = list(cfg.seeds)
    idx = np.stack([sm.stratified_subset(feats["y_train"], cfg.n_train, s) for s in seeds])
    data = {"x": jnp.asarray(feats["x_train"][idx]), "y": jnp.asarray(feats["y_train"][idx])}
    if teacher is not None:
        data["t"] = jnp.asarray(np.stack([teacher["logits_train"][i][idx[i]] for i in range(len(seeds))]))
    model = sm.MLP(tuple(cfg.student_hidden), 10, aux_out=10 if cfg.method in ("uskd", "dhkd") else 0)
    params = sm.init_stacked(model, feats["x_train"].shape[1], seeds)
    spe = cfg.n_train // cfg.batch_size
    total = cfg.epochs * spe
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, total)
    opt = jax.vmap(tx.init)(params)
    epoch_fn = sm.make_epoch_fn(student_loss_fn(cfg, model, total), tx, n=cfg.n_train, batch_size=cfg.batch_size)
    apply = sm.make_apply_fn(model, shared_inputs=True)
    t_test = teacher["logits_test"] if teacher is not None else None
    curves: list[list[float]] = []
    for e in range(cfg.epochs):
        params, opt, loss = epoch_fn(params, opt, data, sm.epoch_keys(seeds, e), jnp.int32(e * spe))
        ev = _evaluate(apply, params, feats, t_test)
        rec = {"epoch": e, "train_loss": np.asarray(loss).tolist(), **ev}
        append_jsonl(metrics_path, rec)
        curves.append(ev["test_accuracy"])
        if progress and ((e + 1) % max(1, cfg.epochs // 4) == 0 or e + 1 == cfg.epochs):
            print(f"  {cfg.method:5s} n={cfg.n_train} epoch {e + 1}/{cfg.epochs}: loss "
                  f"{float(np.mean(rec['train_loss'])):.4f}, test acc {100 * np.mean(ev['test_accuracy']):.2f} %",
                  file=sys.stderr, flush=True)
    if not np.all(np.isfinite(np.asarray(loss))):
        raise FloatingPointError(f"{cfg.method}: non-finite training loss {np.asarray(loss).tolist()}.")
    res = {"method": cfg.method, "seeds": seeds, "n_train": cfg.n_train,
           "final_train_loss": np.asarray(loss).tolist(), **{f"final_{k}": v for k, v in ev.items()},
           "test_accuracy_curve": np.asarray(curves).T.tolist(),
           "num_params": sm.count_params_per_seed(params), "wall_time_s": time.perf_counter() - t0,
           "train_compiles": int(epoch_fn._cache_size())}
    return dict(sm.write_run(workdir, conf, res), skipped=False)


# ---------------------------------------------------------------------------------------------
# study and report
# ---------------------------------------------------------------------------------------------


def _run_config(cfg: DistillConfig, workdir: str, feats: dict, teachers: dict, progress: bool) -> dict:
    key = sm.config_hash(cfg.teacher_dict())
    if key not in teachers:
        teachers[key] = train_teachers(cfg, feats, workdir)
    rdir = os.path.join(workdir, f"n{cfg.n_train}", cfg.method)
    res = run_method(cfg, rdir, feats, teachers[key], progress=progress)
    acc = 100 * np.asarray(res["final_test_accuracy"])
    how = "(finished run, skipped)" if res["skipped"] else f"({res['wall_time_s']:.1f} s)"
    print(f"{cfg.method:5s} n={cfg.n_train}: test acc {sm.fmt_mean_std(acc)} % {how}", file=sys.stderr, flush=True)
    return res


def run_study(config_files: Sequence[str] | None, bindings: Sequence[str], workdir: str, out: str | None,
              *, progress: bool = True,
              settings_plan: Sequence[tuple[str, Sequence[str]]] = STUDY_SETTINGS, prov: dict | None = None) -> dict:
    """Run ``config_files`` (default: every method in every setting of ``settings_plan``) and,
    when ``out`` is given, write the report there (``prov``: its provenance).

    ``bindings`` apply to every run; a setting's own bindings come after them (so the second
    setting's ``n_train`` wins). Returns ``{"settings": {label: {method: results}}, "teacher":
    ..., "configs": {label: config}, "wall_time_s": ...}``."""
    t0 = time.perf_counter()
    feats = load_features()
    teachers: dict[str, dict] = {}
    settings: dict[str, dict[str, dict]] = {}
    if config_files:
        plan = [("selected", tuple(), f) for f in config_files]
    else:
        plan = [(label, extra, os.path.join(CONFIG_DIR, f"{m}.gin")) for label, extra in settings_plan for m in METHODS]
    cfgs = {}
    for label, extra, f in plan:
        cfg = parse_distill_config([f], [*bindings, *extra])
        cfgs.setdefault(label, cfg)
        settings.setdefault(label, {})[cfg.method] = _run_config(cfg, workdir, feats, teachers, progress)
    teacher = next(iter(teachers.values()), None)
    study = {"settings": settings, "wall_time_s": time.perf_counter() - t0,
             "teacher": {k: v for k, v in teacher.items() if not k.startswith("logits")} if teacher else None,
             "configs": {k: c.to_dict() for k, c in cfgs.items()}}
    if out is not None:
        write_report(study, out, prov)
    return study


def _paired_delta(res: dict, base: dict) -> str:
    d = 100 * (np.asarray(res["final_test_accuracy"]) - np.asarray(base["final_test_accuracy"]))
    return f"{'+' if d.mean() >= 0 else ''}{sm.fmt_mean_std(d)}"


def results_table(runs: dict[str, dict]) -> str:
    """Markdown table of one setting (rows = methods)."""
    lines = ["| method | student test acc (%) | Δ vs no distillation (pp, paired) | agreement with teacher (%) "
             "| test NLL | per-seed acc | student params |",
             "|---|---|---|---|---|---|---|"]
    base = runs.get("none")
    for m in METHODS:
        if m not in runs:
            continue
        r = runs[m]
        acc = 100 * np.asarray(r["final_test_accuracy"])
        agree = (sm.fmt_mean_std(100 * np.asarray(r["final_teacher_agreement"]), 1)
                 if "final_teacher_agreement" in r else "–")
        delta = _paired_delta(r, base) if base is not None and m != "none" else "–"
        lines.append(f"| {m} | {sm.fmt_mean_std(acc)} | {delta} | {agree} | {sm.fmt_mean_std(r['final_test_nll'], 3)} "
                     f"| {', '.join(f'{a:.1f}' for a in acc)} | {r['num_params']} |")
    return "\n".join(lines)


def _plot(study: dict, path: str) -> None:
    from experiments.common.plots import plot_study

    label, runs = next(iter(study["settings"].items()))
    curves = {m: [[100 * a for a in c] for c in r["test_accuracy_curve"]] for m, r in runs.items()}
    cfg = study["configs"][label]
    arch = "-".join(map(str, (64, *cfg["student_hidden"], 10)))
    plot_study(curves, path, f"digits, student MLP {arch}, n_train={cfg['n_train']}, "
                             f"{len(cfg['seeds'])} seeds: mean ± std", ylabel="student test accuracy (%)")


def _paired(runs: dict, a: str, b: str) -> np.ndarray | None:
    """Per-seed accuracy differences ``a − b`` in pp (None if a method is missing)."""
    if a not in runs or b not in runs:
        return None
    return 100 * (np.asarray(runs[a]["final_test_accuracy"]) - np.asarray(runs[b]["final_test_accuracy"]))


def write_report(study: dict, out: str, prov: dict | None = None) -> str:
    """Write ``distill.md``, ``distill.json`` and ``distill.png`` into ``out``; returns the .md path."""
    raw = {label: {m: {k: v for k, v in r.items() if k != "skipped"} for m, r in runs.items()}
           for label, runs in study["settings"].items()}
    return report.write_report(out, "distill", render_markdown(study),
                               {"settings": raw, "teacher": study["teacher"], "configs": study["configs"],
                                "env": env_info()}, lambda path: _plot(study, path), prov)


def render_markdown(study: dict) -> str:
    """The report text (tables from the runs; the discussion is filled in from the numbers)."""
    labels = list(study["settings"])
    main_label = labels[0]
    cfg = study["configs"][main_label]
    t = study["teacher"]
    tacc = sm.fmt_mean_std(100 * np.asarray(t["test_accuracy"])) if t else "n/a"
    parts = [
        "# Knowledge distillation on digits: KD vs NKD vs DKD vs USKD vs PLD vs Dual-Head KD vs none (CPU scale)",
        "",
        "Regenerate: `python -m experiments.distill --write_report` (runs "
        "`configs/distill/{none,kd,nkd,dkd,uskd,pld,dhkd}.gin` in the "
        "main setting and with `distill.n_train = 300`; workdirs under `runs/distill/`, finished runs are "
        "skipped; writes this file, `distill.json` (raw per-seed numbers and curves) and `distill.png`).",
        "",
        "## Setting",
        "",
        "* Data: scikit-learn `load_digits` (8×8 real handwritten digits shipped in the wheel), fixed "
        "stratified split 1,297 train / 500 test, pixels standardised with training statistics.",
        f"* Teacher: MLP 64-{'-'.join(map(str, cfg['teacher_hidden']))}-10 trained once per seed on "
        f"{'all 1,297' if not cfg['teacher_n_train'] else cfg['teacher_n_train']} training digits "
        f"({cfg['teacher_epochs']} epochs, batch {cfg['teacher_batch_size']}, AdamW lr "
        f"{cfg['teacher_learning_rate']:g}, cosine); its logits are cached. Teacher test accuracy: **{tacc} %** "
        f"({t['num_params'] if t else '?'} parameters).",
        f"* Student (data-limited): MLP 64-{'-'.join(map(str, cfg['student_hidden']))}-10, trained on only "
        f"**n_train = {cfg['n_train']}** labelled digits (a balanced subset, different per seed) plus the teacher's "
        f"logits on those same images; {cfg['epochs']} epochs, batch {cfg['batch_size']}, AdamW lr "
        f"{cfg['learning_rate']:g}, weight decay {cfg['weight_decay']:g}, cosine decay. The same recipe for every "
        f"method; the student recipe was chosen on held-out *training* digits for the CE baseline only, and the "
        f"loss hyper-parameters are the papers' small-scale (CIFAR) defaults, untuned: "
        f"KD T={cfg['kd_temperature']:g}, α={cfg['kd_alpha']:g} (`(1−α)·CE + α·T²·KL`); "
        f"NKD T={cfg['nkd_temperature']:g}, γ={cfg['nkd_gamma']:g} (added to CE); "
        f"DKD T={cfg['dkd_temperature']:g}, α={cfg['dkd_alpha']:g}, β={cfg['dkd_beta']:g}, linear warm-up over "
        f"{100 * cfg['dkd_warmup_frac']:.1f} % of the steps (added to CE); "
        f"USKD α={cfg['uskd_alpha']:g}, β={cfg['uskd_beta']:g}, μ={cfg['uskd_mu']:g}, released ranking "
        f"(`rank_mode='{cfg['uskd_rank_mode']}'`), no teacher; its weak head is a second linear head on the "
        f"student's penultimate features (the MLP has no deeper mid-level stage), used only in training; "
        f"PLD with teacher weights softmax(z_t) (τ = 1), used instead of CE; Dual-Head KD: CE on the main head plus "
        f"BinaryKL-Norm (T = 2, weight 1) on an auxiliary linear head on the same features, used only in training.",
        f"* Seeds {', '.join(map(str, cfg['seeds']))} (student init and subset; teacher init seed+1000), trained "
        f"together with `jax.vmap`: each method compiles its training epoch once. Reported: test accuracy after "
        f"the last epoch (no best-epoch selection), mean ± sample std over seeds; Δ is the paired per-seed "
        f"difference to the CE-only student (same subset, same init).",
        f"* Cost on the shared 2-core CPU: {_runs_time(study):.0f} s summed over the teacher and student runs "
        f"(each includes its one compilation); this invocation took {study['wall_time_s']:.0f} s (finished runs "
        f"are skipped, so a rerun only rewrites the report).",
        "",
    ]
    for label in labels:
        c = study["configs"][label]
        parts += [f"## Results: n_train = {c['n_train']}" + (" (headline)" if label == main_label else ""), "",
                  results_table(study["settings"][label]), ""]
    parts += ["![student test accuracy per epoch](distill.png)", "",
              "(`distill.png`: student test accuracy per epoch in the headline setting, mean ± std over seeds.)", ""]
    parts += ["## Do the papers' claims hold here?", "", _claims_text(study), ""]
    return "\n".join(parts)


def _runs_time(study: dict) -> float:
    """Sum of the recorded wall times of the teacher and every student run."""
    t = sum(r["wall_time_s"] for runs in study["settings"].values() for r in runs.values())
    return t + (study["teacher"]["wall_time_s"] if study["teacher"] else 0.0)


def _fmt_d(d: np.ndarray | None) -> str:
    if d is None:
        return "n/a"
    m, s = sm.mean_std(d)
    return f"{'+' if m >= 0 else ''}{m:.2f} ± {s:.2f} pp"


def paired_verdict(d: np.ndarray | None) -> str:
    """Verdict on per-seed accuracy differences ``d = a − b`` (higher is better): the paired
    two-sided t-test at 5 % of :func:`experiments.kit.stats.paired_t_test`, one of ``"better"``,
    ``"worse"``, ``"no significant difference"``, ``"n/a"``."""
    return stats.paired_t_test(d, better="higher").verdict


_CLAIMS = (
    ("KD (Hinton et al. 2015): a student trained on the teacher's softened outputs beats the same student "
     "trained on hard labels", "kd", "none"),
    ("NKD (Yang et al., ICCV 2023): normalising the non-target distribution beats classic KD", "nkd", "kd"),
    ("DKD (Zhao et al., CVPR 2022): decoupling TCKD and NCKD (β = 8) beats classic KD", "dkd", "kd"),
    ("USKD (Yang et al., ICCV 2023): teacher-free customised soft labels beat the CE baseline", "uskd", "none"),
    ("PLD (Bassam et al. 2025): the Plackett–Luce list-wise loss beats CE + KD", "pld", "kd"),
    ("Dual-Head KD (Yang et al. 2024): BinaryKL-Norm on an auxiliary head beats classic KD", "dhkd", "kd"),
)

_CAVEATS = """Why the papers' claims may not transfer to this scale:

* **Ten classes.** NKD, DKD and USKD all work on the *non-target* part of the distribution (its
  normalisation, its weight β, or a Zipf-shaped surrogate of it). With 10 classes there are only 9
  non-target probabilities, and for confident digits most of the teacher's non-target mass sits on
  one or two look-alike classes; the papers' gains are on CIFAR-100 and ImageNet (100 / 1,000
  classes), where the non-target "dark knowledge" is much richer.
* **A privileged teacher.** The teacher saw all 1,297 training digits, the student only n_train of
  them; the teacher's logits on the student's images carry information about the other ~1,200 (how
  each digit resembles other classes). That makes every teacher-based method look strong against the
  CE student and against USKD, which has no such information: USKD is a regulariser on the student's
  own predictions, so at best it can match label-smoothing-like gains, not KD's.
* **USKD's weak head.** In the paper the weak head reads a *mid-level* feature (e.g. stage 3 of a
  ResNet), whose weaker predictions supply a different class ranking; a 1-hidden-layer MLP has no
  such stage, so the weak head reads the same penultimate features as the main head and its ranking
  largely mirrors the student's own.
* **Untuned hyper-parameters.** The CIFAR-100 defaults (T = 4 / 3, β = 8, γ = 3.5, USKD's μ = 0.1)
  are used as they are; the papers tune per dataset, and β and γ interact with the number of classes.
* **Resolution.** One test image is 0.2 pp; with 3 seeds only large paired differences are
  significant (t-test critical value 4.30 at 2 degrees of freedom), so "not resolved" means the
  study cannot tell, not that the methods are equal.
* **Models and data.** MLPs on 8×8 images for 200 short epochs, no augmentation; the papers use
  ResNets/ViTs with augmentation, where the student's capacity gap to the teacher is of a different
  kind."""


def _claims_text(study: dict) -> str:
    """Verdict table (paired t-tests on the per-seed differences) and the fixed caveats."""
    labels = list(study["settings"])
    runs = [study["settings"][lab] for lab in labels]
    ns = [study["configs"][lab]["n_train"] for lab in labels]
    head = "| claim | " + " | ".join(f"Δ at n_train = {n} | held? (n_train = {n})" for n in ns) + " |"
    lines = [head, "|---|" + "---|---|" * len(ns)]
    for text, a, b in _CLAIMS:
        cells = []
        for r in runs:
            d = _paired(r, a, b)
            cells += [_fmt_d(d), paired_verdict(d)]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    lines += ["", "Δ: mean ± std over seeds of the paired per-seed accuracy difference (first method minus the "
              "second, same subset and init). \"held?\": paired two-sided t-test at 5 % — *better* = significant "
              "gain, *worse* = significant loss, *no significant difference* = neither.", ""]
    summary = []
    for text, a, b in _CLAIMS:
        v = [paired_verdict(_paired(r, a, b)) for r in runs]
        name = text.split(" (")[0]
        if all(x == "better" for x in v):
            summary.append(f"**{name}: held** in every setting.")
        elif any(x == "better" for x in v):
            summary.append(f"**{name}: held in part** ({', '.join(f'n_train = {n}: {x}' for n, x in zip(ns, v))}).")
        elif any(x == "worse" for x in v):
            summary.append(f"**{name}: did not hold** (significantly reversed in at least one setting: "
                           f"{', '.join(f'n_train = {n}: {x}' for n, x in zip(ns, v))}).")
        else:
            means = ", ".join(f"n_train = {n}: {_fmt_d(_paired(r, a, b))}" for n, r in zip(ns, runs))
            summary.append(f"**{name}: not shown** — no significant difference at this scale ({means}).")
    return "\n".join(lines) + "\n" + "\n".join(f"* {x}" for x in summary) + "\n\n" + _CAVEATS


def _print_results(study: dict) -> None:
    for label, runs in study["settings"].items():
        print(f"## {label}\n{results_table(runs)}\n")


def _run(a: cli.StudyArgs) -> dict:
    return run_study(a.configs if a.custom else None, a.bindings, a.workdir, a.report_dir, progress=a.progress,
                     settings_plan=SMOKE_SETTINGS if a.smoke else STUDY_SETTINGS, prov=a.provenance)


STUDY = cli.Study(name="distill", description=__doc__.split("\n\n")[0], run=_run, print_results=_print_results,
                  default_configs=(), smoke_bindings=SMOKE_BINDINGS, data_dir_bindings=(), report_needs_all=True)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
