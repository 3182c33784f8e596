"""Robust losses under synthetic label noise (the LDR paper's comparison, at CPU scale).

    python -m experiments.noisy_labels                  # digits study -> runs/noisy_labels/noisy_labels.md
    python -m experiments.noisy_labels --write_report   # ... and regenerate experiments/results/noisy_labels.md
    python -m experiments.noisy_labels --smoke          # three losses, tiny MLP (seconds)
    python -m experiments.noisy_labels --config configs/noisy_labels/cifar10.gin --data_dir DIR

The flags are those of every study (:mod:`experiments.kit.cli`); the default workdir is
``runs/<noisy_labels.name>``.

Nine losses — CE (optax), GCE, truncated GCE, Taylor CE, SCE, APL (NCE+RCE), LDR-KL, ALDR-KL
and MAE (all from :mod:`lossjax.losses`) — are trained on the digits data (or CIFAR-10/100 from
``--data_dir`` with ``configs/noisy_labels/cifar10.gin``) whose **training** labels are
corrupted by one of the noise settings, and scored by accuracy on the **clean** test set.

Noise models (deterministic in ``(seed, setting)``; identical for every loss):

* ``symR`` — symmetric: each training label is, with probability R %, replaced by a uniformly
  random *other* class.
* ``asymR`` — asymmetric (class-conditional): a label whose class is a key of the fixed map is,
  with probability R %, replaced by the map's similar class; other classes stay clean. Digits
  (and MNIST in the robust-loss literature): 2→7, 3→8, 5→6, 6→5, 7→1. CIFAR-10: truck→automobile
  (9→1), bird→airplane (2→0), cat↔dog (3↔5), deer→horse (4→7). No map is defined for CIFAR-100
  (its usual map needs the coarse labels, which the loader does not return): asym is refused.

All (seed × noise setting) runs of one loss are trained together with ``jax.vmap`` (each loss
compiles once); the unit of resumption is one loss: ``<workdir>/<loss>/results.json`` is written
when its runs finish, and a rerun skips losses that have one (with the same config). Per-epoch
clean-test accuracies go to ``<workdir>/<loss>/metrics.jsonl`` as training proceeds. The report
(``<name>.md``, ``.json``, ``.png``) is written to the report directory; its verdict sentences are
computed from the numbers (:func:`verdicts`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common.data import DataError, Dataset, load_cifar, load_digits_dataset
from experiments.common.metrics import append_jsonl, env_info, fmt_mean_std, mean_std, write_json
from experiments.common.models import SmallCNN
from experiments.common.steps import normalize_images
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report, stats
from experiments.kit.mlp import MLP
from experiments.kit.runs import finished_run, write_run

__all__ = ["NoisyLabelsConfig", "LOSSES", "ASYM_MAPS", "parse_noise", "corrupt_labels", "make_loss",
           "train_loss_group", "run_study", "main"]

LOSSES = ("ce", "gce", "tgce", "taylor", "sce", "apl", "ldr_kl", "aldr_kl", "mae")
LOSS_NAMES = {"ce": "CE", "gce": "GCE", "tgce": "truncated GCE", "taylor": "Taylor CE", "sce": "SCE",
              "apl": "APL (NCE+RCE)", "ldr_kl": "LDR-KL", "aldr_kl": "ALDR-KL", "mae": "MAE"}
DEFAULT_CONFIG = os.path.join("configs", "noisy_labels", "digits.gin")

# class -> similar class, flipped with the asymmetric rate.
ASYM_MAPS: dict[str, dict[int, int]] = {
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    "cifar10": {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},
}
_NORMS = {"none": "", "l1": "l1", "softplus_mean": "softplus_mean"}
_NOISE_RE = re.compile(r"^(sym|asym)(\d{1,2})$")


@dataclasses.dataclass(frozen=True)
class NoisyLabelsConfig:
    """The noisy-label study (gin selector ``noisy_labels``).

    Attributes:
      name: stem of the report files and of the default workdir ``runs/<name>``.
      dataset: ``digits`` (embedded), ``cifar10`` or ``cifar100`` (need ``data_dir``).
      data_dir: local CIFAR directory (``--data_dir`` sets it); never downloads.
      n_train, n_test: keep only the first n examples (0 = all), for smoke tests.
      model: ``mlp`` (on the flattened pixels) or ``cnn`` (``SmallCNN``, BatchNorm).
      hidden, depth: MLP width and number of hidden layers.
      width: SmallCNN base channels.
      losses: subset of :data:`LOSSES`; ``ldr_kl``/``aldr_kl`` may carry a score-normalisation
        variant that overrides ``ldr_normalize``/``aldr_normalize``: ``'aldr_kl:none'``,
        ``'ldr_kl:l1'``, ``'aldr_kl:softplus_mean'`` (an ablation).
      noise: settings ``symR`` / ``asymR`` (R in percent, 0..99).
      seeds: seeds (initialisation, shuffling, noise draw).
      epochs, batch_size: training length and minibatch size (last partial batch dropped).
      optimizer: ``adam`` or ``sgd`` (momentum 0.9); constant ``learning_rate``.
      weight_decay: coupled L2 (PyTorch-style ``weight_decay``) added to the gradient.
      eval_chunk: evaluation chunk size (rows per forward pass).
      gce_q: GCE / truncated-GCE exponent q.
      tgce_k, tgce_warmup: truncation threshold k; epochs of plain GCE before truncating.
      taylor_order: Taylor-CE order t.
      sce_alpha, sce_beta, sce_log_zero: SCE α, β, A.
      apl_alpha, apl_beta: APL (NCE+RCE) weights; RCE uses A = ln 1e-4 as the APL code.
      ldr_lambda, ldr_margin, ldr_normalize: LDR-KL λ, c and score normalisation ('' = none).
      aldr_lambda, aldr_alpha, aldr_margin, aldr_normalize: ALDR-KL λ₀, α, c, normalisation.
      mae_scale: MAE multiplier.
      progress: print progress every ``log_every`` epochs.
      log_every: progress cadence in epochs.
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
        if self.dataset not in ("digits", "cifar10", "cifar100"):
            raise ValueError(f"`noisy_labels.dataset` must be digits, cifar10 or cifar100, got {self.dataset!r}.")
        if self.model not in ("mlp", "cnn"):
            raise ValueError(f"`noisy_labels.model` must be 'mlp' or 'cnn', got {self.model!r}.")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"`noisy_labels.optimizer` must be 'adam' or 'sgd', got {self.optimizer!r}.")
        bad = [n for n in self.losses if not _valid_loss(n)]
        if bad or not self.losses:
            raise ValueError(f"`noisy_labels.losses` must be a non-empty subset of {LOSSES} (LDR losses may "
                             f"carry a normalisation variant, e.g. 'aldr_kl:none'), got {self.losses!r}.")
        if len(set(self.losses)) != len(self.losses):
            raise ValueError(f"`noisy_labels.losses` has duplicates: {self.losses!r}.")
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise ValueError(f"`noisy_labels.name` must be a plain file stem, got {self.name!r}.")
        if not self.noise:
            raise ValueError("`noisy_labels.noise` must name at least one setting.")
        for s in self.noise:
            parse_noise(s)
            if s.startswith("asym") and self.dataset not in ASYM_MAPS:
                raise ValueError(f"`noisy_labels.noise`: {s!r} needs a class map; none is defined for "
                                 f"{self.dataset!r} (only {sorted(ASYM_MAPS)}).")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"`noisy_labels.seeds` must be non-negative ints, got {self.seeds!r}.")
        for f in ("n_train", "n_test", "tgce_warmup"):
            if getattr(self, f) < 0:
                raise ValueError(f"`noisy_labels.{f}` must be >= 0, got {getattr(self, f)}.")
        for f in ("hidden", "depth", "width", "epochs", "batch_size", "eval_chunk", "taylor_order", "log_every"):
            if getattr(self, f) < 1:
                raise ValueError(f"`noisy_labels.{f}` must be >= 1, got {getattr(self, f)}.")
        for f in ("learning_rate",):
            if getattr(self, f) <= 0:
                raise ValueError(f"`noisy_labels.{f}` must be > 0, got {getattr(self, f)}.")
        for f in ("weight_decay", "sce_alpha", "sce_beta", "apl_alpha", "apl_beta", "ldr_lambda", "ldr_margin",
                  "aldr_margin", "mae_scale"):
            if getattr(self, f) < 0:
                raise ValueError(f"`noisy_labels.{f}` must be >= 0, got {getattr(self, f)}.")
        if not 0 < self.gce_q <= 1:
            raise ValueError(f"`noisy_labels.gce_q` must lie in (0, 1], got {self.gce_q}.")
        if not 0 <= self.tgce_k < 1:
            raise ValueError(f"`noisy_labels.tgce_k` must lie in [0, 1), got {self.tgce_k}.")
        if self.sce_log_zero >= 0:
            raise ValueError(f"`noisy_labels.sce_log_zero` must be < 0, got {self.sce_log_zero}.")
        if self.aldr_alpha <= 1:
            raise ValueError(f"`noisy_labels.aldr_alpha` must be > 1, got {self.aldr_alpha}.")
        if self.aldr_lambda <= 0:
            raise ValueError(f"`noisy_labels.aldr_lambda` must be > 0, got {self.aldr_lambda}.")
        for f in ("ldr_normalize", "aldr_normalize"):
            if getattr(self, f) not in ("", "l1", "softplus_mean"):
                raise ValueError(f"`noisy_labels.{f}` must be '', 'l1' or 'softplus_mean', got {getattr(self, f)!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_GinNoisyLabels = gin.external_configurable(NoisyLabelsConfig, name="noisy_labels")


def _valid_loss(name: str) -> bool:
    base, sep, variant = str(name).partition(":")
    if base not in LOSSES:
        return False
    return not sep or (base in ("ldr_kl", "aldr_kl") and variant in _NORMS)


def loss_label(name: str) -> str:
    """Display name: ``'aldr_kl:none'`` → ``'ALDR-KL [norm none]'``."""
    base, sep, variant = name.partition(":")
    return LOSS_NAMES[base] + (f" [norm {variant}]" if sep else "")


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------


def parse_noise(setting: str) -> tuple[str, float]:
    """``'sym40'`` → ``('sym', 0.4)``; ``'asym40'`` → ``('asym', 0.4)``.

    Raises:
      ValueError: not of the form ``symR`` / ``asymR`` with R an integer percent in 0..99.
    """
    m = _NOISE_RE.match(str(setting))
    if not m:
        raise ValueError(f"noise setting {setting!r}: expected 'symR' or 'asymR' with R a percent in 0..99.")
    return m.group(1), int(m.group(2)) / 100.0


def corrupt_labels(labels: np.ndarray, setting: str, seed: int, num_classes: int,
                   asym_map: dict[int, int] | None = None) -> np.ndarray:
    """Noisy copy of ``labels`` under ``setting``; a pure function of ``(labels, setting, seed)``.

    Symmetric: with probability r a label becomes ``(y + u) mod K``, ``u`` uniform on
    ``1..K-1`` (a uniformly random *other* class). Asymmetric: a label ``y`` in ``asym_map``
    becomes ``asym_map[y]`` with probability r.
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
    and only truncated GCE reads ``epoch`` (plain GCE during the first ``tgce_warmup`` epochs: at
    initialisation every ``p_y ≈ 1/K < k``, so truncating from the start would prune every
    sample).
    """
    L = lossjax.losses
    if not _valid_loss(name):
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES} (or 'ldr_kl:<norm>', 'aldr_kl:<norm>').")
    name, sep, variant = name.partition(":")
    c = cfg
    if sep:
        field = "ldr_normalize" if name == "ldr_kl" else "aldr_normalize"
        c = dataclasses.replace(cfg, **{field: _NORMS[variant]})
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
    if name == "mae":
        return keep(lambda x, y: L.mae_loss(x, y, scale=c.mae_scale))
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}.")


