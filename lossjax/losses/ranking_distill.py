"""Contrastive Partial Ranking Distillation (CPRD) from a cross-encoder teacher.

A dual-encoder student scores an anchor against ``N`` candidates; its own top-``K`` non-positive
candidates are the hard negatives. The cross-encoder teacher ranks those ``K`` hard negatives, and
the student learns only that *relative order* (not the teacher's score values, which are
concentrated and transfer poorly): each hard negative must outscore, contrastively, every hard
negative the teacher ranks below it. Easy negatives are left out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import compute_dtype, require_floating, require_positive

__all__ = ["cprd_loss"]


def cprd_loss(
    student_scores: ArrayLike,
    teacher_scores: ArrayLike,
    *,
    num_hard: int = 8,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""CPRD: contrastive loss on the teacher's order of the student's hard negatives.

    Let ``H`` be the ``K = num_hard`` candidates with the largest student scores (ties: lower
    index first; selection under ``stop_gradient``), ordered by the teacher so that
    ``t_{π(1)} ≥ … ≥ t_{π(K)}``. With ``u_i = s_{π(i)}/τ``:

    .. math::
        \ell = \frac{1}{K-1}\sum_{i=1}^{K-1}
        \Big[-u_i + \log\sum_{j=i}^{K} e^{u_j}\Big],

    one InfoNCE term per hard negative, whose "positive" is that negative and whose negatives are
    the hard negatives the teacher ranks below it; it is the Plackett–Luce (ListMLE) likelihood of
    the teacher's partial ranking, averaged over its ``K − 1`` non-trivial factors (Chen et al.
    2024, Sec. 3, contrastive partial ranking distillation; the normalisation over the factors and
    the default ``τ = 1`` are this implementation's choices). It is added to the usual contrastive
    loss of the dual encoder.

    Candidates excluded by a per-candidate ``where`` (e.g. the positive) are never selected; a row
    with fewer than ``K`` valid candidates uses those it has (0 for fewer than 2).

    Reference: Y. Chen et al., "How to Make Cross Encoder a Good Teacher for
    Efficient Image-Text Retrieval?", CVPR 2024, arXiv:2407.07479.

    Args:
      student_scores: floating ``[..., N]`` student similarities of the anchor to ``N`` candidates.
      teacher_scores: floating ``[..., N]`` cross-encoder scores of the same candidates
        (stop-gradient inside).
      num_hard: ``K ≥ 2``, the number of hard negatives (clipped to ``N``).
      temperature: ``τ > 0``.
      where: optional bool mask ``[...]`` (per anchor) or ``[..., N]`` (per candidate).

    Returns:
      ``[...]`` per-anchor losses.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([0.9, 0.1, 0.5, -2.0])
      >>> t = jnp.array([0.0, 2.0, 1.0, 5.0])   # teacher order of the top-3: [1, 2, 0]
      >>> round(float(cprd_loss(s, t, num_hard=3)), 5)
      1.23213
    """
    require_floating(student_scores, "student_scores")
    require_floating(teacher_scores, "teacher_scores")
    require_positive(temperature, "temperature")
    if not isinstance(num_hard, int) or num_hard < 2:
        raise ValueError(f"`num_hard` must be an int >= 2, got {num_hard!r}.")
    s = jnp.asarray(student_scores)
    t = jnp.asarray(teacher_scores)
    if s.ndim < 1:
        raise ValueError("`student_scores` must have a candidate axis; got a scalar.")
    if t.shape != s.shape:
        raise ValueError(f"`teacher_scores` must have the shape of `student_scores` {s.shape}, got {t.shape}.")
    dtype = compute_dtype(jnp.result_type(s, t))
    s = s.astype(dtype)
    t = jax.lax.stop_gradient(t.astype(dtype))
    n = s.shape[-1]
    valid = jnp.ones(s.shape, bool)
    row = None
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape == s.shape:
            valid = where
        elif where.shape == s.shape[:-1]:
            row = where
            valid = jnp.broadcast_to(where[..., None], s.shape)
        else:
            raise ValueError(f"`where` must have shape {s.shape[:-1]} or {s.shape}, got {where.shape}.")
    # candidates that do not count never reach the arithmetic (double where)
    s = jnp.where(valid, s, 0.0)
    t = jnp.where(valid, t, 0.0)
    k = min(num_hard, n)
    if k < 2:
        return jnp.zeros(s.shape[:-1], dtype)
    sg = jax.lax.stop_gradient(s)
    # hard negatives: top-k student scores among valid candidates (NaN sorts as a candidate)
    key = jnp.where(valid, jnp.where(jnp.isnan(sg), jnp.inf, sg), -jnp.inf)
    _, top = jax.lax.top_k(key, k)
    top_valid = jnp.take_along_axis(valid, top, -1)
    t_top = jnp.take_along_axis(t, top, -1)
    # teacher order (descending; NaN teacher scores first so that they propagate), invalid last
    t_key = jnp.where(top_valid, jnp.where(jnp.isnan(t_top), jnp.inf, t_top), -jnp.inf)
    order = jnp.argsort(-t_key, axis=-1, stable=True)
    idx = jnp.take_along_axis(top, order, -1)
    keep = jnp.take_along_axis(top_valid, order, -1)
    u = jnp.take_along_axis(s, idx, -1) / temperature
    t_sorted = jnp.take_along_axis(t_top, order, -1)
    u_m = jnp.where(keep, u, -jnp.inf)
    n_keep = jnp.sum(keep, axis=-1)
    # factor i counts when it and at least one later candidate are valid (not the last one)
    pos = jnp.arange(k)
    factor = keep & (pos < (n_keep[..., None] - 1))
    # −u_i + log Σ_{j≥i} e^{u_j} = softplus(log Σ_{j>i} e^{u_j} − u_i): no inf − inf at ±inf scores
    later = jnp.concatenate([u_m[..., 1:], jnp.full_like(u_m[..., :1], -jnp.inf)], axis=-1)
    after = jax.lax.cumlogsumexp(later, axis=u.ndim - 1, reverse=True)
    after = jnp.where(factor, after, 0.0)
    terms = jnp.where(factor, jax.nn.softplus(after - jnp.where(factor, u, 0.0)), 0.0)
    denom = jnp.maximum(n_keep - 1, 1).astype(dtype)
    loss = jnp.sum(terms / denom[..., None], axis=-1)  # divide first: no overflow near the float max
    # a NaN teacher score among the hard negatives makes the order undefined: NaN out
    t_nan = jnp.any(keep & jnp.isnan(t_sorted), axis=-1)
    loss = jnp.where(t_nan, jnp.nan, loss)
    if row is not None:
        loss = jnp.where(row, loss, jnp.zeros((), dtype))
    return loss
