"""Boundary- and topology-aware segmentation losses.

* :func:`boundary_weight_map` — per-pixel weights that emphasise class boundaries, from the
  morphological gradient of the label map (``mode="gradient"``) or a Gaussian band around the
  boundary (``mode="band"``, the U-Net weight-map form);
* :func:`boundary_aware_cross_entropy_loss` — the pixel-wise cross-entropy weighted by that map
  (the boundary-aware CE that is paired with the generalized Dice loss);
* :func:`skeleton_recall_loss` — Skeleton Recall (Kirchhoff et al., ECCV 2024): the soft recall
  of the ground-truth skeleton, computed with :func:`lossjax.losses.soft_skeleton`.

Layout as in :mod:`lossjax.losses.segmentation`: channels-last ``[B, *spatial, C]`` logits or
probabilities, integer label maps ``[B, *spatial]`` or soft maps ``[B, *spatial, C]``, per-pixel
``where`` ``[B, *spatial]`` (or per-image ``[B]``). Morphology runs with ``lax.reduce_window``
inside ``jit``; weight maps and skeletons depend on the labels only (no gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    compute_dtype,
    expect,
    finalize,
    margin_lse,
    nll_from_lu,
    prepare,
    require_floating,
    require_nonnegative,
    require_option,
    require_positive,
)
from lossjax.losses.segmentation import _class_mean, _class_select, _pool, _prepare_seg, soft_skeleton

__all__ = ["boundary_weight_map", "boundary_aware_cross_entropy_loss", "skeleton_recall_loss"]

_MODES = ("gradient", "band")


def _one_hot_maps(labels: ArrayLike, num_classes: int | None, name: str = "labels") -> jax.Array:
    """``[B, *S, C]`` float maps from integer ``[B, *S]`` (needs ``num_classes``) or soft labels."""
    t = jnp.asarray(labels)
    if jnp.issubdtype(t.dtype, jnp.integer):
        if num_classes is None:
            raise ValueError(f"Integer `{name}` need `num_classes`.")
        if t.ndim < 2:
            raise ValueError(f"`{name}` must be a label map [B, *spatial], got shape {t.shape}.")
        return jax.nn.one_hot(t, num_classes, dtype=jnp.float32)
    if jnp.issubdtype(t.dtype, jnp.floating):
        if t.ndim < 3:
            raise ValueError(f"Soft `{name}` must be [B, *spatial, C], got shape {t.shape}.")
        return t.astype(compute_dtype(t.dtype))
    raise TypeError(f"`{name}` must be integer or floating, got {t.dtype}.")


def _cross_dilate(x: jax.Array) -> jax.Array:
    """Dilation by the radius-1 cross (diamond): max of the axis-aligned 3-point max-pools."""
    nsp = x.ndim - 2
    out = x
    for i in range(nsp):
        out = jnp.maximum(out, _pool(x, tuple(3 if j == i else 1 for j in range(nsp)), "max"))
    return out


def boundary_weight_map(
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    mode: str = "gradient",
    width: int = 1,
    w0: float = 10.0,
    sigma: float = 5.0,
    max_distance: int = 15,
) -> jax.Array:
    r"""Per-pixel boundary weights ``w ≥ 1`` from a label map.

    With ``t_c`` the (one-hot or soft) map of class ``c``, the morphological gradient
    ``g = max_c [dilate_r(t_c) − erode_r(t_c)]`` (``r = width``, square ``(2r+1)^n`` window) is 1
    on every pixel within chessboard distance ``r`` of a class change, for hard labels.

    * ``mode="gradient"``: ``w = 1 + w0·g``.
    * ``mode="band"``: ``w = 1 + w0·exp(−d²/(2σ²))`` with ``d`` the chessboard distance to the
      nearest boundary pixel (``g`` at ``r = 1``), truncated at ``max_distance`` (beyond it
      ``w = 1``) — the border term of the U-Net weight map (Ronneberger et al. 2015, Eq. (2):
      ``w0 = 10``, ``σ ≈ 5`` px), with the distance to the boundary in place of the sum of the
      distances to the two nearest cells.

    Reference: O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
    Image Segmentation", MICCAI 2015, arXiv:1505.04597.

    Args:
      labels: integer ``[B, *spatial]`` (with ``num_classes``) or floating ``[B, *spatial, C]``.
      num_classes: number of classes for integer labels.
      mode: ``"gradient"`` or ``"band"``.
      width: ``r ≥ 1``, half-width of the gradient window (``"gradient"`` only).
      w0: boundary weight ``≥ 0``.
      sigma: band width ``σ > 0`` (``"band"`` only).
      max_distance: ``≥ 0``, the band's truncation (``"band"`` only; static).

    Returns:
      ``[B, *spatial]`` weights (no gradient).

    Example:
      >>> import jax.numpy as jnp
      >>> y = jnp.array([[0, 0, 1, 1, 1]])
      >>> boundary_weight_map(y, num_classes=2, w0=4.0)
      Array([[1., 5., 5., 1., 1.]], dtype=float32)
    """
    require_option(mode, _MODES, "mode")
    require_nonnegative(w0, "w0")
    require_positive(sigma, "sigma")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"`width` must be an int >= 1, got {width!r}.")
    if not isinstance(max_distance, int) or max_distance < 0:
        raise ValueError(f"`max_distance` must be an int >= 0, got {max_distance!r}.")
    t = jax.lax.stop_gradient(_one_hot_maps(labels, num_classes))
    nsp = t.ndim - 2
    r = width if mode == "gradient" else 1
    win = (2 * r + 1,) * nsp
    g = jnp.max(_pool(t, win, "max") - _pool(t, win, "min"), axis=-1)
    if mode == "gradient":
        return 1.0 + w0 * g
    # band: chessboard distance to the boundary by repeated 3^n dilation
    b = (g > 0).astype(t.dtype)[..., None]
    d = jnp.where(b[..., 0] > 0, 0.0, jnp.inf).astype(t.dtype)
    reach = b
    for k in range(1, max_distance + 1):
        reach = _pool(reach, (3,) * nsp, "max")
        d = jnp.where(jnp.isinf(d) & (reach[..., 0] > 0), float(k), d)
    band = jnp.where(jnp.isinf(d), 0.0, jnp.exp(-jnp.where(jnp.isinf(d), 0.0, d) ** 2 / (2.0 * sigma**2)))
    return 1.0 + w0 * band


def boundary_aware_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    mode: str = "gradient",
    width: int = 1,
    w0: float = 10.0,
    sigma: float = 5.0,
    max_distance: int = 15,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Boundary-weighted pixel-wise cross-entropy, one value per image.

    .. math::
        \ell_b = \frac{\sum_{i} m_i\, w_i\, \mathrm{CE}(x_i, y_i)}{\sum_i m_i}

    over the pixels ``i`` of image ``b`` (``m`` the ``where`` mask), with ``w`` the boundary weight
    map of :func:`boundary_weight_map` (or the given ``weights``) — the per-pixel weighted loss of
    the U-Net (Ronneberger et al. 2015, Eq. (1)), normalised by the number of pixels. With
    ``w0 = 0`` it is the mean pixel cross-entropy. Soft labels use ``Σ_k t_k CE(x, k)`` and give a
    soft morphological gradient. Usually summed with :func:`lossjax.losses.generalized_dice_loss`.

    Reference: O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
    Image Segmentation", MICCAI 2015, arXiv:1505.04597.

    Args:
      logits: floating ``[B, *spatial, C]``.
      labels: integer ``[B, *spatial]`` or probability ``[B, *spatial, C]``.
      weights: optional precomputed ``[B, *spatial]`` weights (then the map arguments are unused).
      mode, width, w0, sigma, max_distance: see :func:`boundary_weight_map`.
      where: optional bool ``[B, *spatial]`` (per pixel) or ``[B]`` (per image).

    Returns:
      ``[B]`` per-image losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.zeros((1, 4, 2))
      >>> y = jnp.array([[0, 0, 1, 1]])
      >>> round(float(boundary_aware_cross_entropy_loss(x, y, w0=1.0)[0]), 5)   # (1+2+2+1)/4 · ln 2
      1.03972
    """
    require_floating(logits, "logits")
    x = jnp.asarray(logits)
    if x.ndim < 3:
        raise ValueError(f"`logits` must be [B, *spatial, C], got shape {x.shape}.")
    pix = x.shape[:-1]
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape == pix[:1]:
            where = jnp.broadcast_to(where.reshape(pix[:1] + (1,) * (len(pix) - 1)), pix)
        elif where.shape != pix:
            raise ValueError(f"`where` must have shape {pix} (per pixel) or {pix[:1]} (per image), got {where.shape}.")
    p = prepare(x, labels, where=where)
    per_pixel = finalize(p, expect(p, nll_from_lu(margin_lse(p))))
    if weights is None:
        lab = jnp.asarray(labels)
        lab = jnp.clip(lab, 0, x.shape[-1] - 1) if jnp.issubdtype(lab.dtype, jnp.integer) else p.labels
        w = boundary_weight_map(
            lab, num_classes=x.shape[-1], mode=mode, width=width, w0=w0, sigma=sigma, max_distance=max_distance
        )
    else:
        require_floating(weights, "weights")
        w = jnp.asarray(weights)
        if w.shape != pix:
            raise ValueError(f"`weights` must have shape {pix}, got {w.shape}.")
        w = jax.lax.stop_gradient(w)
    w = w.astype(p.dtype)
    axes = tuple(range(1, len(pix)))
    m = jnp.ones(pix, bool) if p.row_mask is None else p.row_mask
    total = jnp.sum(jnp.where(m, w * per_pixel, 0.0), axis=axes)
    count = jnp.sum(m, axis=axes)
    return (total / jnp.maximum(count, 1).astype(p.dtype)).astype(p.dtype)