# ---------------------------------------------------------------------------------------------
# data and model
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


def build_net(cfg: NoisyLabelsConfig, num_classes: int):
    """``MLP`` or ``SmallCNN``."""
    if cfg.model == "mlp":
        return MLP(hidden=(cfg.hidden,) * cfg.depth, out=num_classes)
    return SmallCNN(width=cfg.width, num_classes=num_classes)


def _tx(cfg: NoisyLabelsConfig) -> optax.GradientTransformation:
    base = optax.adam(cfg.learning_rate) if cfg.optimizer == "adam" else optax.sgd(cfg.learning_rate, momentum=0.9)
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), base)


# ---------------------------------------------------------------------------------------------
# vmapped training of one loss over all (seed, noise) runs
# ---------------------------------------------------------------------------------------------


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
    """Jitted ``init(seeds)``, ``epoch(state, y, epoch)`` and ``evaluate(state, x)``, vmapped over runs."""
    net = build_net(cfg, ds.num_classes)
    tx = _tx(cfg)
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
    """Train every (seed, noise) run of ``loss`` at once; write metrics and ``results.json``.

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
    for epoch in range(cfg.epochs):
        state, tr_loss = epoch_fn(state, y_dev, jnp.int32(epoch))
        acc = (np.asarray(predict(state, x_test)) == y_test[None]).mean(1)
        for i, a in enumerate(acc):
            curves[i].append(float(a))
        append_jsonl(metrics_path, {"epoch": epoch, "test_accuracy": [float(a) for a in acc],
                                    "train_loss": [float(v) for v in np.asarray(tr_loss)],
                                    "wall_time_s": time.perf_counter() - t0})
        if cfg.progress and ((epoch + 1) % cfg.log_every == 0 or epoch + 1 == cfg.epochs):
            by = {z: np.mean([a for (s, zz), a in zip(grid, acc) if zz == z]) for z in cfg.noise}
            print(f"{loss:8s} epoch {epoch + 1:3d}/{cfg.epochs}  clean test acc "
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
# the study and its report
# ---------------------------------------------------------------------------------------------


def _table(results: dict[str, dict], cfg: NoisyLabelsConfig, key: str = "final_test_accuracy") -> str:
    head = "| loss | " + " | ".join(cfg.noise) + " | mean rank |"
    lines = [head, "|---" * (len(cfg.noise) + 2) + "|"]
    means = {loss: {z: mean_std([100 * r[key] for r in res["runs"] if r["noise"] == z])[0] for z in cfg.noise}
             for loss, res in results.items()}
    ranks = {loss: [] for loss in results}
    for z in cfg.noise:
        order = sorted(results, key=lambda l: -means[l][z])
        for rank, loss in enumerate(order, 1):
            ranks[loss].append(rank)
    best = {z: max(means[l][z] for l in results) for z in cfg.noise}
    for loss, res in results.items():
        cells = []
        for z in cfg.noise:
            cell = fmt_mean_std([100 * r[key] for r in res["runs"] if r["noise"] == z])
            cells.append(f"**{cell}**" if means[loss][z] == best[z] else cell)
        lines.append(f"| {loss_label(loss)} | " + " | ".join(cells) + f" | {np.mean(ranks[loss]):.1f} |")
    return "\n".join(lines)


def _memo_table(results: dict[str, dict], cfg: NoisyLabelsConfig) -> str:
    noisy = [z for z in cfg.noise if parse_noise(z)[1] > 0]
    lines = ["| loss | " + " | ".join(noisy) + " |", "|---" * (len(noisy) + 1) + "|"]
    for loss, res in results.items():
        cells = [fmt_mean_std([100 * r["memorised_fraction"] for r in res["runs"] if r["noise"] == z], 1)
                 for z in noisy]
        lines.append(f"| {loss_label(loss)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict], cfg: NoisyLabelsConfig, path: str) -> str:
    """One panel per noise setting: mean ± std (over seeds) clean-test accuracy vs epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(cfg.noise)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.6), sharey=True, squeeze=False)
    for ax, z in zip(axes[0], cfg.noise):
        for loss, res in results.items():
            a = 100 * np.asarray([r["test_accuracy_curve"] for r in res["runs"] if r["noise"] == z])
            m, s = a.mean(0), a.std(0)
            x = np.arange(1, a.shape[1] + 1)
            ax.plot(x, m, label=loss_label(loss), lw=1.2)
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


