"""Sharpness studies: AACE's mechanism, the SAM family under label noise, sharpness vs accuracy.

    python -m experiments.sharpness_study                  # -> runs/sharpness_study/sharpness.md
    python -m experiments.sharpness_study --write_report   # ... and regenerate experiments/results/sharpness.md
    python -m experiments.sharpness_study --smoke          # two arms, tiny MLP (seconds)

The flags are those of every study (:mod:`experiments.kit.cli`); the config is
``configs/sharpness_study/digits_noisy.gin``. Task code: :mod:`experiments.tasks.sharpness_study`.

Task (a CPU-scale stand-in for the settings where the SAM papers report their largest gains:
label noise, few examples): scikit-learn's 8×8 digits, a fixed stratified training subset of
``n_train`` images whose labels are corrupted per seed by symmetric noise, scored on the clean
remaining images; a ReLU MLP trained by SGD with momentum and one front transform of the SAM
family per arm — ``sgd``, ``sam``, ``asam``, ``aace_sam``, ``gsam``, ``saf``, ``mesa`` at their
papers' radii, plus ``sam:<ρ>`` / ``aace_sam:<ρ>`` sweep arms. All (noise × seed) runs of one arm
are trained together (``jax.vmap``); ``<workdir>/<arm>/results.json`` marks a finished arm.

Tested (every verdict computed from the measured numbers, paired over seeds):

1. :data:`CLAIMS` — clean test accuracy: AACE-SAM > SAM > SGD, ASAM > SAM, GSAM > SAM;
2. AACE's mechanism (Ratchatorn & Tanaka, ICIP 2024, Sec. 1-2): near convergence ‖∇CE‖ becomes
   small and SAM's ascent direction inconsistent, while ‖∇AACE‖ does not vanish — ‖∇CE‖, ‖∇AACE‖,
   λ_max every ``measure_every`` epochs, ‖ε‖ and the cosine of consecutive ascent directions per step;
3. SAF/MESA reach SAM's flatness at SGD's cost (Du et al., NeurIPS 2022, Tables 1 and 3) — λ_max
   and the interleaved time per step;
4. sharpness vs accuracy (Foret et al., ICLR 2021, Fig. 2; Kwon et al., ICML 2021, Fig. 3) —
   Spearman correlation of λ_max, Hessian trace and ε-sharpness with test accuracy over all runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import gin
import numpy as np

from experiments import arms
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report
from experiments.kit.mlp import MLP
from experiments.kit.runs import finished_run, write_run
from experiments.tasks import sharpness_study as task
from experiments.tasks.noisy_labels import parse_noise
from experiments.tasks.sharpness_study import KINDS, arm_label, parse_arm

__all__ = ["SharpnessStudyConfig", "ARMS", "CLAIMS", "TEMPLATE", "verdicts", "render", "run_study", "STUDY", "main"]

# the arms of the full study (configs/sharpness_study/digits_noisy.gin): every kind at its paper's radius, then sweeps
ARMS = (*KINDS, "sam:0.1", "sam:0.2", "sam:0.5", "aace_sam:0.05", "aace_sam:0.5")
DEFAULT_CONFIG = os.path.join("configs", "sharpness_study", "digits_noisy.gin")
STEM = "sharpness"


@dataclasses.dataclass(frozen=True)
class SharpnessStudyConfig:
    """The sharpness study (gin selector ``sharpness_study``).

    Attributes:
      n_train, n_test: training subset size; test images (0 = every image not in the subset).
      split_seed: seed of the fixed stratified train/test split.
      noise: symmetric noise settings ``symR`` of the training labels (one set of runs each).
      seeds: seeds (initialisation, shuffling, noise draw); the same for every arm (paired).
      hidden: MLP hidden widths.
      epochs, batch_size: training length; minibatch size (last partial batch dropped).
      learning_rate, momentum, weight_decay, schedule: the shared SGD recipe (coupled decay).
      arms: ``kind`` or ``kind:rho`` (rho overrides the recommended radius; sweeps).
      sam_rho, asam_rho, asam_eta, aace_rho, gsam_rho, gsam_rho_min, gsam_alpha: the papers' radii.
      saf_lam, saf_tau, saf_delay, saf_start, mesa_lam, mesa_decay: SAF / MESA settings.
      measure_every: epochs between curvature measurements (the last epoch is always measured).
      lanczos_iters, trace_probes, eps_rho, eps_steps: measurement settings.
      timing_rounds: rounds of the interleaved cost measurement (one epoch of every kind per round).
      progress: print one line per arm.
    """

    n_train: int = 300
    n_test: int = 0
    split_seed: int = 0
    noise: tuple = ("sym0", "sym40")
    seeds: tuple = (0, 1, 2, 3, 4)
    hidden: tuple = (128,)
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    arms: tuple = KINDS
    sam_rho: float = 0.05
    asam_rho: float = 0.5
    asam_eta: float = 0.01
    aace_rho: float = 0.2
    gsam_rho: float = 0.05
    gsam_rho_min: float = 0.01
    gsam_alpha: float = 0.4
    saf_lam: float = 0.3
    saf_tau: float = 5.0
    saf_delay: int = 3
    saf_start: int = 5
    mesa_lam: float = 0.8
    mesa_decay: float = 0.99
    measure_every: int = 2
    lanczos_iters: int = 20
    trace_probes: int = 32
    eps_rho: float = 0.05
    eps_steps: int = 5
    timing_rounds: int = 5
    progress: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "sharpness_study")
        for s in self.noise:
            if parse_noise(s)[0] != "sym":
                raise ValueError(f"`sharpness_study.noise`: only symmetric settings 'symR' are supported, got {s!r}.")
        if not self.noise or not self.seeds or not self.arms or not self.hidden:
            raise ValueError("`sharpness_study.noise`, `.seeds`, `.arms` and `.hidden` must not be empty.")
        for a in self.arms:
            parse_arm(a)
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"`sharpness_study.arms` has duplicates: {self.arms!r}.")
        for f in ("n_train", "epochs", "batch_size", "measure_every", "lanczos_iters", "trace_probes", "eps_steps",
                  "timing_rounds"):
            if getattr(self, f) < 1:
                raise ValueError(f"`sharpness_study.{f}` must be >= 1, got {getattr(self, f)}.")
        if not 1 <= self.batch_size <= self.n_train:
            raise ValueError(f"`sharpness_study.batch_size` must lie in [1, n_train], got {self.batch_size}.")
        for f in ("learning_rate", "sam_rho", "asam_rho", "aace_rho", "gsam_rho", "eps_rho"):
            if getattr(self, f) <= 0:
                raise ValueError(f"`sharpness_study.{f}` must be > 0, got {getattr(self, f)}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)



_Gin = gin.external_configurable(SharpnessStudyConfig, name="sharpness_study")

# "a beats b" on clean test accuracy (%), tested at every noise setting ("<metric>@<noise>")
CLAIMS = (
    arms.Claim("AACE-SAM beats SAM", "Ratchatorn & Tanaka, ICIP 2024 (arXiv:2406.14329), Sec. 3",
               "aace_sam", "sam", "test_accuracy"),
    arms.Claim("SAM beats SGD, by most under label noise", "Foret et al., ICLR 2021, Sec. 3.3, Table 4",
               "sam", "sgd", "test_accuracy"),
    arms.Claim("ASAM beats SAM", "Kwon et al., ICML 2021, Sec. 5", "asam", "sam", "test_accuracy"),
    arms.Claim("GSAM beats SAM", "Zhuang et al., ICLR 2022, Sec. 5", "gsam", "sam", "test_accuracy"),
)

TEMPLATE = """# Sharpness studies: AACE's mechanism, the SAM family under label noise, sharpness vs accuracy

