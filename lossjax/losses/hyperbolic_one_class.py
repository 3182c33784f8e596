"""Hyperbolic one-class classification (Hyp-OC): the Hyp-PC and Hyp-CE losses and the pseudo-negatives.

Narayan & Patel, "Hyp-OC: Hyperbolic One Class Classification for Face Anti-Spoofing", FG 2024
(arXiv:2404.14406). Only one class ("real", label 0) is seen in training; a second class of
*pseudo-negatives* (label 1) is drawn from a Gaussian centred on a running mean of the real features
(:func:`gaussian_pseudo_negatives`). Both sets go through the same head into the Poincaré ball
(:func:`lossjax.losses.poincare_expmap0`, with feature clipping), and the objective is

.. math::
    \\mathcal L = \\mathcal L_{\\text{Hyp-CE}} + \\mathcal L_{\\text{Hyp-PC}}

* :func:`hyperbolic_one_class_cross_entropy_loss` (Hyp-CE) — cross-entropy of the two-class hyperbolic
  MLR (Ganea et al., NeurIPS 2018, Eq. 25) on real (0) and pseudo-negative (1) points; the anomaly score
  at test time is the pseudo-negative probability ``softmax(ζ(x))₁``;
* :func:`hyperbolic_pairwise_confusion_loss` (Hyp-PC) — the pairwise confusion of Dubey et al. (ECCV
  2018) moved into the ball: the batch of *real* embeddings is split in two halves and each pair
  ``(x_i, x_{i+B/2})`` is pulled together by its hyperbolic distance, which removes identity information
  that separates real samples from each other.

The equations are restated from the paper's description and the authors' released implementation;
``distance="released"`` reproduces that implementation's pair distance, which uses ``arctan`` where the
geodesic distance of the ball has ``artanh`` (see ``docs/open_questions.md``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    bool_mask,
    compute_dtype,
    replicate_on_explicit_mesh,
    require_floating,
    require_option,
    require_positive,
    require_range,
)
from lossjax.losses.hyperbolic import _mobius_add, _safe_norm, hyperbolic_cross_entropy_loss, poincare_distance

__all__ = [
    "hyperbolic_pairwise_confusion_loss",
    "hyperbolic_one_class_cross_entropy_loss",
    "gaussian_pseudo_negatives",
]


def hyperbolic_pairwise_confusion_loss(
    embeddings: ArrayLike,
    *,
    c: float = 1.0,
    distance: str = "geodesic",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Hyp-PC, the hyperbolic pairwise confusion loss (Narayan & Patel, FG 2024).

    The batch of ``B`` (even) embeddings of the *real* class, points of the Poincaré ball, is split in
    halves and each pair ``(x_i, y_i) = (x_i, x_{i+B/2})`` contributes

    .. math::
        \ell_i = d_c(x_i, y_i) = \frac{2}{\sqrt c}\,\operatorname{artanh}\big(\sqrt c\,\|(-x_i)\oplus_c y_i\|\big)
        \quad(\texttt{distance="geodesic"}),

    or ``(2/√c)·arctan(√c‖(−x_i) ⊕_c y_i‖)`` with ``distance="released"`` (the authors' released code).
    Both grow with the Möbius distance ``‖(−x) ⊕_c y‖`` and vanish at ``x = y``; the geodesic form
    diverges at the boundary, the released one is bounded by ``π/√c``. The released training objective
    is ``ℓ.sum() / B = 0.5 * ℓ.mean()`` added to Hyp-CE.

    Args:
      embeddings: floating ``[..., B, d]`` points of the ball (``B`` even ≥ 2), e.g.
        :func:`lossjax.losses.poincare_expmap0` of the head's features. Pairs are taken along axis −2.
      c: curvature magnitude ``c > 0``.
      distance: ``"geodesic"`` or ``"released"``.
      where: optional bool ``[..., B]``; a pair counts only if both its members do (else its loss is 0).

    Returns:
      ``[..., B/2]`` per-pair losses in the compute dtype (NaN for a point on or outside the ball, and
      NaN in → NaN out).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.1, 0.0], [0.0, 0.2], [0.3, 0.0], [0.0, 0.2]])
      >>> [round(float(v), 5) for v in hyperbolic_pairwise_confusion_loss(x)]  # 2·artanh(0.2/0.97), 0
      [0.41837, 0.0]
    """
    require_positive(c, "c")
    require_option(distance, ("geodesic", "released"), "distance")
    require_floating(embeddings, "embeddings")
    x = jnp.asarray(embeddings)
    if x.ndim < 2:
        raise ValueError(f"`embeddings` must have shape [..., B, d], got rank {x.ndim}.")
    b = x.shape[-2]
    if b < 2 or b % 2:
        raise ValueError(f"`embeddings` must hold an even number B >= 2 of rows (axis -2), got {b}.")
    mask = bool_mask(where, x.shape[:-1])
    dtype = compute_dtype(x.dtype)
    # the pairs cross the (possibly sharded) batch axis: gather it first on an Explicit mesh
    x = replicate_on_explicit_mesh(x.astype(dtype))
    mask = replicate_on_explicit_mesh(mask)
    h = b // 2
    u, v = x[..., :h, :], x[..., h:, :]
    pair = mask[..., :h] & mask[..., h:]
    # masked pairs are replaced before any arithmetic, so a NaN there reaches no gradient
    zero = jnp.zeros((), dtype)
    u = jnp.where(pair[..., None], u, zero)
    v = jnp.where(pair[..., None], v, zero)
    if distance == "geodesic":
        d = poincare_distance(u, v, c=c)
    else:
        sc = math.sqrt(c)
        z, _ = _mobius_add(-u, v, c)
        zn, _ = _safe_norm(z)
        inside = (1.0 - c * jnp.sum(u * u, -1) > 0) & (1.0 - c * jnp.sum(v * v, -1) > 0)
        d = (2.0 / sc) * jnp.arctan(sc * zn)
        d = jnp.where(inside | jnp.isnan(d), d, jnp.nan)
    return jnp.where(pair, d, zero).astype(dtype)


