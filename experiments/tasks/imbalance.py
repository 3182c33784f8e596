"""Task code of the imbalance study (:mod:`experiments.imbalance_study`).

* :func:`longtail_counts`, :func:`make_longtail_data` — a long-tailed training split of
  scikit-learn's digits (the project's loader, :func:`experiments.common.data.load_digits_dataset`)
  and its balanced-as-possible test split, one per seed, stacked on a leading seed axis;
* :func:`classification_metrics`, :func:`expected_calibration_error` — balanced accuracy,
  minority-class recall, top-1/top-k, macro-F1 and ECE from logits;
* :func:`fgsm`, :func:`make_loss_fn` — the FGSM perturbation and each arm's training loss;
* :func:`train` — every seed of one arm at once (``jax.vmap``, one compilation) with the helpers
  of :mod:`experiments.common.small_models`; per-seed metrics in the layout of :mod:`experiments.arms`.

``cfg`` is the study's :class:`experiments.imbalance_study.ImbalanceConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm
from experiments.common.data import load_digits_dataset

if TYPE_CHECKING:
    from experiments.imbalance_study import ImbalanceConfig

__all__ = ["LOSSES", "METRICS", "longtail_counts", "make_longtail_data", "expected_calibration_error",
           "classification_metrics", "fgsm", "make_loss_fn", "train"]

LOSSES = ("ce", "cb_ce", "focal", "dce", "dce_focal", "hinge", "zloss", "ce_supcon", "ce_ntxent", "adv_comp_sum")
METRICS = ("balanced_acc", "minority_recall", "top1", "top3", "macro_f1", "ece", "robust_acc")
_C = 10
_DATA_SALT = 7919


# ------------------------------------------------------------------------------------- data


def longtail_counts(n_max: int, ratio: float, num_classes: int = _C) -> np.ndarray:
    """Exponential profile ``n_r = round(n_max · ratio^(−r/(K−1)))`` (at least 1) for rarity rank
    ``r = 0 … K−1``, so ``n_0 / n_{K−1} ≈ ratio`` (Cui et al., CVPR 2019, Sec. 6.1).

    Example:
      >>> longtail_counts(100, 10.0, 3).tolist()
      [100, 32, 10]
    """
    if n_max < 1 or ratio < 1 or num_classes < 2:
        raise ValueError(f"need n_max >= 1, ratio >= 1, num_classes >= 2; got {n_max}, {ratio}, {num_classes}.")
    r = np.arange(num_classes) / (num_classes - 1)
    return np.maximum(1, np.round(n_max * ratio ** (-r))).astype(np.int64)


def make_longtail_data(cfg: ImbalanceConfig, seed: int) -> dict[str, np.ndarray]:
    """One seed's data: a stratified split of digits (``n_test`` test images, ≈ balanced), then a
    long-tailed training subset: the classes get rarity ranks in a seeded random order and class
    of rank ``r`` keeps ``longtail_counts(n_max, imbalance_ratio)[r]`` training images.

    Pixels are scaled to ``[0, 1]`` and flattened. ``minority`` holds the ``n_minority`` rarest
    classes (a mask ``[K]``).
    """
    ds = load_digits_dataset(n_test=cfg.n_test, split_seed=seed + _DATA_SALT)
    rng = np.random.default_rng(seed + _DATA_SALT)
    order = rng.permutation(_C)  # order[r] = the class of rarity rank r
    counts = longtail_counts(cfg.n_max, cfg.imbalance_ratio)
    keep = []
    for r, c in enumerate(order):
        idx = np.flatnonzero(ds.y_train == c)
        if counts[r] > len(idx):
            raise ValueError(f"`imbalance.n_max` = {cfg.n_max} exceeds the {len(idx)} training images of class {c}.")
        keep.append(rng.choice(idx, size=counts[r], replace=False))
    keep = np.sort(np.concatenate(keep))
    minority = np.zeros(_C, bool)
    minority[order[_C - cfg.n_minority:]] = True
    n_per_class = np.zeros(_C, np.int64)
    n_per_class[order] = counts
    flat = lambda x: (x.reshape(len(x), -1) / 255.0).astype(np.float32)  # noqa: E731
    return {"x_train": flat(ds.x_train[keep]), "y_train": ds.y_train[keep].astype(np.int32),
            "x_test": flat(ds.x_test), "y_test": ds.y_test.astype(np.int32),
            "minority": minority, "n_per_class": n_per_class}


# ------------------------------------------------------------------------------------- metrics


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-1 prediction: ``Σ_b (n_b / n) |acc_b − conf_b|`` over ``n_bins`` equal-width
    confidence bins ``(b/B, (b+1)/B]`` (Guo et al., ICML 2017, eq. 3).

    Example:
      >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
      >>> round(expected_calibration_error(p, np.array([0, 1, 1]), n_bins=10), 5)
      0.33333
    """
    probs, y = np.asarray(probs, np.float64), np.asarray(y)
    if probs.ndim != 2 or len(probs) != len(y) or len(y) == 0:
        raise ValueError(f"`probs` must be [n, K] with n = len(y) > 0, got {probs.shape} and {y.shape}.")
    conf, pred = probs.max(-1), probs.argmax(-1)
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    err = 0.0
    for i in range(n_bins):
        m = b == i
        if m.any():
            err += m.sum() / len(y) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(err)


