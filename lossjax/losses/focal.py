"""Imbalance-oriented softmax losses: focal, dual cross-entropy, class-balanced weights.

* :func:`softmax_focal_loss` — multi-class focal loss with a log-space focal factor.
* :func:`dual_cross_entropy_loss` and :func:`dual_cross_entropy_focal_loss`.
* :func:`class_balanced_weights` (effective number of samples) and
  :func:`per_example_class_weights` to apply any per-class weight vector to a per-example loss.

What optax already does well is called, not rewritten: sigmoid (per-element) focal loss is
``optax.losses.sigmoid_focal_loss``, PolyLoss is ``optax.losses.poly_loss_cross_entropy`` and
label smoothing is ``optax.losses.smooth_labels`` + ``optax.losses.softmax_cross_entropy``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    expect,
    finalize,
    is_concrete,
    log_softmax,
    nll_from_lu,
    prepare,
    require_floating,
    require_nonnegative,
    require_positive,
    require_range,
    require_rank,
)
from lossjax.losses.comp_sum import _lu, _valid

__all__ = [
    "softmax_focal_loss",
    "dual_cross_entropy_loss",
    "dual_cross_entropy_focal_loss",
    "class_balanced_weights",
    "per_example_class_weights",
]


# --------------------------------------------------------------------------------------------
# private helpers
# --------------------------------------------------------------------------------------------


def _focal_weight(lu: jax.Array, gamma: ArrayLike) -> jax.Array:
    """``(1 − p)^γ = exp(γ·log_sigmoid(ℓu))``; finite value and gradient for any γ ≥ 0.

    ``ℓu = −∞`` (no other class) is clamped to a large finite negative value first, so that
    ``γ = 0`` gives ``exp(0·finite) = 1`` instead of ``exp(0·(−∞)) = NaN``. Above ``ℓu = 100``
    the weight is ``exp(−γ·e^{−ℓu}) = 1`` exactly (float32 and float64) and its derivative
    ``γ·w·σ(−ℓu)`` is below ``1e-41``: ``ℓu`` is held at 100 there (a double where), so that the
    cotangent ``γ·(−log p_y)`` of a product ``w·(−log p_y)`` never meets ``σ(−ℓu) = 0`` as
    ``inf·0`` when ``−log p_y`` is near the float32 maximum (logits ``±3e38``).
    """
    lo = jnp.asarray(jnp.finfo(lu.dtype).min / 4, lu.dtype)
    hi = jnp.asarray(100.0, lu.dtype)
    lu = jnp.where(lu > hi, hi, jnp.maximum(lu, lo))
    return jnp.exp(gamma * jax.nn.log_sigmoid(lu))


def _check_class_vector(alpha: ArrayLike | None, num_classes: int, name: str) -> jax.Array | None:
    if alpha is None:
        return None
    arr = jnp.asarray(alpha)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be numeric, got {arr.dtype}.")
    if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != num_classes):
        raise ValueError(
            f"`{name}` must be a scalar or a vector of shape ({num_classes},) (one weight per "
            f"class), got shape {arr.shape}."
        )
    if is_concrete(alpha) and np.any(np.asarray(alpha) < 0):
        raise ValueError(f"`{name}` must be non-negative.")
    return arr


def _apply_class_weights(p: Prepared, per_class: jax.Array, weights: jax.Array | None) -> jax.Array:
    """``w_y·ℓ_y`` (integer labels) or ``Σ_k t_k w_k ℓ_k`` (soft); per-class or label entry."""
    if weights is None:
        return expect(p, per_class)
    weights = weights.astype(p.dtype)
    if weights.ndim == 0:
        return weights * expect(p, per_class)
    if p.soft:
        return expect(p, weights * per_class)
    return weights[p.labels] * per_class


def _softmax_focal(
    p: Prepared, gamma: ArrayLike, alpha: jax.Array | None, detach_weight: bool = False
) -> jax.Array:
    lu = _lu(p)
    # ℓu = +inf (p_y = 0): the weight is 1 and the loss −log 0 = inf; take that branch apart so
    # its gradient is the limit (1 per unit ℓu) instead of 0·inf = NaN.
    at_inf = lu == jnp.inf
    lu_safe = jnp.where(at_inf, 0.0, lu)
    w = _focal_weight(lu_safe, gamma)
    if detach_weight:
        w = jax.lax.stop_gradient(w)
    fl = jnp.where(at_inf, nll_from_lu(lu), w * nll_from_lu(lu_safe))
    return _apply_class_weights(p, fl, alpha)


def _dce_regularizer(p: Prepared, alpha: ArrayLike) -> jax.Array:
    """``Σ_k (1 − t_k) log(α + p_k)`` over candidate classes (``log α`` offset via logaddexp)."""
    logp = log_softmax(p)
    reg = jnp.logaddexp(jnp.log(jnp.asarray(alpha, p.dtype)), logp)
    valid = _valid(p)
    if p.soft:
        w = jnp.where(valid, 1.0 - p.labels, 0.0)
    else:
        not_y = jnp.arange(p.num_classes) != p.labels[..., None]
        w = (valid & not_y).astype(p.dtype)
    return jnp.sum(jnp.where(w != 0, w * reg, 0.0), axis=-1)


# --------------------------------------------------------------------------------------------
# public losses
# --------------------------------------------------------------------------------------------


def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: ArrayLike | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Multi-class (softmax) focal loss.

    .. math:: \ell_{\text{fl}}(x, y) = -\alpha_y\,(1 - p_y)^\gamma \log p_y

    Computed as ``exp(γ·log_sigmoid(ℓu))·softplus(ℓu)``: the naive ``(1 − softmax)^γ`` gives a
    NaN gradient for γ < 1 at ``p_y → 1`` (e.g. γ = 0.5 at logits ``[40, 0]``) and rounds
    ``1 − p_y`` to 0 much earlier. γ = 0 (α = None) is cross-entropy; ``0 ≤ FL ≤ CE``.

    ``alpha``: None (no weighting), a scalar (multiplies every class uniformly, as kornia's
    ``focal_loss`` does — it is not RetinaNet's binary α_t) or a ``[K]`` vector of per-class
    weights ``α_y`` (e.g. :func:`class_balanced_weights`). For the per-element sigmoid focal loss
    with α_t use ``optax.losses.sigmoid_focal_loss`` (note its default is ``alpha=None``, the
    paper's 0.25 must be passed).

    Reference: T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár, "Focal Loss for Dense Object
    Detection", ICCV 2017, arXiv:1708.02002.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      gamma: focusing parameter γ ≥ 0.
      alpha: None, a scalar, or a ``[K]`` class-weight vector (along the class axis).
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in softmax_focal_loss(x, jnp.array([0, 1]))]
      [0.04849, 3.96047]
    """
    require_nonnegative(gamma, "gamma")
    p = prepare(logits, labels, axis=axis, where=where)
    alpha = _check_class_vector(alpha, p.num_classes, "alpha")
    return finalize(p, _softmax_focal(p, gamma, alpha))


