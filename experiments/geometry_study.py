"""Feature geometry on digits: neural collapse (NC1–NC4) under CE and MSE; metric learning with recall@k.

Usage::

    python -m experiments.geometry_study                  # all arms -> runs/geometry_study/
    python -m experiments.geometry_study --write_report   # ... and experiments/results/geometry_study.md
    python -m experiments.geometry_study --smoke          # tiny (seconds)

Data: scikit-learn's digits (1,797 8×8 images in 10 classes, shipped with the package); each seed
draws its own stratified 70/30 split (repeated random splits) and initialisation.

Task ``collapse`` (Papyan, Han & Donoho, PNAS 2020). An MLP classifier (128-64 ReLU, weight decay
5e-4) is trained far past zero training error; :func:`lossjax.losses.neural_collapse` measures
NC1 (within-class variability), NC2 (distance to a simplex ETF), NC3 (classifier–mean
self-duality) and NC4 (agreement with the nearest-class-mean rule) on the training features at
``early_epoch`` (about where the training error reaches 0) and at the end. Arms ``nc_ce``
(cross-entropy) and ``nc_mse`` (squared error to one-hot targets, Han et al. ICLR 2022).

Task ``metric`` (deep metric learning, with the field's class-disjoint protocol): training uses
every image of digits 0–4, retrieval is evaluated on the unseen digits 5–9 (the split is fixed;
seeds change the initialisation and batch order). An MLP (128 ReLU) maps an image to a 32-d
embedding (L2-normalised for retrieval); arms differ only in the loss on a random batch of 128:

* ``ml_ce`` — softmax CE on a linear classifier over the embedding (baseline);
* ``ml_ms`` — Multi-Similarity (:func:`lossjax.losses.multi_similarity_loss`, miner on);
* ``ml_triplet`` — triplet loss with semi-hard mining, margin 0.2 (:func:`lossjax.losses.triplet_loss`);
* ``ml_supcon`` — SupCon (:func:`lossjax.losses.supcon_loss`, τ = 0.1);
* ``ml_softtriple`` — SoftTriple, 2 centres per class, plus its centre regulariser
  (:func:`lossjax.losses.soft_triple_loss`, :func:`lossjax.losses.soft_triple_center_regularizer`);
* ``ml_metrix`` — MS plus Metrix's mixup term on input-mixed pairs, λ ~ Beta(2, 2)
  (:func:`lossjax.losses.metrix_multi_similarity_loss`, :func:`lossjax.losses.mixup_positiveness`);
* ``ml_protonet`` — the prototypical loss (CE over negative squared distances to the batch's
  class prototypes, :func:`lossjax.losses.class_prototypes`);
* ``ml_proto_icnn`` — the prototypical loss plus Proto-Triplet and ICNN (SuSana;
  :func:`lossjax.losses.proto_triplet_loss`, :func:`lossjax.losses.icnn_loss`).

Test metrics: recall@1 and recall@4 of leave-one-out cosine retrieval among the unseen-class
images, and Metrix's utilization (:func:`lossjax.losses.embedding_utilization`, test → train; lower is better).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import gin

from experiments import arms
from experiments.common.typecheck import check_field_types
from experiments.kit import cli
from experiments.tasks.geometry import ML_LOSSES, NC_KEYS, NC_LOSSES, make_data, recall_at_k, train

__all__ = ["GeometryConfig", "ARMS", "CLAIMS", "make_data", "recall_at_k", "train", "run", "STUDY", "main"]

ARMS = ("nc_ce", "nc_mse", *(f"ml_{m}" for m in ML_LOSSES))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs", "geometry_study")
NC_METRICS = (*NC_KEYS, *(f"{k}_early" for k in NC_KEYS), "train_acc", "test_acc")
ML_METRICS = ("recall_1", "recall_4", "utilization")
SMOKE_BINDINGS = ("geometry.seeds = (0, 1)", "geometry.epochs = 3", "geometry.early_epoch = 1",
                  "geometry.hidden = (16,)", "geometry.n_train = 300", "geometry.batch_size = 64")


@dataclasses.dataclass(frozen=True)
class GeometryConfig:
    """One arm of the geometry study (gin selector ``geometry``); see the module docstring."""

    task: str = "collapse"
    loss: str = "ce"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    hidden: tuple[int, ...] = (128, 64)
    embed_dim: int = 32
    epochs: int = 300
    early_epoch: int = 30
    batch_size: int = 128
    learning_rate: float = 0.001
    weight_decay: float = 0.0005
    n_train: int = 1257

    def __post_init__(self) -> None:
        check_field_types(self, "geometry")
        if self.task not in ("collapse", "metric"):
            raise ValueError(f"`geometry.task` must be 'collapse' or 'metric', got {self.task!r}.")
        ok = NC_LOSSES if self.task == "collapse" else ML_LOSSES
        if self.loss not in ok:
            raise ValueError(f"`geometry.loss` must be one of {ok} for task {self.task!r}, got {self.loss!r}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`geometry.seeds` must be distinct and non-empty, got {self.seeds!r}.")
        if not 1 <= self.early_epoch <= self.epochs:
            raise ValueError(f"`geometry.early_epoch` must lie in [1, epochs={self.epochs}], got {self.early_epoch}.")
        if not 100 <= self.n_train <= 1500:
            raise ValueError(f"`geometry.n_train` must lie in [100, 1500], got {self.n_train}.")
        if not 16 <= self.batch_size <= self.n_train:
            raise ValueError(f"`geometry.batch_size` must lie in [16, n_train], got {self.batch_size}.")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.embed_dim < 2:
            raise ValueError("`geometry.learning_rate` must be > 0, `weight_decay` >= 0, `embed_dim` >= 2.")


_Gin = gin.external_configurable(GeometryConfig, name="geometry")


def parse(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> GeometryConfig:
    """Parse gin ``files`` then ``bindings`` into a :class:`GeometryConfig`."""
    return cli.parse_study_config(files, bindings, _Gin)


_P = "Papyan, Han & Donoho, PNAS 2020, Sec. 3 (Fig. 6-9)"


def _nc_claim(key: str, what: str, arm: str = "nc_ce") -> arms.Claim:
    # the same run (same split) measured twice: a plain paired test over seeds
    return arms.Claim(f"{what} keeps falling in the terminal phase of training ({arm[3:].upper()})", _P, arm, arm,
                      key, better="lower", metric_b=f"{key}_early")


CLAIMS = (
    _nc_claim("nc1", "NC1 (within-class variability collapse)"),
    _nc_claim("nc2_etf", "NC2 (convergence of the class means to a simplex ETF)"),
    _nc_claim("nc3", "NC3 (self-duality of classifier and class means)"),
    _nc_claim("nc4", "NC4 (disagreement of the classifier with the nearest-class-mean rule)"),
    arms.Claim("Neural collapse also emerges under MSE: NC1 falls in the terminal phase",
               "Han, Papyan & Donoho, ICLR 2022", "nc_mse", "nc_mse", "nc1", better="lower", metric_b="nc1_early"),
    arms.Claim("Multi-Similarity beats the triplet loss on recall@1", "Wang et al., CVPR 2019, Table 1-3",
               "ml_ms", "ml_triplet", "recall_1"),
    arms.Claim("SupCon embeddings beat cross-entropy ones", "Khosla et al., NeurIPS 2020, Sec. 4",
               "ml_supcon", "ml_ce", "recall_1"),
    arms.Claim("SoftTriple (several centres per class) beats the softmax (CE) embedding on recall@1",
               "Qian et al., ICCV 2019, Sec. 5", "ml_softtriple", "ml_ce", "recall_1"),
    arms.Claim("Metrix (mixup for metric learning) improves recall@1 over its base loss (MS)",
               "Venkataramanan et al., ICLR 2022, Table 2", "ml_metrix", "ml_ms", "recall_1"),
    arms.Claim("Metrix improves utilization (test embeddings closer to training ones) over MS",
               "Venkataramanan et al., ICLR 2022, Sec. 5", "ml_metrix", "ml_ms", "utilization", better="lower"),
    arms.Claim("Adding Proto-Triplet and ICNN to the prototypical loss improves the embedding",
               "Mendez-Ruiz et al. 2023 (SuSana)", "ml_proto_icnn", "ml_protonet", "recall_1"),
)

_CAVEATS = """Scale and caveats. Neural collapse is documented for deep networks on image benchmarks
trained for hundreds of epochs; a 2-hidden-layer MLP on 1,257 digits is a small proxy (features in
float32; NC1 uses a pseudo-inverse). The NC claims compare each run with itself at `early_epoch`
(near zero training error) and at the end, paired over seeds. The metric-learning papers report
recall@k on CUB/Cars/SOP/In-Shop with pretrained CNNs; here the same class-disjoint protocol runs on
5 seen and 5 unseen digit classes, one recipe (AdamW 1e-3, batch 128, 32-d embedding, 60 epochs)
serves every loss without tuning, and the seeds share the split (they vary the initialisation and
batch order), so the paired t-tests over 5 seeds need no split correction. "Not resolved" means the
study cannot tell the arms apart."""


def render(results: dict) -> str:
    """The report's Markdown (tables and generated verdicts)."""
    n = len(next(iter(results.values()))["seeds"])
    return "\n".join([
        "# Feature geometry on digits: neural collapse and metric learning", "",
        f"{n} seeds (own split and initialisation each), mean ± std over seeds. See "
        "`experiments/geometry_study.py`.", "",
        "## Neural collapse on the training features (final epoch and `early_epoch`)", "",
        arms.metrics_table(results, [a for a in ARMS if a.startswith("nc_")], NC_METRICS, digits=4), "",
        "## Metric learning: leave-one-out retrieval among test images", "",
        arms.metrics_table(results, [a for a in ARMS if a.startswith("ml_")], ML_METRICS), "",
        "## Claims tested", "", arms.claims_section(results, CLAIMS, digits=4), "", _CAVEATS, ""])


def run(args: cli.StudyArgs) -> dict:
    """The study's ``run`` for :func:`experiments.kit.cli.study_main`."""
    return arms.run_study(args, parse, train, "geometry_study", render, lambda results: [
        ("bar", "NC1 at the end (training features)",
         {a: r["metrics"]["nc1"] for a, r in results.items() if "nc1" in r["metrics"]}),
        ("bar", "recall@1 among unseen digits 5-9",
         {a: r["metrics"]["recall_1"] for a, r in results.items() if "recall_1" in r["metrics"]})])


def _print(study: dict) -> None:
    r = study["results"]
    print(arms.metrics_table(r, [a for a in ARMS if a.startswith("nc_")], NC_METRICS, digits=4))
    print(arms.metrics_table(r, [a for a in ARMS if a.startswith("ml_")], ML_METRICS))


STUDY = cli.Study(name="geometry_study", description=__doc__.splitlines()[0], run=run, print_results=_print,
                  default_configs=tuple(os.path.join(CONFIG_DIR, f"{a}.gin") for a in ARMS),
                  smoke_bindings=SMOKE_BINDINGS, data_dir_bindings=(), report_needs_all=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.geometry_study`` (flags of :mod:`experiments.kit.cli`)."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
