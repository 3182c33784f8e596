"""AnyLoss: confusion-matrix metrics as differentiable losses (Han, Moniz, Chawla, 2024,
arXiv 2405.14745).

Binary classification. The sigmoid probability ``p = σ(x)`` is sharpened by the approximation
function ``A(p) = σ(L·(p − ½))`` (``L`` the amplifying scale), and a soft confusion matrix is
formed over the batch: ``TP = Σ y A``, ``FN = Σ y − TP``, ``FP = Σ A − TP``,
``TN = N − Σ y − Σ A + TP``. The loss is ``1 − metric(TP, FN, FP, TN)``. It is
**non-decomposable**: one scalar per batch, and the batch size matters.

Reference: D. Han, N. Moniz, N. Chawla, "AnyLoss", arXiv:2405.14745 (2024).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    require_floating,
    require_nonnegative,
    require_option,
    require_positive,
)

__all__ = ["anyloss", "anyloss_loss", "ANYLOSS_METRICS"]

ANYLOSS_METRICS = ("f1", "fbeta", "balanced_accuracy", "gmean", "accuracy")


def anyloss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    amplify: float,
    metric: str = "f1",
    beta: float = 1.0,
    eps: float = 1e-5,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""AnyLoss: ``1 − metric`` of a soft confusion matrix of sharpened probabilities.

    .. math::
        A_i = \sigma\bigl(L\,(\sigma(x_i) - \tfrac12)\bigr),\quad
        TP = \sum_i y_i A_i,\ FN = \textstyle\sum_i y_i - TP,\ FP = \sum_i A_i - TP,\
        TN = N - \sum_i y_i - \sum_i A_i + TP.

    Metrics (as in the authors' code, ``s = eps`` guarding the denominators; ``y₁ = Σ y``,
    ``y₀ = N − y₁``):

    * ``'fbeta'``: ``(1 + β²)·TP / (β²·y₁ + Σ A + s)``; ``'f1'`` is ``β = 1``.
    * ``'balanced_accuracy'``: ``(y₀·TP + y₁·TN) / (2·y₀·y₁ + s)``.
    * ``'gmean'`` (the paper's surrogate of the geometric mean): ``TP·TN / (y₁·y₀ + s)``.
    * ``'accuracy'``: ``(TP + TN) / N``.

    As ``L → ∞`` the loss tends to ``1 −`` (the hard metric at threshold ½); ``A`` saturates for
    large ``L``, so gradients vanish far from ``p = ½`` by design. Permutation invariant over the
    batch. Binary only (the multi-class extension is the paper's future work).

    ``amplify`` has **no default** (``docs/open_questions.md``): the paper discusses a valid range of ``L`` and
    leaves its automatic choice to future work; the authors' README recommends a positive value in
    ``[2, 70]`` (an integer for convenience). The hybrid losses of their later extension
    (weighted BCE mixed with AnyLoss) are not included.

    Args:
      logits: floating binary logits, any shape ``[...]`` (every element is one item of the
        batch; use ``jax.vmap`` for one loss per group).
      labels: ``{0, 1}`` labels (integer, bool or floating) of the same shape.
      amplify: the amplifying scale ``L > 0``.
      metric: one of ``'f1'``, ``'fbeta'``, ``'balanced_accuracy'``, ``'gmean'``, ``'accuracy'``.
      beta: ``β > 0`` for ``'fbeta'``.
      eps: ``s ≥ 0`` added to the denominators.
      where: optional bool mask of the shape of ``logits``; masked items are removed from the
        batch (and from ``N``). An all-masked batch gives 0.

    Returns:
      A scalar loss (float32, or float64 for float64 input).

    References:
      D. Han, N. Moniz, N. V. Chawla, "AnyLoss: Transforming Classification Metrics into Loss
      Functions", KDD 2024, arXiv:2405.14745.

    Example:
      >>> import jax.numpy as jnp
      >>> x, y = jnp.array([2.0, -1.0, 0.3]), jnp.array([1, 0, 1])
      >>> print(f"{float(anyloss(x, y, amplify=10.0)):.6f}")
      0.115843
      >>> print(f"{float(anyloss(x, y, amplify=10.0, metric='balanced_accuracy')):.6f}")
      0.131064
    """
    require_option(metric, ANYLOSS_METRICS, "metric")
    require_positive(amplify, "amplify")
    require_positive(beta, "beta")
    require_nonnegative(eps, "eps")
    require_floating(logits, "logits")
    x = jnp.asarray(logits)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    y = jnp.asarray(labels)
    if y.shape != x.shape:
        raise ValueError(f"`labels` must have the shape of `logits` {x.shape}, got {y.shape}.")
    if not (jnp.issubdtype(y.dtype, jnp.number) or y.dtype == jnp.bool_):
        raise TypeError(f"`labels` must be numeric or bool, got {y.dtype}.")
    y = y.astype(dtype)
    if where is None:
        w = jnp.ones(x.shape, dtype)
    else:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape != x.shape:
            raise ValueError(f"`where` must have the shape of `logits` {x.shape}, got {where.shape}.")
        w = where.astype(dtype)
        x = jnp.where(where, x, 0.0)
        y = jnp.where(where, y, 0.0)
    a = jax.nn.sigmoid(amplify * (jax.nn.sigmoid(x) - 0.5)) * w
    n = jnp.sum(w)
    y1 = jnp.sum(y * w)
    y0 = n - y1
    sum_a = jnp.sum(a)
    tp = jnp.sum(y * a)
    tn = n - y1 - sum_a + tp
    if metric in ("f1", "fbeta"):
        b2 = 1.0 if metric == "f1" else beta**2
        value = (1.0 + b2) * tp / (b2 * y1 + sum_a + eps)
    elif metric == "balanced_accuracy":
        value = (y0 * tp + y1 * tn) / (2.0 * y0 * y1 + eps)
    elif metric == "gmean":
        value = tp * tn / (y1 * y0 + eps)
    else:  # accuracy
        value = (tp + tn) / jnp.maximum(n, 1.0)
    return jnp.where(n > 0, 1.0 - value, 0.0).astype(dtype)


#: Alias of :func:`anyloss` following the ``*_loss`` naming of the package.
anyloss_loss = anyloss
