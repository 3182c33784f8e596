"""Post-hoc calibration of a trained digits model: NLL vs the correctness-aware (CA) loss.

    python -m experiments.calibration                  # -> runs/calibration/calibration.md
    python -m experiments.calibration --write_report   # ... and regenerate experiments/results/calibration.md
    python -m experiments.calibration --smoke          # one seed, one epoch (seconds)
    python -m experiments.calibration --config.calibration.seeds='(0,)' --config.train.epochs=5

The flags are those of every study (:mod:`experiments.kit.cli`).

Per seed, a ``SmallCNN`` is trained once with cross-entropy by the common Trainer
(``experiments.common.train``; recipe ``configs/digits/sgd.gin``) on the digits training split
minus a stratified held-out **validation split** (``calibration.val_size`` images, fixed split).
Its logits on the validation split are the training data of the post-hoc calibrators, all of
which rescale the frozen logits ``x`` by a temperature:

* ``ts_nll`` — temperature scaling (one ``T``) fit by NLL (Guo et al. 2017);
* ``ts_ca`` — one ``T`` fit by the correctness-aware loss
  (:func:`lossjax.losses.correctness_aware_loss`, Liu et al. 2024, arXiv:2404.13016);
* ``tx_nll`` / ``tx_ca`` — a per-sample temperature ``T(x)`` predicted by a linear calibrator
  from features of the model's outputs on the image and on ``8`` one-pixel translated copies
  (the CA paper's calibrator sees transformed copies of the input; its features and network
  are larger), fit by NLL or by the CA loss;
* ``vs_nll`` — vector scaling ``x·w + b`` (per-class ``w``, ``b``) fit by NLL (it can change
  the argmax, so accuracy can change).

``T`` is kept in ``[0.1, 10]`` (the CA code's clamp) by ``T = 0.1·100^σ(u)``; every calibrator
is fit full-batch with Adam from ``T = 1``. Reported on the clean test set and on a shifted copy
(Gaussian pixel noise) before/after: ECE (``num_bins`` equal-width confidence bins), NLL, and
accuracy; mean ± std over seeds. Resumable: ``<workdir>/base_s<seed>`` is the Trainer's run
(a finished run is reloaded, not retrained) and ``<workdir>/calib_s<seed>/results.json`` marks a
finished seed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common.config import ExperimentConfig
from experiments.common.data import Dataset, load_digits_dataset
from experiments.common.metrics import env_info, fmt_mean_std, mean_std, write_json
from experiments.common.steps import normalize_images
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report, stats
from experiments.kit.runs import finished_run, write_run

__all__ = ["CalibrationConfig", "CALIBRATORS", "expected_calibration_error", "nll", "split_validation",
           "translated_copies", "features", "fit_calibrator", "apply_calibrator", "calibrate_seed",
           "run_study", "main"]

CALIBRATORS = ("ts_nll", "ts_ca", "tx_nll", "tx_ca", "vs_nll")
CAL_NAMES = {"none": "uncalibrated", "ts_nll": "TS (NLL)", "ts_ca": "TS (CA loss)",
             "tx_nll": "T(x) (NLL)", "tx_ca": "T(x) (CA loss)", "vs_nll": "vector scaling (NLL)"}
DEFAULT_CONFIG = os.path.join("configs", "calibration", "digits.gin")
_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """The post-hoc calibration study (gin selector ``calibration``).

    Attributes:
      seeds: seeds of the base models (``train.seed``); the data split is fixed.
      val_size: held-out validation images (from the training split) the calibrators fit on.
      split_seed: seed of the stratified train/validation split.
      n_test: keep only the first n test images (0 = all), for smoke tests.
      calibrators: subset of :data:`CALIBRATORS`.
      num_bins: ECE bins (equal width on the confidence).
      fit_steps, fit_lr: full-batch Adam steps and learning rate of every calibrator.
      t_min, t_max: temperature range (``0 < t_min < 1 < t_max``).
      ca_balance: the CA loss's accuracy-balanced weights (the released code's objective).
      shift_noise: std of the Gaussian pixel noise of the shifted test set, in grey levels
        (0..255; 0 = no shifted set).
    """

    seeds: tuple = (0, 1, 2)
    val_size: int = 300
    split_seed: int = 0
    n_test: int = 0
    calibrators: tuple = CALIBRATORS
    num_bins: int = 15
    fit_steps: int = 500
    fit_lr: float = 0.05
    t_min: float = 0.1
    t_max: float = 10.0
    ca_balance: bool = True
    shift_noise: float = 64.0

    def __post_init__(self) -> None:
        check_field_types(self, "calibration")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"`calibration.seeds` must be non-negative ints, got {self.seeds!r}.")
        bad = [c for c in self.calibrators if c not in CALIBRATORS]
        if bad:
            raise ValueError(f"`calibration.calibrators` must be a subset of {CALIBRATORS}, got {self.calibrators!r}.")
        for f in ("val_size", "num_bins", "fit_steps"):
            if getattr(self, f) < 1:
                raise ValueError(f"`calibration.{f}` must be >= 1, got {getattr(self, f)}.")
        if self.n_test < 0:
            raise ValueError(f"`calibration.n_test` must be >= 0, got {self.n_test}.")
        if self.fit_lr <= 0:
            raise ValueError(f"`calibration.fit_lr` must be > 0, got {self.fit_lr}.")
        if not 0 < self.t_min < 1 < self.t_max:
            raise ValueError(f"`calibration.t_min`/`t_max` must satisfy 0 < t_min < 1 < t_max, got "
                             f"{self.t_min}, {self.t_max}.")
        if self.shift_noise < 0:
            raise ValueError(f"`calibration.shift_noise` must be >= 0, got {self.shift_noise}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_GinCalibration = gin.external_configurable(CalibrationConfig, name="calibration")


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Top-label ECE: ``Σ_b (n_b/n)·|acc_b − conf_b|`` over equal-width confidence bins
    ``(i/B, (i+1)/B]`` (confidence 0 falls in the first bin)."""
    p = np.asarray(probs, np.float64)
    conf, pred = p.max(-1), p.argmax(-1)
    correct = (pred == np.asarray(labels)).astype(np.float64)
    b = np.clip(np.ceil(conf * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for i in range(num_bins):
        m = b == i
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits)``."""
    return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(labels))))


def scores(logits: np.ndarray, labels: np.ndarray, num_bins: int) -> dict:
    """ECE (%), NLL and accuracy (%) of ``logits``."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1))
    return {"ece": 100 * expected_calibration_error(probs, labels, num_bins), "nll": nll(logits, labels),
            "accuracy": 100 * float((probs.argmax(-1) == labels).mean())}


# ---------------------------------------------------------------------------------------------
# data, transformed copies and calibrator features
# ---------------------------------------------------------------------------------------------


def split_validation(ds: Dataset, val_size: int, split_seed: int) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """``(train-minus-val dataset, x_val, y_val)``: a stratified split of ``ds``'s training set
    (the normalisation constants are recomputed on the remaining training images)."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_size < len(ds.x_train) - 1:
        raise ValueError(f"`calibration.val_size`={val_size} must lie in (0, {len(ds.x_train) - 1}).")
    xtr, xva, ytr, yva = train_test_split(ds.x_train, ds.y_train, test_size=val_size, stratify=ds.y_train,
                                          random_state=split_seed)
    c = xtr.shape[-1]
    mean = tuple(float(v) for v in (xtr.reshape(-1, c).mean(0) / 255.0))
    std = tuple(float(v) for v in (xtr.reshape(-1, c).std(0) / 255.0))
    tr = dataclasses.replace(ds, x_train=np.ascontiguousarray(xtr), y_train=ytr, mean=mean, std=std)
    return tr, np.ascontiguousarray(xva), yva


def translated_copies(x: np.ndarray) -> np.ndarray:
    """``[8, N, H, W, C]``: ``x`` shifted by one pixel in the 8 directions, zero fill."""
    h, w = x.shape[1:3]
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.stack([p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _SHIFTS])


def shifted_test(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``x`` with Gaussian pixel noise of std ``sigma`` grey levels, clipped to uint8 (fixed seed)."""
    rng = np.random.default_rng([seed, 7])
    return np.clip(np.round(x.astype(np.float64) + rng.normal(0.0, sigma, x.shape)), 0, 255).astype(np.uint8)


def features(logits: np.ndarray, copy_logits: np.ndarray) -> np.ndarray:
    """``[N, 6]`` calibrator inputs: max softmax prob, top-1 − top-2 logit margin, entropy of the
    image's prediction; fraction of the copies whose argmax agrees, mean and min softmax prob of
    the image's predicted class over the copies."""
    x = jnp.asarray(logits, jnp.float32)
    p = jax.nn.softmax(x, -1)
    top2 = jax.lax.top_k(x, 2)[0]
    ent = -jnp.sum(p * jax.nn.log_softmax(x, -1), -1)
    pred = jnp.argmax(x, -1)
    pc = jax.nn.softmax(jnp.asarray(copy_logits, jnp.float32), -1)  # [M, N, K]
    agree = jnp.mean(jnp.argmax(pc, -1) == pred[None], 0)
    pc_pred = jnp.take_along_axis(pc, pred[None, :, None], -1)[..., 0]
    f = jnp.stack([p.max(-1), top2[:, 0] - top2[:, 1], ent, agree, pc_pred.mean(0), pc_pred.min(0)], -1)
    return np.asarray(f)


# ---------------------------------------------------------------------------------------------
# calibrators
# ---------------------------------------------------------------------------------------------


def _temperature(params: dict, f: jax.Array, t_min: float, t_max: float) -> jax.Array:
    u = f @ params["w"] + params["b"]
    return t_min * (t_max / t_min) ** jax.nn.sigmoid(u)


def apply_calibrator(kind: str, params: dict, logits: np.ndarray, feats: np.ndarray | None,
                     cfg: CalibrationConfig) -> np.ndarray:
    """Calibrated logits of a fitted calibrator (``feats`` standardised like the fit's)."""
    x = jnp.asarray(logits, jnp.float32)
    if kind == "vs_nll":
        return np.asarray(x * params["w"] + params["b"])
    f = jnp.asarray(feats if kind.startswith("tx") else np.zeros((len(x), 0)), jnp.float32)
    return np.asarray(x / _temperature(params, f, cfg.t_min, cfg.t_max)[:, None])


def fit_calibrator(kind: str, logits: np.ndarray, labels: np.ndarray, feats: np.ndarray | None,
                   cfg: CalibrationConfig) -> tuple[dict, list[float]]:
    """Fit calibrator ``kind`` on validation ``logits``/``labels`` (full batch, Adam).

    Returns ``(params, loss curve)``. Temperature calibrators start at ``T = 1``
    (``σ(0) = ½``), vector scaling at the identity.
    """
    if kind not in CALIBRATORS:
        raise ValueError(f"unknown calibrator {kind!r}; expected one of {CALIBRATORS}.")
    x, y = jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32)
    k = x.shape[-1]
    f = jnp.asarray(feats if kind.startswith("tx") else np.zeros((len(x), 0)), jnp.float32)
    if kind == "vs_nll":
        params = {"w": jnp.ones((k,)), "b": jnp.zeros((k,))}
    else:
        params = {"w": jnp.zeros((f.shape[1],)), "b": jnp.zeros(())}

    def objective(p: dict) -> jax.Array:
        if kind == "vs_nll":
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x * p["w"] + p["b"], y))
        t = _temperature(p, f, cfg.t_min, cfg.t_max)
        if kind.endswith("_ca"):
            return lossjax.losses.correctness_aware_loss(x, y, t, balance=cfg.ca_balance)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x / t[:, None], y))

    tx = optax.adam(cfg.fit_lr)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(objective)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), curve = jax.lax.scan(step, (p, tx.init(p)), None, length=cfg.fit_steps)
        return p, curve, objective(p)

    params, curve, last = run(params)
    return jax.device_get(params), [float(v) for v in curve] + [float(last)]