def classification_metrics(logits: np.ndarray, y: np.ndarray, minority: np.ndarray, *, k: int = 3,
                           n_bins: int = 15) -> dict[str, float]:
    """Balanced accuracy (mean per-class recall), mean recall of the ``minority`` classes, top-1 and
    top-``k`` accuracy, macro-F1 (mean over classes of ``2TP / (2TP + FP + FN)``, 0 for a class never
    predicted nor present) and ECE of ``softmax(logits)``.

    Example:
      >>> lg = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
      >>> m = classification_metrics(lg, np.array([0, 1, 2, 2]), np.array([False, False, True]), k=2)
      >>> m["top1"], m["balanced_acc"], m["minority_recall"], m["top2"]
      (0.75, 0.8333333333333334, 0.5, 1.0)
    """
    logits, y = np.asarray(logits, np.float64), np.asarray(y)
    K = logits.shape[-1]
    pred = logits.argmax(-1)
    recall = np.array([(pred[y == c] == c).mean() if (y == c).any() else np.nan for c in range(K)])
    f1 = []
    for c in range(K):
        tp, fp, fn = np.sum((pred == c) & (y == c)), np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    topk = np.argsort(-logits, -1)[:, :k]
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return {"balanced_acc": float(np.nanmean(recall)),
            "minority_recall": float(np.nanmean(recall[np.asarray(minority, bool)])),
            "top1": float((pred == y).mean()), f"top{k}": float((topk == y[:, None]).any(-1).mean()),
            "macro_f1": float(np.mean(f1)), "ece": expected_calibration_error(p, y, n_bins)}


# ------------------------------------------------------------------------------------- losses


def fgsm(logits_fn: Any, x: jax.Array, y: jax.Array, eps: float) -> jax.Array:
    """FGSM (Goodfellow et al., ICLR 2015): ``clip(x + ε · sign(∇_x CE(f(x), y)), 0, 1)`` (L∞ ball of
    radius ε on pixels in ``[0, 1]``); the step is a constant (no gradient flows through it)."""
    g = jax.grad(lambda v: optax.softmax_cross_entropy_with_integer_labels(logits_fn(v), y).sum())(x)
    return jax.lax.stop_gradient(jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0))


def _augment(x: jax.Array, key: jax.Array) -> jax.Array:
    """A view for NT-Xent: 20 % of the pixels dropped and Gaussian noise (σ = 0.1)."""
    k1, k2 = jax.random.split(key)
    return x * jax.random.bernoulli(k1, 0.8, x.shape) + 0.1 * jax.random.normal(k2, x.shape)


