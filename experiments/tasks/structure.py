"""Task code of the structure study: hierarchical classification in a low-dimensional (hyperbolic or
Euclidean) space, and superpixel pooling for segmentation.

Task ``hier`` (:func:`make_tree_data`): a balanced tree of ``branching`` children per node and ``depth``
levels; every node gets a random Gaussian vector in ``R^D`` (scale ``decay^(level-1)``, so coarse levels
dominate), and an input is the sum of the vectors on its leaf's root-to-leaf path plus isotropic Gaussian
noise; the label is the leaf. An MLP encoder maps the input to ``dim`` (2–5) coordinates; the head is either
the Euclidean MLR ``ζ_k(x) = ⟨x − p_k, a_k⟩`` or, after :func:`lossjax.losses.poincare_expmap0`, the
hyperbolic MLR :func:`lossjax.losses.hyperbolic_mlr_logits` (Ganea, Bécigneul & Hofmann, NeurIPS 2018,
Sec. 3.1, Eq. 25) with offsets ``p_k = exp_0(u_k)`` (so every parameter is Euclidean and AdamW applies);
both heads have the same ``2·K·dim`` parameters. Loss: cross-entropy of the logits
(:func:`lossjax.losses.hyperbolic_cross_entropy_loss` for the hyperbolic head).

Task ``seg``: the synthetic vessel images and the tiny two-branch FCN of
:mod:`experiments.tasks.segmentation` (imported, unchanged). Superpixels (:func:`superpixels`): a
marker-based watershed (Meyer's flooding, written here) of the image's gradient magnitude with one
marker every ``cell`` pixels, or, as a control that ignores the image, a regular grid of ``cell × cell``
blocks. The superpixel arm blends the pixel logit with its superpixel's mean logit
(:func:`lossjax.losses.superpixel_pool`): ``z' = (1 − α) z + α · mean_{q ∈ R(p)} z_q``, trains BCE on ``z'``
and predicts from ``z'``. Measured: the segmentation metrics of :func:`experiments.tasks.segmentation.seg_metrics`
on ``z'``, and the within-superpixel variance (:func:`within_segment_variance`, on the test images' watershed
superpixels) of the blended output and of the raw pixel head ``z``.
"""

from __future__ import annotations

import functools
import heapq
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

import lossjax
from experiments.common import small_models as sm
from experiments.kit.mlp import MLP
from experiments.tasks import segmentation as seg

__all__ = ["make_tree_data", "macro_f1", "superpixels", "within_segment_variance", "train_hier", "train_seg"]

_TREE_SALT = 7919


# ------------------------------------------------------------------------------------------------
# hierarchical classification
# ------------------------------------------------------------------------------------------------


def make_tree_data(seed: int, *, branching: int, depth: int, input_dim: int, noise: float, decay: float,
                   n_train_per_leaf: int, n_test_per_leaf: int) -> dict[str, np.ndarray]:
    """Inputs and leaf labels of one random tree (deterministic in its arguments).

    Returns ``{"x_train": [n, D], "y_train": [n], "x_test", "y_test", "paths": [K, depth]}`` with
    ``K = branching**depth`` leaf classes; ``paths[k, l]`` is the index of leaf ``k``'s ancestor at level
    ``l + 1`` among that level's nodes.

    Example:
      >>> d = make_tree_data(0, branching=2, depth=3, input_dim=8, noise=0.5, decay=0.7, n_train_per_leaf=3,
      ...                    n_test_per_leaf=2)
      >>> d["x_train"].shape, d["x_test"].shape, d["paths"][5].tolist(), int(d["y_train"].max())
      ((24, 8), (16, 8), [1, 2, 5], 7)
    """
    if branching < 2 or depth < 1 or input_dim < 1 or noise < 0 or n_train_per_leaf < 1 or n_test_per_leaf < 1:
        raise ValueError("`branching` must be >= 2, `depth`, `input_dim` and the per-leaf counts >= 1, `noise` >= 0.")
    rng = np.random.default_rng(seed + _TREE_SALT)
    k = branching ** depth
    leaves = np.arange(k)
    paths = np.stack([leaves // branching ** (depth - 1 - lvl) for lvl in range(depth)], 1)
    node_vec = [decay ** lvl * rng.standard_normal((branching ** (lvl + 1), input_dim)) for lvl in range(depth)]
    centre = sum(node_vec[lvl][paths[:, lvl]] for lvl in range(depth))  # [K, D]

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(leaves, m)
        return (centre[y] + noise * rng.standard_normal((y.size, input_dim))).astype(np.float32), y.astype(np.int32)

    x_tr, y_tr = draw(n_train_per_leaf)
    x_te, y_te = draw(n_test_per_leaf)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te, "paths": paths}


def macro_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """Unweighted mean over classes of the F1 score (a class never predicted nor present counts 0).

    Example:
      >>> round(macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2), 5)
      0.73333
    """
    pred, true = np.asarray(pred), np.asarray(true)
    cls = np.arange(num_classes)
    tp = ((pred[:, None] == cls) & (true[:, None] == cls)).sum(0)
    fp = ((pred[:, None] == cls) & (true[:, None] != cls)).sum(0)
    fn = ((pred[:, None] != cls) & (true[:, None] == cls)).sum(0)
    return float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))


