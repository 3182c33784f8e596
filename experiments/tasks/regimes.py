"""Tasks of the training-regimes study (:mod:`experiments.regimes_study`): data, one training
run per seed (``jax.lax.scan`` over steps, ``jax.vmap`` over seeds) and metrics.

* ``semi`` — semi-supervised digits: a few labels, the rest unlabeled, Gaussian input noise as the
  perturbation, an EMA (mean) teacher; consistency none / MSE / RMT symmetric CE.
* ``unlearn`` — train a digits MLP on all classes, then unlearn one class with
  :func:`lossjax.losses.unlearning_joint_loss` (plain ascent: retain weight 0, no cap).
* ``ordinal`` — a synthetic ordinal regression task (a linear latent cut into ordered bins):
  nominal CE vs the Rasch / partial-credit ordinal CE.
* ``nlm`` — full-batch CE training of a digits MLP, tracking :func:`lossjax.losses.nlm_cosine`.
* ``gan`` — a 2-D mixture of 8 Gaussians on a circle, tiny MLP generator and critic; standard,
  relativistic and relativistic-average GAN losses, DRAGAN penalty.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm

__all__ = ["digits", "semi_data", "unlearn_data", "ordinal_data", "nlm_data", "gan_modes", "gan_sample_metrics",
           "energy_distance", "gan_runs", "gan_validation", "rank_mae", "train_task"]

_SALT = 7919


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as ``x ∈ [0, 1]^{1797×64}`` (float32) and labels (int32)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def _split(seed: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified train / test split of digits (index arrays)."""
    from sklearn.model_selection import train_test_split

    _, y = digits()
    tr, te = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=seed + _SALT)
    return np.sort(tr), np.sort(te)


def semi_data(cfg: Any, seed: int) -> dict[str, np.ndarray]:
    """``n_labeled`` class-balanced labeled examples, the whole training pool as unlabeled, a test set."""
    x, y = digits()
    tr, te = _split(seed, cfg.n_test)
    lab = tr[sm.stratified_subset(y[tr], cfg.n_labeled, seed + _SALT)]
    return {"xl": x[lab], "yl": y[lab], "xu": x[tr], "xte": x[te], "yte": y[te]}


def unlearn_data(cfg: Any, seed: int) -> dict[str, np.ndarray]:
    """Training pool ordered forget-class first (``nf`` of them), and the test set."""
    x, y = digits()
    tr, te = _split(seed, cfg.n_test)
    order = np.argsort(y[tr] != cfg.forget_class, kind="stable")
    tr = tr[order]
    return {"x": x[tr], "y": y[tr], "nf": np.int32((y[tr] == cfg.forget_class).sum()), "xte": x[te], "yte": y[te]}


def ordinal_data(cfg: Any, seed: int) -> dict[str, np.ndarray]:
    """Synthetic ordinal regression: ``x ~ N(0, I_d)``, latent ``u = w·x/‖w‖ + σ ε`` cut at the
    ``k/K`` quantiles of its distribution into ``K = n_bins`` ordered ranks.

    Example:
      >>> import types
      >>> d = ordinal_data(types.SimpleNamespace(n_train=5, n_test=3, dim=4, n_bins=3, label_noise=0.5), 0)
      >>> d["x"].shape, d["yte"].shape, int(d["y"].max()) < 3
      ((5, 4), (3,), True)
    """
    rng = np.random.default_rng(seed + _SALT)
    w = rng.standard_normal(cfg.dim)
    n = cfg.n_train + cfg.n_test
    x = rng.standard_normal((n, cfg.dim))
    u = x @ (w / np.linalg.norm(w)) + cfg.label_noise * rng.standard_normal(n)
    cuts = np.quantile(rng.standard_normal(200_000) * np.sqrt(1 + cfg.label_noise ** 2),
                       np.arange(1, cfg.n_bins) / cfg.n_bins)
    yy = np.searchsorted(cuts, u).astype(np.int32)
    return {"x": x[: cfg.n_train].astype(np.float32), "y": yy[: cfg.n_train],
            "xte": x[cfg.n_train:].astype(np.float32), "yte": yy[cfg.n_train:]}


def nlm_data(cfg: Any, seed: int) -> dict[str, np.ndarray]:
    """A class-balanced digits training subset of ``n_train`` and a test set."""
    x, y = digits()
    tr, te = _split(seed, cfg.n_test)
    sub = tr[sm.stratified_subset(y[tr], cfg.n_train, seed + _SALT)]
    return {"x": x[sub], "y": y[sub], "xte": x[te], "yte": y[te]}