def run_study(cfg: NoisyLabelsConfig, workdir: str, out: str | None, prov: dict | None = None) -> dict:
    """Train every loss (skipping finished ones), then write ``<out>/<stem>.{json,png}`` and the
    tables (returned; the Markdown report's prose lives in ``<out>/<stem>.md``, see
    :func:`write_report`)."""
    stem = cfg.name
    ds = load_data(cfg)
    t0 = time.perf_counter()
    results = {}
    for loss in cfg.losses:
        results[loss] = train_loss_group(loss, cfg, ds, os.path.join(workdir, loss.replace(":", "_")))
    wall = time.perf_counter() - t0
    summary = {
        "dataset": ds.name, "n_train": int(len(ds.x_train)), "n_test": int(len(ds.x_test)),
        "config": cfg.to_dict(), "study_wall_time_s": wall,
        "train_wall_time_s": {l: r["wall_time_s"] for l, r in results.items()},
        "final_test_accuracy": {l: {z: [r["final_test_accuracy"] for r in res["runs"] if r["noise"] == z]
                                    for z in cfg.noise} for l, res in results.items()},
        "best_epoch_test_accuracy": {l: {z: [r["best_test_accuracy"] for r in res["runs"] if r["noise"] == z]
                                         for z in cfg.noise} for l, res in results.items()},
        "memorised_fraction": {l: {z: [r["memorised_fraction"] for r in res["runs"] if r["noise"] == z]
                                   for z in cfg.noise} for l, res in results.items()},
        "realised_noise_rate": {z: [r["realised_noise_rate"] for r in next(iter(results.values()))["runs"]
                                    if r["noise"] == z] for z in cfg.noise},
        "tables": {"final": _table(results, cfg), "best_epoch": _table(results, cfg, "best_test_accuracy"),
                   "memorised": _memo_table(results, cfg)},
    }
    if out:
        prov = prov or report.provenance()
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, f"{stem}.json"), {**summary, "provenance": prov})
        plot(results, cfg, os.path.join(out, f"{stem}.png"))
        write_report(summary, os.path.join(out, f"{stem}.md"), stem, prov)
    return summary


