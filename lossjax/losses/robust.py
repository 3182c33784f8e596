"""Noise-robust (symmetric / normalized) losses and the Active-Passive combinations.

* :func:`reverse_cross_entropy_loss` and :func:`symmetric_cross_entropy_loss` (Wang et al. 2019).
* :func:`normalized_cross_entropy_loss`, :func:`normalized_focal_loss`,
  :func:`normalized_generalized_cross_entropy_loss`, :func:`normalized_mae_loss` and
  :func:`active_passive_loss` (Ma et al. 2020).

A normalized loss is ``L(x, y) / Σ_j L(x, j)``: it sums to 1 over the labels, which makes it
symmetric (hence robust to symmetric label noise) but "active-only" losses underfit, which the
Active-Passive combination ``α·L_active + β·L_passive`` repairs.

Class handling: the normalizer ``Σ_j`` runs over the classes not masked by a per-class
``where``. A ``−inf`` logit is probability 0, not a mask (``docs/conventions.md``): the losses
take their limit, so for NCE/NFL (``−log 0 = ∞`` in the normalizer) a ``−inf`` non-target logit
gives 0 and a ``−inf`` target logit gives 1, both with zero gradient; NGCE's per-class term has
the finite limit ``1/q``. To remove a class, mask it with ``where``. A normalizer of 0 gives 0
(zero gradient). Soft labels use the expectation convention
``Σ_k t_k ℓ(x, k)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    expect,
    finalize,
    nll_from_lu,
    one_minus_py_from_lu,
    prepare,
    require_nonnegative,
    require_option,
    require_range,
)
from lossjax.losses.comp_sum import _gce_from_nll, _lu, _lu_all, _pick
from lossjax.losses.focal import _focal_weight, _softmax_focal

__all__ = [
    "reverse_cross_entropy_loss",
    "symmetric_cross_entropy_loss",
    "normalized_cross_entropy_loss",
    "normalized_focal_loss",
    "normalized_generalized_cross_entropy_loss",
    "normalized_mae_loss",
    "active_passive_loss",
    "ACTIVE_LOSSES",
    "PASSIVE_LOSSES",
]

ACTIVE_LOSSES = ("ce", "fl", "gce", "nce", "nfl", "ngce")
PASSIVE_LOSSES = ("mae", "rce", "nmae", "nrce")


def _require_log_zero(log_zero: float) -> None:
    require_range(log_zero, "log_zero", high=0.0, high_inclusive=False)


def _require_two_classes(p: Prepared) -> None:
    """A normalized loss is 0/0 for K = 1: refuse it statically (masked rows give 0)."""
    if p.num_classes < 2:
        raise ValueError(
            "`logits` must have at least 2 classes for a normalized loss, got K = "
            f"{p.num_classes}."
        )


# --------------------------------------------------------------------------------------------
# private forms on a Prepared input (so APL prepares once)
# --------------------------------------------------------------------------------------------


def _rce(p: Prepared, log_zero: float) -> jax.Array:
    return expect(p, -log_zero * one_minus_py_from_lu(_lu(p)))


def _candidates(p: Prepared) -> jax.Array:
    """bool ``[..., K]``: classes not masked by ``where`` (a ``−inf`` logit is probability 0,
    still a class of the normalizer)."""
    if p.class_mask is None:
        return jnp.ones(p.logits.shape, bool)
    return p.class_mask


def _normalized(
    p: Prepared,
    lu_all: jax.Array,
    per_class_fn: Callable[[jax.Array], jax.Array],
    stop_gradient_normalizer: bool,
) -> jax.Array:
    """``ℓ(ℓu_y) / Σ_j ℓ(ℓu_j)`` over the classes not masked by ``where``.

    A ``−inf`` logit is probability 0 (``ℓu_j = +inf``) and enters as the limit: a finite
    ``ℓ(+inf)`` (NGCE: ``1/q``) is summed as such; an infinite one (NCE, NFL: ``−log 0``) makes
    the ratio 1 for that class (shared equally among such classes) and 0 for the others, with
    zero gradient. 0 when the normalizer is 0.
    """
    cand = _candidates(p)
    is_inf = (lu_all == jnp.inf) & (p.logits == -jnp.inf) & cand
    per_class = per_class_fn(jnp.where(is_inf, 0.0, lu_all))
    at_inf = jax.lax.stop_gradient(per_class_fn(jnp.full_like(lu_all, jnp.inf)))
    inf_term = is_inf & jnp.isinf(at_inf)
    per_class = jnp.where(is_inf, jnp.where(inf_term, 0.0, at_inf), per_class)
    per_class = jnp.where(cand, per_class, 0.0)
    den = jnp.sum(per_class, axis=-1, keepdims=True)
    if stop_gradient_normalizer:
        den = jax.lax.stop_gradient(den)
    nz = den != 0  # NaN is "non-zero": it propagates
    ratio = jnp.where(nz, per_class / jnp.where(nz, den, 1.0), 0.0)
    n_inf = jnp.sum(inf_term, axis=-1, keepdims=True)
    ratio = jnp.where(n_inf > 0, inf_term / jnp.maximum(n_inf, 1).astype(p.dtype), ratio)
    # ℓu = +inf from finite logits (|x| ≈ 3e38 overflows ℓu): NaN, never a wrong ratio
    overflow = jnp.any((lu_all == jnp.inf) & (p.logits != -jnp.inf) & cand, axis=-1, keepdims=True)
    ratio = jnp.where(overflow, jnp.nan, ratio)
    return _pick(p, ratio)


def _nce(p: Prepared, sg: bool) -> jax.Array:
    return _normalized(p, _lu_all(p), nll_from_lu, sg)


def _nfl(p: Prepared, gamma: float, sg: bool, detach_focal_weight: bool = False) -> jax.Array:
    def per_class(lu: jax.Array) -> jax.Array:
        w = _focal_weight(lu, gamma)
        if detach_focal_weight:
            w = jax.lax.stop_gradient(w)
        return w * nll_from_lu(lu)

    return _normalized(p, _lu_all(p), per_class, sg)


def _ngce(p: Prepared, q: float, sg: bool) -> jax.Array:
    return _normalized(p, _lu_all(p), lambda lu: _gce_from_nll(nll_from_lu(lu), q), sg)


def _nmae(p: Prepared) -> jax.Array:
    n = jnp.sum(_candidates(p), axis=-1)
    per = one_minus_py_from_lu(_lu(p))
    return expect(p, per) / jnp.maximum(n - 1, 1)


# --------------------------------------------------------------------------------------------
# public losses
# --------------------------------------------------------------------------------------------


def reverse_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    log_zero: float = -4.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Reverse cross-entropy (prediction and target swapped), with ``log 0 := A``.

    .. math:: \ell_{\text{rce}}(x, y) = -\sum_k p_k \log e_{y,k} = -A\,(1 - p_y)

    i.e. a scaled MAE; symmetric: ``Σ_y ℓ(x, y) = −A(K − 1)``. Computed as ``−A·sigmoid(ℓu)``.

    ``A = log_zero``: the paper uses ``A = −4``; the reference code (Active-Passive-Losses and
    the LDR repository) clamps the one-hot label at 1e-4 and takes the natural log, i.e.
    ``A = ln 1e-4 ≈ −9.2103`` — pass ``log_zero=math.log(1e-4)`` to match it (the two agree only
    if the paper's log was base 10). Soft labels: expectation convention ``−A(1 − Σ_k t_k p_k)``
    (the literal ``−Σ_k p_k log t_k`` is not linear in ``t``).

    Reference: Y. Wang, X. Ma, Z. Chen, Y. Luo, J. Yi, J. Bailey, "Symmetric Cross Entropy for
    Robust Learning with Noisy Labels", ICCV 2019, arXiv:1908.06112.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels.
      log_zero: the value ``A < 0`` used for ``log 0``.
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in reverse_cross_entropy_loss(x, jnp.array([0, 1]))]
      [1.364, 3.93342]
    """
    _require_log_zero(log_zero)
    p = prepare(logits, labels, axis=axis, where=where)
    return finalize(p, _rce(p, log_zero))


