"""Task code of the grokking study (:mod:`experiments.grokking`): modular addition, full batch.

* :func:`make_data` — every pair ``(a, b)`` with label ``(a + b) mod p``, a seeded train/test split;
* :func:`init_params`, :func:`apply_mlp` — the MLP on the concatenated one-hot codes of ``a`` and
  ``b`` (its first Dense layer computed as two embedding look-ups: the same function, cheaper);
* :func:`per_example_loss`, :func:`make_optimizer` — softmax / StableMax CE; Adam, AdamW, ⊥Grad;
* :func:`train` — one arm: ``log_every`` full-batch steps per jitted ``lax.scan``, one record per
  scan appended to ``metrics.jsonl`` (``step`` = optimisation steps done, 0 = the initial model);
* :func:`summarize`, :func:`results_table`, :func:`plot` — the arm's headline numbers and figure
  (the study's single-seed claims are :class:`experiments.arms.ThresholdClaim` thresholds on them).

``cfg`` is the study's :class:`experiments.grokking.GrokkingConfig`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common.metrics import append_jsonl

if TYPE_CHECKING:
    from experiments.grokking import GrokkingConfig

__all__ = ["GROK_THRESHOLD", "METRICS", "make_data", "init_params", "apply_mlp", "per_example_loss", "make_optimizer",
           "train", "summarize", "results_table", "plot"]

GROK_THRESHOLD = 0.9  # test accuracy that counts as "generalised"
# float headline numbers of an arm (``results["metrics"]``, one-element lists: one seed); the first
# three are the progress line of experiments.arms.run_arms
METRICS = ("final_train_accuracy", "final_test_accuracy", "max_softmax_collapse_fraction", "best_test_accuracy",
           "final_train_loss", "final_softmax_collapse_fraction", "final_zero_loss_fraction", "collapse_fraction")


def make_data(cfg: GrokkingConfig) -> dict[str, np.ndarray]:
    """All pairs ``(a, b)`` with label ``(a + b) mod p``, split at random by ``cfg.seed``.

    Returns ``{"x_train": int32 [n, 2], "y_train": [n], "x_test": [m, 2], "y_test": [m]}``.
    """
    p = cfg.modulus
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    x = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int32)
    y = ((x[:, 0] + x[:, 1]) % p).astype(np.int32)
    perm = np.random.default_rng(cfg.seed).permutation(p * p)
    n = int(round(cfg.train_fraction * p * p))
    tr, te = perm[:n], perm[n:]
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def init_params(cfg: GrokkingConfig) -> dict[str, Any]:
    """LeCun-normal weights, zero biases, in float32 (``seed + 1``; the float64 arm casts them).

    ``emb`` is the first Dense layer's ``[2p, hidden]`` kernel (rows ``0..p-1`` for ``a``,
    ``p..2p-1`` for ``b``); fan-in 2 (two active one-hot inputs) sets its scale.
    """
    p, h = cfg.modulus, cfg.hidden
    keys = jax.random.split(jax.random.key(cfg.seed + 1), cfg.depth + 1)
    params: dict[str, Any] = {"emb": jax.random.normal(keys[0], (2 * p, h), jnp.float32) / np.sqrt(2.0),
                              "b0": jnp.zeros((h,))}
    for i in range(1, cfg.depth):
        params[f"w{i}"] = jax.random.normal(keys[i], (h, h), jnp.float32) / np.sqrt(h)
        params[f"b{i}"] = jnp.zeros((h,))
    params["out"] = jax.random.normal(keys[cfg.depth], (h, p), jnp.float32) / np.sqrt(h)
    params["bout"] = jnp.zeros((p,))
    return params


def apply_mlp(params: dict[str, Any], x: jax.Array, cfg: GrokkingConfig) -> jax.Array:
    """Logits ``[n, p]`` of the MLP on the concatenated one-hot codes of ``x[:, 0]`` and ``x[:, 1]``."""
    p = cfg.modulus
    h = jax.nn.relu(params["emb"][x[:, 0]] + params["emb"][p + x[:, 1]] + params["b0"])
    for i in range(1, cfg.depth):
        h = jax.nn.relu(h @ params[f"w{i}"] + params[f"b{i}"])
    return cfg.logit_scale * (h @ params["out"] + params["bout"])


def per_example_loss(cfg: GrokkingConfig, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example training loss: the standard softmax CE (optax, in the logits' dtype, so it
    can round to exactly 0) or StableMax CE."""
    if cfg.loss == "stablemax":
        return lossjax.losses.stablemax_cross_entropy_loss(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_optimizer(cfg: GrokkingConfig) -> optax.GradientTransformation:
    """Adam (AdamW when ``weight_decay > 0``), preceded by ⊥Grad when ``cfg.orthograd``."""
    if cfg.weight_decay > 0:
        base = optax.adamw(cfg.learning_rate, b2=cfg.b2, weight_decay=cfg.weight_decay)
    else:
        base = optax.adam(cfg.learning_rate, b2=cfg.b2)
    return optax.chain(lossjax.orthograd(), base) if cfg.orthograd else base


def _make_fns(cfg: GrokkingConfig, tx: optax.GradientTransformation, data: dict[str, jax.Array]
              ) -> tuple[Callable, Callable]:
    """Jitted ``chunk(params, opt_state) -> (params, opt_state)`` (``log_every`` steps in one
    scan) and ``evaluate(params) -> metrics``."""
    xtr, ytr, xte, yte = data["x_train"], data["y_train"], data["x_test"], data["y_test"]

    def loss_fn(params: Any) -> jax.Array:
        return jnp.mean(per_example_loss(cfg, apply_mlp(params, xtr, cfg), ytr))

    def step(carry: tuple, _: Any) -> tuple[tuple, None]:
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def chunk(params: Any, opt_state: Any) -> tuple[Any, Any]:
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=cfg.log_every)
        return params, opt_state

    @jax.jit
    def evaluate(params: Any) -> dict[str, jax.Array]:
        ltr, lte = apply_mlp(params, xtr, cfg), apply_mlp(params, xte, cfg)
        per_tr = per_example_loss(cfg, ltr, ytr)
        return {"train_loss": jnp.mean(per_tr), "test_loss": jnp.mean(per_example_loss(cfg, lte, yte)),
                "train_accuracy": jnp.mean(jnp.argmax(ltr, -1) == ytr),
                "test_accuracy": jnp.mean(jnp.argmax(lte, -1) == yte),
                "softmax_collapse_fraction": lossjax.losses.softmax_collapse_fraction(ltr),
                "zero_loss_fraction": lossjax.losses.zero_loss_fraction(per_tr),
                "max_logit_gap": jnp.mean(jnp.max(ltr, -1) - jnp.min(ltr, -1)),
                "param_norm": optax.tree.norm(params)}

    return chunk, evaluate