def gan_modes(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """Centres of the ring mixture, ``radius·(cos 2πk/n, sin 2πk/n)``.

    Example:
      >>> gan_modes(4, 1.0).round(6).tolist()
      [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-0.0, -1.0]]
    """
    a = 2 * np.pi * np.arange(n_modes) / n_modes
    return (radius * np.stack([np.cos(a), np.sin(a)], -1)).astype(np.float32)


def gan_sample_metrics(samples: np.ndarray, modes: np.ndarray, std: float, *, min_frac: float = 0.01
                       ) -> dict[str, float]:
    """High-quality fraction (within ``3·std`` of the nearest mode) and modes covered (modes that
    received at least ``min_frac`` of the samples as high-quality ones).

    Example:
      >>> m = gan_sample_metrics(np.array([[1.0, 0.0], [1.01, 0.0], [0.0, 5.0]]), gan_modes(4, 1.0), 0.1)
      >>> round(m["hq_frac"], 4), m["modes_covered"]
      (0.6667, 1.0)
    """
    s, mu = np.asarray(samples, np.float64), np.asarray(modes, np.float64)
    d = np.linalg.norm(s[:, None, :] - mu[None], axis=-1)
    near, dist = d.argmin(-1), d.min(-1)
    hq = dist < 3.0 * std
    counts = np.bincount(near[hq], minlength=len(mu))
    return {"hq_frac": float(hq.mean()), "modes_covered": float((counts >= max(1.0, min_frac * len(s))).sum())}


def rank_mae(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute rank error ``mean |ŷ − y|``.

    Example:
      >>> rank_mae(np.array([0, 2, 1]), np.array([0, 0, 1]))
      0.6666666666666666
    """
    return float(np.mean(np.abs(np.asarray(pred, np.int64) - np.asarray(y, np.int64))))


# ----------------------------------------------------------------------------------------------
# training, one function per task; each returns {"metrics": {name: [S]}, ...extras}
# ----------------------------------------------------------------------------------------------


def _stack(ds: list[dict]) -> dict[str, jnp.ndarray]:
    return {k: jnp.asarray(np.stack([d[k] for d in ds])) for k in ds[0]}


def _keys(seeds: list[int], salt: int = 0) -> jax.Array:
    return jnp.stack([jax.random.key_data(jax.random.fold_in(jax.random.key(s), salt)) for s in seeds])


def _acc(z: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(z, -1) == y)


def _train_semi(cfg: Any, seeds: list[int]) -> dict:
    data = _stack([semi_data(cfg, s) for s in seeds])
    model = sm.MLP(tuple(cfg.hidden), 10)
    params = sm.init_stacked(model, 64, seeds)
    tx = optax.adam(cfg.learning_rate)
    f = lambda p, x: model.apply({"params": p}, x)["out"]  # noqa: E731

    def one(p, d, kd):
        key = jax.random.wrap_key_data(kd)

        def body(c, i):
            p, o, t = c
            k = jax.random.split(jax.random.fold_in(key, i), 4)
            xu = d["xu"][jax.random.randint(k[0], (cfg.batch_size,), 0, d["xu"].shape[0])]
            ramp = jnp.exp(-5.0 * (1.0 - jnp.minimum(i / (0.3 * cfg.steps), 1.0)) ** 2)  # Laine & Aila ramp-up

            def loss(p):
                xl = d["xl"] + cfg.input_noise * jax.random.normal(k[1], d["xl"].shape)
                ce = optax.softmax_cross_entropy_with_integer_labels(f(p, xl), d["yl"]).mean()
                if cfg.loss == "ce":
                    return ce
                zs = f(p, xu + cfg.input_noise * jax.random.normal(k[2], xu.shape))
                zt = jax.lax.stop_gradient(f(t, xu + cfg.input_noise * jax.random.normal(k[3], xu.shape)))
                if cfg.loss == "mse":
                    cons = jnp.sum((jax.nn.softmax(zs) - jax.nn.softmax(zt)) ** 2, -1).mean()
                else:
                    cons = lossjax.losses.symmetric_consistency_loss(zs, zt).mean()
                return ce + cfg.cons_weight * ramp * cons

            upd, o = tx.update(jax.grad(loss)(p), o, p)
            p = optax.apply_updates(p, upd)
            t = jax.tree.map(lambda a, b: cfg.ema_decay * a + (1 - cfg.ema_decay) * b, t, p)
            return (p, o, t), None

        (p, _, t), _ = jax.lax.scan(body, (p, tx.init(p), p), jnp.arange(cfg.steps))
        return {"test_acc": _acc(f(p, d["xte"]), d["yte"]), "teacher_acc": _acc(f(t, d["xte"]), d["yte"])}

    m = jax.jit(jax.vmap(one))(params, data, _keys(seeds))
    return {"metrics": {k: np.asarray(v, float).tolist() for k, v in m.items()},
            "n_labeled": cfg.n_labeled, "n_unlabeled": int(data["xu"].shape[1])}


def _train_unlearn(cfg: Any, seeds: list[int]) -> dict:
    ds = [unlearn_data(cfg, s) for s in seeds]
    data = _stack(ds)
    model = sm.MLP(tuple(cfg.hidden), 10)
    params = sm.init_stacked(model, 64, seeds)
    f = lambda p, x: model.apply({"params": p}, x)["out"]  # noqa: E731
    tx = optax.adam(cfg.learning_rate)
    tx_u = optax.adam(cfg.unlearn_lr)
    joint = cfg.loss == "joint"

    def one(p, d, kd):
        key = jax.random.wrap_key_data(kd)
        n = d["x"].shape[0]

        def pre(c, i):
            p, o = c
            idx = jax.random.randint(jax.random.fold_in(key, i), (cfg.batch_size,), 0, n)
            g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                f(p, d["x"][idx]), d["y"][idx]).mean())(p)
            upd, o = tx.update(g, o, p)
            return (optax.apply_updates(p, upd), o), None

        (p, _), _ = jax.lax.scan(pre, (p, tx.init(p)), jnp.arange(cfg.steps))
        forget_te = d["yte"] == cfg.forget_class

        def accs(p):
            hit = jnp.argmax(f(p, d["xte"]), -1) == d["yte"]
            return (jnp.sum(hit & forget_te) / jnp.sum(forget_te), jnp.sum(hit & ~forget_te) / jnp.sum(~forget_te))

        before = accs(p)
        ku = jax.random.fold_in(key, 10**6)

        def unl(c, i):
            p, o = c
            k1, k2 = jax.random.split(jax.random.fold_in(ku, i))
            fi = jax.random.randint(k1, (cfg.batch_size,), 0, d["nf"])
            ri = jax.random.randint(k2, (cfg.batch_size,), d["nf"], n)

            def loss(p):
                return lossjax.losses.unlearning_joint_loss(
                    f(p, d["x"][fi]), d["y"][fi], f(p, d["x"][ri]), d["y"][ri],
                    retain_weight=cfg.retain_weight if joint else 0.0, forget_cap=cfg.forget_cap if joint else None)

            upd, o = tx_u.update(jax.grad(loss)(p), o, p)
            return (optax.apply_updates(p, upd), o), None

        (p, _), _ = jax.lax.scan(unl, (p, tx_u.init(p)), jnp.arange(cfg.unlearn_steps))
        after = accs(p)
        return {"forget_acc": after[0], "retain_acc": after[1], "forget_acc_before": before[0],
                "retain_acc_before": before[1]}

    m = jax.jit(jax.vmap(one))(params, data, _keys(seeds))
    return {"metrics": {k: np.asarray(v, float).tolist() for k, v in m.items()},
            "forget_class": cfg.forget_class, "n_forget_train": [int(d["nf"]) for d in ds]}


def _train_ordinal(cfg: Any, seeds: list[int]) -> dict:
    data = _stack([ordinal_data(cfg, s) for s in seeds])
    K = cfg.n_bins
    rasch = cfg.loss == "rasch"
    model = sm.MLP(tuple(cfg.hidden), 1 if rasch else K)
    params = {"mlp": sm.init_stacked(model, cfg.dim, seeds),
              "tau": jnp.zeros((len(seeds), K - 1), jnp.float32)}
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)

    def logits(p, x):
        out = model.apply({"params": p["mlp"]}, x)["out"]
        return lossjax.losses.ordinal_logits(out[:, 0], p["tau"]) if rasch else out

    def loss(p, x, y):
        if rasch:
            out = model.apply({"params": p["mlp"]}, x)["out"]
            return lossjax.losses.ordinal_cross_entropy_loss(out[:, 0], p["tau"], y).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    def one(p, d):
        def body(c, _):
            p, o = c
            upd, o = tx.update(jax.grad(loss)(p, d["x"], d["y"]), o, p)
            return (optax.apply_updates(p, upd), o), None

        (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), None, length=cfg.steps)
        return jnp.argmax(logits(p, d["xte"]), -1)

    pred = np.asarray(jax.jit(jax.vmap(one))(params, data))
    yte = np.asarray(data["yte"])
    return {"metrics": {"mae": [rank_mae(p, y) for p, y in zip(pred, yte)],
                        "accuracy": [float(np.mean(p == y)) for p, y in zip(pred, yte)]}}


def _train_nlm(cfg: Any, seeds: list[int]) -> dict:
    data = _stack([nlm_data(cfg, s) for s in seeds])
    model = sm.MLP(tuple(cfg.hidden), 10)
    params = sm.init_stacked(model, 64, seeds)
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    f = lambda p, x: model.apply({"params": p}, x)["out"]  # noqa: E731

    def one(p, d):
        def body(c, _):
            p, o = c
            ce, g = jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                f(p, d["x"]), d["y"]).mean())(p)  # the CE gradient alone (AdamW's decay is decoupled)
            cos = lossjax.losses.nlm_cosine(g, p, per_tensor=False)
            upd, o = tx.update(g, o, p)
            return (optax.apply_updates(p, upd), o), (cos, ce, _acc(f(p, d["x"]), d["y"]))

        (p, _), (cos, ce, tr_acc) = jax.lax.scan(body, (p, tx.init(p)), None, length=cfg.steps)
        norm = jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree.leaves(p)))
        return cos, ce, tr_acc, _acc(f(p, d["xte"]), d["yte"]), norm

    cos, ce, tr_acc, te_acc, norm = (np.asarray(a, float) for a in jax.jit(jax.vmap(one))(params, data))
    T = cfg.steps
    lo, hi = int(0.05 * T), max(int(0.10 * T), int(0.05 * T) + 1)
    fit = [int(np.argmax(a >= 1.0)) if (a >= 1.0).any() else -1 for a in tr_acc]
    every = max(1, T // 100)
    late = cos[:, -max(1, T // 10):].mean(1)
    return {"metrics": {"cos_early": cos[:, lo:hi].mean(1).tolist(), "cos_late": late.tolist(),
                        "train_ce_late": ce[:, -1].tolist(), "test_acc": te_acc.tolist(), "param_norm": norm.tolist()},
            "step_train_acc_1": fit, "cos_curve": cos[:, ::every].tolist(), "curve_every": every}


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance ``2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖`` between two samples (the V-statistic,
    float64); zero iff the two distributions are equal (Székely & Rizzo, J. Stat. Plan. Inference 2013,
    Eq. 2.1 and Prop. 1).

    Example:
      >>> energy_distance(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]))
      10.0
      >>> x = np.random.default_rng(0).standard_normal((50, 2))
      >>> energy_distance(x, x)
      0.0
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def mean_dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(np.maximum(((a[:, None, :] - b[None]) ** 2).sum(-1), 0.0)).mean())

    return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def gan_runs(cfg: Any, seeds: list[int], learning_rates: list[float] | None = None,
             gp_weights: list[float] | None = None) -> dict:
    """Train one GAN per entry of ``seeds`` (all at once, ``jax.vmap``); run ``r`` uses the Adam learning
    rate ``learning_rates[r]`` for both nets and the DRAGAN weight ``gp_weights[r]`` (default: ``cfg``'s
    values for every run; a seed may repeat with different settings).

    Metrics per run over ``cfg.n_eval`` samples: ``modes_covered``, ``hq_frac``
    (:func:`gan_sample_metrics`), and ``energy_dist``, the :func:`energy_distance` between a second,
    fresh set of ``cfg.n_eval`` generated samples and as many fresh samples of the true ring.
    """
    n = len(seeds)
    lrs = jnp.asarray(learning_rates if learning_rates is not None else [cfg.learning_rate] * n, jnp.float32)
    gps = jnp.asarray(gp_weights if gp_weights is not None else [cfg.gp_weight] * n, jnp.float32)
    if lrs.shape != (n,) or gps.shape != (n,):
        raise ValueError(f"need one learning rate and one gp weight per run ({n}), got {lrs.shape}, {gps.shape}.")
    use_gp = bool(np.any(np.asarray(gps) > 0))
    modes = jnp.asarray(gan_modes(8, 2.0))
    gen, crit = sm.MLP(tuple(cfg.hidden), 2), sm.MLP(tuple(cfg.hidden), 1)
    pg = sm.init_stacked(gen, cfg.z_dim, seeds)
    pc = sm.init_stacked(crit, 2, [s + 1000 for s in seeds])
    tx = optax.scale_by_adam(b1=0.5)  # Adam (b1 0.5) without its step size, applied per run below
    G = lambda p, z: gen.apply({"params": p}, z)["out"]  # noqa: E731
    C = lambda p, x: crit.apply({"params": p}, x)["out"][:, 0]  # noqa: E731
    L = lossjax.losses
    B = cfg.batch_size

    def d_loss(pc, pg, xr, z, k, gp):
        cr, cf = C(pc, xr), C(pc, jax.lax.stop_gradient(G(pg, z)))
        if cfg.loss == "sgan":
            out = jax.nn.softplus(-cr).mean() + jax.nn.softplus(cf).mean()
        elif cfg.loss == "rsgan":
            out = L.relativistic_gan_loss(cr, cf).mean()
        else:
            out = L.relativistic_average_gan_loss(cr, cf)
        if use_gp:
            out = out + gp * L.input_gradient_penalty(lambda p, x, _: C(p, x), pc, xr, None, k, lam=1.0).mean()
        return out

    def g_loss(pg, pc, xr, z):
        cr, cf = C(pc, xr), C(pc, G(pg, z))
        if cfg.loss == "sgan":
            return jax.nn.softplus(-cf).mean()  # non-saturating generator loss
        if cfg.loss == "rsgan":
            return L.relativistic_gan_loss(cr, cf, player="generator").mean()
        return L.relativistic_average_gan_loss(cr, cf, player="generator")

    def real(k, m):
        k1, k2 = jax.random.split(k)
        return modes[jax.random.randint(k1, (m,), 0, 8)] + cfg.mode_std * jax.random.normal(k2, (m, 2))

    def one(pg, pc, kd, lr, gp):
        key = jax.random.wrap_key_data(kd)

        def step(p, g, o):
            upd, o = tx.update(g, o, p)
            return jax.tree.map(lambda a, u: a - lr * u, p, upd), o

        def body(c, i):
            pg, pc, og, oc = c
            k = jax.random.split(jax.random.fold_in(key, i), 5)
            xr, z = real(k[0], B), jax.random.normal(k[1], (B, cfg.z_dim))
            pc, oc = step(pc, jax.grad(d_loss)(pc, pg, xr, z, k[2], gp), oc)
            xr, z = real(k[3], B), jax.random.normal(k[4], (B, cfg.z_dim))
            pg, og = step(pg, jax.grad(g_loss)(pg, pc, xr, z), og)
            return (pg, pc, og, oc), None

        (pg, _, _, _), _ = jax.lax.scan(body, (pg, pc, tx.init(pg), tx.init(pc)), jnp.arange(cfg.steps))
        zs = [jax.random.normal(jax.random.fold_in(key, 2**31 - j), (cfg.n_eval, cfg.z_dim)) for j in (1, 2)]
        return G(pg, zs[0]), G(pg, zs[1]), real(jax.random.fold_in(key, 2**31 - 3), cfg.n_eval)

    samples, fresh, ring = (np.asarray(a) for a in jax.jit(jax.vmap(one))(pg, pc, _keys(seeds), lrs, gps))
    per = [gan_sample_metrics(s, np.asarray(modes), cfg.mode_std) for s in samples]
    return {"metrics": {**{k: [q[k] for q in per] for k in ("modes_covered", "hq_frac")},
                        "energy_dist": [energy_distance(f, r) for f, r in zip(fresh, ring)]},
            "samples_head": samples[:, :500].round(4).tolist()}


def gan_validation(cfg: Any, points: list[dict]) -> dict:
    """The GAN search's validation function (:func:`experiments.kit.tune.run_searches`): one GAN per
    point of ``points`` (dicts overriding ``learning_rate`` / ``gp_weight``) and seed of ``cfg.seeds``
    (the validation seeds), all in one :func:`gan_runs`; ``{metric: array [point, seed]}``."""
    seeds = [int(s) for s in cfg.seeds]
    runs = [(p.get("learning_rate", cfg.learning_rate), p.get("gp_weight", cfg.gp_weight)) for p in points]
    res = gan_runs(cfg, seeds * len(points), [lr for lr, _ in runs for _ in seeds],
                   [gp for _, gp in runs for _ in seeds])
    return {k: np.asarray(v, dtype=float).reshape(len(points), len(seeds)) for k, v in res["metrics"].items()}


def _train_gan(cfg: Any, seeds: list[int]) -> dict:
    return gan_runs(cfg, seeds)


_TRAIN = {"semi": _train_semi, "unlearn": _train_unlearn, "ordinal": _train_ordinal, "nlm": _train_nlm,
          "gan": _train_gan}


def train_task(cfg: Any) -> dict:
    """Train every seed of one arm (``cfg.task`` picks the task); per-seed metric lists."""
    seeds = [int(s) for s in cfg.seeds]
    res = _TRAIN[cfg.task](cfg, seeds)
    return {"task": cfg.task, "loss": cfg.loss, "seeds": seeds, **res}
