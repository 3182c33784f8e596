"""Task code of the noisy-label study: label noise, the nine losses, vmapped training, tables.

The declarative study (config, arms, claims, report template) is :mod:`experiments.noisy_labels`;
this module holds what it runs:

* :func:`parse_noise`, :func:`corrupt_labels` and :data:`ASYM_MAPS` — the symmetric and
  class-conditional noise models (a pure function of labels, setting and seed);
* :func:`make_loss` — every loss as ``(logits, labels, lambdas, epoch) -> (per-example loss, lambdas)``;
* :func:`train_loss_group` — all (seed × noise setting) runs of one loss trained together
  (``jax.vmap``, one compilation), with the finished-run contract of :mod:`experiments.kit.runs`;
* :func:`summarize`, :func:`accuracy_table`, :func:`memorised_table`, :func:`vs_baseline_section`,
  :func:`rank_verdict` and :func:`plot` — the numbers and tables the report template is filled with.

Epochs are 1-based in ``metrics.jsonl`` and on the console, as in :mod:`experiments.common.train`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments import arms
from experiments.common.data import DataError, Dataset, load_cifar, load_digits_dataset
from experiments.common.metrics import append_jsonl, env_info, fmt_mean_std, mean_std
from experiments.common.models import SmallCNN
from experiments.common.steps import normalize_images
from experiments.kit.mlp import MLP
from experiments.kit.runs import finished_run, write_run

if TYPE_CHECKING:
    from experiments.noisy_labels import NoisyLabelsConfig

__all__ = ["LOSSES", "NORMS", "ASYM_MAPS", "valid_loss", "parse_noise", "corrupt_labels", "make_loss",
           "load_data", "chunked_apply", "run_grid", "noisy_label_matrix", "train_loss_group", "summarize",
           "mean_ranks", "accuracy_table", "memorised_table", "vs_baseline_section", "rank_verdict", "realised_rates",
           "plot"]

LOSSES = ("ce", "gce", "tgce", "taylor", "sce", "apl", "ldr_kl", "aldr_kl", "mae")
# score normalisation variants of the LDR losses ('aldr_kl:none' etc.; '' = raw logits)
NORMS = {"none": "", "l1": "l1", "softplus_mean": "softplus_mean"}
# class -> similar class, flipped with the asymmetric rate.
ASYM_MAPS: dict[str, dict[int, int]] = {
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    "cifar10": {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},
}
_NOISE_RE = re.compile(r"^(sym|asym)(\d{1,2})$")
# the metric key of the per-seed accuracies (in %) at noise setting z: f"{ACC}@{z}"
ACC = "final_test_accuracy"


def valid_loss(name: str) -> bool:
    """``name`` is a loss of :data:`LOSSES`, or ``'ldr_kl:<norm>'`` / ``'aldr_kl:<norm>'`` with a
    normalisation of :data:`NORMS`."""
    base, sep, variant = str(name).partition(":")
    if base not in LOSSES:
        return False
    return not sep or (base in ("ldr_kl", "aldr_kl") and variant in NORMS)


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------


def parse_noise(setting: str) -> tuple[str, float]:
    """``'sym40'`` → ``('sym', 0.4)``; ``'asym40'`` → ``('asym', 0.4)``.

    Raises:
      ValueError: not of the form ``symR`` / ``asymR`` with R an integer percent in 0..99.

    Example:
      >>> parse_noise("asym40")
      ('asym', 0.4)
    """
    m = _NOISE_RE.match(str(setting))
    if not m:
        raise ValueError(f"noise setting {setting!r}: expected 'symR' or 'asymR' with R a percent in 0..99.")
    return m.group(1), int(m.group(2)) / 100.0


def corrupt_labels(labels: np.ndarray, setting: str, seed: int, num_classes: int,
                   asym_map: dict[int, int] | None = None) -> np.ndarray:
    """Noisy copy of ``labels`` under ``setting``; a pure function of ``(labels, setting, seed)``.

    Symmetric (``symR``): with probability r = R/100 a label becomes ``(y + u) mod K``, ``u``
    uniform on ``1..K-1`` (a uniformly random *other* class). Asymmetric (``asymR``,
    class-conditional): a label ``y`` in ``asym_map`` becomes ``asym_map[y]`` with probability r;
    other classes stay clean. The maps of :data:`ASYM_MAPS`: digits (and MNIST in the robust-loss
    literature) 2→7, 3→8, 5→6, 6→5, 7→1; CIFAR-10 truck→automobile (9→1), bird→airplane (2→0),
    cat↔dog (3↔5), deer→horse (4→7). None for CIFAR-100 (its usual map needs the coarse labels,
    which the loader does not return), so asymmetric noise is refused there.

    Example:
      >>> corrupt_labels(np.array([2, 2, 4, 4]), "asym99", 0, 10, ASYM_MAPS["digits"]).tolist()
      [7, 7, 4, 4]
    """
    kind, rate = parse_noise(setting)
    y = np.asarray(labels).astype(np.int32)
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2, got {num_classes}.")
    rng = np.random.default_rng([int(seed), 0 if kind == "sym" else 1, int(round(rate * 100))])
    flip = rng.random(y.shape[0]) < rate
    if kind == "sym":
        other = (y + rng.integers(1, num_classes, size=y.shape[0])) % num_classes
        return np.where(flip, other, y).astype(np.int32)
    if asym_map is None:
        raise ValueError(f"noise setting {setting!r} needs `asym_map`.")
    target = np.array([asym_map.get(int(c), int(c)) for c in range(num_classes)], np.int32)
    return np.where(flip, target[y], y).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# losses: (logits [B, K], labels [B], lambdas [B], epoch) -> (per-example loss [B], new lambdas [B])
# ---------------------------------------------------------------------------------------------

LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def make_loss(name: str, cfg: NoisyLabelsConfig) -> LossFn:
    """The per-example training loss ``name`` with ``cfg``'s hyper-parameters.

    Every loss has the signature ``(logits, labels, lambdas, epoch) -> (loss, new_lambdas)``;
    only ALDR-KL reads and updates ``lambdas`` (its per-example λ, stored per training example),
    and only truncated GCE reads ``epoch`` (0-based inside training; plain GCE during the first
    ``tgce_warmup`` epochs: at initialisation every ``p_y ≈ 1/K < k``, so truncating from the
    start would prune every sample).
    """
    L = lossjax.losses
    if not valid_loss(name):
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES} (or 'ldr_kl:<norm>', 'aldr_kl:<norm>').")
    name, sep, variant = name.partition(":")
    c = cfg
    if sep:
        field = "ldr_normalize" if name == "ldr_kl" else "aldr_normalize"
        c = dataclasses.replace(cfg, **{field: NORMS[variant]})
    keep = lambda f: (lambda x, y, lam, ep: (f(x, y), lam))  # noqa: E731
    if name == "ce":
        return keep(optax.softmax_cross_entropy_with_integer_labels)
    if name == "gce":
        return keep(lambda x, y: L.generalized_cross_entropy_loss(x, y, q=c.gce_q))
    if name == "tgce":
        def tgce(x, y, lam, ep):
            g = L.generalized_cross_entropy_loss(x, y, q=c.gce_q)
            t = L.truncated_generalized_cross_entropy_loss(x, y, q=c.gce_q, k=c.tgce_k)
            return jnp.where(ep < c.tgce_warmup, g, t), lam
        return tgce
    if name == "taylor":
        return keep(lambda x, y: L.taylor_cross_entropy_loss(x, y, order=c.taylor_order))
    if name == "sce":
        return keep(lambda x, y: L.symmetric_cross_entropy_loss(x, y, alpha=c.sce_alpha, beta=c.sce_beta,
                                                                log_zero=c.sce_log_zero))
    if name == "apl":
        return keep(lambda x, y: L.active_passive_loss(x, y, active="nce", passive="rce", alpha=c.apl_alpha,
                                                       beta=c.apl_beta, log_zero=math.log(1e-4)))
    if name == "ldr_kl":
        return keep(lambda x, y: L.ldr_kl_loss(x, y, lambda_=c.ldr_lambda, margin=c.ldr_margin,
                                               normalize=c.ldr_normalize or None))
    if name == "aldr_kl":
        def aldr(x, y, lam, ep):
            return L.aldr_kl_loss(x, y, lam, lambda_ref=c.aldr_lambda, alpha=c.aldr_alpha, margin=c.aldr_margin,
                                  normalize=c.aldr_normalize or None)
        return aldr
    return keep(lambda x, y: L.mae_loss(x, y, scale=c.mae_scale))  # "mae"


# ---------------------------------------------------------------------------------------------
# data, model, vmapped training of one loss over all (seed, noise) runs
# ---------------------------------------------------------------------------------------------


def load_data(cfg: NoisyLabelsConfig) -> Dataset:
    """The study's dataset (digits embedded; CIFAR via ``experiments.common.data.load_cifar``)."""
    if cfg.dataset == "digits":
        ds = load_digits_dataset()
    else:
        if not cfg.data_dir:
            raise DataError(f"noisy_labels.dataset={cfg.dataset!r} needs --data_dir (a local copy); nothing is "
                            f"downloaded.")
        ds = load_cifar(cfg.data_dir, cfg.dataset)
    if cfg.n_train or cfg.n_test:
        ds = ds.subset(cfg.n_train or None, cfg.n_test or None)
    if len(ds.x_train) < cfg.batch_size:
        raise ValueError(f"`noisy_labels.batch_size`={cfg.batch_size} exceeds the {len(ds.x_train)} training examples.")
    return ds


