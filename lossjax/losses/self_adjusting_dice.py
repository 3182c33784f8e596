"""Self-adjusting Dice loss (Li et al., ACL 2020).

Soft overlap losses for data-imbalanced classification, binary (one logit, sigmoid) or
multi-class (K logits, softmax; the per-class losses are averaged over classes):

* :func:`self_adjusting_dice_loss` — Dice with the self-adjusting factor ``(1 − p)^α`` that
  down-weights easy examples (``α = 0`` is plain soft Dice; ``square_denominator=True`` the
  V-Net form).

The Tversky loss the paper compares with is :func:`lossjax.losses.tversky_loss` (module
:mod:`lossjax.losses.segmentation`, ``from_logits=True``); :func:`tversky_loss` here is a thin,
unexported compatibility call into it with this module's logits layout.

The loss comes in the paper's per-example form (``set_level=False``) and in the set-level form the
official code trains with (``set_level=True``: soft counts summed over every item of the
batch, one scalar). ``optax.losses.dice_loss`` computes the set-level Tversky/Dice without the
self-adjusting factor or masks and serves as a test oracle.

The probabilities are formed stably: ``1 − p`` is ``sigmoid(−x)`` (binary) or ``sigmoid(ℓu_c)``
from the leave-one-out log-sum-exp of :mod:`lossjax.losses._core` (multi-class), and
``(1 − p)^α = exp(α·log(1 − p))``.

Reference: X. Li, X. Sun, Y. Meng, J. Liang, F. Wu, J. Li, "Dice Loss for Data-imbalanced NLP Tasks",
ACL 2020 (§3–4); open points in ``docs/open_questions.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    finalize,
    margin_lse,
    prepare,
    require_floating,
    require_nonnegative,
    require_positive,
    softmax,
)
from lossjax.losses.segmentation import tversky_loss as _tversky

__all__ = ["self_adjusting_dice_loss"]


class _Probs(NamedTuple):
    prob: jax.Array  # [..., C]
    log1m: jax.Array  # [..., C] log(1 − p)
    target: jax.Array  # [..., C]
    valid: jax.Array  # [..., C] bool: entries that count
    prepared: object


def _probs(logits: ArrayLike, labels: ArrayLike, axis: int, where: ArrayLike | None) -> _Probs:
    require_floating(logits, "logits")
    x = jnp.asarray(logits)
    if x.ndim < 1:
        raise ValueError("`logits` must have a class axis; got a scalar.")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"`axis`={axis} is out of range for `logits` of rank {x.ndim}.")
    k = x.shape[axis]
    lab = jnp.asarray(labels)
    if k == 1:
        # Binary: sigmoid of the single logit; labels in {0, 1} (integer, batch shape) or
        # probabilities (floating, batch shape or the shape of `logits`).
        batch_shape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
        if lab.dtype == jnp.bool_:
            raise TypeError("`labels` must be integer or floating, got bool.")
        if lab.shape == batch_shape:
            lab = jnp.expand_dims(lab, axis)
        elif lab.shape != x.shape:
            raise ValueError(
                f"Binary `labels` must have shape {batch_shape} or {x.shape}, got {lab.shape}."
            )
        if jnp.issubdtype(lab.dtype, jnp.integer):
            lab = jnp.clip(lab, 0, 1)
        lab = lab.astype(jnp.promote_types(x.dtype, jnp.float32))
        p = prepare(x, lab, axis=axis, where=where)
        z = p.logits
        prob = jax.nn.sigmoid(z)
        log1m = jax.nn.log_sigmoid(-z)
        target = p.labels
    else:
        p = prepare(x, lab, axis=axis, where=where)
        prob = softmax(p)
        log1m = jax.nn.log_sigmoid(margin_lse(p._replace(soft=True)))
        if p.soft:
            target = p.labels
        else:
            target = jax.nn.one_hot(p.labels, k, dtype=p.dtype)
    valid = jnp.ones(prob.shape, bool) if p.class_mask is None else p.class_mask
    if p.row_mask is not None:
        valid = valid & p.row_mask[..., None]
    target = jnp.where(valid, target, 0.0)
    prob = jnp.where(valid, prob, 0.0)
    return _Probs(prob, log1m, target, valid, p)


def _adjust(prob: jax.Array, log1m: jax.Array, alpha: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(p̃, 1 − p̃)`` with ``p̃ = (1 − p)^α · p``, ``0^0 = 1`` and finite gradients.

    ``1 − p̃ = (1 − p) + p·(1 − (1 − p)^α)`` is a sum of non-negative terms (no cancellation).
    """
    finite = jnp.isfinite(log1m)
    log1m = jnp.where(finite, log1m, -1e30)  # p = 1: (1 − p)^α = 0 for α > 0, 1 for α = 0
    a_log = alpha * log1m
    p_adj = jnp.exp(a_log) * prob
    one_minus = jnp.exp(log1m) + prob * -jnp.expm1(a_log)
    return p_adj, one_minus


