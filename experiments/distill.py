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
compiles its training epoch once. Task code: :mod:`experiments.tasks.distill`.

The arms are the methods (:data:`ARMS`, one ``configs/distill/<method>.gin`` each), run in every
setting of :data:`SETTINGS` (the main one, then ``n_train = 300``; ``--smoke`` runs the main one
only) by :func:`experiments.arms.run_arms`, which skips finished runs. Overrides
``--config.distill.<field>=<value>`` apply to every run (a setting's own bindings come after
them). The :data:`CLAIMS` are paired t-tests over seeds on the final test accuracy. Workdir layout:
``<workdir>/teacher_<hash>/`` (teacher logits, ``logits.npz``) and
``<workdir>/n<n_train>/<method>/`` (``metrics.jsonl`` with 1-based epochs, ``results.json``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence

import gin
import numpy as np

from experiments import arms
from experiments.common import small_models as sm
from experiments.common.metrics import env_info, fmt_mean_std
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report, stats
from experiments.tasks import distill as task

__all__ = ["DistillConfig", "ARMS", "METHODS", "SETTINGS", "CLAIMS", "parse_distill_config", "paired_verdict",
           "claims_table", "render", "run", "STUDY", "main"]

CONFIG_DIR = os.path.join(report.ROOT, "configs", "distill")
ARMS = {"none": "CE only", "kd": "KD (Hinton et al. 2015)", "nkd": "Normalized KD", "dkd": "Decoupled KD",
        "uskd": "USKD, teacher-free", "pld": "Plackett-Luce distillation", "dhkd": "Dual-Head KD"}
METHODS = tuple(ARMS)
# (label, extra gin bindings) per setting; the first one is the headline
SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (("main", ()), ("n_train=300", ("distill.n_train = 300",)))
SMOKE_SETTINGS = SETTINGS[:1]
SMOKE_BINDINGS = ("distill.seeds = (0, 1)", "distill.n_train = 20", "distill.student_hidden = (8,)",
                  "distill.epochs = 3", "distill.batch_size = 10", "distill.teacher_hidden = (16,)",
                  "distill.teacher_epochs = 2", "distill.teacher_n_train = 200")
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

    def teacher_dict(self) -> dict:
        return {k: getattr(self, k) for k in _TEACHER_FIELDS}


_GinDistill = gin.external_configurable(DistillConfig, name="distill")


def parse_distill_config(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> DistillConfig:
    """Parse gin ``files`` then ``bindings`` into a :class:`DistillConfig` (errors name the file)."""
    return cli.parse_study_config(files, bindings, _GinDistill)


def paired_verdict(d: np.ndarray | None) -> str:
    """The kit's verdict (:func:`experiments.kit.stats.paired_t_test`, higher is better) on per-seed
    accuracy differences ``d = a − b``."""
    return stats.paired_t_test(d, better="higher").verdict


def claims_table(settings: Sequence[tuple[int, dict]], claims: Sequence[arms.Claim]) -> str:
    """:func:`experiments.arms.claims_table` across settings ``[(n_train, runs)]``, Δ in pp."""
    return arms.claims_table(
        settings, claims, setting_label=lambda n: f"n_train = {n}", scale=100, unit=" pp",
        note="Δ: mean ± std over seeds of the paired per-seed accuracy difference (first method minus the second, "
             "same subset and init). \"held?\": paired two-sided t-test at 5 % — *better* = significant gain, *worse* "
             "= significant loss, *no significant difference* = neither.")


def _claim(text: str, source: str, a: str, b: str) -> arms.Claim:
    return arms.Claim(text, source, a, b, "test_accuracy")


CLAIMS = (
    _claim("KD: a student trained on the teacher's softened outputs beats the same student trained on hard labels",
           "Hinton et al. 2015, arXiv:1503.02531, §3 (MNIST)", "kd", "none"),
    _claim("NKD: normalising the non-target distribution beats classic KD", "Yang et al., ICCV 2023, NKD vs KD "
           "(ImageNet table)", "nkd", "kd"),
    _claim("DKD: decoupling TCKD and NCKD (β = 8) beats classic KD", "Zhao et al., CVPR 2022, CIFAR-100 table",
           "dkd", "kd"),
    _claim("USKD: teacher-free customised soft labels beat the CE baseline", "Yang et al., ICCV 2023, USKD "
           "(ImageNet table)", "uskd", "none"),
    _claim("PLD: the Plackett–Luce list-wise loss beats CE + KD", "Bassam, Zhu & Bian 2025, arXiv:2506.12542",
           "pld", "kd"),
    _claim("Dual-Head KD: BinaryKL-Norm on an auxiliary head beats classic KD", "Yang et al. 2024, arXiv:2411.08937",
           "dhkd", "kd"),
)

REPORT = """# Knowledge distillation on digits: KD vs NKD vs DKD vs USKD vs PLD vs Dual-Head KD vs none (CPU scale)

Regenerate: `python -m experiments.distill --write_report` (runs \
`configs/distill/{{none,kd,nkd,dkd,uskd,pld,dhkd}}.gin` in the main setting and with `distill.n_train = 300`; \
workdirs under `runs/distill/`, finished runs are skipped; writes this file, `distill.json` (raw per-seed numbers \
and curves) and `distill.png`).

## Setting

* Data: scikit-learn `load_digits` (8×8 real handwritten digits shipped in the wheel), fixed stratified split 1,297 \
train / 500 test, pixels standardised with training statistics.
* Teacher: MLP 64-{teacher_arch}-10 trained once per seed on {teacher_n} training digits ({teacher_epochs} epochs, \
batch {teacher_batch_size}, AdamW lr {teacher_learning_rate:g}, cosine); its logits are cached. Teacher test accuracy: \
**{teacher_acc} %** ({teacher_params} parameters).
* Student (data-limited): MLP 64-{student_arch}-10, trained on only **n_train = {n_train}** labelled digits (a \
balanced subset, different per seed) plus the teacher's logits on those same images; {epochs} epochs, batch \
{batch_size}, AdamW lr {learning_rate:g}, weight decay {weight_decay:g}, cosine decay. The same recipe for every \
method; the student recipe was chosen on held-out *training* digits for the CE baseline only, and the loss \
hyper-parameters are the papers' small-scale (CIFAR) defaults, untuned: KD T={kd_temperature:g}, α={kd_alpha:g} \
(`(1−α)·CE + α·T²·KL`); NKD T={nkd_temperature:g}, γ={nkd_gamma:g} (added to CE); DKD T={dkd_temperature:g}, \
α={dkd_alpha:g}, β={dkd_beta:g}, linear warm-up over {dkd_warmup_pct:.1f} % of the steps (added to CE); USKD \
α={uskd_alpha:g}, β={uskd_beta:g}, μ={uskd_mu:g}, released ranking (`rank_mode='{uskd_rank_mode}'`), no teacher; its \
weak head is a second linear head on the student's penultimate features (the MLP has no deeper mid-level stage), used \
only in training; PLD with teacher weights softmax(z_t) (τ = 1), used instead of CE; Dual-Head KD: CE on the main \
head plus BinaryKL-Norm (T = 2, weight 1) on an auxiliary linear head on the same features, used only in training.
* Seeds {seed_list} (student init and subset; teacher init seed+1000), trained together with `jax.vmap`: each method \
compiles its training epoch once. Reported: test accuracy after the last epoch (no best-epoch selection), mean ± \
sample std over seeds; Δ is the paired per-seed difference to the CE-only student (same subset, same init).
* Cost on the shared 2-core CPU: {runs_s:.0f} s summed over the teacher and student runs (each includes its one \
compilation); this invocation took {study_s:.0f} s (finished runs are skipped, so a rerun only rewrites the report).

{results}![student test accuracy per epoch](distill.png)

(`distill.png`: student test accuracy per epoch in the headline setting, mean ± std over seeds.)

## Do the papers' claims hold here?

{claims}

Why the papers' claims may not transfer to this scale:

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
* **Resolution.** One test image is 0.2 pp; with {n_seeds} seeds only large paired differences are
  significant (t-test critical value {critical:.2f} at {dof} degrees of freedom), so "not resolved" means the
  study cannot tell, not that the methods are equal.
* **Models and data.** MLPs on 8×8 images for {epochs} short epochs, no augmentation; the papers use
  ResNets/ViTs with augmentation, where the student's capacity gap to the teacher is of a different
  kind.
"""


def render(study: dict) -> str:
    """The report's Markdown: :data:`REPORT` filled from the runs (tables and verdicts generated)."""
    (main, cfg), t = next(iter(study["configs"].items())), study["teacher"]
    results = "".join(f"## Results: n_train = {study['configs'][lab]['n_train']}{' (headline)' * (lab == main)}\n\n"
                      f"{task.results_table(runs, METHODS)}\n\n" for lab, runs in study["settings"].items())
    settings = [(study["configs"][lab]["n_train"], runs) for lab, runs in study["settings"].items()]
    runs_s = sum(r["wall_time_s"] for runs in study["settings"].values() for r in runs.values())
    n = len(cfg["seeds"])
    from scipy import stats as sps

    return REPORT.format(
        **cfg, teacher_arch="-".join(map(str, cfg["teacher_hidden"])),
        student_arch="-".join(map(str, cfg["student_hidden"])),
        teacher_n="all 1,297" if not cfg["teacher_n_train"] else cfg["teacher_n_train"],
        teacher_acc=fmt_mean_std(100 * np.asarray(t["test_accuracy"])) if t else "n/a",
        teacher_params=t["num_params"] if t else "?", dkd_warmup_pct=100 * cfg["dkd_warmup_frac"],
        seed_list=", ".join(map(str, cfg["seeds"])), runs_s=runs_s + (t["wall_time_s"] if t else 0.0),
        study_s=study["wall_time_s"], results=results, claims=claims_table(settings, CLAIMS),
        n_seeds=n, dof=n - 1, critical=float(sps.t.ppf(0.975, n - 1)) if n > 1 else float("nan"))


def run(args: cli.StudyArgs) -> dict:
    """The study's ``run`` for :func:`experiments.kit.cli.study_main`. Returns ``{"settings": {label:
    {method: results}}, "teacher", "configs": {label: config}, "wall_time_s"}``."""
    t0 = time.perf_counter()
    feats = task.load_features()
    teachers: dict[str, dict] = {}

    def teacher(cfg: DistillConfig) -> dict:  # trained once per teacher config (its logits cached on disk)
        key = sm.config_hash(cfg.teacher_dict())
        if key not in teachers:
            teachers[key] = task.train_teachers(cfg, feats, args.workdir, progress=args.progress)
        return teachers[key]

    def train(cfg: DistillConfig, workdir: str) -> dict:
        return task.train(cfg, feats, teacher(cfg), workdir, progress=args.progress)

    plan = [("selected", ())] if args.custom else SMOKE_SETTINGS if args.smoke else SETTINGS
    study: dict = {"settings": {}, "configs": {}}
    for label, extra in plan:
        bindings = (*args.bindings, *extra)
        groups: dict[int, list[str]] = {}  # runs go to <workdir>/n<n_train>/<method>
        for f in args.configs:
            groups.setdefault(parse_distill_config([f], bindings).n_train, []).append(f)
        for n, files in groups.items():
            res, conf = arms.run_arms(files, bindings, parse_distill_config, train,
                                      os.path.join(args.workdir, f"n{n}"), progress=args.progress)
            study["settings"].setdefault(label, {}).update(res)
            study["configs"].setdefault(label, next(iter(conf.values())))
    first = parse_distill_config(args.configs[:1], (*args.bindings, *plan[0][1])) if args.configs else None
    t = teacher(first) if first is not None else None
    study["teacher"] = {k: v for k, v in t.items() if not k.startswith("logits")} if t else None
    study["wall_time_s"] = time.perf_counter() - t0
    if args.report_dir:
        raw = {lab: {m: {k: v for k, v in r.items() if k != "skipped"} for m, r in runs.items()}
               for lab, runs in study["settings"].items()}
        lab, runs = next(iter(study["settings"].items()))
        data = {"settings": raw, "teacher": study["teacher"], "configs": study["configs"], "env": env_info()}
        report.write_report(args.report_dir, "distill", render(study), data,
                            lambda p: task.plot(runs, study["configs"][lab], p), args.provenance)
    return study


def _print(study: dict) -> None:
    for label, runs in study["settings"].items():
        print(f"## {label}\n{task.results_table(runs, METHODS)}\n")


STUDY = cli.Study(name="distill", description=__doc__.split("\n\n")[0], run=run, print_results=_print,
                  default_configs=tuple(os.path.join(CONFIG_DIR, f"{m}.gin") for m in METHODS),
                  smoke_bindings=SMOKE_BINDINGS, data_dir_bindings=(), report_needs_all=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.distill`` (flags of :mod:`experiments.kit.cli`); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
