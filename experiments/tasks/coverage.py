"""Task code of the coverage study (:mod:`experiments.coverage_study`).

* :func:`make_passn_data`, :func:`make_imbalanced_data` — the noisy Gaussian-mixture questions
  of the pass@N task and the stratified "8 vs rest" digits splits of the imbalanced task;
* :func:`pass_at_n`, :func:`binary_metrics` — exact expected pass@N; F1, balanced accuracy and
  accuracy at logit threshold 0;
* :func:`batch_loss` — each arm's training loss;
* :func:`train` — every seed of one arm at once (``jax.vmap``) with the helpers of
  :mod:`experiments.common.small_models`; per-seed metrics in the layout of :mod:`experiments.arms`.

``cfg`` is the study's :class:`experiments.coverage_study.CoverageConfig`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm

if TYPE_CHECKING:
    from experiments.coverage_study import CoverageConfig

__all__ = ["LOSSES", "PASSN_METRICS", "IMB_METRICS", "make_passn_data", "make_imbalanced_data", "pass_at_n",
           "binary_metrics", "batch_loss", "train"]

LOSSES = ("ce", "dco", "bce", "anyloss_f1", "anyloss_bacc", "ensloss")
PASSN_METRICS = ("pass_1", "pass_n", "pass_n_early", "test_acc", "train_acc")
IMB_METRICS = ("f1", "balanced_acc", "accuracy")
_DATA_SALT = 104729


# ----------------------------------------------------------------------------------------------
# data and metrics
# ----------------------------------------------------------------------------------------------


def make_passn_data(cfg: CoverageConfig, seed: int) -> dict[str, np.ndarray]:
    """Gaussian-mixture questions: ``x = mean_scale · μ_y + ε``; training answers noised with
    probability ``label_noise`` (test answers are clean).

    Example:
      >>> from experiments.coverage_study import CoverageConfig
      >>> d = make_passn_data(CoverageConfig(n_train=6, n_test=4), 0)
      >>> d["x_train"].shape, d["y_test"].shape
      ((6, 20), (4,))
    """
    rng = np.random.default_rng(seed + _DATA_SALT)
    mu = cfg.mean_scale * rng.standard_normal((cfg.num_classes, cfg.dim))
    n = cfg.n_train + cfg.n_test
    y = rng.integers(0, cfg.num_classes, n)
    x = mu[y] + rng.standard_normal((n, cfg.dim))
    y_tr = y[: cfg.n_train].copy()
    flip = rng.random(cfg.n_train) < cfg.label_noise
    y_tr[flip] = rng.integers(0, cfg.num_classes, int(flip.sum()))
    return {"x_train": x[: cfg.n_train].astype(np.float32), "y_train": y_tr.astype(np.int32),
            "x_test": x[cfg.n_train:].astype(np.float32), "y_test": y[cfg.n_train:].astype(np.int32)}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), (d.target == 8).astype(np.int32)


def make_imbalanced_data(cfg: CoverageConfig, seed: int) -> dict[str, np.ndarray]:
    """A stratified random split of digits "8 vs rest" (``n_train`` examples, capped at 70 %,
    then the rest as test)."""
    x, y = _digits()
    rng = np.random.default_rng(seed + _DATA_SALT)
    tr = []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr.append(idx[: int(round(min(cfg.n_train, int(0.7 * len(y))) * len(idx) / len(y)))])
    tr = np.sort(np.concatenate(tr))
    te = np.setdiff1d(np.arange(len(y)), tr)[: cfg.n_test]
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def pass_at_n(p_correct: np.ndarray, n: float) -> np.ndarray:
    """Expected pass@N ``1 − (1 − p)^N`` (mean over the last axis).

    Example:
      >>> float(pass_at_n(np.array([0.5, 0.0]), 2))
      0.375
    """
    return (1.0 - (1.0 - np.asarray(p_correct, np.float64)) ** n).mean(-1)


def binary_metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """F1, balanced accuracy and accuracy of ``logits > 0`` against ``y ∈ {0, 1}``.

    Example:
      >>> m = binary_metrics(np.array([1.0, -1.0, 2.0, -3.0]), np.array([1, 1, 0, 0]))
      >>> m["f1"], m["balanced_acc"], m["accuracy"]
      (0.5, 0.5, 0.5)
    """
    pred, y = np.asarray(logits) > 0, np.asarray(y) > 0
    tp, fp, fn = float((pred & y).sum()), float((pred & ~y).sum()), float((~pred & y).sum())
    tn = float((~pred & ~y).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1.0)
    bacc = 0.5 * (tp / max(tp + fn, 1.0) + tn / max(tn + fp, 1.0))
    return {"f1": f1, "balanced_acc": bacc, "accuracy": (tp + tn) / len(y)}


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


def batch_loss(cfg: CoverageConfig, out: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
    """Mean loss of the arm over a batch (``out``: ``[B, K]`` logits, or ``[B, 1]`` for binary)."""
    L = lossjax.losses
    if cfg.loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    if cfg.loss == "dco":
        return L.dco_loss(out, y, n=cfg.n_attempts).mean()
    f = out[:, 0]
    if cfg.loss == "bce":
        return optax.sigmoid_binary_cross_entropy(f, y.astype(f.dtype)).mean()
    if cfg.loss == "ensloss":
        return L.ensloss_surrogate(f, y, key)
    metric = "f1" if cfg.loss == "anyloss_f1" else "balanced_accuracy"
    return L.anyloss(f, y, amplify=cfg.amplify, metric=metric)


def train(cfg: CoverageConfig) -> dict:
    """Train one arm for every seed at once; per-seed test metrics (and pass@N curves)."""
    seeds = [int(s) for s in cfg.seeds]
    make = make_passn_data if cfg.task == "passn" else make_imbalanced_data
    ds = [make(cfg, s) for s in seeds]
    data = {k: np.stack([d[k] for d in ds]) for k in ds[0]}
    n, d_in = data["x_train"].shape[1:]
    model = sm.MLP(tuple(cfg.hidden), cfg.num_classes if cfg.task == "passn" else 1)
    params = sm.init_stacked(model, d_in, seeds)
    bs = min(cfg.batch_size, n)
    spe = n // bs
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)

    def loss_fn(p, batch, step):
        key = jax.random.fold_in(jax.random.key(batch["seed"][0]), step)
        return batch_loss(cfg, model.apply({"params": p}, batch["x"])["out"], batch["y"], key)

    epoch = sm.make_epoch_fn(loss_fn, tx, n=n, batch_size=bs)
    apply = sm.make_apply_fn(model, shared_inputs=False)
    tr = {"x": jnp.asarray(data["x_train"]), "y": jnp.asarray(data["y_train"]),
          "seed": jnp.asarray(np.repeat(np.asarray(seeds, np.uint32)[:, None], n, 1))}
    xs = {"train": jnp.asarray(data["x_train"]), "test": jnp.asarray(data["x_test"])}
    curve: list = []  # test pass@N after each epoch (task passn)

    def after_epoch(e: int, params: Any) -> None:
        if cfg.task == "passn":
            p = np.asarray(jax.nn.softmax(apply(params, xs["test"])["out"], -1), np.float64)
            py = np.take_along_axis(p, data["y_test"][..., None], -1)[..., 0]
            curve.append(pass_at_n(py, cfg.n_attempts).tolist())

    params, opt, _ = sm.run_epochs(epoch, params, opt, tr, seeds, cfg.epochs, spe, what=f"{cfg.task}/{cfg.loss}",
                                   after_epoch=after_epoch)
    early = curve[cfg.early_epoch - 1] if cfg.task == "passn" else None
    res: dict = {"task": cfg.task, "loss": cfg.loss, "seeds": seeds, "n_train": int(n),
                 "n_test": int(data["x_test"].shape[1]), "num_params": sm.count_params_per_seed(params)}
    out_te, out_tr = np.asarray(apply(params, xs["test"])["out"]), np.asarray(apply(params, xs["train"])["out"])
    if cfg.task == "passn":
        p = np.asarray(jax.nn.softmax(jnp.asarray(out_te), -1), np.float64)
        py = np.take_along_axis(p, data["y_test"][..., None], -1)[..., 0]
        res["metrics"] = {"pass_1": py.mean(-1).tolist(), "pass_n": pass_at_n(py, cfg.n_attempts).tolist(),
                          "pass_n_early": early,
                          "test_acc": (out_te.argmax(-1) == data["y_test"]).mean(-1).tolist(),
                          "train_acc": (out_tr.argmax(-1) == data["y_train"]).mean(-1).tolist()}
        res["pass_n_curve"] = np.asarray(curve).T.tolist()
    else:
        per = [binary_metrics(out_te[i, :, 0], data["y_test"][i]) for i in range(len(seeds))]
        res["metrics"] = {m: [q[m] for q in per] for m in IMB_METRICS}
        res["positive_rate_test"] = float(data["y_test"].mean())
    return res
