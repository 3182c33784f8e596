"""Structured outputs: hyperbolic MLR on hierarchical classes, superpixel pooling, hyperbolic one-class.

Usage::

    python -m experiments.structure_study                  # all arms -> runs/structure_study/
    python -m experiments.structure_study --write_report   # ... and experiments/results/structure.md
    python -m experiments.structure_study --smoke          # tiny (seconds)

Task ``hier`` (Ganea, Bécigneul & Hofmann, NeurIPS 2018, Sec. 3-4): leaf classification on a synthetic
balanced tree (3 children per node, depth 3: 27 leaf classes; inputs are noisy sums of random node vectors
along the root-to-leaf path, coarse levels larger; each seed draws its own tree, data and initialisation).
An MLP encoder (64 ReLU) maps a 32-d input to ``dim`` = 2 or 3 coordinates; arms differ only in the head:

* ``hier_euclid_d<dim>`` — Euclidean MLR ``⟨x − p_k, a_k⟩`` + CE;
* ``hier_hyper_d<dim>`` — :func:`lossjax.losses.poincare_expmap0` then the hyperbolic MLR
  (:func:`lossjax.losses.hyperbolic_mlr_logits`, ``c = 1``) + :func:`lossjax.losses.hyperbolic_cross_entropy_loss`.

Task ``seg``: the synthetic vessel images and two-branch FCN of the segmentation study
(:mod:`experiments.tasks.segmentation`), trained with pixel BCE; the superpixel arms blend each pixel's
logit with its superpixel's mean logit (:func:`lossjax.losses.superpixel_pool`, α = 0.5) in training and
prediction:

* ``seg_ce`` — per-pixel CE (no pooling);
* ``seg_sp_watershed`` — superpixels from a marker watershed of the image gradient (one marker per 3×3 block);
* ``seg_sp_grid`` — control: the regular 3×3-block grid (superpixels that ignore the image).

Task ``oneclass`` (Narayan & Patel, "Hyp-OC", FG 2024, arXiv:2404.14406): one-class anomaly detection on
scikit-learn's digits. Seed ``s`` makes digit ``s`` the normal class (10 seeds: every digit once); a frozen
PCA encoder fitted on the normal training images stands in for the pretrained encoder; a trainable MLP head
(32 → 64 → 8) sees the normal features and Gaussian pseudo-negatives around their running mean
(:func:`lossjax.losses.gaussian_pseudo_negatives`); the test set holds held-out images of every digit
(other digits are anomalies); the anomaly score is the pseudo-negative probability. Arms:

* ``oc_hyp`` — ball (clip_r 2, c 0.1) + two-class hyperbolic MLR, Hyp-CE + Hyp-PC (geodesic distance):
  :func:`lossjax.losses.hyperbolic_one_class_cross_entropy_loss`,
  :func:`lossjax.losses.hyperbolic_pairwise_confusion_loss`;
* ``oc_hyp_ce`` — Hyp-CE only (ablation of Hyp-PC);
* ``oc_hyp_released`` — Hyp-CE + Hyp-PC with the released code's ``arctan`` pair distance;
* ``oc_euclid`` — the Euclidean counterpart: the same head without the ball, Euclidean MLR, CE and the
  Euclidean pairwise confusion ``Σ‖x_i − x_{i+B/2}‖ / B``.

See :mod:`experiments.tasks.structure` (``hier``, ``seg``) and :mod:`experiments.tasks.one_class`
(``oneclass``) for the data, models and metrics.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import gin
import numpy as np

from experiments import arms
from experiments.common.typecheck import check_field_types
from experiments.kit import cli
from experiments.tasks import one_class
from experiments.tasks import structure as task

__all__ = ["StructureConfig", "ARMS", "CLAIMS", "SMOKE_BINDINGS", "parse", "train", "render", "run", "STUDY", "main"]

HIER_ARMS = ("hier_euclid_d2", "hier_hyper_d2", "hier_euclid_d3", "hier_hyper_d3")
SEG_ARMS = ("seg_ce", "seg_sp_watershed", "seg_sp_grid")
OC_ARMS = ("oc_hyp", "oc_hyp_ce", "oc_hyp_released", "oc_euclid")
ARMS = (*HIER_ARMS, *SEG_ARMS, *OC_ARMS)
HIER_METRICS = ("test_acc", "macro_f1", "coarse_acc")
SEG_METRICS = ("dice", "dice_raw", "boundary_f1", "sp_var_out", "sp_var_raw", "inst_var")
OC_METRICS = ("auroc", "hter")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs", "structure_study")
SMOKE_BINDINGS = ("structure.seeds = (0,)", "structure.epochs = 1", "structure.n_train_per_leaf = 4",
                  "structure.n_test_per_leaf = 2", "structure.batch_size = 16", "structure.n_train = 16",
                  "structure.n_test = 8", "structure.image_size = 12", "structure.channels = 3",
                  "structure.hidden = (8,)", "structure.oc_n_train = 32", "structure.oc_feature_dim = 8")


@dataclasses.dataclass(frozen=True)
class StructureConfig:
    """One arm of the structure study (gin selector ``structure``); see the module docstring."""

    task: str = "hier"
    head: str = "euclid"
    superpixels: str = "none"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 0.01
    weight_decay: float = 0.0001
    # hier
    dim: int = 2
    hidden: tuple[int, ...] = (64,)
    branching: int = 3
    depth: int = 3
    input_dim: int = 32
    noise: float = 0.4
    decay: float = 0.7
    n_train_per_leaf: int = 20
    n_test_per_leaf: int = 20
    curvature: float = 1.0
    # seg
    alpha: float = 0.5
    cell: int = 3
    n_train: int = 128
    n_test: int = 64
    channels: int = 6
    image_size: int = 24
    seg_noise: float = 0.2
    # oneclass (head: "euclid" | "hyper"; hidden, dim, curvature are shared with hier)
    confusion: str = "geodesic"
    oc_n_train: int = 100
    oc_feature_dim: int = 32
    clip_r: float = 2.0
    pn_alpha: float = 0.8
    pn_variance: float = 1.0
    grad_clip: float = 3.0

    def __post_init__(self) -> None:
        check_field_types(self, "structure")
        if self.task not in ("hier", "seg", "oneclass"):
            raise ValueError(f"`structure.task` must be 'hier', 'seg' or 'oneclass', got {self.task!r}.")
        if self.head not in ("euclid", "hyper"):
            raise ValueError(f"`structure.head` must be 'euclid' or 'hyper', got {self.head!r}.")
        if self.superpixels not in ("none", "grid", "watershed"):
            raise ValueError(
                f"`structure.superpixels` must be 'none', 'grid' or 'watershed': got {self.superpixels!r}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`structure.seeds` must be distinct and non-empty, got {self.seeds!r}.")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("`structure.epochs`, `batch_size` must be >= 1, `learning_rate` > 0, `weight_decay` >= 0.")
        if not 2 <= self.dim <= 16 or self.curvature <= 0 or self.noise < 0 or self.seg_noise < 0:
            raise ValueError("`structure.dim` must lie in [2, 16], `curvature` be > 0, `noise`/`seg_noise` >= 0.")
        if not 0.0 <= self.alpha <= 1.0 or self.cell < 1 or not 12 <= self.image_size <= 64:
            raise ValueError("`structure.alpha` must lie in [0, 1], `cell` be >= 1, `image_size` in [12, 64].")
        if self.confusion not in ("none", "geodesic", "released"):
            raise ValueError(
                f"`structure.confusion` must be 'none', 'geodesic' or 'released', got {self.confusion!r}.")
        if self.task == "oneclass":
            if self.head == "euclid" and self.confusion == "released":
                raise ValueError("`structure.confusion = 'released'` is a Poincaré-ball distance: use head 'hyper'.")
            if self.batch_size % 2:
                raise ValueError(f"`structure.batch_size` must be even for 'oneclass' (pairs), got {self.batch_size}.")
            if not 2 <= self.oc_n_train <= 160 or not 1 <= self.oc_feature_dim <= min(self.oc_n_train, 64):
                raise ValueError("`structure.oc_n_train` must lie in [2, 160] and `oc_feature_dim` in "
                                 "[1, min(oc_n_train, 64)].")
            if self.clip_r <= 0 or not 0.0 <= self.pn_alpha <= 1.0 or self.pn_variance <= 0 or self.grad_clip <= 0:
                raise ValueError("`structure.clip_r`, `pn_variance`, `grad_clip` must be > 0 and `pn_alpha` in [0, 1].")
        n = {"seg": self.n_train, "oneclass": self.oc_n_train}.get(
            self.task, self.n_train_per_leaf * self.branching ** self.depth)
        if self.batch_size > n:
            raise ValueError(f"`structure.batch_size` must be <= the training set size {n}, got {self.batch_size}.")


_Gin = gin.external_configurable(StructureConfig, name="structure")


def parse(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> StructureConfig:
    """Parse gin ``files`` then ``bindings`` into a :class:`StructureConfig`."""
    return cli.parse_study_config(files, bindings, _Gin)


def train(cfg: StructureConfig) -> dict:
    """Train one arm for every seed at once (see :mod:`experiments.tasks.structure`)."""
    if cfg.task == "hier":
        return task.train_hier(cfg)
    if cfg.task == "oneclass":
        return one_class.train_one_class(cfg)
    return task.train_seg(dataclasses.replace(cfg, noise=cfg.seg_noise))


_GANEA = "Ganea, Bécigneul & Hofmann, NeurIPS 2018, Sec. 3.1 and 4 (Table 2: hyperbolic MLR in low dimension)"
_GROUP = "Group Loss for salient object detection, ICONIP 2019 (superpixel pooling layer only)"
_HYPOC = ("Narayan & Patel, FG 2024 (Hyp-OC), arXiv:2404.14406: abstract and the project page "
          "kartik-3004.github.io/hyp-oc")
CLAIMS = (
    *(arms.Claim(f"Hyperbolic MLR beats Euclidean MLR on hierarchical classes in {d} dimensions ({m})", _GANEA,
                 f"hier_hyper_d{d}", f"hier_euclid_d{d}", m) for d in (2, 3) for m in ("test_acc", "macro_f1")),
    arms.Claim("Superpixel pooling makes predictions more consistent within regions (within-superpixel variance)",
               _GROUP, "seg_sp_watershed", "seg_ce", "sp_var_out", better="lower"),
    arms.Claim("Training through superpixel pooling makes the pixel head itself more consistent within regions",
               _GROUP, "seg_sp_watershed", "seg_ce", "sp_var_raw", better="lower"),
    arms.Claim("Superpixel pooling does not cost Dice (a significant loss counts against it)", _GROUP,
               "seg_sp_watershed", "seg_ce", "dice"),
    arms.Claim("Image-adaptive (watershed) superpixels beat a regular grid of the same size on Dice", _GROUP,
               "seg_sp_watershed", "seg_sp_grid", "dice"),
    arms.Claim("Hyperbolic space learns a better one-class decision boundary than its Euclidean counterpart (AUROC)",
               _HYPOC, "oc_hyp", "oc_euclid", "auroc"),
    arms.Claim("Hyperbolic space learns a better one-class decision boundary than its Euclidean counterpart (HTER)",
               _HYPOC, "oc_hyp", "oc_euclid", "hter", better="lower"),
    arms.Claim("Hyp-PC (added to Hyp-CE) improves one-class performance (AUROC)", _HYPOC, "oc_hyp", "oc_hyp_ce",
               "auroc"),
    arms.Claim("Hyp-PC with the geodesic (artanh) distance of the ball beats the released code's arctan distance "
               "(AUROC; a check of paper vs code, not a claim of the paper)", _HYPOC, "oc_hyp", "oc_hyp_released",
               "auroc"),
)

_CAVEATS = """Scale and caveats. Ganea et al. embed WordNet noun hierarchies and sentence-entailment data with
Riemannian optimisation of the ball parameters; here a synthetic 27-leaf tree, an MLP encoder, AdamW on
Euclidean parameters (ball points as `exp_0` of them) and one recipe (lr 1e-2 cosine, 100 epochs, batch 64)
for both heads, untuned. Points pushed towards the ball's boundary may saturate `tanh` and slow the
hyperbolic head; a tuned curvature or learning rate might change the verdict. Seeds differ in tree, data and
initialisation. The segmentation paper's group loss is not implemented; only its superpixel pooling layer is
tested, as a blend (α = 0.5) of pixel and superpixel-mean logits trained with BCE, with superpixels from a
marker watershed of the image gradient (the paper uses SLIC); thin (1-3 px) vessels often fall inside
superpixels that mostly hold background. The within-superpixel variance of the blended output falls partly by
construction (half of each logit is constant over a superpixel); `sp_var_raw` measures the un-pooled pixel head
of the same network. Images are fixed; seeds vary the initialisation and batch order. "Not resolved" means the
study cannot tell the arms apart."""

_OC_CAVEATS = """One-class caveats. Hyp-OC trains on face-video frames with a pretrained face encoder (mostly frozen)
and a 4096 → … → 128 head and is evaluated on cross-dataset face anti-spoofing; here 8×8 digits, a frozen PCA
"encoder" (32 components fitted on the ~100 normal training images, not whitened, scaled to unit average
variance so that the pseudo-negative σ² = 1 matches the real spread), a 32 → 64 → 8 head and one untuned recipe
for all arms (AdamW 1e-2 cosine, weight decay 1e-4, gradient-norm clip 3, batch 20, 60 epochs = 300 steps;
pseudo-negatives N(μ, I) with the released running-mean recursion, α = 0.8; c = 0.1, clip_r = 2 as the released
config). The "anomalies" are other digits, not spoofs, and every seed is a different normal digit, so the
seeds are ten different problems (the spread over seeds is mostly between digits; the test is paired per
digit). The Euclidean counterpart is our construction (the same head without the ball and without feature
clipping, Euclidean MLR and pairwise confusion); the paper's Euclidean baseline may differ. The training loss
falls close to 0 (pseudo-negatives are easy to separate from the real class here), so what the score learns
about the unseen anomalies depends on the head's inductive bias; in a short probe (not reported) a 10× smaller
learning rate (1e-3, under-trained) gave lower AUROC for every arm and a different order of the arms.
The frozen-feature baseline (distance to the normal mean, no training) is already strong on digits; the trained
heads are compared with each other, not only with it."""


def render(results: dict) -> str:
    """The report's Markdown (tables and generated verdicts)."""
    n = len(next((results[a] for a in (*HIER_ARMS, *SEG_ARMS) if a in results),
                 next(iter(results.values())))["seeds"])
    oc = next((results[a] for a in OC_ARMS if a in results), None)
    oc_line = ""
    if oc:
        base = np.asarray(oc["baseline_auroc"], float)
        oc_line = (f"{len(oc['seeds'])} seeds = normal digits {oc['normal_digits']}; {oc['n_train']} normal training "
                   f"images per digit; {oc['n_test']} test images (held-out images of every digit, "
                   f"{min(oc['n_test_normal'])}-{max(oc['n_test_normal'])} of them normal); {oc['num_params']} "
                   f"trainable parameters. Frozen-feature baseline AUROC (distance to the normal mean, no training): "
                   f"{base.mean():.3f} ± {base.std(ddof=1) if base.size > 1 else 0.0:.3f}.")
    seg = next((results[a] for a in SEG_ARMS if a in results), None)
    seg_line = (f"{seg['n_train']} training / {seg['n_test']} test images, {seg['num_segments']} superpixels per "
                f"image, {seg['num_params']} parameters." if seg else "")
    times = ", ".join(f"{a} {r.get('wall_time_s', 0.0):.0f} s" for a, r in results.items())
    return "\n".join([
        "# Structured outputs: hyperbolic MLR, superpixel pooling and hyperbolic one-class detection", "",
        f"{n} seeds (hierarchy, segmentation; 10 for one-class, one per normal digit), mean ± std over seeds. "
        "See `experiments/structure_study.py`.", "",
        "## Hierarchical leaf classification (27 classes) in a 2-d / 3-d embedding", "",
        arms.metrics_table(results, HIER_ARMS, HIER_METRICS, best={"test_acc": "higher", "macro_f1": "higher"}), "",
        "## Segmentation with superpixel-pooled logits", "", seg_line, "",
        arms.metrics_table(results, SEG_ARMS, SEG_METRICS, digits=4,
                           best={"dice": "higher", "sp_var_out": "lower", "sp_var_raw": "lower"}), "",
        "`dice`, `boundary_f1`, `sp_var_out`, `inst_var`: the arm's output (blended logits); `dice_raw`, "
        "`sp_var_raw`: its un-pooled pixel head. `sp_var_*`: mean squared deviation of the foreground "
        "probability from its watershed superpixel's mean (test images).", "",
        "## One-class anomaly detection on digits (Hyp-OC)", "", oc_line, "",
        arms.metrics_table(results, OC_ARMS, OC_METRICS, digits=4, best={"auroc": "higher", "hter": "lower"}), "",
        "`auroc`: anomalies (other digits) vs held-out normal images, score = the pseudo-negative probability "
        "softmax(ζ)₁; `hter`: half total error rate at the equal-error threshold (≈ EER).", "",
        "## Claims tested", "", arms.claims_section(results, CLAIMS, digits=4), "", _CAVEATS, "", _OC_CAVEATS, "",
        f"Training wall time per arm (all seeds together, 2 shared CPU cores): {times}.", ""])