def make_loss_fn(cfg: ImbalanceConfig, model: Any, class_weights: jax.Array | None = None) -> Any:
    """``loss_fn(params, batch, step) -> scalar`` of the arm ``cfg.loss`` (batch: ``x``, ``y``,
    ``seed``; ``class_weights`` ``[S, K]`` rows are looked up per seed through ``batch["cw"]``)."""
    L = lossjax.losses

    def loss_fn(p, batch, step):
        x, y = batch["x"], batch["y"]
        out = model.apply({"params": p}, x)
        lg = out["out"]
        ce = optax.softmax_cross_entropy_with_integer_labels(lg, y)
        if cfg.loss == "ce":
            return ce.mean()
        if cfg.loss == "cb_ce":
            return (L.per_example_class_weights(batch["cw"][0], y) * ce).mean()
        if cfg.loss == "focal":
            return L.softmax_focal_loss(lg, y, gamma=cfg.gamma).mean()
        if cfg.loss == "dce":
            return L.dual_cross_entropy_loss(lg, y, beta=cfg.dce_beta).mean()
        if cfg.loss == "dce_focal":
            return L.dual_cross_entropy_focal_loss(lg, y, gamma=cfg.gamma, beta=cfg.dce_focal_beta).mean()
        if cfg.loss == "hinge":
            return optax.losses.multiclass_hinge_loss(lg, y).mean()
        if cfg.loss == "zloss":
            return L.spherical_z_loss(lg, y, a=cfg.z_a, b=cfg.z_b).mean()
        if cfg.loss == "ce_supcon":
            return ce.mean() + cfg.aux_weight * L.supcon_loss(out["features"], y, temperature=cfg.temperature).mean()
        if cfg.loss == "ce_ntxent":
            key = jax.random.fold_in(jax.random.key(batch["seed"][0]), step)
            k1, k2 = jax.random.split(key)
            views = jnp.concatenate([_augment(x, k1), _augment(x, k2)])
            feats = model.apply({"params": p}, views)["features"]
            ids = jnp.tile(jnp.arange(x.shape[0]), 2)  # the two views of one image are the positive pair
            return ce.mean() + cfg.aux_weight * optax.ntxent(feats, ids, cfg.temperature)
        # adv_comp_sum: the caller's inner maximisation is one FGSM step at the current parameters
        x_adv = fgsm(lambda v: model.apply({"params": jax.lax.stop_gradient(p)}, v)["out"], x, y, cfg.eps)
        adv = model.apply({"params": p}, x_adv)["out"]
        return L.smooth_adversarial_comp_sum_loss(lg, adv, y, nu=cfg.nu).mean()

    return loss_fn


# ------------------------------------------------------------------------------------- training


def train(cfg: ImbalanceConfig) -> dict:
    """Train one arm for every seed at once; per-seed test metrics (clean and under FGSM)."""
    seeds = [int(s) for s in cfg.seeds]
    ds = [make_longtail_data(cfg, s) for s in seeds]
    data = {k: np.stack([d[k] for d in ds]) for k in ds[0]}
    n, d_in = data["x_train"].shape[1:]
    model = sm.MLP(tuple(cfg.hidden), _C)
    params = sm.init_stacked(model, d_in, seeds)
    bs = min(cfg.batch_size, n)
    spe = n // bs
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)
    cw = np.stack([np.asarray(lossjax.losses.class_balanced_weights(c, beta=cfg.cb_beta)) for c in data["n_per_class"]])
    epoch = sm.make_epoch_fn(make_loss_fn(cfg, model), tx, n=n, batch_size=bs)
    tr = {"x": jnp.asarray(data["x_train"]), "y": jnp.asarray(data["y_train"]),
          "seed": jnp.asarray(np.repeat(np.asarray(seeds, np.uint32)[:, None], n, 1)),
          "cw": jnp.asarray(np.repeat(cw[:, None], n, 1), jnp.float32)}
    params, opt, _ = sm.run_epochs(epoch, params, opt, tr, seeds, cfg.epochs, spe, what=cfg.loss)

    @jax.jit
    @jax.vmap
    def evaluate(p, x, y):
        f = lambda v: model.apply({"params": p}, v)["out"]  # noqa: E731
        return f(x), f(fgsm(f, x, y, cfg.eps))

    clean, adv = map(np.asarray, evaluate(params, jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])))
    per = [classification_metrics(clean[i], data["y_test"][i], data["minority"][i]) for i in range(len(seeds))]
    metrics = {m: [q[m] for q in per] for m in METRICS if m != "robust_acc"}
    metrics["robust_acc"] = (adv.argmax(-1) == data["y_test"]).mean(-1).tolist()
    return {"loss": cfg.loss, "seeds": seeds, "n_train": int(n), "n_test": int(data["x_test"].shape[1]),
            "n_per_class": data["n_per_class"].tolist(), "minority_classes": [np.flatnonzero(m).tolist()
                                                                             for m in data["minority"]],
            "num_params": sm.count_params_per_seed(params), "metrics": metrics}