def hyperbolic_one_class_cross_entropy_loss(
    real: ArrayLike,
    pseudo_negative: ArrayLike,
    offsets: ArrayLike,
    normals: ArrayLike,
    *,
    c: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Hyp-CE, the hyperbolic cross-entropy of one-class training (Narayan & Patel, FG 2024).

    With ``ζ`` the two-class hyperbolic MLR logits (:func:`lossjax.losses.hyperbolic_mlr_logits`,
    gyroplanes ``(p_k, a_k)``, ``k ∈ {0: real, 1: pseudo-negative}``):

    .. math::
        \ell(x) = -\log \operatorname{softmax}_{y(x)}\big(\zeta(x)\big),\qquad
        y = 0 \text{ for } x \in \text{real},\; y = 1 \text{ for } x \in \text{pseudo-negative}.

    Args:
      real: floating ``[..., B_r, d]`` ball points of the real samples.
      pseudo_negative: floating ``[..., B_n, d]`` ball points of the pseudo-negatives (e.g. the head
        applied to :func:`gaussian_pseudo_negatives`).
      offsets, normals: floating ``[2, d]`` gyroplane offsets (in the ball) and normals.
      c: curvature magnitude ``c > 0``.
      where: optional bool ``[..., B_r + B_n]`` over the concatenated rows (real first).

    Returns:
      ``[..., B_r + B_n]`` per-example losses, real rows first; the released objective is their mean.

    Example:
      >>> import jax.numpy as jnp
      >>> p, a = jnp.zeros((2, 2)), jnp.array([[-1.0, 0.0], [1.0, 0.0]])
      >>> real, neg = jnp.array([[-0.3, 0.0]]), jnp.array([[0.4, 0.1]])
      >>> hyperbolic_one_class_cross_entropy_loss(real, neg, p, a).round(4)
      Array([0.0807, 0.0321], dtype=float32)
    """
    require_floating(real, "real")
    require_floating(pseudo_negative, "pseudo_negative")
    r, n = jnp.asarray(real), jnp.asarray(pseudo_negative)
    if r.ndim < 2 or n.ndim < 2 or r.shape[:-2] != n.shape[:-2] or r.shape[-1] != n.shape[-1]:
        raise ValueError(
            f"`real` and `pseudo_negative` must have shapes [..., B_r, d] and [..., B_n, d] with the same "
            f"leading axes and d, got {r.shape} and {n.shape}.")
    if jnp.shape(offsets)[:1] != (2,):
        raise ValueError(f"`offsets` must have shape [2, d] (real, pseudo-negative), got {jnp.shape(offsets)}.")
    dtype = jnp.result_type(r, n)
    x = jnp.concatenate([r.astype(dtype), n.astype(dtype)], axis=-2)
    labels = jnp.concatenate([jnp.zeros(r.shape[:-1], jnp.int32), jnp.ones(n.shape[:-1], jnp.int32)], axis=-1)
    return hyperbolic_cross_entropy_loss(x, labels, offsets, normals, c=c, where=where)


def gaussian_pseudo_negatives(
    key: jax.Array,
    features: ArrayLike,
    previous_mean: ArrayLike,
    *,
    alpha: float = 0.8,
    variance: float = 1.0,
    num: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Pseudo-negative features of Hyp-OC (Narayan & Patel, FG 2024).

    .. math::
        \mu = \alpha\,\mu_{\text{prev}} + (1 - \alpha)\,\bar f,\qquad
        \tilde f_j \sim \mathcal N(\mu,\ \sigma^2 I),\quad j = 1..\text{num},

    with ``f̄`` the mean of this batch's real features (over axis −2). The samples carry no gradient.
    The released code passes the *previous batch's* mean ``f̄`` as ``μ_prev`` (zeros at the first
    step), not the previous ``μ``; pass the returned ``batch_mean`` for that, or ``center`` for a true
    exponential moving average. Its default ``σ² = 1`` and ``α = 0.8`` are the defaults here.

    Args:
      key: a PRNG key.
      features: floating ``[..., B, D]`` real features (the encoder output before the head).
      previous_mean: floating ``[..., D]`` (zeros at the first step).
      alpha: weight of ``previous_mean``, in ``[0, 1]``.
      variance: ``σ² > 0`` of the isotropic Gaussian.
      num: number of samples (default ``B``).

    Returns:
      ``(samples [..., num, D], center μ [..., D], batch_mean f̄ [..., D])``, all without gradient.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = jnp.array([[1.0, 2.0], [3.0, 2.0]])
      >>> s, mu, fbar = gaussian_pseudo_negatives(jax.random.key(0), f, jnp.zeros(2), alpha=0.5)
      >>> s.shape, mu.tolist(), fbar.tolist()
      ((2, 2), [1.0, 1.0], [2.0, 2.0])
    """
    require_range(alpha, "alpha", 0.0, 1.0)
    require_positive(variance, "variance")
    require_floating(features, "features")
    f = jax.lax.stop_gradient(jnp.asarray(features))
    if f.ndim < 2:
        raise ValueError(f"`features` must have shape [..., B, D], got rank {f.ndim}.")
    prev = jax.lax.stop_gradient(jnp.asarray(previous_mean, f.dtype))
    if prev.shape != f.shape[:-2] + f.shape[-1:]:
        raise ValueError(f"`previous_mean` must have shape {f.shape[:-2] + f.shape[-1:]}, got {prev.shape}.")
    m = f.shape[-2] if num is None else int(num)
    if m < 1:
        raise ValueError(f"`num` must be >= 1, got {num}.")
    batch_mean = jnp.mean(f, axis=-2)
    center = alpha * prev + (1.0 - alpha) * batch_mean
    noise = jax.random.normal(key, f.shape[:-2] + (m, f.shape[-1]), f.dtype)
    return center[..., None, :] + math.sqrt(variance) * noise, center, batch_mean