def symmetric_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Symmetric cross-entropy ``α·CE + β·RCE``.

    .. math:: \ell_{\text{sce}}(x, y) = -\alpha \log p_y - \beta A (1 - p_y)

    Defaults are the paper's CIFAR-10 setting (α = 0.1, β = 1, A = −4); CIFAR-100 uses
    α = 6, β = 0.1. The reference code's RCE uses ``A = ln 1e-4`` (see
    :func:`reverse_cross_entropy_loss`). Note the LDR repository's ``SCELoss(balance, A)`` is a
    different parametrisation, ``(1−b)·CE + b·A·(1−p_y)``.

    Reference: Y. Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy Labels",
    ICCV 2019, arXiv:1908.06112.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      alpha: CE weight ≥ 0.
      beta: RCE weight ≥ 0.
      log_zero: ``A < 0``.
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in symmetric_cross_entropy_loss(x, jnp.array([0, 1]))]
      [1.4057, 4.34299]
    """
    require_nonnegative(alpha, "alpha")
    require_nonnegative(beta, "beta")
    _require_log_zero(log_zero)
    p = prepare(logits, labels, axis=axis, where=where)
    lu = _lu(p)
    per = alpha * nll_from_lu(lu) - beta * log_zero * one_minus_py_from_lu(lu)
    return finalize(p, expect(p, per))


def normalized_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    stop_gradient_normalizer: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Normalized cross-entropy (NCE).

    .. math:: \ell_{\text{nce}}(x, y) = \frac{-\log p_y}{-\sum_{j} \log p_j} \in [0, 1]

    ``Σ_y ℓ(x, y) = 1`` (symmetric); uniform logits give ``1/K``. Every ``−log p_j`` is
    ``softplus(ℓu_j)``; the denominator is ≥ ``K log K > 0`` for ``K ≥ 2`` candidate classes. A
    row with a single candidate class (``K = 1``, or all other classes masked) returns 0.

    ``stop_gradient_normalizer``: False (default) differentiates through the denominator (the
    paper's maths, and what the reference code does for NCE); True treats it as a constant.

    Reference: X. Ma, H. Huang, Y. Wang, S. Romano, S. Erfani, J. Bailey, "Normalized Loss
    Functions for Deep Learning with Noisy Labels", ICML 2020, arXiv:2006.13554.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      stop_gradient_normalizer: whether to stop the gradient through ``Σ_j −log p_j``.
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in normalized_cross_entropy_loss(x, jnp.array([0, 1]))]
      [0.10046, 0.60346]
    """
    p = prepare(logits, labels, axis=axis, where=where)
    _require_two_classes(p)
    return finalize(p, _nce(p, bool(stop_gradient_normalizer)))


