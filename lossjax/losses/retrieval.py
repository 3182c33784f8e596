"""Retrieval and ranking losses over score matrices.

* :func:`decoupled_softmax_loss` — DEXML's decoupled softmax (each positive competes only with
  the negatives), Gupta et al., ICLR 2024.
* :func:`infonce_loss` — multi-label InfoNCE / softmax for comparison (other positives sit in
  the denominator).
* :func:`soft_topk_loss` — DEXML's soft top-k loss (bisection + implicit-function gradient).
* :func:`mann_whitney_loss` — the AUC-driven MW loss (logistic surrogate of ``1 − AUC``),
  global (in-batch, across queries) or per query.
* :func:`profit_aware_pairwise_bce`, :func:`weighted_listwise_bce` — the two PA-BCE variants
  of the released PARiskRanker code.

Inputs are ``scores [..., L]`` (a query's scores against ``L`` labels/documents; the last axis
unless ``axis`` says otherwise) and ``positives`` (bool, or 0/1 numbers) of the same shape.
``where`` marks valid labels (``[..., L]``) or valid rows (``[...]``). Rows without positives
give 0; to average over rows that have one, use
``reduce_loss(loss, 'mean', where=positives.any(-1))``.

References for the formulas: each function's docstring; frozen test values in
``docs/design/test_vectors.md`` §3.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    finalize,
    masked_logsumexp,
    prepare,
    replicate_on_explicit_mesh,
    require_floating,
    require_option,
    require_positive,
)

__all__ = [
    "decoupled_softmax_loss",
    "infonce_loss",
    "soft_topk_loss",
    "mann_whitney_loss",
    "profit_aware_pairwise_bce",
    "weighted_listwise_bce",
]

_NEG_INF = -jnp.inf


def _prepare_multilabel(
    scores: ArrayLike,
    positives: ArrayLike,
    *,
    axis: int,
    where: ArrayLike | None,
    positives_name: str = "positives",
) -> tuple[Prepared, jax.Array, jax.Array]:
    """Validate ``scores``/``positives``/``where``; returns (prepared, positive mask, valid mask)."""
    positives = jnp.asarray(positives)
    if not (
        positives.dtype == jnp.bool_
        or jnp.issubdtype(positives.dtype, jnp.integer)
        or jnp.issubdtype(positives.dtype, jnp.floating)
    ):
        raise TypeError(f"`{positives_name}` must be bool or numeric, got {positives.dtype}.")
    if positives.shape != jnp.shape(scores):
        raise ValueError(
            f"`{positives_name}` must have the shape of `scores` {jnp.shape(scores)}, "
            f"got {positives.shape}."
        )
    p = prepare(
        scores,
        positives.astype(jnp.float32),
        axis=axis,
        where=where,
        allow_int=False,
        logits_name="scores",
        labels_name=positives_name,
    )
    # only `where` removes a label: a -inf score is a candidate with probability 0
    # (docs/conventions.md), so it stays valid (and a -inf positive gives the loss's limit)
    valid = _valid_labels(p)
    pos = (p.labels > 0) & valid
    return p, pos, valid


def _valid_labels(p: Prepared) -> jax.Array:
    """bool ``[..., L]``: labels not masked by a per-label ``where`` (any score, even ``±inf``)."""
    if p.class_mask is None:
        return jnp.ones(p.logits.shape, bool)
    return p.class_mask


def _poison_nan(loss: jax.Array, x: jax.Array, valid: jax.Array) -> jax.Array:
    """``loss`` plus a term that is NaN (value and gradient) where a valid entry of ``x`` is NaN.

    For losses that select some entries of a row (top-k pairs): a NaN score outside the selection
    must still give NaN, never be dropped (docs/conventions.md). ``x·sg(x)`` at a NaN entry is
    NaN with the NaN gradient ``sg(x)``; elsewhere the term is exactly 0 with a zero gradient.
    """
    bad = valid & jnp.isnan(x)
    xb = jnp.where(bad, x, 0.0)  # double where: a ±inf entry must not give inf·0 in the gradient
    term = jnp.where(bad, xb * jax.lax.stop_gradient(xb), 0.0)
    return loss + jnp.sum(term, axis=-1)


def decoupled_softmax_loss(
    scores: ArrayLike,
    positives: ArrayLike,
    *,
    temperature: float = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""DEXML decoupled softmax: each positive competes only with the negatives.

    .. math::
        \ell_i = -\frac{1}{|P_i|}\sum_{j\in P_i}\Bigl[s_{ij} - \log\bigl(e^{s_{ij}} +
            \textstyle\sum_{k\in N_i} e^{s_{ik}}\bigr)\Bigr]
          = \frac{1}{|P_i|}\sum_{j\in P_i}\mathrm{softplus}\bigl(\mathrm{lse}_{k\in N_i}s_{ik} - s_{ij}\bigr),

    with ``s = scores / temperature`` (DEXML: cosine similarities, ``τ = 0.05``), ``P_i`` the
    positives and ``N_i`` the other valid labels of row ``i``. The released recipe samples one
    positive per query ∝ relevance each step; passing that single positive (others masked out
    with ``where``) reproduces it. On an in-batch symmetric similarity matrix (positives = same
    class, diagonal excluded with ``where``), the pair-weighted mean ``Σ_i |P_i| ℓ_i / Σ_i |P_i|``
    equals :func:`optax.losses.ntxent`.

    Stable: the negatives' log-sum-exp is masked (``-inf`` never meets a subtraction), the
    per-positive term is a softplus; rows without positives (or without valid labels) give 0.
    Only ``where`` removes a label: a ``−inf`` score is probability 0 (``docs/conventions.md``),
    so a ``−inf`` negative drops out of the sum and a ``−inf`` positive gives ``+inf``.

    Args:
      scores: floating ``[..., L]`` scores.
      positives: bool / 0-1 ``[..., L]`` relevance.
      temperature: ``τ > 0``; divides ``scores``.
      axis: label axis.
      where: valid-label mask ``[..., L]`` or row mask ``[...]``.

    Returns:
      Per-row losses ``[...]``.

    References:
      N. Gupta et al., "Dual-Encoders for Extreme Multi-Label Classification", ICLR 2024
      (code: github.com/nilesh2797/DEXML).

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([3.0, 2.0, 0.5, -1.0, 0.0])
      >>> pos = jnp.array([True, True, False, False, False])
      >>> round(float(decoupled_softmax_loss(s, pos)), 6)
      0.241137
    """
    require_positive(temperature, "temperature")
    p, pos, valid = _prepare_multilabel(scores, positives, axis=axis, where=where)
    s = p.logits / temperature
    lse_neg = masked_logsumexp(s, valid & ~pos)
    s_pos = jnp.where(pos, s, 0.0)
    per = jax.nn.softplus(lse_neg[..., None] - s_pos)
    n_pos = jnp.sum(pos, axis=-1)
    loss = jnp.sum(jnp.where(pos, per, 0.0), axis=-1) / jnp.maximum(n_pos, 1)
    return finalize(p, loss)


