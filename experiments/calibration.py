"""Post-hoc calibration of a trained digits model: NLL vs the correctness-aware (CA) loss.

Usage::

    python -m experiments.calibration                  # -> runs/calibration/calibration.md
    python -m experiments.calibration --write_report   # ... and regenerate experiments/results/calibration.md
    python -m experiments.calibration --smoke          # one seed, one epoch (seconds)
    python -m experiments.calibration --config.calibration.seeds='(0,)' --config.train.epochs=5

The flags are those of every study (:mod:`experiments.kit.cli`); the config is
``configs/calibration/digits.gin`` (base model: the digits recipe ``configs/digits/sgd.gin``).

Per seed, a ``SmallCNN`` is trained once with cross-entropy by the common Trainer on the digits
training split minus a fixed stratified **validation split** (``calibration.val_size`` images). The
arms (:data:`ARMS`) are post-hoc calibrators fit full-batch (Adam) on its frozen validation logits;
the temperature is kept in ``[t_min, t_max]`` (the CA code's clamp). They are scored on the clean
test set and on a shifted copy (Gaussian pixel noise): ECE (``num_bins`` equal-width confidence
bins), NLL and accuracy, mean ± std over seeds; the :data:`CLAIMS` are paired t-tests over seeds.
Task code: :mod:`experiments.tasks.calibration`. Resumable: ``<workdir>/base_s<seed>`` is the
Trainer's run and ``<workdir>/calib_s<seed>/results.json`` marks a finished seed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import gin

from experiments import arms
from experiments.common.config import ExperimentConfig
from experiments.common.data import Dataset
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report
from experiments.tasks import calibration as task

__all__ = ["CalibrationConfig", "ARMS", "CLAIMS", "METRICS", "arm_results", "render", "run_study", "STUDY", "main"]

DEFAULT_CONFIG = os.path.join(report.ROOT, "configs", "calibration", "digits.gin")
ARMS = {  # arm -> what it is; "none" is the uncalibrated model, the others are task.KINDS
    "none": "uncalibrated",
    "ts_nll": "temperature scaling, one T fit by NLL (Guo et al. 2017)",
    "ts_ca": "one T fit by the CA loss (`lossjax.losses.correctness_aware_loss`)",
    "tx_nll": "a per-sample T(x), linear in features of the outputs on the image and 8 one-pixel translations, "
              "fit by NLL",
    "tx_ca": "the same T(x) fit by the CA loss (the CA paper's calibrator sees transformed copies too)",
    "vs_nll": "vector scaling x·w + b fit by NLL (it can change the argmax)",
}
METRICS = {"test": ("ece", "nll", "accuracy", "temperature"),
           "test_noisy": ("ece_shifted", "nll_shifted", "accuracy_shifted")}
_CA = "Liu et al. 2024, arXiv:2404.13016, §4"
CLAIMS = (
    arms.Claim("Temperature scaling fit by NLL lowers the network's ECE", "Guo et al., ICML 2017, §5, Table 1",
               "ts_nll", "none", "ece", better="lower"),
    arms.Claim("A temperature fit by the CA loss calibrates better (lower ECE) than one fit by NLL", _CA,
               "ts_ca", "ts_nll", "ece", better="lower"),
    arms.Claim("Under distribution shift, too, a CA-fit temperature has the lower ECE", _CA,
               "ts_ca", "ts_nll", "ece_shifted", better="lower"),
    arms.Claim("A per-sample T(x) fit by the CA loss calibrates better than the same T(x) fit by NLL", _CA,
               "tx_ca", "tx_nll", "ece", better="lower"),
    arms.Claim("Under distribution shift, too, the CA-fit T(x) has the lower ECE", _CA,
               "tx_ca", "tx_nll", "ece_shifted", better="lower"),
)


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """The post-hoc calibration study (gin selector ``calibration``).

    Attributes:
      seeds: seeds of the base models (``train.seed``); the data split is fixed.
      val_size: held-out validation images (from the training split) the calibrators fit on.
      split_seed: seed of the stratified train/validation split.
      n_test: keep only the first n test images (0 = all), for smoke tests.
      calibrators: the arms to fit, a subset of :data:`experiments.tasks.calibration.KINDS`.
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
    calibrators: tuple = task.KINDS
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
        if any(c not in task.KINDS for c in self.calibrators):
            raise ValueError(f"`calibration.calibrators` must be a subset of {task.KINDS}, got {self.calibrators!r}.")
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