def skeleton_recall_loss(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    iters: int = 3,
    dilate: int = 1,
    include_background: bool = False,
    smooth: float = 1e-5,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Skeleton Recall loss: one minus the soft recall of the ground-truth skeleton.

    .. math::
        \ell_b = \operatorname{mean}_{c}\Big[1 - \frac{\sum_i p_{ic}\, S_{ic}}{\sum_i S_{ic} + s}\Big]

    where ``S_c`` is the skeleton of the ground-truth map of class ``c`` — here
    :func:`lossjax.losses.soft_skeleton` (``iters`` erosions) of the one-hot labels, then
    ``dilate`` dilations by the radius-1 cross (the paper's "tubed" skeleton) — computed from the
    labels only (no gradient). The mean runs over the classes whose skeleton is non-empty
    (background excluded unless ``include_background``); an image without such a class gives 0.
    Kirchhoff et al. (2024), Sec. 3: the skeleton is precomputed on the CPU with a binary
    skeletonisation and the loss is ``−recall`` (this returns ``1 − recall``: same gradient); here
    the skeleton is computed inside ``jit`` by the soft skeleton of clDice, which on binary masks
    is a (thicker-at-junctions) approximation of the morphological skeleton. Usually added to
    CE + Dice.

    Reference: Y. Kirchhoff, M. R. Rokuss, S. Roy et al., "Skeleton Recall Loss for Connectivity
    Conserving and Resource Efficient Segmentation of Thin Tubular Structures", ECCV 2024,
    arXiv:2404.03010.

    Args:
      probs: floating ``[B, *spatial, C]`` probabilities (or logits with ``from_logits``), 2 or 3
        spatial axes.
      labels: integer ``[B, *spatial]`` or floating ``[B, *spatial, C]`` (binary) maps.
      from_logits: apply a softmax (sigmoid when ``C = 1``).
      iters: soft-skeleton iterations (``≥ 0``).
      dilate: dilations of the skeleton (``≥ 0``; the paper tubes it: 1).
      include_background: whether class 0 counts.
      smooth: ``s ≥ 0`` added to the denominator.
      where: optional bool ``[B, *spatial]`` per-pixel mask.

    Returns:
      ``[B]`` per-image losses.

    Example:
      >>> import jax.numpy as jnp
      >>> y = jnp.zeros((1, 5, 5), jnp.int32).at[0, 2, :].set(1)   # a 1-pixel line
      >>> p = jnp.stack([1 - 0.8 * y, 0.8 * y], -1).astype(jnp.float32)
      >>> round(float(skeleton_recall_loss(p, y, dilate=0)[0]), 4)
      0.2
    """
    require_nonnegative(smooth, "smooth")
    if not isinstance(dilate, int) or dilate < 0:
        raise ValueError(f"`dilate` must be a non-negative int, got {dilate!r}.")
    s = _prepare_seg(probs, labels, axis=-1, where=where, from_logits=from_logits)
    if s.x.ndim not in (4, 5):
        raise ValueError(f"`probs` must be [B, *spatial, C] with 2 or 3 spatial axes, got shape {s.x.shape}.")
    skel = soft_skeleton(jax.lax.stop_gradient(s.t), iters=iters)
    for _ in range(dilate):
        skel = _cross_dilate(skel)
    skel = jnp.where(s.m, jnp.clip(skel, 0.0, 1.0), 0.0)
    axes = tuple(range(1, s.x.ndim - 1))
    tp = jnp.sum(s.x * skel, axis=axes)
    size = jnp.sum(skel, axis=axes)
    recall = tp / (size + smooth)
    active = (size > 0) & _class_select(s.x.shape[-1], include_background)
    # a NaN probability anywhere in the image must reach the output
    nan_img = jnp.any(jnp.isnan(s.x), axis=axes + (s.x.ndim - 1,))
    out = _class_mean(1.0 - recall, active)
    return jnp.where(nan_img, jnp.nan, out).astype(s.dtype)
