"""Grokking at the edge of numerical stability (Prieto et al., ICLR 2025, arXiv:2501.04697).

Usage::

    python -m experiments.grokking                    # full study -> runs/grokking/grokking.md
    python -m experiments.grokking --write_report     # ... and regenerate experiments/results/grokking.md
    python -m experiments.grokking --smoke            # every arm, tiny (seconds)
    python -m experiments.grokking --config configs/grokking/softmax.gin --config.grokking.steps=500

The flags are those of every study (:mod:`experiments.kit.cli`).

Task: modular addition ``(a + b) mod p`` (``p = 113``), every pair ``(a, b)`` once, a random
``train_fraction`` (40 %) of the ``p²`` pairs for training and the rest for test. Model: an MLP on
the concatenated one-hot codes of ``a`` and ``b``, ``depth`` ReLU layers of width ``hidden``, then
a linear read-out whose logits are multiplied by ``logit_scale``. Full-batch Adam / AdamW, no
learning-rate schedule. Task code: :mod:`experiments.tasks.grokking`.

Arms (:data:`ARMS`, one ``configs/grokking/<arm>.gin`` each): softmax CE without weight decay
(float32 and float64), softmax CE + weight decay (AdamW), StableMax CE
(:func:`lossjax.losses.stablemax_cross_entropy_loss`) and softmax CE + ⊥Grad (:func:`lossjax.orthograd`
before Adam), all from the same initial parameters and split. Every ``log_every`` steps the
train/test accuracy and loss, the Softmax-Collapse fraction of the training logits
(:func:`lossjax.losses.softmax_collapse_fraction`, in the training dtype) and the fraction of
exactly-zero per-example training losses (:func:`lossjax.losses.zero_loss_fraction`) are appended to
``<workdir>/<arm>/metrics.jsonl`` (``step`` = optimisation steps done; 0 is the initial model);
``results.json`` marks a finished arm (:func:`experiments.arms.run_arms` skips it). One seed: the
:data:`CLAIMS` are thresholds on the arms' numbers (:class:`experiments.arms.ThresholdClaim`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Sequence

import gin

from experiments import arms
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report
from experiments.tasks import grokking as task

__all__ = ["GrokkingConfig", "ARMS", "CLAIMS", "parse_grokking_config", "render", "run", "STUDY", "main"]

CONFIG_DIR = os.path.join(report.ROOT, "configs", "grokking")
ARMS = {"softmax": "softmax CE, fp32, no WD", "softmax_wd": "softmax CE + WD (AdamW), fp32",
        "stablemax": "StableMax CE, fp32, no WD", "orthograd": "softmax CE + ⊥Grad, fp32, no WD",
        "softmax_f64": "softmax CE, fp64, no WD"}
LOSSES = ("softmax", "stablemax")
DTYPES = ("float32", "float64")
SMOKE_BINDINGS = ("grokking.modulus = 11", "grokking.hidden = 16", "grokking.steps = 6", "grokking.log_every = 3")


@dataclasses.dataclass(frozen=True)
class GrokkingConfig:
    """One modular-addition run (gin selector ``grokking``).

    Attributes:
      name: arm name (labels; the run's directory is the config file's stem).
      loss: ``softmax`` (softmax CE) or ``stablemax`` (StableMax CE).
      orthograd: apply ⊥Grad to the gradient before the optimizer.
      dtype: ``float32`` or ``float64`` (parameters, data and loss).
      modulus: ``p`` of ``(a + b) mod p``.
      train_fraction: fraction of the ``p²`` pairs used for training.
      hidden, depth: width and number of hidden ReLU layers.
      logit_scale: multiplier of the output logits.
      learning_rate, weight_decay: Adam (``weight_decay == 0``) or AdamW (decoupled decay).
      b2: Adam's second-moment decay.
      steps: full-batch optimisation steps.
      log_every: steps between two metric records (one jitted scan each).
      seed: split and initialisation seed (shared by all arms).
    """

    name: str = "softmax"
    loss: str = "softmax"
    orthograd: bool = False
    dtype: str = "float32"
    modulus: int = 113
    train_fraction: float = 0.4
    hidden: int = 200
    depth: int = 2
    logit_scale: float = 1.0
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    b2: float = 0.99
    steps: int = 3000
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self, "grokking")
        bad = lambda f, why: ValueError(f"`grokking.{f}` must {why}, got {getattr(self, f)!r}.")  # noqa: E731
        if not self.name or os.sep in self.name:
            raise bad("name", f"be a non-empty name without '{os.sep}'")
        if self.loss not in LOSSES:
            raise bad("loss", f"be one of {LOSSES}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"be one of {DTYPES}")
        if self.modulus < 2:
            raise bad("modulus", "be >= 2")
        if not 0.0 < self.train_fraction < 1.0:
            raise bad("train_fraction", "lie in (0, 1)")
        for f in ("hidden", "depth", "steps", "log_every"):
            if getattr(self, f) < 1:
                raise bad(f, "be >= 1")
        if self.steps % self.log_every:
            raise bad("steps", f"be a multiple of `grokking.log_every` ({self.log_every})")
        for f in ("logit_scale", "learning_rate"):
            if getattr(self, f) <= 0:
                raise bad(f, "be > 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "be >= 0")
        if not 0.0 < self.b2 < 1.0:
            raise bad("b2", "lie in (0, 1)")
        if not 1 <= int(round(self.train_fraction * self.modulus ** 2)) < self.modulus ** 2:
            raise bad("train_fraction", f"leave non-empty train and test sets for modulus {self.modulus}")


_GinGrokking = gin.external_configurable(GrokkingConfig, name="grokking")


def parse_grokking_config(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> GrokkingConfig:
    """Parse gin ``files`` then ``bindings`` into a :class:`GrokkingConfig` (errors name the file)."""
    return cli.parse_study_config(files, bindings, _GinGrokking)


_P = "Prieto et al., ICLR 2025"
_G = task.GROK_THRESHOLD
CLAIMS = (
    arms.ThresholdClaim("Softmax Collapse: in float32 without regularisation most training rows collapse (SC rows or "
               "exactly-zero losses) and the model does not grok", f"{_P}, §3 (Softmax Collapse)",
               (("softmax", "collapse_fraction", ">=", 0.5), ("softmax", "best_test_accuracy", "<", _G))),
    arms.ThresholdClaim("Collapse is a precision effect: float64 keeps SC away", f"{_P}, §3 (float64 runs)",
               (("softmax_f64", "max_softmax_collapse_fraction", "<", ("softmax", "max_softmax_collapse_fraction")),)),
    arms.ThresholdClaim("Float64 then groks without regularisation", f"{_P}, §3 (float64 runs)",
               (("softmax_f64", "best_test_accuracy", ">=", _G),)),
    arms.ThresholdClaim("StableMax CE groks without weight decay", f"{_P}, StableMax (Fig. 4)",
               (("stablemax", "best_test_accuracy", ">=", _G),)),
    arms.ThresholdClaim("⊥Grad groks without weight decay", f"{_P}, ⊥Grad (Fig. 6)",
               (("orthograd", "best_test_accuracy", ">=", _G),)),
    arms.ThresholdClaim("Weight decay (the usual recipe) groks", "Power et al. 2022, arXiv:2201.02177; " + _P,
               (("softmax_wd", "best_test_accuracy", ">=", _G),)),
)

REPORT = """# Grokking at the edge of numerical stability (Prieto et al., ICLR 2025) — CPU reproduction

