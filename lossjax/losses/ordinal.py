"""Ordinal softmax of the Rasch family (partial-credit model) and its cross-entropy.

An ordinal classifier with ``K`` ordered classes predicts one score ``s`` per example (the
"ability" of the Rasch model) and ``K − 1`` ordered-step thresholds ``τ_1..τ_{K−1}``. The class
logits are cumulative sums of ``s − τ_j``, so every adjacent-category log-odds is linear in ``s``:
``log P(k)/P(k−1) = s − τ_k``. With ``K = 2`` this is the dichotomous Rasch (logistic) model.

* :func:`ordinal_logits` — the ``[..., K]`` logits of the ordinal softmax;
* :func:`ordinal_cross_entropy_loss` — the cross-entropy of that softmax (integer or soft labels).
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
)

__all__ = ["ordinal_logits", "ordinal_cross_entropy_loss"]


def ordinal_logits(scores: ArrayLike, thresholds: ArrayLike) -> jax.Array:
    r"""Logits of the Rasch / partial-credit ordinal softmax.

    .. math::
        z_0 = 0,\qquad z_k = \sum_{j=1}^{k} (s - \tau_j) = k\,s - \sum_{j\le k}\tau_j,
        \qquad P(Y = k) = \mathrm{softmax}(z)_k,\ k = 0..K-1.

    Masters (1982), the partial-credit model ``P(x) ∝ exp Σ_{j≤x}(β − δ_j)`` with ability
    ``β = s`` and step difficulties ``δ_j = τ_j``; ``K = 2`` is Rasch's dichotomous model
    ``P(1) = σ(s − τ_1)``.

    References: G. N. Masters, "A Rasch model for partial credit scoring", Psychometrika 47(2),
    1982; G. Rasch, "Probabilistic Models for Some Intelligence and Attainment Tests", 1960.

    Args:
      scores: floating ``[...]`` scores ``s`` (one per example).
      thresholds: floating ``[K − 1]`` (shared) or ``[..., K − 1]`` (per example) thresholds.

    Returns:
      ``[..., K]`` logits (float32, or float64 for float64 input).

    Example:
      >>> import jax.numpy as jnp
      >>> ordinal_logits(jnp.array([1.0]), jnp.array([0.0, 2.0]))
      Array([[0., 1., 0.]], dtype=float32)
    """
    require_floating(scores, "scores")
    require_floating(thresholds, "thresholds")
    s, t = jnp.asarray(scores), jnp.asarray(thresholds)
    if t.ndim < 1:
        raise ValueError("`thresholds` must have a last axis of K − 1 steps; got a scalar.")
    if t.ndim > 1 and t.shape[:-1] != s.shape:
        raise ValueError(
            f"`thresholds` must be [K − 1] or [..., K − 1] with [...] = `scores`.shape {s.shape}, "
            f"got {t.shape}."
        )
    dtype = compute_dtype(jnp.result_type(s, t))
    s, t = s.astype(dtype), t.astype(dtype)
    steps = s[..., None] - t
    z = jnp.cumsum(steps, axis=-1)
    return jnp.concatenate([jnp.zeros_like(z[..., :1]), z], axis=-1)  # keeps z's sharding


def ordinal_cross_entropy_loss(
    scores: ArrayLike,
    thresholds: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Cross-entropy of the Rasch / partial-credit ordinal softmax.

    .. math::
        \ell(s, \tau, y) = -\log \mathrm{softmax}(z)_y = \operatorname{logsumexp}_k z_k - z_y,
        \qquad z_k = \sum_{j=1}^{k} (s - \tau_j)

    (see :func:`ordinal_logits`; Masters 1982, the partial-credit model). Gradients reach both the scores and the
    thresholds; ``∂ℓ/∂s = E_P[k] − y`` (expected class minus label), so the loss is ordinal: it
    pulls the score towards the labelled rank. Soft labels ``t`` use ``Σ_k t_k ℓ(s, τ, k)``. The
    thresholds are not forced to be increasing (the model is valid, and identifiable, without it).
    An infinite threshold (or a score/threshold difference beyond the float range) makes several
    cumulative logits infinite: the value is still the limit, but the gradient is NaN.

    References: G. N. Masters, "A Rasch model for partial credit scoring", Psychometrika 47(2),
    1982; G. Rasch, "Probabilistic Models for Some Intelligence and Attainment Tests", 1960.

    Args:
      scores: floating ``[...]`` scores.
      thresholds: floating ``[K − 1]`` or ``[..., K − 1]`` thresholds.
      labels: integer ``[...]`` ranks in ``[0, K)`` or probability vectors ``[..., K]``.
      where: optional bool mask ``[...]`` (per example) or ``[..., K]`` (per class).

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> s, tau = jnp.array([1.0, 1.0]), jnp.array([0.0, 2.0])
      >>> [round(float(v), 5) for v in ordinal_cross_entropy_loss(s, tau, jnp.array([1, 0]))]
      [0.55144, 1.55144]
    """
    z = ordinal_logits(scores, thresholds)
    p = prepare(z, labels, where=where, logits_name="ordinal logits")
    return finalize(p, expect(p, nll_from_lu(margin_lse(p))))
