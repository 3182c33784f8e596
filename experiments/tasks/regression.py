"""Task code of the regression-as-classification study (:mod:`experiments.regression`).

* :func:`make_task_data` — per-seed standardised data of ``diabetes`` (scikit-learn's
  ``load_diabetes``, a random train/test split per seed) or ``hetero`` (a synthetic
  heteroscedastic function, :func:`hetero_function`), stacked on a leading seed axis;
* :func:`support_bounds`, :func:`make_loss_fn`, :func:`predict` — the MSE, two-hot and HL-Gauss
  heads (:func:`lossjax.losses.two_hot_loss`, :func:`lossjax.losses.hl_gauss_loss`,
  :func:`lossjax.losses.bins_to_value`);
* :func:`train` — every seed of one arm at once (``jax.vmap``, one compilation) with the helpers of
  :mod:`experiments.common.small_models`; per-seed metrics in the layout of :mod:`experiments.arms`;
* :func:`fit_gap_text`, :func:`diagnosis` — data-driven sentences of the report.

``cfg`` is the study's :class:`experiments.regression.RegressionConfig`.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

import lossjax
from experiments.common import small_models as sm
from experiments.common.metrics import append_jsonl

if TYPE_CHECKING:
    from experiments.regression import RegressionConfig

__all__ = ["TASKS", "LOSSES", "DIABETES_N", "hetero_function", "hetero_noise_var", "make_task_data",
           "support_bounds", "make_loss_fn", "predict", "train", "fit_gap_text", "diagnosis"]

TASKS = ("diabetes", "hetero")
LOSSES = ("mse", "two_hot", "hl_gauss")
DIABETES_N = 442
_HETERO_SEED_OFFSET = 10_000  # synthetic data seed = seed + offset (independent of the init)


# ------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=1)
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    """Raw (unscaled) diabetes features ``[442, 10]`` and targets ``[442]`` (cached, read-only)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    return d.data.astype(np.float64), d.target.astype(np.float64)