# ---------------------------------------------------------------------------------------------
# one seed and the study
# ---------------------------------------------------------------------------------------------


def _logits_fn(trainer):
    model, mean, std = trainer.model, trainer.ds.mean, trainer.ds.std
    variables = {"params": trainer.state.params, "batch_stats": trainer.state.batch_stats}
    apply = jax.jit(lambda xb: model.apply(variables, normalize_images(xb, mean, std), train=False))

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(apply(jnp.asarray(x[i:i + 500]))) for i in range(0, len(x), 500)])

    return logits


def calibrate_seed(exp: ExperimentConfig, cfg: CalibrationConfig, seed: int, workdir: str,
                   ds: Dataset | None = None) -> dict:
    """Train (or reload) the base model of ``seed``, fit every calibrator, score it; resumable."""
    from experiments.common.train import Trainer

    conf = {"calibration": {k: v for k, v in cfg.to_dict().items() if k != "seeds"},
            "base": dataclasses.replace(exp, train=dataclasses.replace(exp.train, seed=seed)).to_dict()}
    conf["base"]["train"].pop("progress")
    conf["base"]["data"].pop("data_dir")
    cdir = os.path.join(workdir, f"calib_s{seed}")
    done = finished_run(cdir, conf)
    if done is not None:
        print(f"[skip] seed {seed}: {cdir}/results.json exists", file=sys.stderr)
        return done
    t0 = time.perf_counter()
    full = ds if ds is not None else load_digits_dataset()
    if cfg.n_test:
        full = full.subset(None, cfg.n_test)
    train_ds, x_val, y_val = split_validation(full, cfg.val_size, cfg.split_seed)
    run_cfg = dataclasses.replace(exp, train=dataclasses.replace(exp.train, seed=seed))
    trainer = Trainer(run_cfg, os.path.join(workdir, f"base_s{seed}"), dataset=train_ds)
    base = trainer.run(argv=["python -m experiments.calibration", f"seed={seed}"])
    t_train = time.perf_counter() - t0
    logits = _logits_fn(trainer)
    sets = {"val": (x_val, y_val), "test": (full.x_test, full.y_test)}
    if cfg.shift_noise > 0:
        sets["test_noisy"] = (shifted_test(full.x_test, cfg.shift_noise), full.y_test)
    lg = {k: logits(x) for k, (x, _) in sets.items()}
    need_feats = any(c.startswith("tx") for c in cfg.calibrators)
    feats = {}
    if need_feats:
        raw = {k: features(lg[k], np.stack([logits(c) for c in translated_copies(x)])) for k, (x, _) in sets.items()}
        mu, sd = raw["val"].mean(0), raw["val"].std(0) + 1e-6  # standardised with validation statistics
        feats = {k: (v - mu) / sd for k, v in raw.items()}
    out = {"none": {k: scores(lg[k], y, cfg.num_bins) for k, (_, y) in sets.items()}}
    fitted = {}
    for c in cfg.calibrators:
        params, curve = fit_calibrator(c, lg["val"], y_val, feats.get("val"), cfg)
        out[c] = {k: scores(apply_calibrator(c, params, lg[k], feats.get(k), cfg), y, cfg.num_bins)
                  for k, (_, y) in sets.items()}
        if c != "vs_nll":
            t = np.asarray(_temperature(params, jnp.asarray(feats["test"] if c.startswith("tx")
                                                            else np.zeros((len(lg["test"]), 0)), jnp.float32),
                                        cfg.t_min, cfg.t_max))
            out[c]["test"]["temperature_mean"] = float(t.mean())
            out[c]["test"]["temperature_std"] = float(t.std())
        fitted[c] = {"params": {k: np.asarray(v).tolist() for k, v in params.items()},
                     "fit_loss_first_last": [curve[0], curve[-1]]}
    res = {"seed": seed, "config": conf, "scores": out, "fitted": fitted, "base_run": base,
           "n_val": int(len(y_val)), "val_errors": int((lg["val"].argmax(-1) != y_val).sum()),
           "train_wall_time_s": t_train, "wall_time_s": time.perf_counter() - t0, "env": env_info()}
    write_run(cdir, conf, res)
    print(f"seed {seed}: base test acc {out['none']['test']['accuracy']:.1f}%, ECE "
          f"{out['none']['test']['ece']:.2f}% -> " + ", ".join(f"{c} {out[c]['test']['ece']:.2f}%"
                                                              for c in cfg.calibrators)
          + f" ({res['wall_time_s']:.0f}s)", file=sys.stderr, flush=True)
    return res