def _records(cfg: GrokkingConfig, path: str | None, progress: bool) -> list[dict]:
    dt = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    data = {k: jnp.asarray(v) for k, v in make_data(cfg).items()}
    params = jax.tree.map(lambda a: jnp.asarray(a, dt), init_params(cfg))
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)
    chunk, evaluate = _make_fns(cfg, tx, data)
    records, t0, last = [], time.perf_counter(), cfg.steps // cfg.log_every
    for k in range(last + 1):
        if k:
            params, opt_state = chunk(params, opt_state)
        m = {key: float(v) for key, v in evaluate(params).items()}
        rec = {"step": k * cfg.log_every, **m, "time_s": time.perf_counter() - t0}
        if path:
            append_jsonl(path, rec)
        records.append(rec)
        if progress and (k % 5 == 0 or k == last):
            print(f"[{cfg.name}] step {rec['step']:5d} train acc {m['train_accuracy']:.3f} test acc "
                  f"{m['test_accuracy']:.3f} loss {m['train_loss']:.3g} SC {m['softmax_collapse_fraction']:.3f} "
                  f"({rec['time_s']:.0f} s)", file=sys.stderr, flush=True)
    return records



def train(cfg: GrokkingConfig, workdir: str | None = None, *, progress: bool = False) -> dict:
    """Train one arm in its dtype (float64 inside a ``jax.enable_x64`` context only).

    With ``workdir``, one record per ``log_every`` steps is appended to ``workdir/metrics.jsonl``
    (an unfinished run's file is restarted). Returns ``{"records", "summary", "metrics"}``
    (``metrics``: the float numbers of :data:`METRICS` as one-element lists, one seed).
    """
    path = None
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path):
            os.remove(path)  # an unfinished run restarts from step 0 (runs are short)
    if cfg.dtype == "float64":
        with jax.enable_x64(True):
            records = _records(cfg, path, progress)
    else:
        records = _records(cfg, path, progress)
    s = summarize(records)
    return {"records": records, "summary": s, "metrics": {k: [s[k]] for k in METRICS}}


