"""Task code of the segmentation study: synthetic vessel images, a two-branch tiny FCN, the losses, the metrics.

Data (:func:`make_images`): ``size × size`` grey images, generated deterministically in NumPy. Each image holds
1–2 smooth random curves ("vessels", width 1, 2 or 3 px, drawn from a random walk with a smoothly varying
heading) and 0–2 ellipses ("blobs", radii 1.5–3.5 px), each object with its own contrast in [0.5, 1];
a random intensity ramp, a Gaussian blur (σ = 0.8 px) and Gaussian noise make thin vessels hard to follow.
Targets: the binary foreground mask (vessels ∪ blobs), an instance map (each object its own id, later objects
drawn over earlier ones), spatially varying smoothed soft labels ``(1 − ε)·y + ε·G_σ * y`` (ε = 0.2, σ = 1 px;
Islam & Glocker, IPMI 2021) and SAUNA signed soft labels (:func:`lossjax.losses.sauna.sauna_transform`).

Model (:func:`forward`): a 2-branch fully-convolutional net in plain JAX (1,394 parameters at 6 channels) —
a shared 2-layer 3×3 stem, a local branch (one 3×3 conv) and a context branch (3×3 convs dilated 2 and 4),
each ending in a 1×1 conv to one logit map; the prediction is the mean of the two logits (the two sub-heads
exist for FCN's Tri-BCE). Every arm trains the same model; the prediction is "foreground" where the fused
logit is > 0 (``p = sigmoid(z)``; the SAUNA arms read ``tanh(z)`` as signed output, the same threshold).

SAUNA arms (Dang, Nguyen & Tiulpin, WACV 2025; released code Oulu-IMEDS/SAUNA): Stable Focal-L1 with the released
α = 2, β = 1 and the positive-class weight ``pos_weight`` set to the background : foreground pixel ratio of the
training masks (:func:`sauna_pos_weight`, ≈ 7.8 here) — with the library default ``pos_weight`` = 1 both SAUNA
arms drive ``tanh(z)`` to −1 on every pixel within ~10 steps and stay there (the gradient ``1 − tanh²`` vanishes);
``sauna_jaccard`` is the released SAUNA training loss, Stable Focal-L1 + 1 × signed Jaccard (summed over the
batch), since the signed Jaccard has no class weighting of its own and collapses alone.

Metrics (:func:`seg_metrics`, NumPy on the test set, prediction thresholded at 0.5): Dice and IoU (mean over
images), pooled precision / recall, clDice and skeleton recall (Zhang–Suen skeletons, :func:`skeletonize`),
boundary F1 within 1 px (:func:`boundary_f1`), the error in the number of 8-connected components
(``|#pred − #true|`` per image, :func:`count_components`), the instance split rate (fraction of ground-truth
instances whose predicted part is not exactly one component), the mean within-instance variance of ``p`` and
the pixel ECE (10 bins) against the hard mask.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

import lossjax
from experiments.common import small_models as sm

__all__ = ["LOSSES", "NUM_INSTANCES", "make_images", "soft_labels", "signed_labels", "init_params", "forward",
           "sauna_pos_weight", "loss_value", "skeletonize", "count_components", "boundary_f1", "seg_metrics", "METRICS",
           "train"]

LOSSES = ("ce", "dice", "ce_dice", "focal_dice", "bace_gdl", "cldice", "skel_recall", "tversky", "sadice",
          "tri_bce", "varce", "dice_soft", "jml_soft", "dml_soft", "sauna_jaccard", "stable_focal_l1")
METRICS = ("dice", "iou", "precision", "recall", "cldice", "skel_recall", "boundary_f1", "cc_error",
           "split_rate", "inst_var", "ece")
NUM_INSTANCES = 4  # at most 2 curves + 2 blobs
_DATA_SEED = 20261205
_EIGHT = np.ones((3, 3), bool)

# loss hyper-parameters (fixed: the study compares losses at their papers' or libraries' defaults)
FOCAL_GAMMA = 2.0  # Lin et al. 2017
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7  # Salehi et al. 2017 (recall-favouring)
SAD_ALPHA = 0.1  # self-adjusting exponent (see the study's caveats)
BOUNDARY_W0 = 10.0  # U-Net weight map w0 (Ronneberger et al. 2015)
VARCE_LAM = 1.0
SAUNA_ALPHA, SAUNA_BETA = 2.0, 1.0  # Stable Focal-L1 α, β of the released SAUNA config
SAUNA_SJM_WEIGHT = 1.0  # weight of the signed Jaccard next to Stable Focal-L1 (released ``distance_weight``)
SAUNA_ARMS = ("sauna_jaccard", "stable_focal_l1")
SKEL_WEIGHT = 1.0
SOFT_EPS, SOFT_SIGMA = 0.2, 1.0


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _curve(rng: np.random.Generator, size: int) -> np.ndarray:
    """Points (every 0.5 px) of a smooth random curve that starts near the border and heads inwards
    (redrawn until it runs at least ``size / 3`` px inside the image)."""
    while True:
        side = rng.integers(4)
        t = rng.uniform(3, size - 4)
        start = [(t, 1.0), (t, size - 2.0), (1.0, t), (size - 2.0, t)][side]
        heading = [np.pi / 2, -np.pi / 2, 0.0, np.pi][side] + rng.uniform(-0.7, 0.7)
        n = int(rng.integers(size, 2 * size + 8))
        turn = np.cumsum(rng.normal(0.0, 0.008, n)) + rng.normal(0.0, 0.03)  # smoothly varying curvature
        ang = heading + np.cumsum(turn)
        pts = np.asarray(start) + 0.5 * np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1), 0)
        inside = np.all((pts >= 0) & (pts <= size - 1), axis=1)
        stop = n if inside.all() else int(np.argmin(inside))
        if stop >= 2 * size // 3:
            return pts[:stop]


def _draw_curve(pts: np.ndarray, width: int, size: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    if width == 1:
        ij = np.clip(np.rint(pts).astype(int), 0, size - 1)
        m[ij[:, 0], ij[:, 1]] = True
        return m
    r = {2: 0.8, 3: 1.3}[width]
    g = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).reshape(-1, 1, 2)
    d = np.min(np.sum((g - pts[None]) ** 2, -1), axis=1)
    return (d <= r * r).reshape(size, size)


def _draw_blob(rng: np.random.Generator, size: int) -> np.ndarray:
    c = rng.uniform(4, size - 5, 2)
    a, b = rng.uniform(1.5, 3.5, 2)
    th = rng.uniform(0, np.pi)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    u = (i - c[0]) * np.cos(th) + (j - c[1]) * np.sin(th)
    v = -(i - c[0]) * np.sin(th) + (j - c[1]) * np.cos(th)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


@functools.lru_cache(maxsize=4)
def make_images(n: int, size: int = 32, noise: float = 0.2, seed: int = _DATA_SEED) -> dict[str, np.ndarray]:
    """``n`` synthetic images (deterministic in ``(n, size, noise, seed)``).

    Returns ``{"x": [n, size, size] float32 (standardised), "y": [n, size, size] int32 in {0, 1},
    "inst": [n, size, size] int32 in [0, NUM_INSTANCES]}``. Every image has at least one curve.

    Example:
      >>> d = make_images(4, 16)
      >>> d["x"].shape, d["y"].dtype, int(d["inst"].max()) <= NUM_INSTANCES, bool(d["y"].any(axis=(1, 2)).all())
      ((4, 16, 16), dtype('int32'), True, True)
    """
    if n < 1 or size < 12:
        raise ValueError(f"`n` must be >= 1 and `size` >= 12, got n={n}, size={size}.")
    rng = np.random.default_rng(seed)
    xs, ys, ins = [], [], []
    ii, jj = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    for _ in range(n):
        img = np.zeros((size, size))
        inst = np.zeros((size, size), np.int32)
        objs = [_draw_curve(_curve(rng, size), int(rng.integers(1, 4)), size) for _ in range(rng.integers(1, 3))]
        objs += [_draw_blob(rng, size) for _ in range(rng.integers(0, 3))]
        for k, m in enumerate(objs, 1):
            img = np.maximum(img, rng.uniform(0.5, 1.0) * m)
            inst[m] = k
        ramp = rng.uniform(-0.3, 0.3) * ii + rng.uniform(-0.3, 0.3) * jj
        img = ndimage.gaussian_filter(img, 0.8) + ramp + rng.normal(0.0, noise, (size, size))
        xs.append(img)
        ys.append((inst > 0).astype(np.int32))
        ins.append(inst)
    x = np.stack(xs)
    x = (x - x.mean()) / x.std()
    return {"x": x.astype(np.float32), "y": np.stack(ys), "inst": np.stack(ins)}


def soft_labels(y: np.ndarray, eps: float = SOFT_EPS, sigma: float = SOFT_SIGMA) -> np.ndarray:
    """Spatially varying smoothed labels ``(1 − ε)·y + ε·(G_σ * y)`` of binary masks ``[n, H, W]``
    (same side of 0.5 as ``y`` for ε < 0.5).

    Example:
      >>> y = np.zeros((1, 5, 5), np.int32); y[0, 2, 2] = 1
      >>> s = soft_labels(y)
      >>> bool((s[y == 1] > 0.5).all() and (s[y == 0] < 0.5).all())
      True
    """
    blur = ndimage.gaussian_filter(y.astype(np.float64), (0, sigma, sigma), mode="constant")
    return ((1 - eps) * y + eps * blur).astype(np.float32)


def signed_labels(y: np.ndarray) -> np.ndarray:
    """SAUNA signed soft labels in ``[−1, 1]`` of binary masks ``[n, H, W]`` (positive exactly on the mask)."""
    from lossjax.losses.sauna import sauna_transform

    return sauna_transform(y, spatial_ndim=2)


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------

# (name, kernel, in, out, dilation)
def _layers(ch: int) -> tuple[tuple[str, int, int, int, int], ...]:
    return (("stem1", 3, 1, ch, 1), ("stem2", 3, ch, ch, 1), ("loc", 3, ch, ch, 1), ("loc_out", 1, ch, 1, 1),
            ("ctx1", 3, ch, ch, 2), ("ctx2", 3, ch, ch, 4), ("ctx_out", 1, ch, 1, 1))


def init_params(seeds: Sequence[int], channels: int) -> dict[str, dict[str, jax.Array]]:
    """He-normal conv kernels (HWIO) and zero biases per seed, stacked on axis 0 (NumPy draws).

    Example:
      >>> p = init_params([0, 1], 6)
      >>> p["stem1"]["w"].shape, sm.count_params_per_seed(p)
      ((2, 3, 3, 1, 6), 1394)
    """
    out: dict[str, dict[str, list]] = {}
    rngs = [np.random.default_rng(1000 + int(s)) for s in seeds]
    for name, k, cin, cout, _ in _layers(channels):
        std = np.sqrt(2.0 / (k * k * cin)) if not name.endswith("_out") else np.sqrt(1.0 / (k * k * cin))
        w = np.stack([std * r.standard_normal((k, k, cin, cout)) for r in rngs])
        out[name] = {"w": jnp.asarray(w, jnp.float32),
                     "b": jnp.zeros((len(rngs), cout), jnp.float32)}
    return out


def _conv(x: jax.Array, p: dict, dil: int) -> jax.Array:
    """'Same' convolution ``x [B, H, W, Cin]`` * ``p["w"] [k, k, Cin, Cout]`` (+ bias) with dilation ``dil``, as
    one matrix product over the ``k²`` shifted copies of ``x`` (im2col): a seed-vmapped matmul, which XLA:CPU
    runs much faster than the grouped convolution that vmapping ``lax.conv`` produces."""
    k = p["w"].shape[0]
    if k == 1:
        return x @ p["w"][0, 0] + p["b"]
    r = dil * (k // 2)
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    cols = jnp.concatenate([xp[:, i * dil: i * dil + h, j * dil: j * dil + w] for i in range(k) for j in range(k)], -1)
    return cols @ p["w"].reshape(-1, p["w"].shape[-1]) + p["b"]


def forward(params: dict, x: jax.Array) -> dict[str, jax.Array]:
    """One seed's forward pass: ``x [B, H, W]`` → ``{"a", "b", "z"}`` logit maps ``[B, H, W]`` (local branch,
    context branch, fused = their mean)."""
    h = x[..., None]
    h = jax.nn.relu(_conv(h, params["stem1"], 1))
    h = jax.nn.relu(_conv(h, params["stem2"], 1))
    a = _conv(jax.nn.relu(_conv(h, params["loc"], 1)), params["loc_out"], 1)[..., 0]
    c = jax.nn.relu(_conv(h, params["ctx1"], 2))
    c = jax.nn.relu(_conv(c, params["ctx2"], 4))
    b = _conv(c, params["ctx_out"], 1)[..., 0]
    return {"a": a, "b": b, "z": 0.5 * (a + b)}


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------


def _two(z: jax.Array) -> jax.Array:
    """Two-class logits ``[0, z]``: softmax gives ``[1 − σ(z), σ(z)]``."""
    return jnp.stack([jnp.zeros_like(z), z], -1)


def _bce(z: jax.Array, y: jax.Array) -> jax.Array:
    return lossjax.losses.softmax_focal_loss(_two(z), y, gamma=0.0).mean()


def sauna_pos_weight(y: np.ndarray) -> float:
    """The SAUNA arms' ``pos_weight``: the background : foreground pixel ratio of the training masks ``y``
    (the usual ``pos_weight`` = #negatives / #positives of a class-weighted BCE; the released SAUNA code exposes
    this knob as ``pos_weight`` of its Stable Focal-L1).

    Example:
      >>> y = np.zeros((1, 4, 4), np.int32); y[0, :2, :2] = 1
      >>> sauna_pos_weight(y)
      3.0
    """
    fg = float(np.count_nonzero(y))
    if fg == 0:
        raise ValueError("`y` has no foreground pixel.")
    return (np.size(y) - fg) / fg


def loss_value(loss: str, out: dict[str, jax.Array], batch: dict[str, jax.Array], *,
               pos_weight: float = 1.0) -> jax.Array:
    """The scalar training loss of arm ``loss`` on one minibatch (``out`` from :func:`forward`).

    ``pos_weight`` is used by the SAUNA arms only (:func:`train` passes :func:`sauna_pos_weight` of the
    training masks)."""
    L = lossjax.losses
    z, y = out["z"], batch["y"]
    z1 = z[..., None]  # [B, H, W, 1]: one foreground channel (sigmoid) for the set-overlap losses

    def dice():
        return L.soft_dice_loss(z1, y, from_logits=True).mean()

    if loss == "ce":
        return _bce(z, y)
    if loss == "dice":
        return dice()
    if loss == "ce_dice":
        return _bce(z, y) + dice()
    if loss == "focal_dice":
        return L.softmax_focal_loss(_two(z), y, gamma=FOCAL_GAMMA).mean() + dice()
    if loss == "bace_gdl":
        return (L.boundary_aware_cross_entropy_loss(_two(z), y, w0=BOUNDARY_W0).mean()
                + L.generalized_dice_loss(_two(z), y, from_logits=True).mean())
    if loss == "cldice":
        return L.cl_dice_loss(z1, y, alpha=0.5, from_logits=True).mean()
    if loss == "skel_recall":
        return _bce(z, y) + dice() + SKEL_WEIGHT * L.skeleton_recall_loss(z1, y, from_logits=True).mean()
    if loss == "tversky":
        return L.tversky_loss(z1, y, alpha=TVERSKY_ALPHA, beta=TVERSKY_BETA, from_logits=True).mean()
    if loss == "sadice":
        return L.self_adjusting_dice_loss(z1.reshape(-1, 1), y.reshape(-1), alpha=SAD_ALPHA)
    if loss == "tri_bce":
        return L.tri_bce_loss(z.reshape(-1), out["a"].reshape(-1), out["b"].reshape(-1), y.reshape(-1))
    if loss == "varce":
        return L.variance_constrained_cross_entropy_loss(_two(z), y, batch["inst"], num_instances=NUM_INSTANCES,
                                                         lam=VARCE_LAM).mean()
    soft = batch["soft"][..., None]
    if loss == "dice_soft":
        return L.soft_dice_loss(z1, soft, aggregate="dataset", from_logits=True).mean()
    if loss == "jml_soft":
        return L.jaccard_metric_loss(z1, soft, aggregate="dataset", from_logits=True)
    if loss == "dml_soft":
        return L.dice_semimetric_loss(z1, soft, aggregate="dataset", from_logits=True)
    if loss in SAUNA_ARMS:
        # released SAUNA recipe: Stable Focal-L1 (α, β, pos_weight) on tanh(z) and the signed soft labels ...
        sfl1 = L.stable_focal_l1_loss(z, batch["signed"], alpha=SAUNA_ALPHA, beta=SAUNA_BETA, pos_weight=pos_weight,
                                      from_logits=True).mean()
        if loss == "stable_focal_l1":
            return sfl1
        # ... + the signed Jaccard (fg and bg parts jointly, summed over the batch): the released training loss
        return sfl1 + SAUNA_SJM_WEIGHT * L.sauna_jaccard_loss(z, batch["signed"], aggregate="dataset", from_logits=True)
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}.")


def prob_fg(loss: str, z: np.ndarray) -> np.ndarray:
    """Foreground probability of fused logits ``z``: ``σ(z)``; for the SAUNA arms (``tanh`` outputs)
    ``(tanh z + 1)/2 = σ(2z)`` — the same 0.5 threshold."""
    z = np.asarray(z, np.float64)
    scale = 2.0 if loss in SAUNA_ARMS else 1.0
    return 1.0 / (1.0 + np.exp(-scale * z))


# ------------------------------------------------------------------------------------------------
# metrics (NumPy)
# ------------------------------------------------------------------------------------------------


def _shift(m: np.ndarray, di: int, dj: int) -> np.ndarray:
    """``m[..., i + di, j + dj]`` with False outside."""
    p = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)])
    h, w = m.shape[-2:]
    return p[..., 1 + di: 1 + di + h, 1 + dj: 1 + dj + w]


def skeletonize(masks: np.ndarray) -> np.ndarray:
    """Zhang–Suen thinning of binary masks ``[..., H, W]`` (T. Y. Zhang, C. Y. Suen, "A fast parallel
    algorithm for thinning digital patterns", CACM 27(3), 1984), vectorised over the leading axes.

    Example:
      >>> m = np.zeros((7, 9), bool); m[2:5, 1:8] = True   # a 3-pixel-thick bar -> a piece of its centre row
      >>> skeletonize(m).astype(int)[3], int(skeletonize(m).sum())
      (array([0, 0, 1, 1, 1, 1, 0, 0, 0]), 4)
    """
    s = np.asarray(masks, bool).copy()
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4, p5 = _shift(s, -1, 0), _shift(s, -1, 1), _shift(s, 0, 1), _shift(s, 1, 1)
            p6, p7, p8, p9 = _shift(s, 1, 0), _shift(s, 1, -1), _shift(s, 0, -1), _shift(s, -1, -1)
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            b = sum(q.astype(np.int8) for q in ring[:8])
            a = sum((~ring[k] & ring[k + 1]).astype(np.int8) for k in range(8))
            if step == 0:
                c1, c2 = ~(p2 & p4 & p6), ~(p4 & p6 & p8)
            else:
                c1, c2 = ~(p2 & p4 & p8), ~(p2 & p6 & p8)
            kill = s & (b >= 2) & (b <= 6) & (a == 1) & c1 & c2
            if kill.any():
                s &= ~kill
                changed = True
        if not changed:
            return s


def count_components(masks: np.ndarray) -> np.ndarray:
    """Number of 8-connected components of each binary mask ``[n, H, W]`` (one ``scipy.ndimage.label`` call).

    Example:
      >>> m = np.zeros((2, 5, 5), bool); m[0, 0, 0] = m[0, 1, 1] = m[0, 3, 3] = True
      >>> count_components(m)
      array([2, 0])
    """
    m = np.asarray(masks, bool)
    st = np.zeros((3, 3, 3), bool)
    st[1] = True
    lab, n = ndimage.label(m, structure=st)
    if n == 0:
        return np.zeros(m.shape[0], np.int64)
    first = np.zeros(n + 1, np.int64)
    idx = np.flatnonzero(lab.ravel())
    img = idx // (m.shape[1] * m.shape[2])
    first[lab.ravel()[idx]] = img
    return np.bincount(first[1:], minlength=m.shape[0])


def _boundary(m: np.ndarray) -> np.ndarray:
    inner = m & _shift(m, -1, 0) & _shift(m, 1, 0) & _shift(m, 0, -1) & _shift(m, 0, 1)
    return m & ~inner


def _dilate8(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            out |= _shift(m, di, dj)
    return out


def boundary_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Pooled boundary F1 with a 1-pixel (chessboard) tolerance: boundary pixels are mask pixels with a
    4-neighbour outside the mask; precision = share of predicted boundary pixels within 1 px of a true one.

    Example:
      >>> t = np.zeros((1, 8, 8), bool); t[0, 2:6, 2:6] = True
      >>> boundary_f1(t, t), boundary_f1(np.roll(t, 1, axis=2), t), boundary_f1(np.roll(t, 3, axis=2), t) < 0.5
      (1.0, 1.0, True)
    """
    bp, bt = _boundary(np.asarray(pred, bool)), _boundary(np.asarray(true, bool))
    if not bp.any() and not bt.any():
        return 1.0
    prec = (bp & _dilate8(bt)).sum() / max(bp.sum(), 1)
    rec = (bt & _dilate8(bp)).sum() / max(bt.sum(), 1)
    return float(2 * prec * rec / (prec + rec)) if prec + rec > 0 else 0.0


def seg_metrics(p: np.ndarray, y: np.ndarray, inst: np.ndarray) -> dict[str, float]:
    """The study's test metrics of foreground probabilities ``p [n, H, W]`` against masks ``y`` and
    instance maps ``inst`` (see the module docstring; higher is better except ``cc_error``, ``split_rate``,
    ``inst_var``, ``ece``)."""
    pred, true = p > 0.5, y.astype(bool)
    ax = (1, 2)
    tp, sp, st = (pred & true).sum(ax), pred.sum(ax), true.sum(ax)
    union = (pred | true).sum(ax)
    sk_p, sk_t = skeletonize(pred), skeletonize(true)
    tprec = (sk_p & true).sum() / max(sk_p.sum(), 1)
    tsens = (sk_t & pred).sum() / max(sk_t.sum(), 1)
    k = np.arange(1, NUM_INSTANCES + 1)
    inst_masks = inst[:, None] == k[None, :, None, None]  # [n, K, H, W]
    present = inst_masks.any((2, 3)).ravel()
    parts = count_components((inst_masks & pred[:, None]).reshape(-1, *pred.shape[1:]))[present]
    cnt = inst_masks.sum((2, 3))
    mean = (inst_masks * p[:, None]).sum((2, 3)) / np.maximum(cnt, 1)
    var = (inst_masks * (p[:, None] - mean[..., None, None]) ** 2).sum((2, 3)) / np.maximum(cnt, 1)
    bins = np.minimum((p * 10).astype(int), 9).ravel()
    conf, hit = p.ravel(), true.ravel().astype(float)
    nb = np.bincount(bins, minlength=10)
    ece = np.sum(np.abs(np.bincount(bins, conf, 10) - np.bincount(bins, hit, 10))) / conf.size
    return {
        "dice": float(np.mean(2 * tp / np.maximum(sp + st, 1))),
        "iou": float(np.mean(tp / np.maximum(union, 1))),
        "precision": float(tp.sum() / max(sp.sum(), 1)),
        "recall": float(tp.sum() / max(st.sum(), 1)),
        "cldice": float(2 * tprec * tsens / (tprec + tsens)) if tprec + tsens > 0 else 0.0,
        "skel_recall": float(tsens),
        "boundary_f1": boundary_f1(pred, true),
        "cc_error": float(np.mean(np.abs(count_components(pred) - count_components(true)))),
        "split_rate": float(np.mean(parts != 1)),
        "inst_var": float(var.ravel()[present].mean()),
        "ece": float(ece) if nb.sum() else 0.0,
    }


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _arrays(n: int, size: int, noise: float, offset: int) -> dict[str, np.ndarray]:
    d = make_images(n, size, noise, _DATA_SEED + offset)
    return {**d, "soft": soft_labels(d["y"]), "signed": signed_labels(d["y"])}


def train(cfg: Any) -> dict:
    """Train arm ``cfg.loss`` for every seed of ``cfg.seeds`` at once (``jax.vmap``); per-seed test metrics.

    ``cfg`` needs ``loss, seeds, epochs, n_train, n_test, batch_size, learning_rate, weight_decay, channels,
    image_size, noise``. Train and test images are fixed (seeds vary the initialisation and batch order).
    """
    seeds = [int(s) for s in cfg.seeds]
    tr = _arrays(cfg.n_train, cfg.image_size, cfg.noise, 0)
    te = _arrays(cfg.n_test, cfg.image_size, cfg.noise, 1)
    S = len(seeds)
    data = {k: jnp.asarray(np.broadcast_to(v, (S, *v.shape))) for k, v in tr.items()}
    params = init_params(seeds, cfg.channels)
    spe = cfg.n_train // cfg.batch_size
    tx = sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * spe)
    opt = jax.vmap(tx.init)(params)
    pos_weight = sauna_pos_weight(tr["y"]) if cfg.loss in SAUNA_ARMS else 1.0

    def loss_fn(p, batch, step):
        return loss_value(cfg.loss, forward(p, batch["x"]), batch, pos_weight=pos_weight)

    epoch = sm.make_epoch_fn(loss_fn, tx, n=cfg.n_train, batch_size=cfg.batch_size)
    params, opt, curve = sm.run_epochs(epoch, params, opt, data, seeds, cfg.epochs, spe, what=cfg.loss)
    z = np.asarray(jax.jit(jax.vmap(lambda p, x: forward(p, x)["z"], in_axes=(0, None)))(params, jnp.asarray(te["x"])))
    per = [seg_metrics(prob_fg(cfg.loss, z[i]), te["y"], te["inst"]) for i in range(S)]
    return {"loss": cfg.loss, "seeds": seeds, "n_train": cfg.n_train, "n_test": cfg.n_test,
            "num_params": sm.count_params_per_seed(params), "train_loss_curve": np.asarray(curve).T.tolist(),
            "fg_fraction_test": float(te["y"].mean()),
            **({"sauna_pos_weight": pos_weight} if cfg.loss in SAUNA_ARMS else {}),
            "metrics": {m: [q[m] for q in per] for m in METRICS}}