def hetero_function(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``f(x) = sin(3 x0) + 0.5 x1² + 0.5 x2`` and noise std ``s(x0) = 0.1 + 0.6 ((x0 + 1)/2)²``
    of the synthetic heteroscedastic task (``x``: ``[n, 4]``; x3 is irrelevant).

    Example:
      >>> f, s = hetero_function(np.array([[-1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
      >>> np.round(s, 5).tolist()
      [0.1, 0.7]
    """
    f = np.sin(3.0 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.5 * x[:, 2]
    s = 0.1 + 0.6 * ((x[:, 0] + 1.0) / 2.0) ** 2
    return f, s


@functools.lru_cache(maxsize=1)
def hetero_noise_var() -> float:
    """``E[s(x0)²]`` for ``x0 ~ U[-1, 1]`` (numerical quadrature): the squared noise floor of ``hetero``."""
    x0 = np.linspace(-1.0, 1.0, 200_001)
    return float(np.mean((0.1 + 0.6 * ((x0 + 1.0) / 2.0) ** 2) ** 2))


def _one_split(cfg: RegressionConfig, seed: int) -> dict[str, np.ndarray]:
    """Raw train/test arrays of one seed (``f_test`` = noiseless mean, hetero only)."""
    if cfg.task == "diabetes":
        x, y = _diabetes()
        perm = np.random.default_rng(seed).permutation(len(y))
        te, tr = perm[: cfg.n_test], perm[cfg.n_test:]
        return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}
    rng = np.random.default_rng(seed + _HETERO_SEED_OFFSET)
    x = rng.uniform(-1.0, 1.0, size=(cfg.n_train + cfg.n_test, 4))
    f, s = hetero_function(x)
    y = f + s * rng.standard_normal(len(f))
    n = cfg.n_train
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:], "f_test": f[n:]}


def make_task_data(cfg: RegressionConfig) -> dict[str, np.ndarray]:
    """Per-seed standardised data, stacked on a leading seed axis.

    Returns:
      ``x_train [S, n, d]``, ``y_train [S, n]`` (standardised, float32), ``x_test [S, m, d]``
      (standardised with the training statistics), ``y_test [S, m]`` (original units), ``y_mean``,
      ``y_std`` ``[S]`` (training statistics) and, for ``hetero``, ``f_test [S, m]``.
    """
    out: dict[str, list] = {}
    for s in cfg.seeds:
        d = _one_split(cfg, int(s))
        mu, sd = d["x_train"].mean(0), d["x_train"].std(0) + 1e-8
        ym, ys = d["y_train"].mean(), d["y_train"].std() + 1e-8
        rec = {"x_train": (d["x_train"] - mu) / sd, "y_train": (d["y_train"] - ym) / ys,
               "x_test": (d["x_test"] - mu) / sd, "y_test": d["y_test"], "y_mean": ym, "y_std": ys}
        if "f_test" in d:
            rec["f_test"] = d["f_test"]
        for k, v in rec.items():
            out.setdefault(k, []).append(v)
    res = {k: np.stack(v) for k, v in out.items()}
    for k in ("x_train", "y_train", "x_test"):
        res[k] = res[k].astype(np.float32)
    return res


def support_bounds(y_train_std: np.ndarray, margin: float) -> tuple[float, float]:
    """``(v_min, v_max)``: the standardised training-target range over all seeds, widened by
    ``margin`` × range on each side (python floats, so every seed shares one compiled loss).

    Example:
      >>> support_bounds(np.array([[-1.0, 1.0], [0.0, 3.0]]), 0.1)
      (-1.4, 3.4)
    """
    lo, hi = float(np.min(y_train_std)), float(np.max(y_train_std))
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


# ------------------------------------------------------------------------------------- heads and training


def make_loss_fn(cfg: RegressionConfig, model: Any, v_min: float, v_max: float) -> sm.LossFn:
    """The per-batch objective of ``cfg.loss`` on standardised targets (mean over the batch)."""
    L = lossjax.losses

    def loss(params: Any, batch: dict, step: jax.Array) -> jax.Array:
        out = model.apply({"params": params}, batch["x"])["out"]
        y = batch["y"]
        if cfg.loss == "mse":
            per = (out[..., 0] - y) ** 2
        elif cfg.loss == "two_hot":
            per = L.two_hot_loss(out, y, v_min=v_min, v_max=v_max)
        else:
            per = L.hl_gauss_loss(out, y, v_min=v_min, v_max=v_max, sigma_ratio=cfg.sigma_ratio)
        return per.mean()

    return loss


def predict(cfg: RegressionConfig, out: jax.Array, v_min: float, v_max: float) -> np.ndarray:
    """Standardised predictions ``[S, m]`` from the network outputs ``[S, m, k]`` (the expectation
    over the bin centres for the classification heads)."""
    if cfg.loss == "mse":
        return np.asarray(out[..., 0], dtype=np.float64)
    return np.asarray(lossjax.losses.bins_to_value(out, v_min=v_min, v_max=v_max), dtype=np.float64)


def _rmse(pred: np.ndarray, target: np.ndarray) -> list[float]:
    return np.sqrt(((pred - target) ** 2).mean(-1)).tolist()


def _evaluate(cfg: RegressionConfig, apply: Any, params: Any, data: dict, xs: dict, v_min: float,
              v_max: float) -> dict:
    """Test RMSE (original units) per seed, plus train RMSE and, for hetero, RMSE to ``f(x)``."""
    ym, ys = data["y_mean"][:, None], data["y_std"][:, None]
    pred_te = predict(cfg, apply(params, xs["x_test"])["out"], v_min, v_max) * ys + ym
    pred_tr = predict(cfg, apply(params, xs["x_train"])["out"], v_min, v_max) * ys + ym
    ev = {"test_rmse": _rmse(pred_te, data["y_test"]),
          "train_rmse": _rmse(pred_tr, data["y_train"].astype(np.float64) * ys + ym)}
    if "f_test" in data:
        ev["test_rmse_to_mean"] = _rmse(pred_te, data["f_test"])
    return ev


def train(cfg: RegressionConfig, workdir: str | None = None, *, log: str | None = None,
          progress: bool = True) -> dict:
    """Train every seed of ``cfg`` at once; returns the per-seed results.

    Args:
      cfg: the arm's config.
      workdir: the arm's directory (:func:`experiments.arms.run_arms` passes it): ``log`` defaults
        to ``workdir/metrics.jsonl``.
      log: ``metrics.jsonl`` path: one record per epoch (``"epoch"`` 1-based, the training loss and
        the RMSEs per seed); an existing file is replaced (an unfinished run restarts; runs take seconds).
      progress: print a line every third of the epochs.

    Returns:
      ``{"metrics": {"test_rmse", "train_rmse"[, "test_rmse_to_mean"]: [S floats]}, "test_rmse_curve":
      [S, epochs], "v_min", "v_max", "bin_width_std", "sigma_std", "num_params", "train_compiles", ...}``.

    Raises:
      FloatingPointError: the final training loss is not finite.
    """
    if log is None and workdir is not None:
        log = os.path.join(workdir, "metrics.jsonl")
    if log is not None:
        os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
        if os.path.exists(log):
            os.remove(log)
    seeds = [int(s) for s in cfg.seeds]
    data = make_task_data(cfg)
    v_min, v_max = support_bounds(data["y_train"], cfg.margin)
    n, d_in = data["x_train"].shape[1:]
    model = sm.MLP(tuple(cfg.hidden), 1 if cfg.loss == "mse" else cfg.num_bins)
    params = sm.init_stacked(model, d_in, seeds)
    spe = n // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)
    epoch_fn = sm.make_epoch_fn(make_loss_fn(cfg, model, v_min, v_max), tx, n=n, batch_size=cfg.batch_size)
    apply = sm.make_apply_fn(model, shared_inputs=False)
    batch = {"x": jnp.asarray(data["x_train"]), "y": jnp.asarray(data["y_train"])}
    xs = {"x_train": batch["x"], "x_test": jnp.asarray(data["x_test"])}
    curves: list[list[float]] = []
    for e in range(1, cfg.epochs + 1):
        params, opt, loss = epoch_fn(params, opt, batch, sm.epoch_keys(seeds, e - 1), jnp.int32((e - 1) * spe))
        ev = _evaluate(cfg, apply, params, data, xs, v_min, v_max)
        if log is not None:
            append_jsonl(log, {"epoch": e, "train_loss": np.asarray(loss).tolist(), **ev})
        curves.append(ev["test_rmse"])
        if progress and (e % max(1, cfg.epochs // 3) == 0 or e == cfg.epochs):
            print(f"  {cfg.task:8s} {cfg.loss:8s} epoch {e}/{cfg.epochs}: loss {float(np.mean(np.asarray(loss))):.4f}, "
                  f"test RMSE {np.mean(ev['test_rmse']):.4f}", file=sys.stderr, flush=True)
    if not np.all(np.isfinite(np.asarray(loss))):
        raise FloatingPointError(f"{cfg.task}/{cfg.loss}: non-finite training loss {np.asarray(loss).tolist()}.")
    width = (v_max - v_min) / cfg.num_bins
    return {"task": cfg.task, "loss": cfg.loss, "seeds": seeds, "n_train": int(n),
            "n_test": int(data["x_test"].shape[1]),
            "metrics": ev, "v_min": v_min, "v_max": v_max, "bin_width_std": width, "sigma_std": cfg.sigma_ratio * width,
            "y_std": data["y_std"].tolist(), "final_train_loss": np.asarray(loss).tolist(),
            "test_rmse_curve": np.asarray(curves).T.tolist(), "num_params": sm.count_params_per_seed(params),
            "train_compiles": int(epoch_fn._cache_size())}


# ------------------------------------------------------------------------------------- report sentences


def fit_gap_text(runs: dict[str, dict]) -> str:
    """One line on fit vs generalisation of one setting's runs (``{loss: results}``): mean train and
    test RMSE per loss, their gap, and the lowest point of each mean test curve."""
    items, best = [], []
    for m, r in runs.items():
        tr, te = np.mean(r["metrics"]["train_rmse"]), np.mean(r["metrics"]["test_rmse"])
        items.append(f"{m} {tr:.3g} → {te:.3g} (gap {te - tr:+.3g})")
        c = np.asarray(r["test_rmse_curve"]).mean(0)
        best.append(f"{m} {c.min():.3g} at epoch {int(c.argmin()) + 1}")
    return ("Train → test RMSE (mean over seeds): " + "; ".join(items) + ". Lowest point of the mean test curve "
            "(selected on the test set, so optimistic — a diagnosis of over-fitting, not a result): "
            + "; ".join(best) + ".")


def diagnosis(runs: dict[str, dict], verdict: str) -> str:
    """A data-driven reading of why HL-Gauss and MSE differ (over- vs under-fitting), given the
    paired verdict of HL-Gauss against MSE on the test RMSE (``"better"`` = HL-Gauss lower)."""
    if "mse" not in runs or "hl_gauss" not in runs:
        return ""
    mse, hl = runs["mse"]["metrics"], runs["hl_gauss"]["metrics"]
    tr_m, te_m = np.mean(mse["train_rmse"]), np.mean(mse["test_rmse"])
    tr_h, te_h = np.mean(hl["train_rmse"]), np.mean(hl["test_rmse"])
    if verdict == "better" and tr_m < tr_h:
        return (f"MSE fits the training set more tightly (train RMSE {tr_m:.3g} vs {tr_h:.3g}) but generalises "
                f"worse: the gain is a regularisation effect of the cross-entropy head against an over-fitting "
                f"MSE baseline (no early stopping), not better fitting.")
    if verdict == "worse" and tr_h > tr_m:
        return (f"HL-Gauss also fits the *training* set worse (train RMSE {tr_h:.3g} vs {tr_m:.3g}): the "
                f"classification head under-fits in this budget, and the bin discretisation plus the Gaussian "
                f"smoothing (σ ≈ {runs['hl_gauss']['sigma_std']:.2f} std) blur a smooth target.")
    if verdict == "no significant difference" and tr_m < tr_h:
        return (f"MSE still fits the training set more tightly (train RMSE {tr_m:.3g} vs {tr_h:.3g}), but both "
                f"reach the same test RMSE ({te_m:.3g} vs {te_h:.3g}): HL-Gauss fits less and generalises better "
                f"by the same amount.")
    return ""