def normalized_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 0.5,
    stop_gradient_normalizer: bool = False,
    detach_focal_weight: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Normalized focal loss (NFL).

    .. math:: \ell_{\text{nfl}}(x, y) =
              \frac{(1 - p_y)^\gamma \log p_y}{\sum_j (1 - p_j)^\gamma \log p_j}

    Symmetric (``Σ_y ℓ = 1``). The focal factor is ``exp(γ·log_sigmoid(ℓu_j))`` (finite
    gradients for γ < 1 at ``p_j → 1``). Default γ = 0.5 (Active-Passive configs).

    Three gradients, one value (the value is the same in all three):

    * default (``detach_focal_weight=False, stop_gradient_normalizer=False``): the paper's plain
      ratio (Ma et al. 2020, Eq. 5), differentiated everywhere.
    * ``detach_focal_weight=True``: the authors' released code (Active-Passive-Losses, ``NFL``)
      stops the gradient through the focal weights ``(1 − p_j)^γ`` only — in the numerator and in
      every normalizer term — and keeps ``log p_j`` live:
      ``∇ [sg(w_y) log p_y / Σ_j sg(w_j) log p_j]``. Use this to reproduce their runs.
    * ``stop_gradient_normalizer=True``: the whole denominator is a constant (an lossjax option;
      it is **not** the released code's gradient).

    Reference: X. Ma et al., ICML 2020, arXiv:2006.13554.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      gamma: focusing parameter γ ≥ 0 (γ = 0 is NCE).
      stop_gradient_normalizer: whether to stop the gradient through the denominator.
      detach_focal_weight: stop the gradient through ``(1 − p_j)^γ`` (the released code).
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in normalized_focal_loss(x, jnp.array([0, 1]))]
      [0.06623, 0.61655]
    """
    require_nonnegative(gamma, "gamma")
    p = prepare(logits, labels, axis=axis, where=where)
    _require_two_classes(p)
    return finalize(
        p, _nfl(p, gamma, bool(stop_gradient_normalizer), bool(detach_focal_weight))
    )


def normalized_generalized_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    q: float = 0.7,
    stop_gradient_normalizer: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Normalized generalized cross-entropy (NGCE).

    .. math:: \ell_{\text{ngce}}(x, y) = \frac{1 - p_y^{\,q}}{\sum_j (1 - p_j^{\,q})}
              = \frac{1 - p_y^{\,q}}{K - \sum_j p_j^{\,q}}

    Symmetric (``Σ_y ℓ = 1``). Each ``1 − p_j^q = −expm1(−q·softplus(ℓu_j))``.

    Reference: X. Ma et al., ICML 2020, arXiv:2006.13554 (q = 0.7 in the Active-Passive configs).

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      q: exponent in ``(0, 1]``.
      stop_gradient_normalizer: whether to stop the gradient through the denominator.
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> out = normalized_generalized_cross_entropy_loss(x, jnp.array([0, 1]))
      >>> [round(float(v), 5) for v in out]
      [0.15027, 0.51107]
    """
    require_range(q, "q", low=0.0, high=1.0, low_inclusive=False)
    p = prepare(logits, labels, axis=axis, where=where)
    _require_two_classes(p)
    return finalize(p, _ngce(p, q, bool(stop_gradient_normalizer)))