### Verdicts (computed from the numbers below)

{verdicts}
Setting: digits, fixed stratified subset of {n_train} training images (noisy labels, realised rates: {noise}), \
{n_test} clean test images; MLP 64-{hidden}-10; {epochs} epochs, batch {batch_size}, SGD lr {learning_rate:g} \
({schedule}) momentum {momentum:g}, coupled weight decay {weight_decay:g}; seeds {seeds} (same init, noise draw and \
shuffling for every arm). Sharpness is measured on the training loss (CE on the noisy training labels, no weight \
decay): λ_max by Lanczos ({lanczos_iters} steps), trace by Hutchinson ({trace_probes} probes), ε-sharpness by \
{eps_steps} projected ascent steps. Time per step: median over {timing_rounds} interleaved rounds of one jitted \
epoch of each optimizer (all {n_runs} runs vmapped, compile excluded, SAF/MESA term active) / steps, on a shared, \
loaded 2-core CPU (indicative only; the training steps of all arms took {wall:.0f} s, without compilation and \
measurements). At this scale a step is dominated by fixed per-operation overhead, not by the passes it makes, so \
the measured ratios understate the nominal cost of a second pass (column passes/step).

{tables}![mechanism]({stem}.png)

Mechanism figure: per epoch, mean over seeds (log scale), for SGD, SAM and AACE-SAM: ‖∇CE‖ and ‖∇AACE‖ on the \
training set, the applied ‖ε‖, the cosine between consecutive ascent directions and the top Hessian eigenvalue.

