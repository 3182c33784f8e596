"""Task code of the post-hoc calibration study (:mod:`experiments.calibration`).

A digits ``SmallCNN`` is trained once per seed by the common Trainer (:mod:`experiments.common.train`)
on the training split minus a stratified validation split; post-hoc calibrators are fit on its
frozen validation logits and scored on the clean and a shifted (Gaussian pixel noise) test set:

* :func:`split_validation`, :func:`translated_copies`, :func:`shifted_test` — the data;
* :func:`features` — the per-sample temperature calibrator's inputs;
* :func:`fit_calibrator`, :func:`apply_calibrator`, :func:`temperature` — the calibrators
  (:data:`KINDS`);
* :func:`expected_calibration_error`, :func:`nll`, :func:`scores` — the metrics;
* :func:`calibrate_seed` — one seed end to end, resumable (:mod:`experiments.kit.runs`).

``cfg`` is the study's :class:`experiments.calibration.CalibrationConfig`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common.config import ExperimentConfig
from experiments.common.data import Dataset, load_digits_dataset
from experiments.common.metrics import env_info
from experiments.common.steps import normalize_images
from experiments.kit.runs import finished_run, write_run

if TYPE_CHECKING:
    from experiments.calibration import CalibrationConfig

__all__ = ["KINDS", "SPLITS", "expected_calibration_error", "nll", "scores", "split_validation", "translated_copies",
           "shifted_test", "features", "temperature", "fit_calibrator", "apply_calibrator", "calibrate_seed"]

KINDS = ("ts_nll", "ts_ca", "tx_nll", "tx_ca", "vs_nll")
SPLITS = ("val", "test", "test_noisy")
_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


# ------------------------------------------------------------------------------------- metrics


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Top-label ECE: ``Σ_b (n_b/n)·|acc_b − conf_b|`` over equal-width confidence bins
    ``(i/B, (i+1)/B]`` (confidence 0 falls in the first bin).

    Example:
      >>> expected_calibration_error(np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]), num_bins=2)
      0.25
    """
    p = np.asarray(probs, np.float64)
    conf, pred = p.max(-1), p.argmax(-1)
    correct = (pred == np.asarray(labels)).astype(np.float64)
    b = np.clip(np.ceil(conf * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for i in range(num_bins):
        m = b == i
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits)``."""
    return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(labels))))


def scores(logits: np.ndarray, labels: np.ndarray, num_bins: int) -> dict:
    """ECE (%), NLL and accuracy (%) of ``logits``."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1))
    return {"ece": 100 * expected_calibration_error(probs, labels, num_bins), "nll": nll(logits, labels),
            "accuracy": 100 * float((probs.argmax(-1) == labels).mean())}


# ------------------------------------------------------------------------------------- data and features


def split_validation(ds: Dataset, val_size: int, split_seed: int) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """``(train-minus-val dataset, x_val, y_val)``: a stratified split of ``ds``'s training set
    (the normalisation constants are recomputed on the remaining training images)."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_size < len(ds.x_train) - 1:
        raise ValueError(f"`calibration.val_size`={val_size} must lie in (0, {len(ds.x_train) - 1}).")
    xtr, xva, ytr, yva = train_test_split(ds.x_train, ds.y_train, test_size=val_size, stratify=ds.y_train,
                                          random_state=split_seed)
    c = xtr.shape[-1]
    mean = tuple(float(v) for v in (xtr.reshape(-1, c).mean(0) / 255.0))
    std = tuple(float(v) for v in (xtr.reshape(-1, c).std(0) / 255.0))
    tr = dataclasses.replace(ds, x_train=np.ascontiguousarray(xtr), y_train=ytr, mean=mean, std=std)
    return tr, np.ascontiguousarray(xva), yva


def translated_copies(x: np.ndarray) -> np.ndarray:
    """``[8, N, H, W, C]``: ``x`` shifted by one pixel in the 8 directions, zero fill."""
    h, w = x.shape[1:3]
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.stack([p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _SHIFTS])


def shifted_test(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``x`` with Gaussian pixel noise of std ``sigma`` grey levels, clipped to uint8 (fixed seed)."""
    rng = np.random.default_rng([seed, 7])
    return np.clip(np.round(x.astype(np.float64) + rng.normal(0.0, sigma, x.shape)), 0, 255).astype(np.uint8)


def features(logits: np.ndarray, copy_logits: np.ndarray) -> np.ndarray:
    """``[N, 6]`` calibrator inputs: max softmax prob, top-1 − top-2 logit margin, entropy of the
    image's prediction; fraction of the copies whose argmax agrees, mean and min softmax prob of
    the image's predicted class over the copies (``copy_logits``: ``[M, N, K]``)."""
    x = jnp.asarray(logits, jnp.float32)
    p = jax.nn.softmax(x, -1)
    top2 = jax.lax.top_k(x, 2)[0]
    ent = -jnp.sum(p * jax.nn.log_softmax(x, -1), -1)
    pred = jnp.argmax(x, -1)
    pc = jax.nn.softmax(jnp.asarray(copy_logits, jnp.float32), -1)
    agree = jnp.mean(jnp.argmax(pc, -1) == pred[None], 0)
    pc_pred = jnp.take_along_axis(pc, pred[None, :, None], -1)[..., 0]
    f = jnp.stack([p.max(-1), top2[:, 0] - top2[:, 1], ent, agree, pc_pred.mean(0), pc_pred.min(0)], -1)
    return np.asarray(f)


# ------------------------------------------------------------------------------------- calibrators


def temperature(params: dict, feats: jax.Array, t_min: float, t_max: float) -> jax.Array:
    """``T = t_min·(t_max/t_min)^σ(f·w + b)`` per sample, in ``[t_min, t_max]`` (``T = √(t_min·t_max)``
    at ``w = b = 0``; one global ``T`` when ``feats`` has no columns)."""
    u = feats @ params["w"] + params["b"]
    return t_min * (t_max / t_min) ** jax.nn.sigmoid(u)


def _feats(kind: str, feats: np.ndarray | None, n: int) -> jax.Array:
    return jnp.asarray(feats if kind.startswith("tx") else np.zeros((n, 0)), jnp.float32)


def apply_calibrator(kind: str, params: dict, logits: np.ndarray, feats: np.ndarray | None,
                     cfg: CalibrationConfig) -> np.ndarray:
    """Calibrated logits of a fitted calibrator (``feats`` standardised like the fit's)."""
    x = jnp.asarray(logits, jnp.float32)
    if kind == "vs_nll":
        return np.asarray(x * params["w"] + params["b"])
    return np.asarray(x / temperature(params, _feats(kind, feats, len(x)), cfg.t_min, cfg.t_max)[:, None])


def fit_calibrator(kind: str, logits: np.ndarray, labels: np.ndarray, feats: np.ndarray | None,
                   cfg: CalibrationConfig) -> tuple[dict, list[float]]:
    """Fit calibrator ``kind`` on validation ``logits``/``labels`` (full batch, Adam).

    Returns ``(params, loss curve)``. Temperature calibrators start at ``u = 0`` (``T = 1`` for the
    default ``t_min·t_max = 1``), vector scaling at the identity.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibrator {kind!r}; expected one of {KINDS}.")
    x, y = jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32)
    k = x.shape[-1]
    f = _feats(kind, feats, len(x))
    if kind == "vs_nll":
        params = {"w": jnp.ones((k,)), "b": jnp.zeros((k,))}
    else:
        params = {"w": jnp.zeros((f.shape[1],)), "b": jnp.zeros(())}

    def objective(p: dict) -> jax.Array:
        if kind == "vs_nll":
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x * p["w"] + p["b"], y))
        t = temperature(p, f, cfg.t_min, cfg.t_max)
        if kind.endswith("_ca"):
            return lossjax.losses.correctness_aware_loss(x, y, t, balance=cfg.ca_balance)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x / t[:, None], y))

    tx = optax.adam(cfg.fit_lr)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(objective)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), curve = jax.lax.scan(step, (p, tx.init(p)), None, length=cfg.fit_steps)
        return p, curve, objective(p)

    params, curve, last = run(params)
    return jax.device_get(params), [float(v) for v in curve] + [float(last)]


# ------------------------------------------------------------------------------------- one seed


def _logits_fn(trainer):
    model, mean, std = trainer.model, trainer.ds.mean, trainer.ds.std
    variables = {"params": trainer.state.params, "batch_stats": trainer.state.batch_stats}
    apply = jax.jit(lambda xb: model.apply(variables, normalize_images(xb, mean, std), train=False))

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(apply(jnp.asarray(x[i:i + 500]))) for i in range(0, len(x), 500)])

    return logits


def calibrate_seed(exp: ExperimentConfig, cfg: CalibrationConfig, seed: int, workdir: str,
                   ds: Dataset | None = None) -> dict:
    """Train (or reload) the base model of ``seed`` in ``<workdir>/base_s<seed>``, fit every
    calibrator of ``cfg`` and score it; ``<workdir>/calib_s<seed>/results.json`` marks a finished seed.

    Returns ``{"seed", "scores": {arm: {split: {"ece", "nll", "accuracy"[, "temperature_*"]}}}, ...}``
    with arm ``"none"`` for the uncalibrated model.
    """
    from experiments.common.train import Trainer

    run_cfg = dataclasses.replace(exp, train=dataclasses.replace(exp.train, seed=seed))
    conf = {"calibration": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seeds"},
            "base": run_cfg.to_dict()}
    conf["base"]["train"].pop("progress")
    conf["base"]["data"].pop("data_dir")
    cdir = os.path.join(workdir, f"calib_s{seed}")
    done = finished_run(cdir, conf)
    if done is not None:
        print(f"[skip] seed {seed}: {cdir}/results.json exists", file=sys.stderr)
        return done
    t0 = time.perf_counter()
    full = ds if ds is not None else load_digits_dataset()
    if cfg.n_test:
        full = full.subset(None, cfg.n_test)
    train_ds, x_val, y_val = split_validation(full, cfg.val_size, cfg.split_seed)
    trainer = Trainer(run_cfg, os.path.join(workdir, f"base_s{seed}"), dataset=train_ds)
    base = trainer.run(argv=["python -m experiments.calibration", f"seed={seed}"])
    t_train = time.perf_counter() - t0
    logits = _logits_fn(trainer)
    sets = {"val": (x_val, y_val), "test": (full.x_test, full.y_test)}
    if cfg.shift_noise > 0:
        sets["test_noisy"] = (shifted_test(full.x_test, cfg.shift_noise), full.y_test)
    lg = {k: logits(x) for k, (x, _) in sets.items()}
    feats = {}
    if any(c.startswith("tx") for c in cfg.calibrators):
        raw = {k: features(lg[k], np.stack([logits(c) for c in translated_copies(x)])) for k, (x, _) in sets.items()}
        mu, sd = raw["val"].mean(0), raw["val"].std(0) + 1e-6  # standardised with validation statistics
        feats = {k: (v - mu) / sd for k, v in raw.items()}
    out = {"none": {k: scores(lg[k], y, cfg.num_bins) for k, (_, y) in sets.items()}}
    fitted = {}
    for c in cfg.calibrators:
        params, curve = fit_calibrator(c, lg["val"], y_val, feats.get("val"), cfg)
        out[c] = {k: scores(apply_calibrator(c, params, lg[k], feats.get(k), cfg), y, cfg.num_bins)
                  for k, (_, y) in sets.items()}
        if c != "vs_nll":
            t = np.asarray(temperature(params, _feats(c, feats.get("test"), len(lg["test"])), cfg.t_min, cfg.t_max))
            out[c]["test"]["temperature_mean"] = float(t.mean())
            out[c]["test"]["temperature_std"] = float(t.std())
        fitted[c] = {"params": {k: np.asarray(v).tolist() for k, v in params.items()},
                     "fit_loss_first_last": [curve[0], curve[-1]]}
    res = {"seed": seed, "config": conf, "scores": out, "fitted": fitted, "base_run": base,
           "n_val": int(len(y_val)), "val_errors": int((lg["val"].argmax(-1) != y_val).sum()),
           "train_wall_time_s": t_train, "wall_time_s": time.perf_counter() - t0, "env": env_info()}
    write_run(cdir, conf, res)
    print(f"seed {seed}: base test acc {out['none']['test']['accuracy']:.1f}%, ECE "
          f"{out['none']['test']['ece']:.2f}% -> " + ", ".join(f"{c} {out[c]['test']['ece']:.2f}%"
                                                              for c in cfg.calibrators)
          + f" ({res['wall_time_s']:.0f}s)", file=sys.stderr, flush=True)
    return res