def dual_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Dual cross-entropy: CE plus a regulariser on the non-target probabilities.

    .. math:: \ell_{\text{dce}}(x, t) = -\sum_k t_k \log p_k
              + \beta \sum_k (1 - t_k) \log(\alpha + p_k)

    For an integer label the regulariser is ``β Σ_{k≠y} log(α + p_k)``; its gradient
    ``β/(α + p_k)`` does not vanish when CE ≈ 0, which keeps pushing non-target probabilities
    down. With α ≥ 1 it is ≥ 0 and minimised (= ``(K−1) log α``) at one-hot predictions.
    ``log(α + p_k)`` is ``logaddexp(log α, log p_k)`` (for α = 1, ``softplus(log p_k)``).
    β = 0 is CE. Classes masked by ``where`` (or with logit ``−inf``) are left out of the sum.

    The exact equation and the defaults of the IEEE TVT paper could not be confirmed from the
    paper itself (``docs/open_questions.md``); this form matches the paper's abstract and an independent
    third-party implementation (which used α = 1 and β = 4.5, previously 2). Defaults here:
    α = 1, β = 1.

    Reference: X. Li, L. Yu, D. Chang, Z. Ma, J. Cao, "Dual Cross-Entropy Loss for Small-Sample
    Fine-Grained Vehicle Classification", IEEE Transactions on Vehicular Technology, 2019.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (the formula is linear in t).
      alpha: offset α > 0 inside ``log(α + p_k)``.
      beta: regulariser weight β ≥ 0.
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in dual_cross_entropy_loss(x, jnp.array([0, 1]))]
      [0.72811, 4.81407]
    """
    require_positive(alpha, "alpha")
    require_nonnegative(beta, "beta")
    p = prepare(logits, labels, axis=axis, where=where)
    ce = expect(p, nll_from_lu(_lu(p)))
    return finalize(p, ce + beta * _dce_regularizer(p, alpha))


def dual_cross_entropy_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: float = 1.0,
    beta: float = 0.5,
    focal_alpha: ArrayLike | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Focal variant of dual cross-entropy: softmax focal loss plus the DCE regulariser.

    .. math:: \ell(x, t) = \text{FL}_\gamma(x, t) + \beta \sum_k (1 - t_k) \log(\alpha + p_k)

    The ICAISC 2020 paper ("Application of an Improved Focal Loss in Vehicle Detection"; open
    question: ``docs/open_questions.md``) applies a focal modulating factor to dual CE, but the
    exact placement of the factor could not be confirmed. This is the composition used by an
    independent third-party implementation (focal term + β·regulariser with α = 1, β = 0.5 — there
    with a binary focal term; here the multi-class :func:`softmax_focal_loss`). It is therefore "as
    in that implementation", not a verified reproduction of the paper. γ = 0 gives
    :func:`dual_cross_entropy_loss`.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      gamma: focal γ ≥ 0.
      alpha: DCE offset α > 0 inside ``log(α + p_k)``.
      beta: regulariser weight β ≥ 0.
      focal_alpha: None, scalar or ``[K]`` class weights of the focal term (as
        :func:`softmax_focal_loss`'s ``alpha``).
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in dual_cross_entropy_focal_loss(x, jnp.array([0, 1]))]
      [0.20403, 4.31967]
    """
    require_nonnegative(gamma, "gamma")
    require_positive(alpha, "alpha")
    require_nonnegative(beta, "beta")
    p = prepare(logits, labels, axis=axis, where=where)
    focal_alpha = _check_class_vector(focal_alpha, p.num_classes, "focal_alpha")
    fl = _softmax_focal(p, gamma, focal_alpha)
    return finalize(p, fl + beta * _dce_regularizer(p, alpha))