Regenerate: `python -m experiments.grokking --write_report` (all arms, skipping finished ones in
`runs/grokking/`; one arm: `python -m experiments.grokking --config configs/grokking/<arm>.gin`). Training time of the
arms: {train_s:.0f} s on the 2-core CPU (this report's study call: {study_s:.0f} s).

## Setting

Modular addition `(a + b) mod {modulus}`, all {pairs} pairs, {train_fraction:.0%} for training
(seed {seed}), the rest for test. MLP on the concatenated one-hot codes of `a` and `b`, {depth} ReLU
layer(s) of width {hidden}, logits × {logit_scale:g}. Full-batch Adam (b2 = {b2}), constant learning rate,
{steps} steps, metrics every {log_every} steps; the same initialisation and split for every arm.
SC fraction = fraction of training rows with `Σ exp(x − max x) == 1` exactly in the training dtype;
zero-loss fraction = fraction of exactly-zero per-example training losses.

{arms}

## Results (single seed)

{table}

![curves](grokking.png)

## Did the paper's claims hold at this scale?

{claims}

Notes: the SC fraction is always that of *softmax* on the training logits; for the StableMax arm it
only says how large the logit gaps became (StableMax itself does not round to one-hot there, its
zero-loss fraction is the relevant number). Test accuracy below chance (1/p ≈ {chance:.4f}) is
the memorising solution: each residue appears once per row `a`, so predicting a label seen in
training for `a` (or `b`) is always wrong on test pairs.

Caveats: one seed and one hyper-parameter setting per arm, chosen for a CPU budget of a few
minutes, not tuned per arm on the test set. Steps are far fewer than in the paper (which trains
for ~10⁴–10⁵ steps); an arm marked "did not hold" may just need more steps. The paper reaches
collapse faster with scaled logits; here a logit scale of 4 stopped the AdamW arm from grokking in
2000 steps (a probe), so every arm uses scale 1 and float32 collapse builds up only by the end.
"""


def render(study: dict) -> str:
    """The report's Markdown: :data:`REPORT` filled from the runs (tables and verdicts generated)."""
    runs, cfgs = study["runs"], study["configs"]
    s = {a: task.summarize(r["records"]) for a, r in runs.items()}
    c = next(iter(cfgs.values()))
    lines = "\n".join(f"* `{a}`: {ARMS.get(a, a)} — lr {k['learning_rate']:g}, weight decay {k['weight_decay']:g}, "
                      f"⊥Grad {k['orthograd']}, loss {k['loss']}, dtype {k['dtype']}" for a, k in cfgs.items())
    return REPORT.format(**c, pairs=c["modulus"] ** 2, chance=1 / c["modulus"], arms=lines,
                         train_s=sum(r["wall_time_s"] for r in runs.values()), study_s=study["wall_time_s"],
                         table=task.results_table(s, ARMS), claims=arms.thresholds_section(s, CLAIMS))


def run(args: cli.StudyArgs) -> dict:
    """The study's ``run`` for :func:`experiments.kit.cli.study_main`: every config file is an arm
    (its stem names the arm and its directory); returns ``{"runs", "configs", "wall_time_s"}``."""
    t0 = time.perf_counter()
    runs, cfgs = arms.run_arms(args.configs, args.bindings, parse_grokking_config,
                               functools.partial(task.train, progress=args.progress), args.workdir,
                               progress=args.progress)
    study = {"runs": runs, "configs": cfgs, "wall_time_s": time.perf_counter() - t0}
    if args.report_dir:
        data = {"wall_time_s": study["wall_time_s"],
                "runs": {a: {"config": cfgs[a], "summary": task.summarize(r["records"]),
                             "wall_time_s": r["wall_time_s"]} for a, r in runs.items()}}
        report.write_report(args.report_dir, "grokking", render(study), data,
                            lambda p: task.plot({a: r["records"] for a, r in runs.items()}, ARMS, p), args.provenance)
    return study


STUDY = cli.Study(
    name="grokking", description=__doc__.split("\n\n")[0], run=run,
    print_results=lambda st: print(task.results_table({a: task.summarize(r["records"]) for a, r in st["runs"].items()},
                                                      ARMS)),
    default_configs=tuple(os.path.join(CONFIG_DIR, f"{a}.gin") for a in ARMS),
    smoke_bindings=SMOKE_BINDINGS, data_dir_bindings=(), report_needs_all=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.grokking`` (flags of :mod:`experiments.kit.cli`); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
