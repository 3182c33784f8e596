"""Task code of the geometry study (:mod:`experiments.geometry_study`).

* :func:`make_data` — digits splits: stratified random (``collapse``) or class-disjoint, digits
  0–4 for training and 5–9 for testing (``metric``);
* :func:`recall_at_k` — leave-one-out cosine recall@k;
* :func:`_batch_loss`, :func:`_nc` — each arm's training loss; NC1–NC4 of the training features
  (:func:`lossjax.losses.neural_collapse`);
* :func:`train` — every seed of one arm at once (``jax.vmap``) with the helpers of
  :mod:`experiments.common.small_models`; per-seed metrics in the layout of :mod:`experiments.arms`.

``cfg`` is the study's :class:`experiments.geometry_study.GeometryConfig`.
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
    from experiments.geometry_study import GeometryConfig

__all__ = ["NC_LOSSES", "ML_LOSSES", "NC_KEYS", "make_data", "recall_at_k", "train"]

NC_LOSSES = ("ce", "mse")
ML_LOSSES = ("ce", "ms", "triplet", "supcon", "softtriple", "metrix", "protonet", "proto_icnn")
NC_KEYS = ("nc1", "nc2_etf", "nc3", "nc4")
_C = 10
_C_SEEN = 5  # metric task: digits 0-4 train, 5-9 test
_DATA_SALT = 15485863


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def make_data(cfg: GeometryConfig, seed: int) -> dict[str, np.ndarray]:
    """``collapse``: a stratified random split of digits, ``n_train`` training images, the rest as
    test. ``metric``: every image of digits 0–4 for training, of 5–9 for testing (class-disjoint).

    Example:
      >>> from experiments.geometry_study import GeometryConfig
      >>> d = make_data(GeometryConfig(n_train=1000), 0)
      >>> d["x_train"].shape, d["x_test"].shape, bool(np.bincount(d["y_train"]).min() >= 97)
      ((1000, 64), (797, 64), True)
    """
    x, y = _digits()
    if cfg.task == "metric":
        tr, te = y < _C_SEEN, y >= _C_SEEN
        return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}
    rng = np.random.default_rng(seed + _DATA_SALT)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in range(_C)])
    cls = y[idx]
    rank = np.concatenate([np.arange((cls == c).sum()) / (cls == c).sum() for c in range(_C)])
    tr = np.sort(idx[np.argsort(rank, kind="stable")[: cfg.n_train]])
    te = np.setdiff1d(np.arange(len(y)), tr)
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def recall_at_k(emb: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out recall@k: fraction of queries with a same-class item among their k nearest
    others (cosine).

    Example:
      >>> e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
      >>> recall_at_k(e, np.array([0, 0, 1, 1]), 1), recall_at_k(e, np.array([0, 1, 0, 1]), 1)
      (1.0, 0.0)
    """
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    s = e @ e.T
    np.fill_diagonal(s, -np.inf)
    nn = np.argsort(-s, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).any(1).mean())


def _batch_loss(cfg: GeometryConfig, model: sm.MLP, p: dict, batch: dict, key: jax.Array) -> jax.Array:
    L = lossjax.losses
    x, y = batch["x"], batch["y"]
    if cfg.task == "collapse":
        out = model.apply({"params": p}, x)["out"]
        if cfg.loss == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return ((out - jax.nn.one_hot(y, _C)) ** 2).sum(-1).mean()
    emb = model.apply({"params": p["net"]}, x)["out"]
    if cfg.loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(emb @ p["w"][:, :_C_SEEN], y).mean()
    if cfg.loss == "ms":
        return L.multi_similarity_loss(emb, y, epsilon=0.1).mean()
    if cfg.loss == "triplet":
        return L.triplet_loss(emb, y, margin=0.2, mining="semihard").mean()
    if cfg.loss == "supcon":
        return L.supcon_loss(emb, y, temperature=0.1).mean()
    if cfg.loss == "softtriple":
        return (L.soft_triple_loss(emb, p["w"], y, centers_per_class=2).mean()
                + 0.2 * L.soft_triple_center_regularizer(p["w"], centers_per_class=2))
    if cfg.loss == "metrix":
        k1, k2 = jax.random.split(key)
        perm = jax.random.permutation(k1, x.shape[0])
        lam = jax.random.beta(k2, 2.0, 2.0, (x.shape[0],))
        mixed = model.apply({"params": p["net"]}, lam[:, None] * x + (1 - lam[:, None]) * x[perm])["out"]
        pos = L.mixup_positiveness(y, y, y[perm], lam)
        return (L.multi_similarity_loss(emb, y, epsilon=0.1).mean()
                + L.metrix_multi_similarity_loss(emb, mixed, pos).mean())
    protos = L.class_prototypes(emb, y, _C_SEEN)
    d2 = ((emb[:, None, :] - protos[None]) ** 2).sum(-1)
    proto_ce = optax.softmax_cross_entropy_with_integer_labels(-d2, y).mean()
    if cfg.loss == "protonet":
        return proto_ce
    return (proto_ce + L.proto_triplet_loss(emb, y, protos).mean() + L.icnn_loss(emb, y)) / 3.0