def chunked_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chunk: int) -> jax.Array:
    """``fn`` over the leading axis of ``x`` in chunks of ``chunk`` rows (inside jit: a
    ``lax.map`` over a zero-padded ``[n_chunks, chunk, ...]`` view); returns ``fn``'s rows for
    the ``len(x)`` real inputs only."""
    n = x.shape[0]
    c = max(1, min(chunk, n))
    n_chunks = -(-n // c)
    pad = n_chunks * c - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    out = jax.lax.map(fn, xp.reshape(n_chunks, c, *x.shape[1:]))
    out = out.reshape(n_chunks * c, *out.shape[2:])
    return out[:n]


def _make_fns(cfg: NoisyLabelsConfig, ds: Dataset, loss_fn: LossFn):
    """Jitted ``init(seeds)``, ``epoch(state, y, epoch)`` and ``predict(state, x)``, vmapped over runs."""
    net = MLP(hidden=(cfg.hidden,) * cfg.depth, out=ds.num_classes) if cfg.model == "mlp" else \
        SmallCNN(width=cfg.width, num_classes=ds.num_classes)
    base = optax.adam(cfg.learning_rate) if cfg.optimizer == "adam" else optax.sgd(cfg.learning_rate, momentum=0.9)
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), base)  # coupled L2, PyTorch-style
    n, bsz = len(ds.x_train), cfg.batch_size
    steps = n // bsz
    x_train = jnp.asarray(ds.x_train)
    mean, std = ds.mean, ds.std

    def fwd(variables, x, train):
        xn = normalize_images(x, mean, std)
        if "batch_stats" in variables:
            if train:
                logits, new = net.apply(variables, xn, train=True, mutable=["batch_stats"])
                return logits, new["batch_stats"]
            return net.apply(variables, xn, train=False), variables["batch_stats"]
        out = net.apply(variables, xn, train=train)
        return (out["out"] if isinstance(out, dict) else out), {}

    def init_one(seed):
        key = jax.random.key(seed)
        v = net.init(jax.random.fold_in(key, 0), jnp.zeros((1, *ds.image_shape), jnp.uint8), train=False)
        params = v["params"]
        return {"params": params, "batch_stats": v.get("batch_stats", {}), "opt": tx.init(params),
                "lam": jnp.full((n,), cfg.aldr_lambda, jnp.float32), "key": jax.random.fold_in(key, 1)}

    def epoch_one(state, y, epoch):
        perm = jax.random.permutation(jax.random.fold_in(state["key"], epoch), n)[: steps * bsz]

        def step(st, idx):
            xb, yb = x_train[idx], y[idx]

            def objective(p):
                v = {"params": p, **({"batch_stats": st["batch_stats"]} if st["batch_stats"] else {})}
                logits, bs = fwd(v, xb, True)
                per, lam = loss_fn(logits, yb, st["lam"][idx], epoch)
                return jnp.mean(per), (bs, lam)

            (loss, (bs, lam)), g = jax.value_and_grad(objective, has_aux=True)(st["params"])
            upd, opt = tx.update(g, st["opt"], st["params"])
            new = dict(st, params=optax.apply_updates(st["params"], upd), opt=opt, batch_stats=bs,
                       lam=st["lam"].at[idx].set(lam))
            return new, loss

        state, losses = jax.lax.scan(step, state, perm.reshape(steps, bsz))
        return state, jnp.mean(losses)

    def predict_one(state, x):
        v = {"params": state["params"], **({"batch_stats": state["batch_stats"]} if state["batch_stats"] else {})}
        return chunked_apply(lambda xc: jnp.argmax(fwd(v, xc, False)[0], -1), x, cfg.eval_chunk)

    init = jax.jit(jax.vmap(init_one))
    epoch_fn = jax.jit(jax.vmap(epoch_one, in_axes=(0, 0, None)), donate_argnums=(0,))
    predict = jax.jit(jax.vmap(predict_one, in_axes=(0, None)))
    return init, epoch_fn, predict