_REPORT_MARK = "<!-- generated tables: everything below this line is rewritten by the study -->"


def _mean_ranks(acc: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Mean over noise settings of each loss's rank by mean final accuracy (1 = best)."""
    losses, noise = list(acc), list(next(iter(acc.values())))
    ranks: dict[str, list[int]] = {l: [] for l in losses}
    for z in noise:
        for r, l in enumerate(sorted(losses, key=lambda l: -float(np.mean(acc[l][z]))), 1):
            ranks[l].append(r)
    return {l: float(np.mean(v)) for l, v in ranks.items()}


def verdicts(summary: dict) -> str:
    """The report's verdict sentences, computed from ``summary["final_test_accuracy"]``.

    * The LDR paper's claim (Zhu, Ying & Yang, ICML 2023, §5 tables): ALDR-KL/LDR-KL reach the best
      or near-best average rank — here "near-best" means a mean rank among the three best losses.
    * The robust-loss claim shared by these papers: a robust loss beats CE under noisy labels —
      per noisy setting, the paired t-test (over seeds, same noise draw) of loss − CE accuracy.
    """
    acc = summary["final_test_accuracy"]
    out = []
    ranks = _mean_ranks(acc)
    order = sorted(ranks, key=ranks.get)
    ldr = [l for l in order if l.split(":")[0] in ("ldr_kl", "aldr_kl")]
    if ldr and len(ldr) < len(order):  # an ablation of LDR variants alone has no claim to rank
        top = order[:3]
        best_ldr = ldr[0]
        held = best_ldr in top
        out.append("* **LDR claim (best or near-best mean rank):** "
                   + ", ".join(f"{loss_label(l)} {ranks[l]:.1f}" for l in ldr)
                   + f" of {len(order)} losses; best {loss_label(order[0])} ({ranks[order[0]]:.1f}); top three: "
                   + ", ".join(loss_label(l) for l in top) + f" → **{'held' if held else 'did not hold'}** here.")
    order_z = summary.get("config", {}).get("noise") or list(next(iter(acc.values())))
    noisy = [z for z in order_z if parse_noise(z)[1] > 0]
    if "ce" in acc and noisy:
        rows = ["| loss | " + " | ".join(f"Δ vs CE at {z} (pp)" for z in noisy) + " |",
                "|---" * (len(noisy) + 1) + "|"]
        better = {}
        for l in acc:
            if l == "ce":
                continue
            cells = []
            for z in noisy:
                t = stats.paired_t_test(100 * (np.asarray(acc[l][z]) - np.asarray(acc["ce"][z])), better="higher")
                better.setdefault(l, []).append(t.verdict == "better")
                cells.append(f"{t.fmt(1)} ({t.verdict})")
            rows.append(f"| {loss_label(l)} | " + " | ".join(cells) + " |")
        counts = ", ".join(f"{z} {sum(v[i] for v in better.values())} of {len(better)}" for i, z in enumerate(noisy))
        out.append(f"* **Robust losses beat CE under label noise:** losses significantly better than CE (paired "
                   f"t-test at 5 % over seeds): {counts}; per loss:\n\n" + "\n".join(rows))
    return "\n".join(out) or "* (no claim applies to this set of losses: the tables below compare them)"


def write_report(summary: dict, path: str, stem: str, prov: dict | None = None) -> None:
    """Write the generated part of the report (provenance, verdicts, tables); a hand-written
    preamble (setting and caveats, no verdicts) above ``_REPORT_MARK`` in an existing ``path`` is kept."""
    pre = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if _REPORT_MARK in text:
            pre = text.split(_REPORT_MARK)[0]
    if not pre:
        pre = f"# Noisy labels ({summary['dataset']})\n\n"
    rates = {z: fmt_mean_std([100 * v for v in vs], 1) for z, vs in summary["realised_noise_rate"].items()}
    t = summary["tables"]
    body = (
        f"{_REPORT_MARK}\n\n{report.provenance_line(prov or report.provenance())}\n\n"
        "### Verdicts (computed from the numbers below)\n\n" + verdicts(summary) + "\n\n"
        f"Dataset {summary['dataset']}: {summary['n_train']} train (noisy labels) / {summary['n_test']} test "
        f"(clean). Realised fraction of corrupted training labels (%): "
        + ", ".join(f"{z} {v}" for z, v in rates.items())
        + f". Training wall time (recorded when each loss ran; 2 shared CPU cores unless noted): "
        f"{sum(summary['train_wall_time_s'].values()):.0f} s in all, "
        + ", ".join(f"{loss_label(l)} {w:.0f} s" for l, w in summary["train_wall_time_s"].items()) + ".\n\n"
        "### Clean test accuracy (%) at the final epoch, mean ± std over seeds\n\n"
        f"{t['final']}\n\n"
        "Bold: best mean in the column. Mean rank: average over the noise settings of the loss's rank "
        "(1 = best).\n\n"
        "### Best-epoch clean test accuracy (%) — an oracle (picked on the test set), for diagnosis only\n\n"
        f"{t['best_epoch']}\n\n"
        "### Memorisation: % of the corrupted training labels the final model predicts (train set)\n\n"
        f"{t['memorised']}\n\n"
        f"![curves]({stem}.png)\n"
    )
    with open(path, "w") as f:
        f.write(pre + body)


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