def _table(results: list[dict], cfg: CalibrationConfig, split: str) -> str:
    rows = ["none", *cfg.calibrators]
    lines = ["| calibrator | ECE (%) ↓ | NLL ↓ | accuracy (%) | mean T |", "|---|---|---|---|---|"]
    best = min(mean_std([r["scores"][c][split]["ece"] for r in results])[0] for c in rows)
    for c in rows:
        ece = [r["scores"][c][split]["ece"] for r in results]
        cell = fmt_mean_std(ece)
        if mean_std(ece)[0] == best:
            cell = f"**{cell}**"
        t = [r["scores"][c]["test"].get("temperature_mean") for r in results]
        tcell = fmt_mean_std(t) if split == "test" and t[0] is not None else "–"
        lines.append(f"| {CAL_NAMES[c]} | {cell} | {fmt_mean_std([r['scores'][c][split]['nll'] for r in results], 3)}"
                     f" | {fmt_mean_std([r['scores'][c][split]['accuracy'] for r in results])} | {tcell} |")
    return "\n".join(lines)


def plot(results: list[dict], cfg: CalibrationConfig, splits: list[str], path: str) -> str:
    """Bar charts of test ECE and NLL per calibrator (mean ± std over seeds), one group per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["none", *cfg.calibrators]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(splits)
    for ax, metric in zip(axes, ("ece", "nll")):
        for j, split in enumerate(splits):
            vals = [mean_std([r["scores"][c][split][metric] for r in results]) for c in rows]
            ax.bar(np.arange(len(rows)) + j * width, [v[0] for v in vals], width, yerr=[v[1] for v in vals],
                   label=split, capsize=2)
        ax.set_xticks(np.arange(len(rows)) + width * (len(splits) - 1) / 2)
        ax.set_xticklabels([CAL_NAMES[c] for c in rows], rotation=25, ha="right", fontsize=8)
        ax.set_title("ECE (%)" if metric == "ece" else "NLL")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


_REPORT_MARK = "<!-- generated tables: everything below this line is rewritten by the study -->"


def run_study(exp: ExperimentConfig, cfg: CalibrationConfig, workdir: str, out: str | None,
              ds: Dataset | None = None, prov: dict | None = None) -> dict:
    """Every seed (skipping finished ones), then ``<out>/calibration.{json,png,md}``."""
    t0 = time.perf_counter()
    results = [calibrate_seed(exp, cfg, s, workdir, ds) for s in cfg.seeds]
    splits = [s for s in ("val", "test", "test_noisy") if s in results[0]["scores"]["none"]]
    summary = {
        "config": cfg.to_dict(), "base_config": exp.to_dict(), "study_wall_time_s": time.perf_counter() - t0,
        "scores": {c: {sp: {m: [r["scores"][c][sp][m] for r in results] for m in ("ece", "nll", "accuracy")}
                       for sp in splits} for c in ["none", *cfg.calibrators]},
        "val_errors": [r["val_errors"] for r in results], "n_val": results[0]["n_val"],
        "seed_wall_time_s": [r["wall_time_s"] for r in results],
        "tables": {sp: _table(results, cfg, sp) for sp in splits if sp != "val"},
    }
    if out:
        prov = prov or report.provenance()
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "calibration.json"), {**summary, "provenance": prov})
        plot(results, cfg, [s for s in splits if s != "val"], os.path.join(out, "calibration.png"))
        _write_report(summary, os.path.join(out, "calibration.md"), prov)
    return summary


def verdicts(summary: dict) -> str:
    """Verdict sentences computed from ``summary["scores"]``: the CA paper's claim (Liu et al. 2024,
    arXiv:2404.13016, §4) that a calibrator fit with the correctness-aware loss has a lower ECE than
    the same calibrator fit with NLL, per split, by the paired t-test over seeds (lower is better)."""
    sc = summary["scores"]
    out = []
    for ca, base in (("ts_ca", "ts_nll"), ("tx_ca", "tx_nll")):
        if ca not in sc or base not in sc:
            continue
        parts, words = [], []
        for split in [s for s in ("test", "test_noisy") if s in sc[ca]]:
            t = stats.paired_t_test(np.asarray(sc[ca][split]["ece"]) - np.asarray(sc[base][split]["ece"]),
                                    better="lower")
            words.append(stats.claim_word(t.verdict))
            parts.append(f"{'clean' if split == 'test' else 'shifted'} test ECE Δ {t.fmt(2)} pp ({t.verdict})")
        held = "held" if all(w == "held" for w in words) else (
            "held in part" if "held" in words else ("did not hold" if "did not hold" in words else "not resolved"))
        out.append(f"* **{CAL_NAMES[ca]} vs {CAL_NAMES[base]}** (CA loss calibrates better): " + "; ".join(parts)
                   + f" → **{held}** here.")
    return "\n".join(out) or "* (no CA/NLL pair of calibrators was run)"


def _write_report(summary: dict, path: str, prov: dict | None = None) -> None:
    pre = ""
    if os.path.exists(path):
        text = open(path).read()
        if _REPORT_MARK in text:
            pre = text.split(_REPORT_MARK)[0]
    pre = pre or "# Post-hoc calibration (digits)\n\n"
    t = summary["tables"]
    body = (f"{_REPORT_MARK}\n\n{report.provenance_line(prov or report.provenance())}\n\n"
            "### Verdicts (computed from the numbers below; Δ = CA − NLL, paired over seeds)\n\n"
            + verdicts(summary) + "\n\n"
            f"Validation split: {summary['n_val']} images; base-model errors on it per seed: "
            f"{summary['val_errors']}. Wall time per seed (base-model training + calibration, recorded "
            f"when the seed ran): " + ", ".join(f"{w:.0f} s" for w in summary["seed_wall_time_s"])
            + f" ({sum(summary['seed_wall_time_s']):.0f} s in all).\n\n"
            "### Clean test set, mean ± std over seeds\n\n" + t["test"] + "\n\n")
    if "test_noisy" in t:
        body += ("### Shifted test set (Gaussian pixel noise), calibrators fit on the clean validation split\n\n"
                 + t["test_noisy"] + "\n\n")
    body += ("Bold: lowest mean ECE. Mean T: mean fitted temperature on the clean test set.\n\n"
             "![bars](calibration.png)\n")
    with open(path, "w") as f:
        f.write(pre + body)


def _run(a: cli.StudyArgs) -> dict:
    exp, cfg = cli.parse_with_experiment(a.configs, a.bindings, _GinCalibration)
    if exp.data.dataset != "digits":
        raise ValueError(f"the calibration study runs on digits (`data.dataset`={exp.data.dataset!r}).")
    return run_study(exp, cfg, a.workdir, a.report_dir, prov=a.provenance)


def _print(s: dict) -> None:
    print(s["tables"]["test"])
    print(f"study wall time {s['study_wall_time_s']:.1f} s", file=sys.stderr)


STUDY = cli.Study(
    name="calibration", description=__doc__.split("\n\n")[0], run=_run, print_results=_print,
    default_configs=(os.path.join(report.ROOT, DEFAULT_CONFIG),),
    smoke_bindings=("train.epochs = 1", "train.progress = False", "model.width = 8", "calibration.seeds = (0,)",
                    "calibration.val_size = 100", "calibration.n_test = 100", "calibration.fit_steps = 20",
                    "calibration.calibrators = ('ts_nll', 'ts_ca', 'tx_ca')"))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