![scatter]({stem}_scatter.png)
"""


def verdicts(s: dict) -> str:
    """The report's verdicts per noise setting, computed from the measured numbers: AACE's
    mechanism, :data:`CLAIMS` (paired t-tests over seeds), the ρ sweeps, SAF/MESA's cost and the
    sharpness–accuracy correlations."""
    cfg, results, lines = s["config"], task.claim_metrics(s), []
    for z in cfg["noise"]:
        claims = [c.at(z) for c in CLAIMS]
        lines += [f"**{z}** ({len(cfg['seeds'])} seeds; paired t-tests at 5 %):",
                  *filter(None, [task.mechanism_verdict(s, z)]), arms.claims_section(results, claims, digits=2),
                  *task.sweep_verdicts(s, z), *task.cost_verdicts(s, z), task.correlation_verdict(s, z), ""]
    return "\n".join(lines)


def render(s: dict) -> str:
    """:data:`TEMPLATE` filled from the summary ``s`` (the title is dropped below a kept
    hand-written head, see :func:`experiments.kit.report.write_report`)."""
    cfg = s["config"]
    return TEMPLATE.format(
        verdicts=s["verdicts"], stem=STEM,
        noise=", ".join(f"{z} {100 * np.mean(v):.1f} %" for z, v in s["realised_noise"].items()),
        n_test=s["n_test"], hidden="-".join(str(h) for h in cfg["hidden"]), seeds=tuple(cfg["seeds"]),
        n_runs=len(cfg["noise"]) * len(cfg["seeds"]),
        wall=sum(r["step_time_s"] * r["steps_per_epoch"] * cfg["epochs"] for r in s["arms"].values()),
        tables="".join(f"### {z}: final numbers (mean ± std over seeds)\n\n{t}\n\n" for z, t in s["tables"].items()),
        **{k: cfg[k] for k in ("n_train", "epochs", "batch_size", "learning_rate", "schedule", "momentum",
                               "weight_decay", "lanczos_iters", "trace_probes", "eps_steps", "timing_rounds")})


def run_study(cfg: SharpnessStudyConfig, workdir: str, out: str | None, prov: dict | None = None) -> dict:
    """Train (or reuse) every arm and the interleaved timing, then write the report into ``out`` (if given)."""
    t0 = time.perf_counter()
    data = task.load_task(cfg)
    measure = task.Measure(MLP(hidden=tuple(cfg.hidden), out=10), cfg, data["x"], data["x_test"], data["y_test"])
    base = {k: v for k, v in cfg.to_dict().items() if k not in ("arms", "progress")}
    results = {}
    for arm in cfg.arms:
        wd = os.path.join(workdir, arm.replace(":", "_rho"))
        res = finished_run(wd, dict(base, arm=arm))
        if res is None:
            ta = time.perf_counter()
            res = write_run(wd, dict(base, arm=arm), task.train_arm(arm, cfg, data, measure))
            if cfg.progress:
                print(f"[sharpness] {arm}: mean test acc {100 * np.mean(res['final_test_accuracy']):.1f} %, "
                      f"{time.perf_counter() - ta:.0f} s", file=sys.stderr)
        results[arm] = res
    wd = os.path.join(workdir, "_timing")
    timing = finished_run(wd, dict(base, arms=list(cfg.arms)))
    if timing is None:
        timing = write_run(wd, dict(base, arms=list(cfg.arms)), task.time_kinds(cfg, data))
    s = {"config": cfg.to_dict(), "arms": results, "timing": timing,
         "labels": {a: arm_label(a, cfg) for a in cfg.arms}, "n_test": int(len(data["y_test"])),
         "realised_noise": {z: [float(np.mean(data["y"][i] != data["y_clean"]))
                                for i, (zz, _) in enumerate(data["runs"]) if zz == z] for z in cfg.noise},
         "study_wall_time_s": time.perf_counter() - t0}
    s["tables"] = task.tables(s)
    s["verdicts"] = verdicts(s)
    if out:
        report.write_report(out, STEM, render(s), data=report.rounded(s),
                            plot=lambda p: task.plot(s, p), prov=prov)
    return s


def _run(a: cli.StudyArgs) -> dict:
    return run_study(cli.parse_study_config(a.configs, a.bindings, _Gin), a.workdir, a.report_dir, a.provenance)


def _print(s: dict) -> None:
    for z, t in s["tables"].items():
        print(f"{z}\n{t}")
    print(s["verdicts"])
    print(f"study wall time {s['study_wall_time_s']:.1f} s", file=sys.stderr)


STUDY = cli.Study(
    name="sharpness_study", description=__doc__.split("\n\n")[0], run=_run, print_results=_print,
    default_configs=(os.path.join(report.ROOT, DEFAULT_CONFIG),),
    smoke_bindings=("sharpness_study.n_train = 64", "sharpness_study.n_test = 100", "sharpness_study.hidden = (8,)",
                    "sharpness_study.epochs = 3", "sharpness_study.seeds = (0, 1)",
                    "sharpness_study.noise = ('sym40',)", "sharpness_study.arms = ('sgd', 'aace_sam')",
                    "sharpness_study.lanczos_iters = 4", "sharpness_study.trace_probes = 2",
                    "sharpness_study.eps_steps = 1", "sharpness_study.timing_rounds = 1",
                    "sharpness_study.progress = False"),
    data_dir_bindings=())


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