def normalized_mae_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Normalized MAE (NMAE), which equals normalized RCE (NRCE).

    .. math:: \ell_{\text{nmae}}(x, y) = \frac{\text{MAE}(x, y)}{\sum_j \text{MAE}(x, j)}
              = \frac{1 - p_y}{K - 1}

    independent of the MAE scale and, for RCE, of ``A`` (both are multiples of ``1 − p_y``).
    ``K`` counts candidate classes; ``K = 1`` gives 0. The Active-Passive reference code uses
    ``(1 − p_y)/(2(K − 1))`` for NMAE (half of this) and a different constant for NRCE.

    Reference: X. Ma et al., ICML 2020, arXiv:2006.13554.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in normalized_mae_loss(x, jnp.array([0, 1]))]
      [0.1705, 0.49168]
    """
    p = prepare(logits, labels, axis=axis, where=where)
    _require_two_classes(p)
    return finalize(p, _nmae(p))


def active_passive_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    active: str = "nce",
    passive: str = "rce",
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.5,
    q: float = 0.7,
    log_zero: float = -4.0,
    stop_gradient_normalizer: bool = False,
    detach_focal_weight: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Active-Passive Loss ``α·L_active + β·L_passive``.

    .. math:: \ell_{\text{apl}}(x, y) = \alpha\,L_{\text{active}}(x, y)
              + \beta\,L_{\text{passive}}(x, y)

    ``active`` ∈ {``'ce'``, ``'fl'`` (softmax focal, γ), ``'gce'`` (q), ``'nce'``, ``'nfl'`` (γ),
    ``'ngce'`` (q)}; ``passive`` ∈ {``'mae'`` (``1 − p_y``), ``'rce'`` (A = ``log_zero``),
    ``'nmae'``, ``'nrce'`` (both ``(1 − p_y)/(K − 1)``)}. The paper recommends NCE+RCE,
    NCE+MAE, NFL+RCE, NFL+MAE; defaults α = β = 1 (CIFAR-10), CIFAR-100 uses α = 10, β = 0.1;
    γ = 0.5, q = 0.7. The reference code's RCE uses ``A = ln 1e-4``: pass
    ``log_zero=math.log(1e-4)`` to reproduce it (default −4 is the SCE paper's A).

    Focal gradients: by default ``'fl'`` differentiates ``(1 − p_y)^γ`` (the focal-loss paper,
    Lin et al. 2017, Eq. 5) and ``'nfl'`` is the paper's plain ratio. The released
    Active-Passive-Losses code detaches the focal weight in both (``p_t`` in ``(1 − p_t)^γ`` for
    FL; ``(1 − p_j)^γ`` in the numerator and normalizer for NFL): ``detach_focal_weight=True``
    reproduces it (values are unchanged).

    Reference: X. Ma, H. Huang, Y. Wang, S. Romano, S. Erfani, J. Bailey, "Normalized Loss
    Functions for Deep Learning with Noisy Labels", ICML 2020, arXiv:2006.13554.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      active: the active loss name.
      passive: the passive loss name.
      alpha: active weight ≥ 0.
      beta: passive weight ≥ 0.
      gamma: focal γ ≥ 0 for ``'fl'``/``'nfl'``.
      q: GCE exponent in ``(0, 1]`` for ``'gce'``/``'ngce'``.
      log_zero: ``A < 0`` for ``'rce'``.
      stop_gradient_normalizer: for the normalized active losses.
      detach_focal_weight: stop the gradient through the focal weight (``'fl'``/``'nfl'``), as
        the released code does.
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import math
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> out = active_passive_loss(x, jnp.array([0, 1]), log_zero=math.log(1e-4))  # NCE+RCE
      >>> [round(float(v), 4) for v in out]
      [3.2412, 9.6605]
    """
    require_option(active, ACTIVE_LOSSES, "active")
    require_option(passive, PASSIVE_LOSSES, "passive")
    require_nonnegative(alpha, "alpha")
    require_nonnegative(beta, "beta")
    require_nonnegative(gamma, "gamma")
    require_range(q, "q", low=0.0, high=1.0, low_inclusive=False)
    _require_log_zero(log_zero)
    sg = bool(stop_gradient_normalizer)
    p = prepare(logits, labels, axis=axis, where=where)
    if active in ("nce", "nfl", "ngce") or passive in ("nmae", "nrce"):
        _require_two_classes(p)
    if active == "ce":
        act = expect(p, nll_from_lu(_lu(p)))
    elif active == "fl":
        act = _softmax_focal(p, gamma, None, detach_weight=bool(detach_focal_weight))
    elif active == "gce":
        act = expect(p, _gce_from_nll(nll_from_lu(_lu(p)), q))
    elif active == "nce":
        act = _nce(p, sg)
    elif active == "nfl":
        act = _nfl(p, gamma, sg, bool(detach_focal_weight))
    else:
        act = _ngce(p, q, sg)
    if passive == "mae":
        pas = expect(p, one_minus_py_from_lu(_lu(p)))
    elif passive == "rce":
        pas = _rce(p, log_zero)
    else:
        pas = _nmae(p)
    return finalize(p, alpha * act + beta * pas)