def summarize(records: Sequence[dict]) -> dict:
    """Headline numbers of one run's records: final and best test accuracy, the first step with
    train accuracy 1 and with test accuracy ≥ :data:`GROK_THRESHOLD` (None: never), the peak SC
    fraction, and ``collapse_fraction`` = max(peak SC fraction, final zero-loss fraction) (collapse
    shows either as SC rows or as exactly-zero per-example losses).

    Example:
      >>> recs = [{"step": 0, "train_accuracy": 0.1, "test_accuracy": 0.0, "train_loss": 4.0,
      ...          "softmax_collapse_fraction": 0.0, "zero_loss_fraction": 0.0},
      ...         {"step": 50, "train_accuracy": 1.0, "test_accuracy": 0.95, "train_loss": 0.0,
      ...          "softmax_collapse_fraction": 0.25, "zero_loss_fraction": 0.75}]
      >>> s = summarize(recs)
      >>> s["step_train_100"], s["step_test_grok"], s["step_sc_50"], s["collapse_fraction"]
      (50, 50, None, 0.75)
    """
    def first(pred: Callable[[dict], bool]) -> int | None:
        return next((r["step"] for r in records if pred(r)), None)

    last = records[-1]
    sc = max(r["softmax_collapse_fraction"] for r in records)
    return {"final_train_accuracy": last["train_accuracy"], "final_test_accuracy": last["test_accuracy"],
            "best_test_accuracy": max(r["test_accuracy"] for r in records),
            "final_train_loss": last["train_loss"],
            "final_softmax_collapse_fraction": last["softmax_collapse_fraction"],
            "max_softmax_collapse_fraction": sc, "final_zero_loss_fraction": last["zero_loss_fraction"],
            "collapse_fraction": max(sc, last["zero_loss_fraction"]),
            "step_train_100": first(lambda r: r["train_accuracy"] >= 1.0),
            "step_test_grok": first(lambda r: r["test_accuracy"] >= GROK_THRESHOLD),
            "step_sc_50": first(lambda r: r["softmax_collapse_fraction"] >= 0.5)}


def _step(v: int | None) -> str:
    return "—" if v is None else str(v)


def results_table(summaries: dict[str, dict], labels: dict[str, str]) -> str:
    """Markdown table of the arms' summaries (rows labelled by ``labels``)."""
    lines = ["| arm | final train acc | final test acc | best test acc | step train=100 % | "
             f"step test ≥ {GROK_THRESHOLD:.0%} | max SC fraction | final zero-loss fraction | final train loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {labels.get(name, name)} | {s['final_train_accuracy']:.3f} | {s['final_test_accuracy']:.3f} | "
                     f"{s['best_test_accuracy']:.3f} | {_step(s['step_train_100'])} | {_step(s['step_test_grok'])} | "
                     f"{s['max_softmax_collapse_fraction']:.3f} | {s['final_zero_loss_fraction']:.3f} | "
                     f"{s['final_train_loss']:.3g} |")
    return "\n".join(lines)


def plot(records: dict[str, list[dict]], labels: dict[str, str], path: str) -> None:
    """Four panels vs step: train accuracy, test accuracy, SC fraction, train loss (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(18, 3.8))
    panels = [("train_accuracy", "train accuracy"), ("test_accuracy", "test accuracy"),
              ("softmax_collapse_fraction", "softmax_collapse_fraction (train)"), ("train_loss", "train loss")]
    for name, recs in records.items():
        st = [x["step"] for x in recs]
        ls = "--" if name == "softmax_f64" else "-"
        for a, (key, _) in zip(ax, panels):
            vals = [max(x[key], 1e-30) if key == "train_loss" else x[key] for x in recs]
            a.plot(st, vals, ls, label=labels.get(name, name))
    for a, (key, title) in zip(ax, panels):
        a.set_title(title)
        a.set_xlabel("step")
        if key == "train_loss":
            a.set_yscale("log")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