def _class_mean(per_class: jax.Array, valid: jax.Array, axis: int = -1) -> jax.Array:
    count = jnp.sum(valid, axis=axis)
    total = jnp.sum(jnp.where(valid, per_class, 0.0), axis=axis)
    return total / jnp.maximum(count, 1).astype(total.dtype)


def _finish_set_level(per_class: jax.Array, class_present: jax.Array, dtype) -> jax.Array:
    return _class_mean(per_class, class_present).astype(dtype)


def self_adjusting_dice_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 1.0,
    smooth: float = 1.0,
    square_denominator: bool = False,
    set_level: bool = True,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Self-adjusting Dice loss (DSC) of Li et al. (ACL 2020).

    With ``p̃ = (1 − p)^α p`` (the self-adjusting factor; ``α = 0`` gives plain soft Dice) and
    smoothing ``γ`` (``smooth``), per example and class

    .. math::
        \mathrm{DSC}_{ic} = 1 - \frac{2\,\tilde p_{ic}\,y_{ic} + \gamma}
                                     {\tilde p_{ic} + y_{ic} + \gamma},

    and, set-level (``set_level=True``, as the official code trains),

    .. math::
        \mathrm{DSC}_c = 1 - \frac{2\sum_i \tilde p_{ic} y_{ic} + \gamma}
                                  {\sum_i \tilde p_{ic} + \sum_i y_{ic} + \gamma}.

    ``square_denominator=True`` squares ``p̃`` and ``y`` in the denominator (V-Net form, the
    paper's "DL"). Binary input (one logit on ``axis``) uses ``p = sigmoid(x)`` and the single
    class ``c = 1``; multi-class input uses ``p = softmax(x)`` and averages the per-class losses
    over the (unmasked) classes.

    Differences from the official code (ShannonAI ``DiceLoss``), on purpose: there the
    multi-class path *sums* the class losses and divides a per-example numerator by the
    batch-level denominator before averaging; here the multi-class set-level loss is the mean
    over classes of proper set-level class losses (the binary case matches it exactly). The code
    defaults are ``α = 0``, ``smooth = 1e-4``; the paper's tuned ``α`` per task (``γ = 1`` in its
    table) is an open question (``docs/open_questions.md``); the default ``α = 1`` here is the
    simplest self-adjusting choice.

    Inherent behaviour (not "fixed"): with ``α > 0`` a confidently wrong negative contributes
    almost nothing (``(1 − p)^α p → 0`` as ``p → 1``), and the per-example DSC with ``α = 1``
    is minimised at ``p = ½`` for positives. Keep ``smooth > 0`` (an empty positive set is
    ``0/0`` otherwise).

    Args:
      logits: floating ``[..., K]``; ``K = 1`` is the binary (sigmoid) case.
      labels: multi-class: integer ``[...]`` or probability vectors ``[..., K]``; binary:
        integer ``{0, 1}`` or probabilities, of shape ``[...]`` or ``[..., 1]``.
      alpha: self-adjusting exponent ``α ≥ 0``.
      smooth: smoothing ``γ > 0``.
      square_denominator: V-Net squared denominator.
      set_level: one batch-level scalar (default) or per-example losses.
      axis: class axis.
      where: optional bool mask, per example or per class. Set-level: masked items/classes are
        removed from the soft counts (an all-masked batch gives 0). Per example: masked rows
        give 0.

    Returns:
      A scalar (``set_level=True``) or ``[...]`` per-example losses.

    References:
      X. Li, X. Sun, Y. Meng, J. Liang, F. Wu, J. Li, "Dice Loss for Data-imbalanced NLP
      Tasks", ACL 2020, arXiv:1911.02855.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0], [-1.0], [0.3]])
      >>> y = jnp.array([1, 0, 1])
      >>> self_adjusting_dice_loss(x, y, alpha=0.0, set_level=False).round(4)
      Array([0.0414, 0.2119, 0.1653], dtype=float32)
      >>> print(f"{float(self_adjusting_dice_loss(x, y, alpha=0.0)):.6f}")
      0.172242
    """
    require_nonnegative(alpha, "alpha")
    require_positive(smooth, "smooth")
    pr = _probs(logits, labels, axis, where)
    pt, ompt = _adjust(pr.prob, pr.log1m, alpha)
    pt = jnp.where(pr.valid, pt, 0.0)
    ompt = jnp.where(pr.valid, ompt, 0.0)
    y = pr.target
    pd = pt * pt if square_denominator else pt
    yd = y * y if square_denominator else y
    # 1 − (2 p̃ y + γ)/(D + γ) = (D − 2 p̃ y)/(D + γ), with D − 2p̃y formed without cancellation:
    # p̃(1 − y) + y(1 − p̃)   (plain),   (p̃(1 − y) − y(1 − p̃))² = (p̃ − y)²   (squared).
    if square_denominator:
        gap = jnp.square(pt * (1.0 - y) - y * ompt)
    else:
        gap = pt * (1.0 - y) + y * ompt
    p = pr.prepared
    if not set_level:
        per_class = gap / (pd + yd + smooth)
        return finalize(p, _class_mean(per_class, pr.valid))
    lead = tuple(range(pt.ndim - 1))
    per_class = jnp.sum(gap, lead) / (jnp.sum(pd, lead) + jnp.sum(yd, lead) + smooth)
    present = jnp.any(pr.valid, axis=lead)
    return _finish_set_level(per_class, present, p.dtype)


def tversky_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
    set_level: bool = True,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Compatibility call: the Tversky loss in the form of Li et al. (ACL 2020), computed by
    :func:`lossjax.losses.tversky_loss` (the package's one Tversky loss; use it directly).

    Not exported from :mod:`lossjax.losses`. It maps the classification layout of this module
    (logits ``[..., K]``, one smoothing ``γ``, set-level or per-example) onto
    ``lossjax.losses.tversky_loss(logits, labels, alpha=α, beta=β, smooth_nr=γ, smooth_dr=γ,
    from_logits=True)`` with ``aggregate="dataset"`` (``set_level=True``, one scalar: every
    item's soft counts summed, the Li et al. / official-code form) or ``aggregate="image"`` on
    one-item "images" (``set_level=False``, per example):

    .. math::
        \mathrm{TL}_c = 1 - rac{TP_c + \gamma}{TP_c + lpha\,FP_c + eta\,FN_c + \gamma}

    (binary: one logit, sigmoid; multi-class: softmax, mean over classes). Defaults
    ``α = 0.3, β = 0.7`` are Salehi et al.'s recall-favouring choice. Only per-example ``where``
    masks (``[...]``) are accepted.

    Args:
      logits: floating ``[..., K]``; ``K = 1`` is the binary case.
      labels: integer ``[...]``, or probabilities ``[..., K]`` (binary: also ``[...]``).
      alpha, beta: false-positive / false-negative weights ``≥ 0``.
      smooth: smoothing ``γ > 0``.
      set_level: one batch-level scalar (default) or per-example losses.
      axis: class axis.
      where: optional bool per-example mask ``[...]``.

    Returns:
      A scalar (``set_level=True``) or ``[...]`` per-example losses.

    References:
      S. S. M. Salehi, D. Erdogmus, A. Gholipour, MLMI 2017, arXiv:1706.05721; X. Li et al.,
      ACL 2020, arXiv:1911.02855.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0], [-1.0], [0.3]])
      >>> y = jnp.array([1, 0, 1])
      >>> print(f"{float(tversky_loss(x, y, alpha=0.5, beta=0.5)):.6f}")
      0.142152
    """
    require_floating(logits, "logits")
    require_positive(smooth, "smooth")
    x = jnp.asarray(logits)
    if x.ndim < 1:
        raise ValueError("`logits` must have a class axis; got a scalar.")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"`axis`={axis} is out of range for `logits` of rank {x.ndim}.")
    x = jnp.moveaxis(x, axis, -1)
    k, batch = x.shape[-1], x.shape[:-1]
    lab = jnp.asarray(labels)
    if jnp.issubdtype(lab.dtype, jnp.floating):
        if k == 1 and lab.shape == batch:
            lab = lab[..., None]
        elif lab.ndim == x.ndim:
            lab = jnp.moveaxis(lab, axis, -1)
        lab = lab.reshape((-1, k)) if lab.shape[:-1] == batch else lab
    elif lab.shape == batch:
        lab = lab.reshape(-1)
    w = None
    if where is not None:
        w = jnp.asarray(where)
        if w.shape != batch:
            raise ValueError(f"`where` must be a per-example mask of shape {batch}, got {w.shape}.")
        w = w.reshape(-1)
    x = x.reshape((-1, k))
    kw = dict(alpha=alpha, beta=beta, smooth_nr=smooth, smooth_dr=smooth, from_logits=True)
    if set_level:
        return _tversky(x, lab, aggregate="dataset", where=w, **kw)
    one = _tversky(x[:, None], lab[:, None], aggregate="image", where=None if w is None else w[:, None], **kw)
    return one.reshape(batch)
