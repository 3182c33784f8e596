"""Supervised contrastive loss with the classifier weights as extra anchors (Aljundi et al., AAAI 2023).

ESupCon ("extended SupCon") trains the representation *and* the linear classifier with one
contrastive objective: the class weight vectors ``w_k`` (prototypes) join the batch, each sample
forming a positive pair with its own class weight and negative pairs with the other classes'
weights, in addition to SupCon's sample–sample pairs. With no other sample in the batch the loss is
the cross-entropy of the cosine classifier ``softmax_k(z·w_k/τ)`` — the probabilistic reading of
the paper's title; at test time ``argmax_k z·w_k`` classifies.

Reference: R. Aljundi, Y. Patel, M. Sulc, D. Olmeda, N. Chumerin, "Contrastive Classification and
Representation Learning with Probabilistic Interpretation", AAAI 2023, arXiv:2211.03646 (ESupCon;
Fig. 1 defines its pairs). The pair structure is restated from the paper; the per-anchor weighting
(the Khosla ``L_out`` mean over the positive set, the class weight counting as one positive) and the
normalisation of the class weights are the choices documented in ``docs/open_questions.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    bool_mask,
    check_labels,
    compute_dtype,
    is_concrete,
    masked_logsumexp,
    poison_bad_labels,
    replicate_on_explicit_mesh,
    require_floating,
    require_integer,
    require_positive,
)
from lossjax.losses.metric import _l2_normalize

__all__ = ["supcon_prototype_loss"]

_HI = jax.lax.Precision.HIGHEST


def supcon_prototype_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    prototypes: ArrayLike,
    *,
    temperature: float = 0.1,
    normalize: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""ESupCon: SupCon with the class weights as extra anchors, per example (Aljundi et al., 2023).

    With (L2-normalised) embeddings ``z_i``, class weights ``w_k``, ``s_{ia} = z_i·z_a/τ``,
    ``t_{ik} = z_i·w_k/τ``, the positives ``P(i) = {a ≠ i : y_a = y_i}`` and the normaliser over
    every other sample and every class weight

    .. math::
        A_i = \operatorname{logsumexp}\big(\{s_{ia}\}_{a\ne i} \cup \{t_{ik}\}_{k}\big),\qquad
        \ell_i = -\frac{1}{|P(i)| + 1}\Big[\sum_{p\in P(i)} (s_{ip} - A_i) + (t_{i y_i} - A_i)\Big].

    The class weight of the true class is always a positive, so every anchor has one. With no
    other sample (batch of one, or the rest masked) ``ℓ_i`` is the cross-entropy of the cosine
    classifier ``softmax(t_i)``; with ``K`` prototypes far from every sample it tends to SupCon
    (``L_out``) with the class weight added to ``|P(i)|``.

    Args:
      embeddings: floating ``[B, D]``.
      labels: integer ``[B]`` class indices in ``[0, K)`` (out of range: ``ValueError`` outside
        ``jit``, NaN for that example under ``jit``).
      prototypes: floating ``[K, D]`` class weights (the classifier's weight matrix, trained by
        this loss).
      temperature: τ ``> 0``.
      normalize: L2-normalise embeddings and class weights (cosine similarities).
      where: optional bool ``[B]`` row mask (masked rows are neither anchors nor candidates).

    Returns:
      Per-example losses ``[B]`` (0 for masked rows).

    References:
      R. Aljundi, Y. Patel, M. Sulc, D. Olmeda, N. Chumerin, "Contrastive Classification and
      Representation Learning with Probabilistic Interpretation", AAAI 2023, arXiv:2211.03646;
      P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (``L_out``).

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
      >>> w = jnp.array([[1.0, 0.1], [0.1, 1.0]])
      >>> [round(v, 4) for v in supcon_prototype_loss(e, jnp.array([0, 0, 1]), w).tolist()]
      [0.6933, 0.6939, 0.0003]
    """
    require_positive(temperature, "temperature")
    require_floating(embeddings, "embeddings")
    require_floating(prototypes, "prototypes")
    e = jnp.asarray(embeddings)
    w = jnp.asarray(prototypes)
    if e.ndim != 2:
        raise ValueError(f"`embeddings` must have shape [B, D], got {e.shape}.")
    if w.ndim != 2 or w.shape[1] != e.shape[1]:
        raise ValueError(f"`prototypes` must have shape [K, {e.shape[1]}], got {w.shape}.")
    n, k = e.shape[0], w.shape[0]
    if k < 1:
        raise ValueError("`prototypes` must hold at least one class.")
    y = jnp.asarray(labels)
    require_integer(y, "labels")
    if y.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},), got {y.shape}.")
    valid = bool_mask(where, (n,))
    if is_concrete(y) and (where is None or is_concrete(where)):
        check_labels(y, k, where=None if where is None else valid)
    dtype = compute_dtype(jnp.result_type(e, w))
    e, w, y, valid = (replicate_on_explicit_mesh(v) for v in (e.astype(dtype), w.astype(dtype), y, valid))
    # double where: masked rows are replaced before any arithmetic (NaN-safe gradient)
    e = jnp.where(valid[:, None], e, jnp.ones((), dtype))
    if normalize:
        e, w = _l2_normalize(e), _l2_normalize(w)
    s = jnp.matmul(e, e.T, precision=_HI) / temperature  # [B, B]
    t = jnp.matmul(e, w.T, precision=_HI) / temperature  # [B, K]
    t = poison_bad_labels(t, y, k, ignore=~valid)  # row i feeds anchor i only
    others = valid[None, :] & ~jnp.eye(n, dtype=bool)
    pos = others & (y[:, None] == y[None, :])
    lse = jnp.logaddexp(masked_logsumexp(s, others), masked_logsumexp(t))  # [B]
    y_safe = jnp.clip(y, 0, k - 1)
    t_y = jnp.take_along_axis(t, y_safe[:, None], axis=1)[:, 0]
    total = jnp.sum(jnp.where(pos, s - lse[:, None], 0.0), axis=-1) + (t_y - lse)
    loss = -total / (jnp.sum(pos, axis=-1) + 1).astype(dtype)
    return jnp.where(valid, loss, 0.0).astype(dtype)