def class_balanced_weights(samples_per_class: ArrayLike, *, beta: float = 0.9999) -> jax.Array:
    r"""Class-balanced weights from the effective number of samples (Cui et al.).

    .. math:: E_c = \frac{1 - \beta^{n_c}}{1 - \beta}, \qquad
              w_c = \frac{C'}{\sum_{c'} 1/E_{c'}} \cdot \frac{1}{E_c}

    normalised so that the weights of the ``C'`` classes with ``n_c > 0`` sum to ``C'`` (mean 1);
    classes with no samples get weight 0 (they never occur as labels). β = 0 gives uniform
    weights, β → 1 inverse class frequency (β = 1 is accepted and gives exactly that). The paper
    sweeps β ∈ {0.9, 0.99, 0.999, 0.9999}; 0.9999 is the default here. ``1 − β^n`` is
    ``−expm1(n·log β)`` with ``log β`` taken in double precision for a python ``beta``, so
    β = 0.9999 does not lose digits to float32 rounding of ``1 − β``.

    How to apply them: the class-balanced loss is ``w_y · base(x, y)``. For softmax focal pass
    them as ``alpha`` (:func:`softmax_focal_loss`); for any per-example loss multiply by
    :func:`per_example_class_weights` (``w_y``, or ``Σ_k t_k w_k`` for soft labels); for
    sigmoid CE/focal multiply the ``[..., K]`` elementwise loss by ``w`` (broadcast on the class
    axis).

    Reference: Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019, arXiv:1901.05555.

    Args:
      samples_per_class: ``[C]`` non-negative counts ``n_c``.
      beta: β in ``[0, 1]``.

    Returns:
      ``[C]`` weights (float32, or float64 for float64 counts under x64).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> w = class_balanced_weights(jnp.array([100, 10, 1]), beta=0.999)
      >>> [round(float(v), 5) for v in w]
      [0.02836, 0.27126, 2.70038]
      >>> x, y = jnp.array([[2.0, 1.0, 0.1]]), jnp.array([2])
      >>> ce = optax.losses.softmax_cross_entropy_with_integer_labels(x, y)
      >>> round(float((per_example_class_weights(w, y) * ce)[0]), 5)
      6.25687
    """
    require_rank(samples_per_class, 1, "samples_per_class")
    require_range(beta, "beta", low=0.0, high=1.0)
    if is_concrete(samples_per_class) and np.any(np.asarray(samples_per_class) < 0):
        raise ValueError("`samples_per_class` must be non-negative.")
    n_in = jnp.asarray(samples_per_class)
    dtype = jnp.promote_types(n_in.dtype, jnp.float32) if jnp.issubdtype(
        n_in.dtype, jnp.floating
    ) else jnp.float32
    n = n_in.astype(dtype)
    present = n > 0
    if is_concrete(beta) and jnp.ndim(beta) == 0:
        b = float(beta)
        log_beta = -math.inf if b == 0.0 else math.log(b)
        log_beta = jnp.asarray(log_beta, dtype)
        is_one = b == 1.0
    else:
        bj = jnp.asarray(beta, dtype)
        log_beta = jnp.log(bj)
        is_one = bj == 1.0
    n_safe = jnp.where(present, n, 1.0)
    # 1/E_c up to the common factor (1 − β): 1/(1 − β^n);  β = 1: 1/n
    denom = jnp.where(is_one, n_safe, -jnp.expm1(n_safe * log_beta))
    inv = jnp.where(present, 1.0 / denom, 0.0)
    count = jnp.sum(present)
    total = jnp.sum(inv)
    return jnp.where(total > 0, inv * count / jnp.where(total > 0, total, 1.0), 0.0)


