"""Robust losses under synthetic label noise (the LDR paper's comparison, at CPU scale).

    python -m experiments.noisy_labels                  # digits study -> runs/noisy_labels/noisy_labels.md
    python -m experiments.noisy_labels --write_report   # ... and regenerate experiments/results/noisy_labels.md
    python -m experiments.noisy_labels --smoke          # three losses, tiny MLP (seconds)
    python -m experiments.noisy_labels --config configs/noisy_labels/cifar10.gin --data_dir DIR

The flags are those of every study (:mod:`experiments.kit.cli`); the default workdir is
``runs/<noisy_labels.name>``.

The arms are losses (:data:`ARMS`): CE (optax), GCE, truncated GCE, Taylor CE, SCE, APL
(NCE+RCE), LDR-KL, ALDR-KL and MAE (all from :mod:`lossjax.losses`), trained on the digits data
(or CIFAR-10/100 from ``--data_dir`` with ``configs/noisy_labels/cifar10.gin``) whose **training**
labels are corrupted by one of the noise settings — ``symR`` (a uniformly random other class with
probability R %) or ``asymR`` (a fixed map of look-alike classes, e.g. digits 2→7, 3→8, 5→6, 6→5,
7→1; see :func:`experiments.tasks.noisy_labels.corrupt_labels`), the same draw for every loss —
and scored by accuracy on the **clean** test set.

All (seed × noise setting) runs of one loss are trained together with ``jax.vmap`` (each loss
compiles once); the unit of resumption is one loss: ``<workdir>/<loss>/results.json`` is written
when its runs finish, and a rerun skips losses that have one (with the same config). Per-epoch
clean-test accuracies go to ``<workdir>/<loss>/metrics.jsonl`` (epochs 1-based). The report
(``<name>.md``, ``.json``, ``.png``) fills :data:`TEMPLATE` with the measured numbers; its verdicts
test :data:`CLAIMS` and :data:`RANK_CLAIM`. Task code: :mod:`experiments.tasks.noisy_labels`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time

import gin

from experiments import arms
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report
from experiments.tasks import noisy_labels as task
from experiments.tasks.noisy_labels import ASYM_MAPS, LOSSES, parse_noise

__all__ = ["NoisyLabelsConfig", "ARMS", "CLAIMS", "RANK_CLAIM", "TEMPLATE", "loss_label", "verdicts", "render",
           "run_study", "STUDY", "main"]

# the arms: loss -> display name ('ldr_kl:<norm>' / 'aldr_kl:<norm>' are normalisation variants)
ARMS = {"ce": "CE", "gce": "GCE", "tgce": "truncated GCE", "taylor": "Taylor CE", "sce": "SCE",
        "apl": "APL (NCE+RCE)", "ldr_kl": "LDR-KL", "aldr_kl": "ALDR-KL", "mae": "MAE"}
DEFAULT_CONFIG = os.path.join("configs", "noisy_labels", "digits.gin")


def loss_label(name: str) -> str:
    """Display name: ``'aldr_kl:none'`` → ``'ALDR-KL [norm none]'``."""
    base, sep, variant = name.partition(":")
    return ARMS[base] + (f" [norm {variant}]" if sep else "")


@dataclasses.dataclass(frozen=True)
class NoisyLabelsConfig:
    """The noisy-label study (gin selector ``noisy_labels``; files ``configs/noisy_labels/*.gin``).

    Attributes:
      name: stem of the report files and of the default workdir ``runs/<name>``.
      dataset: ``digits`` (embedded), ``cifar10`` or ``cifar100`` (need ``data_dir``, never downloaded).
      data_dir: local CIFAR directory (``--data_dir`` sets it).
      n_train, n_test: keep only the first n examples (0 = all), for smoke tests.
      model: ``mlp`` (``hidden`` × ``depth``, on the flattened pixels) or ``cnn`` (``SmallCNN`` of ``width``).
      losses: the arms run, a subset of :data:`ARMS`; ``ldr_kl``/``aldr_kl`` may carry a
        normalisation variant overriding ``ldr_normalize``/``aldr_normalize`` (``'aldr_kl:none'``).
      noise: settings ``symR`` / ``asymR`` (R in percent, 0..99).
      seeds: seeds (initialisation, shuffling, noise draw).
      epochs, batch_size: training length and minibatch size (last partial batch dropped).
      optimizer, learning_rate, weight_decay: ``adam`` or ``sgd`` (momentum 0.9), constant rate,
        coupled (PyTorch-style) L2.
      eval_chunk: evaluation chunk size (rows per forward pass).
      gce_q, tgce_k, tgce_warmup: GCE q; truncation k; epochs of plain GCE before truncating.
      taylor_order, sce_alpha, sce_beta, sce_log_zero, apl_alpha, apl_beta, mae_scale: the losses'
        hyper-parameters (RCE inside APL uses A = ln 1e-4).
      ldr_lambda, ldr_margin, ldr_normalize: LDR-KL λ, c and score normalisation ('' = none).
      aldr_lambda, aldr_alpha, aldr_margin, aldr_normalize: ALDR-KL λ₀, α, c, normalisation.
      progress, log_every: print progress every ``log_every`` epochs.
    """

    name: str = "noisy_labels"
    dataset: str = "digits"
    data_dir: str = ""
    n_train: int = 0
    n_test: int = 0
    model: str = "mlp"
    hidden: int = 256
    depth: int = 2
    width: int = 32
    losses: tuple = LOSSES
    noise: tuple = ("sym0", "sym20", "sym40", "sym60", "asym40")
    seeds: tuple = (0, 1, 2)
    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 5e-3
    eval_chunk: int = 1000
    gce_q: float = 0.7
    tgce_k: float = 0.5
    tgce_warmup: int = 30
    taylor_order: int = 2
    sce_alpha: float = 0.1
    sce_beta: float = 1.0
    sce_log_zero: float = -4.0
    apl_alpha: float = 1.0
    apl_beta: float = 1.0
    ldr_lambda: float = 10.0
    ldr_margin: float = 0.1
    ldr_normalize: str = "softplus_mean"
    aldr_lambda: float = 10.0
    aldr_alpha: float = 2.0
    aldr_margin: float = 0.1
    aldr_normalize: str = "l1"
    mae_scale: float = 1.0
    progress: bool = True
    log_every: int = 10

    def __post_init__(self) -> None:
        check_field_types(self, "noisy_labels")

        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise ValueError(f"`noisy_labels.{field}` must {what}, got {getattr(self, field)!r}.")

        need(self.dataset in ("digits", "cifar10", "cifar100"), "dataset", "be digits, cifar10 or cifar100")
        need(self.model in ("mlp", "cnn"), "model", "be 'mlp' or 'cnn'")
        need(self.optimizer in ("adam", "sgd"), "optimizer", "be 'adam' or 'sgd'")
        need(bool(self.losses) and all(task.valid_loss(n) for n in self.losses) and
             len(set(self.losses)) == len(self.losses), "losses",
             f"be a non-empty subset of {LOSSES} without duplicates (LDR losses may carry a normalisation "
             "variant, e.g. 'aldr_kl:none')")
        need(bool(re.match(r"^[A-Za-z0-9_.-]+$", self.name)), "name", "be a plain file stem")
        need(bool(self.noise), "noise", "name at least one setting")
        for s in self.noise:
            parse_noise(s)
            need(not s.startswith("asym") or self.dataset in ASYM_MAPS, "noise",
                 f"have a class map for its asymmetric settings; none is defined for {self.dataset!r} "
                 f"(only {sorted(ASYM_MAPS)})")
        need(bool(self.seeds) and all(isinstance(s, int) and s >= 0 for s in self.seeds), "seeds",
             "be non-negative ints")
        for f in ("n_train", "n_test", "tgce_warmup", "weight_decay", "sce_alpha", "sce_beta", "apl_alpha",
                  "apl_beta", "ldr_lambda", "ldr_margin", "aldr_margin", "mae_scale"):
            need(getattr(self, f) >= 0, f, "be >= 0")
        for f in ("hidden", "depth", "width", "epochs", "batch_size", "eval_chunk", "taylor_order", "log_every"):
            need(getattr(self, f) >= 1, f, "be >= 1")
        need(self.learning_rate > 0, "learning_rate", "be > 0")
        need(0 < self.gce_q <= 1, "gce_q", "lie in (0, 1]")
        need(0 <= self.tgce_k < 1, "tgce_k", "lie in [0, 1)")
        need(self.sce_log_zero < 0, "sce_log_zero", "be < 0")
        need(self.aldr_alpha > 1, "aldr_alpha", "be > 1")
        need(self.aldr_lambda > 0, "aldr_lambda", "be > 0")
        for f in ("ldr_normalize", "aldr_normalize"):
            need(getattr(self, f) in ("", "l1", "softplus_mean"), f, "be '', 'l1' or 'softplus_mean'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_GinNoisyLabels = gin.external_configurable(NoisyLabelsConfig, name="noisy_labels")

# "a beats CE under label noise", tested at every noisy setting (metric: clean test accuracy, %)
_BEATS_CE = {
    "gce": "Zhang & Sabuncu, NeurIPS 2018, Sec. 4", "tgce": "Zhang & Sabuncu, NeurIPS 2018, Sec. 3.3 and 4",
    "taylor": "Feng et al., IJCAI 2020, Sec. 4", "sce": "Wang et al., ICCV 2019, Sec. 5",
    "apl": "Ma et al., ICML 2020, Sec. 5", "ldr_kl": "Zhu, Ying & Yang, ICML 2023, Sec. 5",
    "aldr_kl": "Zhu, Ying & Yang, ICML 2023, Sec. 5", "mae": "Ghosh, Kumar & Sastry, AAAI 2017, Sec. 4"}
CLAIMS = tuple(arms.Claim(f"{ARMS[a]} beats CE under label noise", src, a, "ce", task.ACC)
               for a, src in _BEATS_CE.items())
# "ALDR-KL is stable and competitive across clean, symmetric and class-dependent noise"
RANK_CLAIM = arms.RankClaim("LDR claim: ALDR-KL / LDR-KL reach the best or near-best mean rank (top three)",
                            "Zhu, Ying & Yang, ICML 2023, Sec. 5", ("ldr_kl", "aldr_kl"), top=3)

TEMPLATE = """# Noisy labels ({dataset})

### Verdicts (computed from the numbers below)

{verdicts}

Dataset {dataset}: {n_train} train (noisy labels) / {n_test} test (clean). Realised fraction of corrupted \
training labels (%): {rates}. Training wall time (recorded when each loss ran; 2 shared CPU cores unless noted): \
{wall_total:.0f} s in all, {wall_per_loss}.

### Clean test accuracy (%) at the final epoch, mean ± std over seeds

{final}

Bold: best mean in the column. Mean rank: average over the noise settings of the loss's rank (1 = best).

### Best-epoch clean test accuracy (%) — an oracle (picked on the test set), for diagnosis only

{best_epoch}

### Memorisation: % of the corrupted training labels the final model predicts (train set)

{memorised}

![curves]({stem}.png)
"""


def verdicts(summary: dict) -> str:
    """The report's verdict sentences, computed from ``summary["final_test_accuracy"]``:
    :data:`RANK_CLAIM` ("near-best" = a mean rank among the three best losses) and every claim of
    :data:`CLAIMS` at every noisy setting (paired t-test over seeds, same noise draw)."""
    acc = summary["final_test_accuracy"]
    noise = summary.get("config", {}).get("noise") or list(next(iter(acc.values())))
    out = [task.rank_verdict(acc, RANK_CLAIM, loss_label), task.vs_baseline_section(acc, CLAIMS, noise, loss_label)]
    return "\n".join(o for o in out if o) or "* (no claim applies to this set of losses: the tables below compare them)"


def render(summary: dict, stem: str) -> str:
    """:data:`TEMPLATE` filled from ``summary`` (its title is dropped below a kept hand-written
    preamble, see :func:`experiments.kit.report.write_report`)."""
    t = summary["tables"]
    return TEMPLATE.format(
        verdicts=verdicts(summary),
        dataset=summary["dataset"], n_train=summary["n_train"], n_test=summary["n_test"],
        rates=task.realised_rates(summary), wall_total=sum(summary["train_wall_time_s"].values()),
        wall_per_loss=", ".join(f"{loss_label(l)} {w:.0f} s" for l, w in summary["train_wall_time_s"].items()),
        final=t["final"], best_epoch=t["best_epoch"], memorised=t["memorised"], stem=stem)


def run_study(cfg: NoisyLabelsConfig, workdir: str, out: str | None, prov: dict | None = None) -> dict:
    """Train every loss (skipping finished ones) and, if ``out`` is given, write the report
    ``<out>/<cfg.name>.{md,json,png}``. Returns the summary (numbers and tables)."""
    ds = task.load_data(cfg)
    t0 = time.perf_counter()
    results = {l: task.train_loss_group(l, cfg, ds, os.path.join(workdir, l.replace(":", "_"))) for l in cfg.losses}
    summary = task.summarize(results, cfg, ds, time.perf_counter() - t0, loss_label)
    if out:
        report.write_report(out, cfg.name, render(summary, cfg.name), summary,
                            lambda p: task.plot(results, cfg.noise, loss_label, p), prov)
    return summary


def _run(a: cli.StudyArgs) -> dict:
    cfg = cli.parse_study_config(a.configs, a.bindings, _GinNoisyLabels)
    workdir = os.path.join("runs", cfg.name + ("_smoke" if a.smoke else "")) if a.default_workdir else a.workdir
    out = workdir if a.report_dir == a.workdir else a.report_dir  # the report goes next to the runs by default
    return run_study(cfg, workdir, out, a.provenance)


def _print(s: dict) -> None:
    print(s["tables"]["final"])
    print(f"study wall time {s['study_wall_time_s']:.1f} s", file=sys.stderr)


STUDY = cli.Study(
    name="noisy_labels", description=__doc__.split("\n\n")[0], run=_run, print_results=_print,
    default_configs=(os.path.join(report.ROOT, DEFAULT_CONFIG),),
    smoke_bindings=("noisy_labels.n_train = 200", "noisy_labels.n_test = 100", "noisy_labels.hidden = 16",
                    "noisy_labels.depth = 1", "noisy_labels.epochs = 2", "noisy_labels.seeds = (0, 1)",
                    "noisy_labels.losses = ('ce', 'gce', 'aldr_kl')", "noisy_labels.noise = ('sym0', 'sym40')",
                    "noisy_labels.tgce_warmup = 1", "noisy_labels.progress = False"),
    data_dir_bindings=("data.data_dir", "noisy_labels.data_dir"))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