def run_grid(cfg: NoisyLabelsConfig) -> list[tuple[int, str]]:
    """The (seed, noise setting) runs of one loss, in vmap order."""
    return [(s, z) for s in cfg.seeds for z in cfg.noise]


def noisy_label_matrix(cfg: NoisyLabelsConfig, ds: Dataset) -> np.ndarray:
    """``[runs, N]`` training labels, one row per :func:`run_grid` entry."""
    amap = ASYM_MAPS.get(cfg.dataset)
    return np.stack([corrupt_labels(ds.y_train, z, s, ds.num_classes, amap) for s, z in run_grid(cfg)])


def train_loss_group(loss: str, cfg: NoisyLabelsConfig, ds: Dataset, workdir: str) -> dict:
    """Train every (seed, noise) run of ``loss`` at once; write ``metrics.jsonl`` (one record per
    epoch, epochs 1-based) and ``results.json``.

    Returns the results dict (also written to ``<workdir>/results.json``); reuses a finished one.
    """
    conf = dict(cfg.to_dict(), loss=loss)
    for k in ("progress", "log_every", "losses", "data_dir", "name"):
        conf.pop(k)
    done = finished_run(workdir, conf)
    if done is not None:
        print(f"[skip] {loss}: {workdir}/results.json exists", file=sys.stderr)
        return done
    os.makedirs(workdir, exist_ok=True)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)  # an unfinished group restarts from scratch
    grid = run_grid(cfg)
    y_noisy = noisy_label_matrix(cfg, ds)
    t0 = time.perf_counter()
    init, epoch_fn, predict = _make_fns(cfg, ds, make_loss(loss, cfg))
    state = init(jnp.asarray([s for s, _ in grid], jnp.int32))
    y_dev, x_test = jnp.asarray(y_noisy), jnp.asarray(ds.x_test)
    y_test = np.asarray(ds.y_test)
    curves: list[list[float]] = [[] for _ in grid]
    for epoch in range(1, cfg.epochs + 1):
        state, tr_loss = epoch_fn(state, y_dev, jnp.int32(epoch - 1))
        acc = (np.asarray(predict(state, x_test)) == y_test[None]).mean(1)
        for i, a in enumerate(acc):
            curves[i].append(float(a))
        append_jsonl(metrics_path, {"epoch": epoch, "test_accuracy": [float(a) for a in acc],
                                    "train_loss": [float(v) for v in np.asarray(tr_loss)],
                                    "wall_time_s": time.perf_counter() - t0})
        if cfg.progress and (epoch % cfg.log_every == 0 or epoch == cfg.epochs):
            by = {z: np.mean([a for (s, zz), a in zip(grid, acc) if zz == z]) for z in cfg.noise}
            print(f"{loss:8s} epoch {epoch:3d}/{cfg.epochs}  clean test acc "
                  + "  ".join(f"{z} {100 * v:.1f}" for z, v in by.items())
                  + f"  ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    pred_train = np.asarray(predict(state, jnp.asarray(ds.x_train)))
    wall = time.perf_counter() - t0
    if not np.all(np.isfinite(np.asarray(tr_loss))):
        print(f"[warn] {loss}: non-finite training loss", file=sys.stderr)
    runs = []
    for i, (s, z) in enumerate(grid):
        flipped = y_noisy[i] != ds.y_train
        runs.append({
            "seed": s, "noise": z,
            "final_test_accuracy": curves[i][-1],
            "best_test_accuracy": max(curves[i]),
            "test_accuracy_curve": curves[i],
            "final_train_loss": float(np.asarray(tr_loss)[i]),
            "train_acc_noisy_labels": float((pred_train[i] == y_noisy[i]).mean()),
            "train_acc_clean_labels": float((pred_train[i] == ds.y_train).mean()),
            "memorised_fraction": float((pred_train[i][flipped] == y_noisy[i][flipped]).mean()) if flipped.any()
            else None,
            "realised_noise_rate": float(flipped.mean()),
        })
    res = {"loss": loss, "config": conf, "runs": runs, "wall_time_s": wall,
           "epoch_compiles": int(epoch_fn._cache_size()), "env": env_info()}
    return write_run(workdir, conf, res)


# ---------------------------------------------------------------------------------------------
# numbers and tables of the report
# ---------------------------------------------------------------------------------------------


def _by_noise(res: dict, key: str, z: str) -> list:
    return [r[key] for r in res["runs"] if r["noise"] == z]


def summarize(results: dict[str, dict], cfg: NoisyLabelsConfig, ds: Dataset, wall: float,
              label: Callable[[str], str]) -> dict:
    """The study's summary (per loss and noise setting, per-seed values in seed order) and its tables."""
    per = lambda key: {l: {z: _by_noise(r, key, z) for z in cfg.noise} for l, r in results.items()}  # noqa: E731
    first = next(iter(results.values()))
    return {
        "dataset": ds.name, "n_train": int(len(ds.x_train)), "n_test": int(len(ds.x_test)),
        "config": cfg.to_dict(), "study_wall_time_s": wall,
        "train_wall_time_s": {l: r["wall_time_s"] for l, r in results.items()},
        "final_test_accuracy": per("final_test_accuracy"), "best_epoch_test_accuracy": per("best_test_accuracy"),
        "memorised_fraction": per("memorised_fraction"),
        "realised_noise_rate": {z: _by_noise(first, "realised_noise_rate", z) for z in cfg.noise},
        "tables": {"final": accuracy_table(results, cfg.noise, label),
                   "best_epoch": accuracy_table(results, cfg.noise, label, "best_test_accuracy"),
                   "memorised": memorised_table(results, cfg.noise, label)},
    }


def mean_ranks(acc: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Mean over noise settings of each loss's rank by mean accuracy (1 = best).

    Example:
      >>> mean_ranks({"a": {"s": [0.9], "t": [0.5]}, "b": {"s": [0.8], "t": [0.6]}})
      {'a': 1.5, 'b': 1.5}
    """
    losses, noise = list(acc), list(next(iter(acc.values())))
    ranks: dict[str, list[int]] = {l: [] for l in losses}
    for z in noise:
        for r, l in enumerate(sorted(losses, key=lambda l: -float(np.mean(acc[l][z]))), 1):
            ranks[l].append(r)
    return {l: float(np.mean(v)) for l, v in ranks.items()}


def accuracy_table(results: dict[str, dict], noise: Sequence[str], label: Callable[[str], str],
                   key: str = "final_test_accuracy") -> str:
    """Markdown: accuracy (%) mean ± std per loss and noise setting (best mean in bold), mean rank."""
    acc = {l: {z: [100 * v for v in _by_noise(r, key, z)] for z in noise} for l, r in results.items()}
    ranks = mean_ranks(acc)
    best = {z: max(mean_std(acc[l][z])[0] for l in acc) for z in noise}
    lines = ["| loss | " + " | ".join(noise) + " | mean rank |", "|---" * (len(noise) + 2) + "|"]
    for l in acc:
        cells = [f"**{fmt_mean_std(acc[l][z])}**" if mean_std(acc[l][z])[0] == best[z] else fmt_mean_std(acc[l][z])
                 for z in noise]
        lines.append(f"| {label(l)} | " + " | ".join(cells) + f" | {ranks[l]:.1f} |")
    return "\n".join(lines)


def memorised_table(results: dict[str, dict], noise: Sequence[str], label: Callable[[str], str]) -> str:
    """Markdown: % of the corrupted training labels the final model predicts, per noisy setting."""
    noisy = [z for z in noise if parse_noise(z)[1] > 0]
    lines = ["| loss | " + " | ".join(noisy) + " |", "|---" * (len(noisy) + 1) + "|"]
    for l, r in results.items():
        cells = [fmt_mean_std([100 * v for v in _by_noise(r, "memorised_fraction", z)], 1) for z in noisy]
        lines.append(f"| {label(l)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rank_verdict(acc: dict[str, dict[str, list[float]]], claim: arms.RankClaim,
                 label: Callable[[str], str]) -> str | None:
    """The sentence of a :class:`experiments.arms.RankClaim` on the losses' mean ranks over the
    noise settings (:func:`mean_ranks`) with its verdict, or None when it does not apply."""
    return arms.rank_sentence(mean_ranks(acc), claim, label, noun="losses")


def vs_baseline_section(acc: dict[str, dict[str, list[float]]], claims: Sequence[arms.Claim], noise: Sequence[str],
                        label: Callable[[str], str]) -> str | None:
    """Every "``a`` beats ``b``" claim at every noisy setting, as paired t-tests over seeds of the
    accuracy in % (:func:`experiments.arms.claim_results`): a count line and a per-loss table.
    None when no claim's arms were run."""
    noisy = [z for z in noise if parse_noise(z)[1] > 0]
    results = {l: {"metrics": {f"{ACC}@{z}": [100 * v for v in acc[l][z]] for z in acc[l]}} for l in acc}
    claims = [c for c in claims if c.a in acc and c.b in acc]
    if not claims or not noisy:
        return None
    rows = ["| loss | " + " | ".join(f"Δ vs {label(claims[0].b)} at {z} (pp)" for z in noisy) + " | claim |",
            "|---" * (len(noisy) + 2) + "|"]
    wins: dict[str, list[bool]] = {z: [] for z in noisy}
    for c in claims:
        per_z = {z: arms.claim_results(results, [c.at(z)])[0] for z in noisy}
        for z, r in per_z.items():
            wins[z].append(r["test"].verdict == "better")
        rows.append(f"| {label(c.a)} | " + " | ".join(f"{r['test'].fmt(1)} ({r['test'].verdict})"
                                                  for r in per_z.values()) + f" | {c.text} ({c.source}) |")
    counts = ", ".join(f"{z} {sum(v)} of {len(v)}" for z, v in wins.items())
    return (f"* **Robust losses beat {label(claims[0].b)} under label noise:** losses significantly better than "
            f"{label(claims[0].b)} (paired t-test at 5 % over seeds): {counts}; per loss:\n\n" + "\n".join(rows))


def plot(results: dict[str, dict], noise: Sequence[str], label: Callable[[str], str], path: str) -> str:
    """One panel per noise setting: mean ± std (over seeds) clean-test accuracy vs epoch (1-based)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(noise)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.6), sharey=True, squeeze=False)
    for ax, z in zip(axes[0], noise):
        for loss, res in results.items():
            a = 100 * np.asarray(_by_noise(res, "test_accuracy_curve", z))
            m, s = a.mean(0), a.std(0)
            x = np.arange(1, a.shape[1] + 1)
            ax.plot(x, m, label=label(loss), lw=1.2)
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_title(z)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("clean test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def realised_rates(summary: dict) -> str:
    """``"sym0 0.0 ± 0.0, sym40 39.8 ± 1.1, ..."``: realised corrupted fraction (%) per setting."""
    rates = summary["realised_noise_rate"]
    return ", ".join(f"{z} {fmt_mean_std([100 * v for v in vs], 1)}" for z, vs in rates.items())