def per_example_class_weights(
    class_weights: ArrayLike, labels: ArrayLike, *, axis: int = -1
) -> jax.Array:
    r"""Per-example weight ``w_y`` of a ``[K]`` class-weight vector.

    .. math:: w(y) = w_y \ \text{(integer labels)}, \qquad w(t) = \sum_k t_k w_k
              \ \text{(probability labels)}

    Multiply a per-example loss by it to get the class-weighted loss (class-balanced loss with
    :func:`class_balanced_weights`). Integer labels are clipped into ``[0, K)`` (use
    :func:`lossjax.losses._core.check_labels` outside ``jit`` to catch bad labels).

    Args:
      class_weights: ``[K]`` weights.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (class axis ``axis``).
      axis: class axis of probability labels.

    Returns:
      ``[...]`` weights (float32, or float64 for float64 weights under x64).

    Example:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([0.5, 1.0, 2.0])
      >>> per_example_class_weights(w, jnp.array([2, 0])).tolist()
      [2.0, 0.5]
      >>> per_example_class_weights(w, jnp.array([[0.5, 0.5, 0.0]])).tolist()
      [0.75]
    """
    require_rank(class_weights, 1, "class_weights")
    require_floating(class_weights, "class_weights")
    w = jnp.asarray(class_weights)
    w = w.astype(jnp.promote_types(w.dtype, jnp.float32))
    k = w.shape[0]
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return w[jnp.clip(labels, 0, k - 1)]
    if not jnp.issubdtype(labels.dtype, jnp.floating):
        raise TypeError(f"`labels` must be integer or floating, got {labels.dtype}.")
    t = jnp.moveaxis(labels, axis, -1)
    if t.shape[-1] != k:
        raise ValueError(
            f"Probability `labels` must have {k} classes on axis {axis}, got shape {labels.shape}."
        )
    return jnp.sum(jnp.where(t != 0, t.astype(w.dtype) * w, 0.0), axis=-1)
