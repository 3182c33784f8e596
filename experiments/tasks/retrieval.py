"""Task code of the retrieval study (:mod:`experiments.retrieval_study`).

* :func:`make_data` — the synthetic multi-label task with known ground truth (Zipf label
  popularity, 1–4 graded positives per query, features from label prototypes plus noise);
* :func:`retrieval_metrics` — P@1, P@k, R@k, nDCG@k and the global (Mann–Whitney) AUC;
* :class:`_DualEncoder`, :func:`batch_loss` — the dual encoder (MLP query tower + label table,
  cosine / τ) and each arm's training loss;
* :func:`train` — every seed of one arm at once (``jax.vmap``) with the helpers of
  :mod:`experiments.common.small_models`; per-seed metrics in the layout of :mod:`experiments.arms`.

``cfg`` is the study's :class:`experiments.retrieval_study.RetrievalConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm

if TYPE_CHECKING:
    from experiments.retrieval_study import RetrievalConfig

__all__ = ["LOSSES", "METRICS", "make_data", "retrieval_metrics", "batch_loss", "train"]

LOSSES = ("bce", "infonce", "decoupled", "soft_topk", "mann_whitney", "pa_bce")
METRICS = ("p_at_1", "p_at_5", "r_at_5", "ndcg_at_5", "global_auc")
_DATA_SALT = 7919  # data seed = seed + salt (independent of the initialisation)


def make_data(cfg: RetrievalConfig, seed: int) -> dict[str, np.ndarray]:
    """Train/test features and graded relevance ``[n, L]`` (0 = negative) of one seed.

    Example:
      >>> from experiments.retrieval_study import RetrievalConfig
      >>> d = make_data(RetrievalConfig(n_train=8, n_test=4, num_labels=10, batch_size=8), 0)
      >>> d["x_train"].shape, d["rel_train"].shape, bool((d["rel_train"] > 0).sum(1).min() >= 1)
      ((8, 24), (8, 10), True)
    """
    rng = np.random.default_rng(seed + _DATA_SALT)
    L, n = cfg.num_labels, cfg.n_train + cfg.n_test
    protos = rng.standard_normal((L, cfg.dim_in))
    pop = 1.0 / np.arange(1, L + 1) ** 0.8
    pop /= pop.sum()
    rel = np.zeros((n, L))
    for i in range(n):
        m = rng.integers(1, 5)
        labs = rng.choice(L, size=m, replace=False, p=pop)
        rel[i, labs] = rng.integers(1, 4, size=m)
    x = rel @ protos / np.linalg.norm(rel, axis=1, keepdims=True) + cfg.noise * rng.standard_normal((n, cfg.dim_in))
    k = cfg.n_train
    return {"x_train": x[:k].astype(np.float32), "rel_train": rel[:k].astype(np.float32),
            "x_test": x[k:].astype(np.float32), "rel_test": rel[k:].astype(np.float32)}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann–Whitney AUC ``P(s_pos > s_neg) + ½ P(=)`` from ranks."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    n1, n0 = len(pos), len(neg)
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def retrieval_metrics(scores: np.ndarray, rel: np.ndarray, k: int = 5) -> dict[str, float]:
    """P@1, P@k, R@k, nDCG@k (gains ``2^r − 1``) and the global AUC of ``scores [n, L]`` against
    graded relevance ``rel [n, L]``.

    Example:
      >>> s = np.array([[3.0, 2.0, 1.0, 0.0]]); rel = np.array([[0.0, 2.0, 0.0, 1.0]])
      >>> m = retrieval_metrics(s, rel, k=2)
      >>> m["p_at_1"], m["p_at_5"], m["r_at_5"], round(m["global_auc"], 3)
      (0.0, 0.5, 0.5, 0.25)
    """
    order = np.argsort(-scores, axis=1)[:, :k]
    pos = rel > 0
    hit = np.take_along_axis(pos, order, 1)
    gains = np.take_along_axis(2.0 ** rel - 1.0, order, 1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(2.0 ** rel - 1.0, axis=1)[:, ::-1][:, :k]
    return {"p_at_1": float(hit[:, 0].mean()), "p_at_5": float(hit.mean()),
            "r_at_5": float((hit.sum(1) / pos.sum(1)).mean()),
            "ndcg_at_5": float(((gains * disc).sum(1) / (ideal * disc).sum(1)).mean()),
            "global_auc": _auc(scores[pos], scores[~pos])}


class _DualEncoder:
    """Query MLP + label table; ``scores = cos(q, w_l) / τ``."""

    def __init__(self, cfg: RetrievalConfig):
        self.cfg = cfg
        self.mlp = sm.MLP(tuple(cfg.hidden), cfg.embed_dim)

    def init(self, seeds: Sequence[int]) -> dict:
        net = sm.init_stacked(self.mlp, self.cfg.dim_in, seeds)
        tab = np.stack([np.random.default_rng(s + 1).standard_normal((self.cfg.num_labels, self.cfg.embed_dim))
                        for s in seeds]).astype(np.float32)
        return {"net": net, "labels": jnp.asarray(tab)}

    def scores(self, params: dict, x: jax.Array) -> jax.Array:
        q = self.mlp.apply({"params": params["net"]}, x)["out"]
        q = q / jnp.linalg.norm(q, axis=-1, keepdims=True).clip(1e-6)
        w = params["labels"] / jnp.linalg.norm(params["labels"], axis=-1, keepdims=True).clip(1e-6)
        return q @ w.T / self.cfg.temperature


def batch_loss(cfg: RetrievalConfig, s: jax.Array, rel: jax.Array) -> jax.Array:
    """Mean loss of arm ``cfg.loss`` over a batch of scores ``[B, L]`` and relevance ``[B, L]``."""
    L = lossjax.losses
    pos = rel > 0
    if cfg.loss == "bce":
        return optax.sigmoid_binary_cross_entropy(s, pos.astype(s.dtype)).sum(-1).mean()
    if cfg.loss == "infonce":
        return L.infonce_loss(s, pos).mean()
    if cfg.loss == "decoupled":
        return L.decoupled_softmax_loss(s, pos).mean()
    if cfg.loss == "soft_topk":
        return L.soft_topk_loss(s, pos, k=cfg.topk).mean()
    if cfg.loss == "mann_whitney":
        q = min(cfg.mw_queries, s.shape[0])  # the batch is a random sample: its first q queries are too
        return L.mann_whitney_loss(s[:q], pos[:q], mode="global")
    return (L.weighted_listwise_bce(s, pos.astype(s.dtype)) + L.profit_aware_pairwise_bce(s, rel)).mean()


def train(cfg: RetrievalConfig) -> dict:
    """Train one arm for every seed at once; per-seed test metrics and the P@1 curve."""
    seeds = [int(s) for s in cfg.seeds]
    ds = [make_data(cfg, s) for s in seeds]
    data = {k: np.stack([d[k] for d in ds]) for k in ds[0]}
    enc = _DualEncoder(cfg)
    params = enc.init(seeds)
    spe = cfg.n_train // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)

    def loss_fn(p, batch, step):
        return batch_loss(cfg, enc.scores(p, batch["x"]), batch["rel"])

    epoch = sm.make_epoch_fn(loss_fn, tx, n=cfg.n_train, batch_size=cfg.batch_size)
    score_fn = jax.jit(jax.vmap(enc.scores))
    train_data = {"x": jnp.asarray(data["x_train"]), "rel": jnp.asarray(data["rel_train"])}
    x_test = jnp.asarray(data["x_test"])
    curve, losses = [], []
    for e in range(cfg.epochs):
        params, opt, loss = epoch(params, opt, train_data, sm.epoch_keys(seeds, e), jnp.int32(e * spe))
        s = np.asarray(score_fn(params, x_test))
        curve.append([retrieval_metrics(s[i], data["rel_test"][i], cfg.topk)["p_at_1"] for i in range(len(seeds))])
        losses.append(np.asarray(loss).tolist())
    per_seed = [retrieval_metrics(s[i], data["rel_test"][i], cfg.topk) for i in range(len(seeds))]
    return {"loss": cfg.loss, "seeds": seeds, "metrics": {m: [p[m] for p in per_seed] for m in METRICS},
            "p_at_1_curve": np.asarray(curve).T.tolist(), "train_loss": np.asarray(losses).T.tolist(),
            "num_params": sm.count_params_per_seed(params)}