def _logits(head: str, p: dict, emb: jax.Array, c: float) -> jax.Array:
    L = lossjax.losses
    if head == "euclid":
        return ((emb[:, None, :] - p["u"][None]) * p["a"][None]).sum(-1)
    return L.hyperbolic_mlr_logits(L.poincare_expmap0(emb, c=c), L.poincare_expmap0(p["u"], c=c), p["a"], c=c)


def train_hier(cfg: Any) -> dict:
    """Train head ``cfg.head`` (``"euclid"`` | ``"hyper"``) for every seed at once (own tree, data and
    initialisation per seed); per-seed test accuracy, macro-F1 and coarse (level-1) accuracy.

    ``cfg`` needs ``head, seeds, dim, hidden, branching, depth, input_dim, noise, decay, n_train_per_leaf,
    n_test_per_leaf, epochs, batch_size, learning_rate, weight_decay, curvature``.
    """
    seeds = [int(s) for s in cfg.seeds]
    ds = [make_tree_data(s, branching=cfg.branching, depth=cfg.depth, input_dim=cfg.input_dim, noise=cfg.noise,
                         decay=cfg.decay, n_train_per_leaf=cfg.n_train_per_leaf,
                         n_test_per_leaf=cfg.n_test_per_leaf) for s in seeds]
    k = cfg.branching ** cfg.depth
    n = ds[0]["x_train"].shape[0]
    model = MLP(tuple(cfg.hidden), cfg.dim)
    rngs = [np.random.default_rng(int(s) + 11) for s in seeds]
    params = {"net": sm.init_stacked(model, cfg.input_dim, seeds),
              "u": jnp.asarray(np.stack([0.1 * r.standard_normal((k, cfg.dim)) for r in rngs]), jnp.float32),
              "a": jnp.asarray(np.stack([r.standard_normal((k, cfg.dim)) / np.sqrt(cfg.dim) for r in rngs]),
                               jnp.float32)}
    spe = n // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)
    c = float(cfg.curvature)

    def loss_fn(p, batch, step):
        emb = model.apply({"params": p["net"]}, batch["x"])["out"]
        if cfg.head == "hyper":
            L = lossjax.losses
            return L.hyperbolic_cross_entropy_loss(L.poincare_expmap0(emb, c=c), batch["y"],
                                                   L.poincare_expmap0(p["u"], c=c), p["a"], c=c).mean()
        return -jax.nn.log_softmax(_logits("euclid", p, emb, c))[jnp.arange(emb.shape[0]), batch["y"]].mean()

    epoch = sm.make_epoch_fn(loss_fn, tx, n=n, batch_size=cfg.batch_size)
    data = {"x": jnp.asarray(np.stack([d["x_train"] for d in ds])), "y": jnp.asarray(np.stack([d["y_train"]
                                                                                              for d in ds]))}
    params, opt, curve = sm.run_epochs(epoch, params, opt, data, seeds, cfg.epochs, spe, what=f"hier/{cfg.head}")

    @jax.jit
    @jax.vmap
    def predict(p, x):
        return _logits(cfg.head, p, model.apply({"params": p["net"]}, x)["out"], c).argmax(-1)

    pred = np.asarray(predict(params, jnp.asarray(np.stack([d["x_test"] for d in ds]))))
    y = ds[0]["y_test"]  # the same leaf order for every seed
    top = ds[0]["paths"][:, 0]
    return {"head": cfg.head, "dim": cfg.dim, "seeds": seeds, "num_classes": k, "n_train": int(n),
            "n_test": int(y.size), "train_loss_curve": np.asarray(curve).T.tolist(),
            "metrics": {"test_acc": [float((q == y).mean()) for q in pred],
                        "macro_f1": [macro_f1(q, y, k) for q in pred],
                        "coarse_acc": [float((top[q] == top[y]).mean()) for q in pred]}}