REPORT = """# Post-hoc calibration (digits)

### Claims tested (computed from the numbers below; paired two-sided t-test at 5 % over seeds)

{claims}

Validation split: {n_val} images; base-model errors on it per seed: {val_errors}. Wall time per seed
(base-model training + calibration, recorded when the seed ran): {seed_times}.

### Clean test set, mean ± std over {n} seed(s)

{clean}
{shifted}
Arms: {legend}. ECE and accuracy in %; `temperature`: mean fitted temperature on the clean test set.

![bars](calibration.png)
"""
_SHIFTED = """
### Shifted test set (Gaussian pixel noise, σ = {noise:g} grey levels), calibrators fit on the clean validation split

{table}
"""


def arm_results(seed_results: list[dict]) -> dict:
    """Per-seed records of :func:`experiments.tasks.calibration.calibrate_seed` → ``{arm: {"metrics":
    {metric: [per-seed values]}}}`` (the layout of :mod:`experiments.arms`; ``_shifted`` = noisy test set)."""
    out = {}
    for arm in [a for a in ARMS if a in seed_results[0]["scores"]]:  # declaration order (JSON sorts keys)
        m: dict[str, list[float]] = {}
        for split, suffix in (("test", ""), ("test_noisy", "_shifted")):
            for key in ("ece", "nll", "accuracy", "temperature_mean"):
                vals = [r["scores"][arm].get(split, {}).get(key) for r in seed_results]
                if all(v is not None for v in vals):
                    m[key.replace("_mean", "") + suffix] = vals
        out[arm] = {"metrics": m}
    return out


def render(study: dict) -> str:
    """The report's Markdown from :func:`run_study`'s numbers (no hand-written verdicts)."""
    res, cfg = study["results"], study["config"]
    rows = [a for a in ARMS if a in res]
    shifted = "ece_shifted" in res["none"]["metrics"]  # False when shift_noise = 0: no shifted claims or table
    claims = [c for c in CLAIMS if shifted or not c.metric.endswith("_shifted")]
    return REPORT.format(
        claims=arms.claims_section(res, claims, digits=2) or "* (no claim's arms were run)",
        n_val=study["n_val"], val_errors=study["val_errors"], n=len(study["seeds"]),
        seed_times=", ".join(f"{w:.0f} s" for w in study["seed_wall_time_s"])
        + f" ({sum(study['seed_wall_time_s']):.0f} s in all)",
        clean=arms.metrics_table(res, rows, METRICS["test"]),
        shifted=_SHIFTED.format(noise=cfg["shift_noise"], table=arms.metrics_table(res, rows, METRICS["test_noisy"]))
        if shifted else "",
        legend="; ".join(f"`{a}` {ARMS[a]}" for a in rows))


def run_study(exp: ExperimentConfig, cfg: CalibrationConfig, workdir: str, out: str | None,
              ds: Dataset | None = None, prov: dict | None = None) -> dict:
    """Every seed (finished ones are reloaded), then ``<out>/calibration.{md,json,png}`` when ``out``."""
    t0 = time.perf_counter()
    per_seed = [task.calibrate_seed(exp, cfg, s, workdir, ds) for s in cfg.seeds]
    study = {"results": arm_results(per_seed), "config": cfg.to_dict(), "base_config": exp.to_dict(),
             "seeds": list(cfg.seeds), "n_val": per_seed[0]["n_val"], "val_errors": [r["val_errors"] for r in per_seed],
             "seed_wall_time_s": [r["wall_time_s"] for r in per_seed], "wall_time_s": time.perf_counter() - t0}
    if out:
        res = study["results"]
        panels = [("bar", "clean test ECE (%)", {a: r["metrics"]["ece"] for a, r in res.items()}),
                  ("bar", "clean test NLL", {a: r["metrics"]["nll"] for a, r in res.items()})]
        if "ece_shifted" in res["none"]["metrics"]:
            panels.append(("bar", "shifted test ECE (%)", {a: r["metrics"]["ece_shifted"] for a, r in res.items()}))
        report.write_report(out, "calibration", render(study), study, lambda p: arms.plot_panels(p, panels), prov)
    return study


def _run(a: cli.StudyArgs) -> dict:
    exp, cfg = cli.parse_with_experiment(a.configs, a.bindings, _GinCalibration)
    if exp.data.dataset != "digits":
        raise ValueError(f"the calibration study runs on digits (`data.dataset`={exp.data.dataset!r}).")
    return run_study(exp, cfg, a.workdir, a.report_dir, prov=a.provenance)


STUDY = cli.Study(
    name="calibration", description=__doc__.split("\n\n")[0], run=_run,
    print_results=lambda s: print(arms.metrics_table(s["results"], list(ARMS), METRICS["test"])),
    default_configs=(DEFAULT_CONFIG,),
    smoke_bindings=("train.epochs = 1", "train.progress = False", "model.width = 8", "calibration.seeds = (0,)",
                    "calibration.val_size = 100", "calibration.n_test = 100", "calibration.fit_steps = 20",
                    "calibration.calibrators = ('ts_nll', 'ts_ca', 'tx_ca')"))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