def _panels(results: dict) -> list[tuple]:
    return [("bar", "hierarchical leaf accuracy (test)",
             {a: r["metrics"]["test_acc"] for a, r in results.items() if a in HIER_ARMS}),
            ("bar", "segmentation Dice (test)", {a: r["metrics"]["dice"] for a, r in results.items() if a in SEG_ARMS}),
            ("bar", "within-superpixel variance of the pixel head",
             {a: r["metrics"]["sp_var_raw"] for a, r in results.items() if a in SEG_ARMS}),
            ("bar", "one-class AUROC on digits (test)",
             {a: r["metrics"]["auroc"] for a, r in results.items() if a in OC_ARMS})]


def run(args: cli.StudyArgs) -> dict:
    """The study's ``run`` for :func:`experiments.kit.cli.study_main`."""
    return arms.run_study(args, parse, train, "structure", render, _panels)


def _print(study: dict) -> None:
    r = study["results"]
    print(arms.metrics_table(r, HIER_ARMS, HIER_METRICS))
    print(arms.metrics_table(r, SEG_ARMS, SEG_METRICS, digits=4))
    print(arms.metrics_table(r, OC_ARMS, OC_METRICS, digits=4))


STUDY = cli.Study(name="structure_study", description=__doc__.splitlines()[0], run=run, print_results=_print,
                  default_configs=tuple(os.path.join(CONFIG_DIR, f"{a}.gin") for a in ARMS),
                  smoke_bindings=SMOKE_BINDINGS, data_dir_bindings=(), report_needs_all=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.structure_study`` (flags of :mod:`experiments.kit.cli`)."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