def _nc(cfg: GeometryConfig, apply, params, x: jax.Array, y: np.ndarray) -> dict[str, list[float]]:
    out = apply(params, x)
    per = []
    for i in range(y.shape[0]):
        k = {n: v[i] for n, v in params["head"].items()}
        m = lossjax.losses.neural_collapse(out["features"][i], jnp.asarray(y[i]), k["kernel"].T, k["bias"],
                                           num_classes=_C)
        per.append({key: float(getattr(m, key)) for key in NC_KEYS})
    return {key: [q[key] for q in per] for key in NC_KEYS}


def train(cfg: GeometryConfig) -> dict:
    """Train one arm for every seed at once; per-seed NC or retrieval metrics."""
    seeds = [int(s) for s in cfg.seeds]
    ds = [make_data(cfg, s) for s in seeds]
    data = {k: np.stack([d[k] for d in ds]) for k in ds[0]}
    n, d_in = data["x_train"].shape[1:]
    if cfg.task == "collapse":
        model = sm.MLP(tuple(cfg.hidden), _C)
        params = sm.init_stacked(model, d_in, seeds)
    else:
        model = sm.MLP(tuple(cfg.hidden), cfg.embed_dim)
        shape = (cfg.embed_dim, 2 * _C_SEEN)
        w = np.stack([np.random.default_rng(s + 3).standard_normal(shape) / np.sqrt(cfg.embed_dim)
                      for s in seeds]).astype(np.float32)
        params = {"net": sm.init_stacked(model, d_in, seeds), "w": jnp.asarray(w)}
    spe = n // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)

    def loss_fn(p, batch, step):
        key = jax.random.fold_in(jax.random.key(batch["seed"][0]), step)
        return _batch_loss(cfg, model, p, batch, key)

    epoch = sm.make_epoch_fn(loss_fn, tx, n=n, batch_size=cfg.batch_size)
    apply = sm.make_apply_fn(model, shared_inputs=False)
    tr = {"x": jnp.asarray(data["x_train"]), "y": jnp.asarray(data["y_train"]),
          "seed": jnp.asarray(np.repeat(np.asarray(seeds, np.uint32)[:, None], n, 1))}
    xs = {"train": tr["x"], "test": jnp.asarray(data["x_test"])}
    early: dict = {}

    def after_epoch(e: int, p: Any) -> None:
        if cfg.task == "collapse" and e + 1 == cfg.early_epoch:
            early.update(_nc(cfg, apply, p, xs["train"], data["y_train"]))

    params, opt, curve = sm.run_epochs(epoch, params, opt, tr, seeds, cfg.epochs, spe,
                                       what=f"{cfg.task}/{cfg.loss}", after_epoch=after_epoch)
    res: dict = {"task": cfg.task, "loss": cfg.loss, "seeds": seeds, "n_train": int(n),
                 "n_test": int(data["x_test"].shape[1]), "train_loss_curve": np.asarray(curve).T.tolist()}
    if cfg.task == "collapse":
        final = _nc(cfg, apply, params, xs["train"], data["y_train"])
        acc = {s: (np.asarray(apply(params, xs[s])["out"]).argmax(-1) == data[f"y_{s}"]).mean(-1).tolist()
               for s in ("train", "test")}
        res["metrics"] = {**final, **{f"{k}_early": v for k, v in early.items()},
                          "train_acc": acc["train"], "test_acc": acc["test"]}
        res["num_params"] = sm.count_params_per_seed(params)
    else:
        e_te = np.asarray(apply(params["net"], xs["test"])["out"])
        e_tr = np.asarray(apply(params["net"], xs["train"])["out"])
        res["metrics"] = {
            "recall_1": [recall_at_k(e_te[i], data["y_test"][i], 1) for i in range(len(seeds))],
            "recall_4": [recall_at_k(e_te[i], data["y_test"][i], 4) for i in range(len(seeds))],
            "utilization": [float(lossjax.losses.embedding_utilization(e_te[i], e_tr[i])) for i in range(len(seeds))]}
        res["num_params"] = sm.count_params_per_seed(params["net"])
    return res
