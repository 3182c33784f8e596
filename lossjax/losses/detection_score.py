"""DC-PDD: divergence-based calibration score for pretraining-data detection.

A membership score (not a training loss): given a language model's probabilities of the tokens
of a text and the frequencies of those tokens in a reference corpus, the score is large when the
model is confident on tokens that are *rare* in general text, a sign that the text was seen in
training.

* :func:`reference_log_frequencies` — Laplace-smoothed log token frequencies of a corpus;
* :func:`dc_pdd_score` — the DC-PDD score per text.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import compute_dtype, is_concrete, require_floating, require_integer, require_positive

__all__ = ["reference_log_frequencies", "dc_pdd_score"]


def reference_log_frequencies(counts: ArrayLike, *, smoothing: float = 1.0) -> jax.Array:
    r"""Laplace-smoothed log token frequencies of a reference corpus.

    .. math:: \log p_{\mathrm{ref}}(v) = \log\frac{c_v + \lambda}{\sum_u c_u + \lambda |V|}

    (Zhang et al. 2024, Sec. 3, token frequency distribution with Laplace smoothing, ``λ = 1``).

    Args:
      counts: ``[V]`` non-negative token counts (integer or floating).
      smoothing: ``λ > 0``.

    Returns:
      ``[V]`` log-frequencies (float32, or float64 for float64 input).

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 4) for v in reference_log_frequencies(jnp.array([3, 0, 1]))]
      [-0.5596, -1.9459, -1.2528]
    """
    require_positive(smoothing, "smoothing")
    c = jnp.asarray(counts)
    if c.ndim != 1:
        raise ValueError(f"`counts` must be a vector [V], got shape {c.shape}.")
    dtype = compute_dtype(c.dtype) if jnp.issubdtype(c.dtype, jnp.floating) else jnp.float32
    c = c.astype(dtype)
    return jnp.log(c + smoothing) - jnp.log(jnp.sum(c) + smoothing * c.shape[0])


def dc_pdd_score(
    token_log_probs: ArrayLike,
    token_ids: ArrayLike,
    reference_log_freq: ArrayLike,
    *,
    upper_bound: float,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""DC-PDD membership score of each text (higher: more likely in the pretraining data).

    For the tokens ``x_1..x_T`` of a text, with ``p(x_t)`` the model's probability of token ``t``
    given its prefix and ``p_ref`` the reference-corpus frequency:

    .. math::
        \alpha_t = \min\big(p(x_t)\cdot(-\log p_{\mathrm{ref}}(x_t)),\ a\big),\qquad
        \beta = \frac{1}{|\mathrm{FOS}|}\sum_{t \in \mathrm{FOS}} \alpha_t,

    where FOS is the set of positions holding the *first occurrence* of their token and ``a``
    (``upper_bound``) caps the contribution of any single token (Zhang et al. 2024, Sec. 3,
    Eqs. for the calibrated cross-entropy ``α`` and the score ``β``). ``a`` has no default: the
    paper tunes it.

    Positions masked by ``where`` are ignored (neither scored nor counted as earlier occurrences);
    a text with no position left scores 0. NaN log-probabilities give NaN.

    Reference: W. Zhang, R. Zhang, J. Guo, M. de Rijke, Y. Fan, X. Cheng, "Pretraining Data
    Detection for Large Language Models: A Divergence-based Calibration Method", EMNLP 2024,
    arXiv:2409.14781.

    Args:
      token_log_probs: floating ``[..., T]`` model log-probabilities ``log p(x_t | x_<t)``.
      token_ids: integer ``[..., T]`` token ids in ``[0, V)``.
      reference_log_freq: ``[V]`` log-frequencies (:func:`reference_log_frequencies`).
      upper_bound: ``a > 0``.
      where: optional bool mask ``[...]`` (per text) or ``[..., T]`` (per position).

    Returns:
      ``[...]`` scores.

    Example:
      >>> import jax.numpy as jnp
      >>> lp = jnp.log(jnp.array([0.5, 0.9, 0.2]))
      >>> ids = jnp.array([2, 2, 0])      # position 1 repeats token 2: not scored
      >>> ref = jnp.log(jnp.array([0.5, 0.3, 0.2]))
      >>> round(float(dc_pdd_score(lp, ids, ref, upper_bound=1.0)), 5)
      0.47167
    """
    require_floating(token_log_probs, "token_log_probs")
    require_integer(token_ids, "token_ids")
    require_floating(reference_log_freq, "reference_log_freq")
    require_positive(upper_bound, "upper_bound")
    lp = jnp.asarray(token_log_probs)
    ids = jnp.asarray(token_ids)
    ref = jnp.asarray(reference_log_freq)
    if lp.ndim < 1:
        raise ValueError("`token_log_probs` must have a token axis; got a scalar.")
    if ids.shape != lp.shape:
        raise ValueError(f"`token_ids` must have the shape of `token_log_probs` {lp.shape}, got {ids.shape}.")
    if ref.ndim != 1:
        raise ValueError(f"`reference_log_freq` must be a vector [V], got shape {ref.shape}.")
    dtype = compute_dtype(jnp.result_type(lp, ref))
    lp, ref = lp.astype(dtype), ref.astype(dtype)
    valid = jnp.ones(lp.shape, bool)
    row = None
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape == lp.shape:
            valid = where
        elif where.shape == lp.shape[:-1]:
            row = where
            valid = jnp.broadcast_to(where[..., None], lp.shape)
        else:
            raise ValueError(f"`where` must have shape {lp.shape[:-1]} or {lp.shape}, got {where.shape}.")
    n_vocab = ref.shape[0]
    bad_id = (ids < 0) | (ids >= n_vocab)
    if is_concrete(ids) and is_concrete(where):
        keep = np.ones(ids.shape, bool) if where is None else np.broadcast_to(
            np.asarray(where).reshape(np.shape(where) + (1,) * (ids.ndim - np.ndim(where))), ids.shape
        )
        ids_np = np.asarray(ids)
        if np.any(((ids_np < 0) | (ids_np >= n_vocab)) & keep):
            raise ValueError(f"`token_ids` must lie in [0, {n_vocab}) (the length of `reference_log_freq`).")
    t = lp.shape[-1]
    # first occurrence: no earlier valid position holds the same id
    same = ids[..., :, None] == ids[..., None, :]
    earlier = jnp.tril(jnp.ones((t, t), bool), k=-1)
    seen = jnp.any(same & earlier & valid[..., None, :], axis=-1)
    first = valid & ~seen
    any_nan = jnp.any(valid & jnp.isnan(lp), axis=-1)  # NaN at any counted position (repeats too)
    lp = jnp.where(first, lp, 0.0)  # positions that do not count never reach exp
    neg_ref = -ref[jnp.clip(ids, 0, n_vocab - 1)]
    neg_ref = jnp.where(bad_id, jnp.nan, neg_ref)  # traced out-of-range id: NaN, never a valid token
    alpha = jnp.minimum(jnp.exp(lp) * jnp.where(first, neg_ref, 1.0), upper_bound)
    alpha = jnp.where(jnp.isnan(lp), jnp.nan, alpha)  # min(NaN, a) must stay NaN
    total = jnp.sum(jnp.where(first, alpha, 0.0), axis=-1)
    score = total / jnp.maximum(jnp.sum(first, axis=-1), 1).astype(dtype)
    score = jnp.where(any_nan, jnp.nan, score)
    if row is not None:
        score = jnp.where(row, score, jnp.zeros((), dtype))
    return score