# ------------------------------------------------------------------------------------------------
# superpixel pooling for segmentation
# ------------------------------------------------------------------------------------------------


def superpixels(x: np.ndarray, *, kind: str, cell: int) -> tuple[np.ndarray, int]:
    """Superpixel ids ``[n, H, W]`` in ``[0, S)`` and ``S`` for images ``x [n, H, W]``.

    ``"grid"``: ``cell × cell`` blocks. ``"watershed"``: a marker watershed (Meyer's flooding) of the
    Sobel gradient magnitude of the (σ = 0.5 px smoothed) image, flooded from one marker at the centre
    of every grid block (so ``S`` is the same for both kinds).

    Example:
      >>> s, n = superpixels(np.zeros((1, 6, 6), np.float32), kind="grid", cell=3)
      >>> n, s[0, :, 0].tolist(), s[0, 0].tolist()
      (4, [0, 0, 0, 2, 2, 2], [0, 0, 0, 1, 1, 1])
    """
    if kind not in ("grid", "watershed") or cell < 1:
        raise ValueError(f"`kind` must be 'grid' or 'watershed' and `cell` >= 1, got {kind!r}, {cell}.")
    n, h, w = x.shape
    gh, gw = -(-h // cell), -(-w // cell)
    ii, jj = np.meshgrid(np.arange(h) // cell, np.arange(w) // cell, indexing="ij")
    grid = (ii * gw + jj).astype(np.int32)
    if kind == "grid":
        return np.broadcast_to(grid, (n, h, w)).copy(), gh * gw
    out = np.empty((n, h, w), np.int32)
    ci = np.minimum(np.arange(gh) * cell + cell // 2, h - 1)
    cj = np.minimum(np.arange(gw) * cell + cell // 2, w - 1)
    seeds = [(int(a), int(b)) for a in ci for b in cj]
    for i, img in enumerate(x):
        s = ndimage.gaussian_filter(img.astype(np.float64), 0.5)
        out[i] = _flood(np.hypot(ndimage.sobel(s, 0), ndimage.sobel(s, 1)), seeds)
    return out, gh * gw


def _flood(g: np.ndarray, seeds: list[tuple[int, int]]) -> np.ndarray:
    """Meyer's marker watershed on ``g [H, W]`` (4-connected): flood from ``seeds`` (label = index) in
    order of ``g``, ties first come first served (so a plateau splits by distance to the markers)."""
    h, w = g.shape
    lab = np.full((h, w), -1, np.int32)
    heap, n = [], 0
    for k, (a, b) in enumerate(seeds):
        lab[a, b] = k
        heap.append((g[a, b], n, a, b))
        n += 1
    heapq.heapify(heap)
    while heap:
        _, _, a, b = heapq.heappop(heap)
        for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            u, v = a + da, b + db
            if 0 <= u < h and 0 <= v < w and lab[u, v] < 0:
                lab[u, v] = lab[a, b]
                heapq.heappush(heap, (g[u, v], n, u, v))
                n += 1
    return lab


def within_segment_variance(p: np.ndarray, segments: np.ndarray, num_segments: int) -> float:
    """Mean over pixels (all images) of ``(p − mean of p over the pixel's superpixel)²``.

    Example:
      >>> within_segment_variance(np.array([[0.0, 1.0, 0.5, 0.5]]), np.array([[0, 0, 1, 1]]), 2)
      0.125
    """
    p = np.asarray(p, np.float64).reshape(p.shape[0], -1)
    s = np.asarray(segments).reshape(p.shape[0], -1)
    tot = 0.0
    for pi, si in zip(p, s):
        cnt = np.bincount(si, minlength=num_segments)
        mean = np.bincount(si, pi, minlength=num_segments) / np.maximum(cnt, 1)
        tot += float(((pi - mean[si]) ** 2).sum())
    return tot / p.size


def _dice(pred: np.ndarray, true: np.ndarray) -> float:
    tp, sp, st = (pred & true).sum((1, 2)), pred.sum((1, 2)), true.sum((1, 2))
    return float(np.mean(2 * tp / np.maximum(sp + st, 1)))


def _blend(z: jax.Array, segments: jax.Array, num_segments: int, alpha: float) -> jax.Array:
    pooled, _ = lossjax.losses.superpixel_pool(z[..., None], segments, num_segments=num_segments)
    b = z.shape[0]
    back = jnp.take_along_axis(pooled[..., 0], segments.reshape(b, -1), axis=1).reshape(z.shape)
    return (1.0 - alpha) * z + alpha * back


@functools.lru_cache(maxsize=4)
def _seg_arrays(n: int, size: int, noise: float, offset: int, kind: str, cell: int) -> dict[str, np.ndarray]:
    d = seg.make_images(n, size, noise, seg._DATA_SEED + offset)
    sp, _ = superpixels(d["x"], kind=kind, cell=cell)
    ws, _ = superpixels(d["x"], kind="watershed", cell=cell)
    return {**d, "sp": sp, "ws": ws}


def train_seg(cfg: Any) -> dict:
    """Train the segmentation FCN with ``cfg.superpixels`` (``"none"`` | ``"grid"`` | ``"watershed"``)
    pooling for every seed at once; per-seed test metrics (fixed images; seeds vary initialisation and
    batch order).

    ``cfg`` needs ``superpixels, alpha, cell, seeds, epochs, n_train, n_test, batch_size, learning_rate,
    weight_decay, channels, image_size, noise``.
    """
    seeds = [int(s) for s in cfg.seeds]
    kind = "grid" if cfg.superpixels == "none" else cfg.superpixels
    tr = _seg_arrays(cfg.n_train, cfg.image_size, cfg.noise, 0, kind, cfg.cell)
    te = _seg_arrays(cfg.n_test, cfg.image_size, cfg.noise, 1, kind, cfg.cell)
    ns = (-(-cfg.image_size // cfg.cell)) ** 2
    alpha = 0.0 if cfg.superpixels == "none" else float(cfg.alpha)
    S = len(seeds)
    data = {k: jnp.asarray(np.broadcast_to(tr[k], (S, *tr[k].shape))) for k in ("x", "y", "sp")}
    params = seg.init_params(seeds, cfg.channels)
    spe = cfg.n_train // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)

    def out_logit(p, x, sp):
        z = seg.forward(p, x)["z"]
        return z, (z if alpha == 0.0 else _blend(z, sp, ns, alpha))

    def loss_fn(p, batch, step):
        return seg.loss_value("ce", {"z": out_logit(p, batch["x"], batch["sp"])[1]}, batch)

    epoch = sm.make_epoch_fn(loss_fn, tx, n=cfg.n_train, batch_size=cfg.batch_size)
    params, opt, curve = sm.run_epochs(epoch, params, opt, data, seeds, cfg.epochs, spe,
                                       what=f"seg/{cfg.superpixels}")
    z, zb = jax.jit(jax.vmap(out_logit, in_axes=(0, None, None)))(params, jnp.asarray(te["x"]), jnp.asarray(te["sp"]))
    p_raw, p_out = jax.nn.sigmoid(np.asarray(z)), jax.nn.sigmoid(np.asarray(zb))
    p_raw, p_out = np.asarray(p_raw), np.asarray(p_out)
    per = [seg.seg_metrics(p_out[i], te["y"], te["inst"]) for i in range(S)]
    metrics = {m: [q[m] for q in per] for m in ("dice", "iou", "boundary_f1", "inst_var")}
    metrics["sp_var_out"] = [within_segment_variance(p_out[i], te["ws"], ns) for i in range(S)]
    metrics["sp_var_raw"] = [within_segment_variance(p_raw[i], te["ws"], ns) for i in range(S)]
    metrics["dice_raw"] = [_dice(p_raw[i] > 0.5, te["y"].astype(bool)) for i in range(S)]
    return {"superpixels": cfg.superpixels, "seeds": seeds, "n_train": cfg.n_train, "n_test": cfg.n_test,
            "num_segments": ns, "num_params": sm.count_params_per_seed(params),
            "train_loss_curve": np.asarray(curve).T.tolist(), "metrics": metrics}