def infonce_loss(
    scores: ArrayLike,
    positives: ArrayLike,
    *,
    temperature: float = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Multi-label InfoNCE (softmax) loss: other positives stay in the denominator.

    .. math::
        \ell_i = -\frac{1}{|P_i|}\sum_{j\in P_i}\Bigl[s_{ij} - \mathrm{lse}_{k\in P_i\cup N_i} s_{ik}\Bigr],
        \qquad s = \text{scores}/\tau.

    With a single positive per row this equals :func:`decoupled_softmax_loss` and the softmax
    cross-entropy. With several positives they compete with each other, so the loss cannot
    reach 0 (the motivation for DEXML's decoupled softmax).

    Args:
      scores: floating ``[..., L]``.
      positives: bool / 0-1 ``[..., L]``.
      temperature: ``τ > 0``.
      axis: label axis.
      where: valid-label mask ``[..., L]`` or row mask ``[...]``.

    Returns:
      Per-row losses ``[...]`` (0 for rows without positives).

    References:
      A. van den Oord, Y. Li and O. Vinyals, "Representation Learning with Contrastive
      Predictive Coding", arXiv:1807.03748, 2018; N. Gupta et al. (DEXML), ICLR 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([3.0, 2.0, 0.5, -1.0, 0.0])
      >>> pos = jnp.array([True, True, False, False, False])
      >>> round(float(infonce_loss(s, pos)), 6)
      0.917438
    """
    require_positive(temperature, "temperature")
    p, pos, valid = _prepare_multilabel(scores, positives, axis=axis, where=where)
    s = p.logits / temperature
    lse_all = masked_logsumexp(s, valid)
    # a row with no finite-probability label (empty, or all -inf): no term is formed from it
    lse_all = jnp.where(lse_all == _NEG_INF, 0.0, lse_all)
    per = lse_all[..., None] - jnp.where(pos, s, 0.0)
    n_pos = jnp.sum(pos, axis=-1)
    loss = jnp.sum(jnp.where(pos, per, 0.0), axis=-1) / jnp.maximum(n_pos, 1)
    return finalize(p, loss)


def _topk_bracket(s: jax.Array, valid: jax.Array, k: float, alpha: float) -> tuple[jax.Array, jax.Array]:
    """A bracket ``[lo, hi]`` of the soft top-k threshold (``count(lo) ≤ k ≤ count(hi)``).

    The reference brackets with ``[−max s − 10/α, −min s + 10/α]``; its width grows with the
    lowest score, so a very low (or ``−inf``) score — probability 0, which does not move the
    solution — would ruin a fixed number of bisection steps. For a python ``k`` the bracket is
    taken from ranks instead: with ``s_(j)`` the j-th largest score, at ``t = −s_(⌈k⌉) − c/α``
    (``c = 10 + log(L/(k − ⌈k⌉ + 1))``) the count is at most ``⌈k⌉ − 1 + L e^{−c} ≤ k``, and at
    ``t = −s_(⌊k⌋+1) + c'/α`` (``c' = 10 + log(k/(⌊k⌋ + 1 − k))``) it is at least
    ``(⌊k⌋ + 1) σ(c') ≥ k``. The same solution (up to the bisection's resolution) for finite
    scores; where a rank does not exist among the finite scores (or ``k`` is traced) the
    reference's bound over the finite scores is used.
    """
    finite = valid & jnp.isfinite(s)
    s_max = jnp.max(jnp.where(finite, s, -jnp.inf), axis=-1)
    s_min = jnp.min(jnp.where(finite, s, jnp.inf), axis=-1)
    s_max = jnp.where(jnp.isinf(s_max), 0.0, s_max)
    s_min = jnp.where(jnp.isinf(s_min), 0.0, s_min)
    lo = -s_max - 10.0 / alpha
    hi = -s_min + 10.0 / alpha
    n = s.shape[-1]
    if isinstance(k, (int, float, np.number)) and 0 < k < n:
        kf = float(k)
        j_lo, j_hi = math.ceil(kf), math.floor(kf) + 1  # 1 ≤ j_lo ≤ j_hi ≤ n
        # ranks over the valid non-NaN scores (+inf ranks first, -inf last)
        ranked = jax.lax.top_k(jnp.where(valid & ~jnp.isnan(s), s, -jnp.inf), j_hi)[0]
        s_lo, s_hi = ranked[..., j_lo - 1], ranked[..., j_hi - 1]
        c_lo = 10.0 + math.log(n / (kf - j_lo + 1.0))
        c_hi = 10.0 + math.log(kf / (j_hi - kf))
        lo = jnp.where(jnp.isfinite(s_lo), -s_lo - c_lo / alpha, lo)
        hi = jnp.where(jnp.isfinite(s_hi), -s_hi + c_hi / alpha, hi)
    return lo, hi


def _topk_threshold(s: jax.Array, valid: jax.Array, k: float, alpha: float, num_iters: int) -> jax.Array:
    """``t`` with ``Σ_valid σ(α(s + t)) = k`` per row: bisection (no gradient) + one Newton step.

    The Newton step ``t = t* − (f(t*) − k)/sg(f'(t*))`` has the implicit-function derivative
    ``∂t/∂s_m = −v_m/Σv``, ``v = α σ'(α(s + t*))``.
    """
    s_sg = jax.lax.stop_gradient(s)
    lo, hi = _topk_bracket(s_sg, valid, k, alpha)
    s_fill = jnp.where(valid, s_sg, 0.0)

    def count(t: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(valid, jax.nn.sigmoid(alpha * (x + t[..., None])), 0.0), axis=-1)

    def body(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = count(mid, s_fill) < k
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, num_iters, body, (lo, hi))
    t_star = jax.lax.stop_gradient(0.5 * (lo + hi))
    z = alpha * (s_fill + t_star[..., None])
    v = jnp.where(valid, alpha * jax.nn.sigmoid(z) * jax.nn.sigmoid(-z), 0.0)
    v_sum = jax.lax.stop_gradient(jnp.sum(v, axis=-1))
    s_live = jnp.where(valid, s, 0.0)
    resid = count(t_star, s_live) - k
    live = ~(v_sum <= 0)  # a NaN score (NaN v_sum) takes the Newton step: NaN propagates
    step = jnp.where(live, resid / jnp.where(live, v_sum, 1.0), 0.0)
    return t_star - step


def soft_topk_loss(
    scores: ArrayLike,
    positives: ArrayLike,
    *,
    k: int = 5,
    alpha: float = 2.0,
    num_iters: int = 32,
    temperature: float = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""DEXML soft top-k loss.

    Per row, the threshold ``t`` solves ``Σ_k σ(α(s_k + t)) = K`` (a soft top-K membership that
    sums to ``K``); the loss asks every positive to be a member:

    .. math::
        \ell_i = -\frac{1}{|P_i|}\sum_{j\in P_i}\log\sigma\bigl(\alpha(s_{ij} + t_i)\bigr),
        \qquad \frac{\partial t}{\partial s_m} = -\frac{v_m}{\sum_k v_k},\ v_k = \alpha\,\sigma'(\alpha(s_k+t)).

    ``t`` is found by bisection (``num_iters`` steps, 32 in the reference) without gradient,
    followed by one Newton step whose derivative is the implicit-function gradient above (the
    reference's backward pass). ``s = scores/temperature``. The reference brackets ``t`` with
    ``[−max s − 10/α, −min s + 10/α]``; for a python ``k`` the bracket here comes from the
    ``⌈k⌉``-th and ``(⌊k⌋+1)``-th largest scores instead (the same solution, but a very low or
    ``−inf`` score — probability 0 — does not widen it). A ``−inf`` positive gives ``+inf``.

    ``0 < K < L`` is required (checked for python ``k``); a row with ``K ≥`` its number of valid
    labels has no solution (``t`` ends at the upper bracket). DEXML defaults: ``K = 5``,
    ``α = 2``, 32 iterations.

    Args:
      scores: floating ``[..., L]``.
      positives: bool / 0-1 ``[..., L]``.
      k: target size ``K`` of the soft top-k set.
      alpha: sharpness ``α > 0``.
      num_iters: bisection iterations (``≥ 1``).
      temperature: ``τ > 0``; divides ``scores``.
      axis: label axis.
      where: valid-label mask ``[..., L]`` or row mask ``[...]``.

    Returns:
      Per-row losses ``[...]`` (0 for rows without positives).

    References:
      N. Gupta et al., "Dual-Encoders for Extreme Multi-Label Classification", ICLR 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([3.0, 2.0, 0.5, -1.0, 0.0])
      >>> pos = jnp.array([True, True, False, False, False])
      >>> round(float(soft_topk_loss(s, pos, k=2, alpha=2.0)), 5)
      0.13155
    """
    require_positive(alpha, "alpha")
    require_positive(temperature, "temperature")
    if not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise ValueError(f"`num_iters` must be a positive int, got {num_iters!r}.")
    require_positive(k, "k")
    p, pos, valid = _prepare_multilabel(scores, positives, axis=axis, where=where)
    if isinstance(k, (int, float, np.number)) and not k < p.num_classes:
        raise ValueError(f"`k` must be smaller than the number of labels {p.num_classes}, got {k}.")
    s = p.logits / temperature
    t = _topk_threshold(s, valid, k, alpha, int(num_iters))
    z = alpha * (jnp.where(pos, s, 0.0) + t[..., None])
    per = -jax.nn.log_sigmoid(z)
    n_pos = jnp.sum(pos, axis=-1)
    loss = jnp.sum(jnp.where(pos, per, 0.0), axis=-1) / jnp.maximum(n_pos, 1)
    return finalize(p, loss)


def mann_whitney_loss(
    scores: ArrayLike,
    positives: ArrayLike,
    *,
    mode: str = "global",
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    chunk_size: int = 256,
) -> jax.Array:
    r"""Mann–Whitney (AUC-driven) retrieval loss: logistic surrogate of ``1 − AUC``.

    .. math::
        L_{MW} = \frac{1}{|P|\,|N|}\sum_{p\in P}\sum_{n\in N}\mathrm{softplus}\bigl((s_n - s_p)/\tau\bigr),
        \qquad 1-\mathrm{AUC} \le L_{MW}/\ln 2 \ (\tau = 1).

    * ``mode="global"`` (default): ``P`` and ``N`` are *all* positive and negative entries of
      ``scores`` (any shape), compared across queries — for an in-batch ``[B, B]`` score matrix
      with ``positives = eye(B)`` the ``B`` diagonal scores are compared with the ``B(B−1)``
      off-diagonal ones, which is what makes one global threshold meaningful. Returns a scalar.
      Memory is ``O(chunk_size · numel)``: the positives are visited in chunks with
      ``jax.lax.map``.
    * ``mode="per_query"``: each row's positives against its own negatives (pairwise logistic /
      RankNet, averaged over the row's pairs). Returns ``[...]`` (rows = all axes but the last).

    No pair → 0. Normalisation by ``|P||N|`` and the logistic surrogate are from the
    abstract-level description (``docs/open_questions.md``).

    Args:
      scores: floating scores (``[..., L]`` for ``per_query``).
      positives: bool / 0-1 of the shape of ``scores``.
      mode: ``"global"`` or ``"per_query"``.
      temperature: ``τ > 0`` dividing the score differences.
      where: valid-entry mask of the shape of ``scores`` (or a row mask ``[...]``).
      chunk_size: positives per ``lax.map`` step in ``global`` mode.

    Returns:
      A scalar (``global``) or per-row losses ``[...]`` (``per_query``).

    References:
      Sheikholeslami et al., arXiv:2510.00137, 2025 (AUC-driven retrieval training with the
      Mann–Whitney U statistic).

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([2.0, 0.5, 1.0, -0.5, 0.7])
      >>> pos = jnp.array([True, True, False, False, False])
      >>> round(float(mann_whitney_loss(s, pos)), 6)
      0.453106
    """
    require_option(mode, ("global", "per_query"), "mode")
    require_positive(temperature, "temperature")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    require_floating(scores, "scores")
    if jnp.ndim(scores) < 1:
        raise ValueError("`scores` must have at least one axis; got a scalar.")
    p, pos, valid = _prepare_multilabel(scores, positives, axis=-1, where=where)
    neg = valid & ~pos
    s = jnp.where(valid, p.logits, 0.0) / temperature
    if mode == "per_query":
        d = s[..., None, :] - s[..., :, None]  # [..., p, n] = s_n - s_p
        pair = pos[..., :, None] & neg[..., None, :]
        total = jnp.sum(jnp.where(pair, jax.nn.softplus(jnp.where(pair, d, 0.0)), 0.0), axis=(-2, -1))
        n_pairs = jnp.sum(pos, -1) * jnp.sum(neg, -1)
        return finalize(p, total / jnp.maximum(n_pairs, 1).astype(p.dtype))
    if p.row_mask is not None:
        pos = pos & p.row_mask[..., None]
        neg = neg & p.row_mask[..., None]
    # every positive meets every negative of the whole batch: on an Explicit mesh the flattened
    # entries are gathered first (the chunked lax.map cannot run over a sharded axis)
    s_flat, pos_flat, neg_flat = (
        replicate_on_explicit_mesh(a).reshape(-1) for a in (s, pos, neg)
    )

    def one(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        s_p, is_pos = args
        d = jnp.where(neg_flat & is_pos, s_flat - s_p, 0.0)
        return jnp.sum(jnp.where(neg_flat & is_pos, jax.nn.softplus(d), 0.0))

    size = min(int(chunk_size), max(s_flat.shape[0], 1))
    per_pos = jax.lax.map(one, (s_flat, pos_flat), batch_size=size)
    n_pairs = jnp.sum(pos_flat) * jnp.sum(neg_flat)
    return (jnp.sum(per_pos) / jnp.maximum(n_pairs, 1).astype(p.dtype)).astype(p.dtype)


def profit_aware_pairwise_bce(
    scores: ArrayLike,
    pnl: ArrayLike,
    *,
    top_k: int = 3,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""PA-BCE, pairwise P&L-aware variant (PARiskRanker ``--loss_fn graph --pnl 1``).

    Per list: take the ``k = min(top_k, #valid)`` items with the largest P&L, in descending P&L
    order ``π``; for every pair ``i < j`` of them

    .. math::
        L = \frac1k \sum_{i<j} w_{ij}\,\mathrm{softplus}\bigl(-(s_{\pi_i} - s_{\pi_j})\bigr),
        \qquad w_{ij} = \log_{10}\bigl(1 + \mathrm{pnl}_{\pi_i} - \mathrm{pnl}_{\pi_j}\bigr) \ge 0.

    This is the variant of the README's main recipe; the released training loop averages the
    per-list values over lists and drops lists whose loss is exactly 0 from that mean (a
    reduction left to the caller: ``reduce_loss(loss, 'mean', where=loss != 0)``). Open question
    (``docs/open_questions.md``): which variant the paper's equation denotes (the other is
    :func:`weighted_listwise_bce`), and whether the ``1/k`` factor uses the nominal or the
    effective ``k`` for short lists (the effective one is used here).

    Args:
      scores: floating ``[..., L]`` model scores per list.
      pnl: floating ``[..., L]`` profit-and-loss per item (stop-gradient).
      top_k: number of top-P&L items compared (``≥ 2`` to have a pair; reference 3).
      where: valid-item mask ``[..., L]`` or list mask ``[...]``.

    Returns:
      Per-list losses ``[...]``.

    References:
      W. W. Li and T. Ma, "Learn to Rank Risky Investors: A Case Study of Predicting Retail
      Traders' Behaviour and Profitability", ACM TOIS, 2025, doi:10.1145/3768623.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([0.2, 1.0, -0.5, 0.3])
      >>> pnl = jnp.array([5.0, 1.0, 0.0, 2.0])
      >>> round(float(profit_aware_pairwise_bce(s, pnl)), 6)
      0.532943
    """
    if not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int, got {top_k!r}.")
    require_floating(pnl, "pnl")
    if jnp.shape(pnl) != jnp.shape(scores):
        raise ValueError(f"`pnl` must have the shape of `scores` {jnp.shape(scores)}, got {jnp.shape(pnl)}.")
    p = prepare(scores, jnp.asarray(pnl), where=where, allow_int=False, logits_name="scores", labels_name="pnl")
    valid = _valid_labels(p)
    length = p.num_classes
    kk = min(int(top_k), length)
    r = jax.lax.stop_gradient(jnp.where(valid, p.labels, _NEG_INF))
    # descending P&L order, valid items first (stable: ties by index); a NaN P&L sorts first so
    # that it is selected and propagates
    key = jnp.where(jnp.isnan(r), -jnp.inf, -r)
    order = jnp.argsort(jnp.where(valid, key, jnp.inf), axis=-1, stable=True)[..., :kk]
    s = jnp.take_along_axis(jnp.where(valid, p.logits, 0.0), order, axis=-1)
    v = jnp.take_along_axis(valid, order, axis=-1)
    g = jnp.take_along_axis(jnp.where(valid, r, 0.0), order, axis=-1)
    upper = jnp.triu(jnp.ones((kk, kk), bool), k=1)
    pair = upper & v[..., :, None] & v[..., None, :]
    gap = jnp.where(pair, g[..., :, None] - g[..., None, :], 0.0)
    w = jnp.log10(1.0 + gap)
    d = jnp.where(pair, s[..., :, None] - s[..., None, :], 0.0)
    total = jnp.sum(jnp.where(pair, w * jax.nn.softplus(-d), 0.0), axis=(-2, -1))
    k_eff = jnp.maximum(jnp.sum(v, axis=-1), 1).astype(p.dtype)
    # a NaN score outside the selected items is not dropped (docs/conventions.md)
    return finalize(p, _poison_nan(total / k_eff, p.logits, valid))


def weighted_listwise_bce(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    positive_weight: float = 2.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""PA-BCE, weighted listwise variant (PARiskRanker ``PACrossEntropyLoss``).

    .. math::
        L = \sum_i \omega_i\,\mathrm{BCE}(s_i, y_i),\qquad \omega_i = 1 + (\omega_+ - 1)\,y_i,

    i.e. ``ω = positive_weight`` (2 in the reference) for positives and 1 otherwise, summed over
    the list (the reference then averages over lists). The per-item term is
    :func:`optax.losses.sigmoid_binary_cross_entropy` (for finite scores; a ``−inf`` score is
    probability 0, so its term is its limit: 0 for label 0, ``+inf`` for label 1). The P&L
    argument of the reference is unused there and is not taken here.

    Args:
      scores: floating ``[..., L]`` logits.
      labels: ``[..., L]`` binary (or ``[0, 1]``) targets.
      positive_weight: weight ``ω_+ > 0`` of positive items.
      where: valid-item mask ``[..., L]`` or list mask ``[...]``.

    Returns:
      Per-list losses ``[...]``.

    References:
      W. W. Li and T. Ma, "Learn to Rank Risky Investors", ACM TOIS, 2025.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([2.0, -1.0, 0.0])
      >>> round(float(weighted_listwise_bce(s, jnp.array([1, 0, 1]))), 6)
      1.953412
    """
    require_positive(positive_weight, "positive_weight")
    p, _, valid = _prepare_multilabel(scores, labels, axis=-1, where=where, positives_name="labels")
    y = p.labels
    x = jnp.where(valid, p.logits, 0.0)
    # (1 − y)·softplus(x) + y·softplus(−x), each term only where its weight is non-zero, so a
    # ∓inf score with label 0/1 gives its limit 0 (optax's form gives 0·inf = NaN there)
    bce = jnp.where(y != 1, (1.0 - y) * jax.nn.softplus(x), 0.0) + jnp.where(
        y != 0, y * jax.nn.softplus(-x), 0.0
    )
    w = 1.0 + (positive_weight - 1.0) * y
    return finalize(p, jnp.sum(jnp.where(valid, w * bce, 0.0), axis=-1))
