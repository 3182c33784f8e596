"""Deep metric learning losses on a batch of embeddings.

Every function takes ``(embeddings [B, D], labels [B])`` (integer labels; pairs with equal labels
are positives, pairs with different labels negatives, an example is never paired with itself) and
returns one value per anchor ``[B]`` where the loss decomposes over anchors. ``where`` is a row
mask ``[B]`` for padded batches: masked rows are neither anchors nor partners and give 0.

Anchors with no positive pair (single-example classes, all-distinct batches) and batches with a
single class give 0 with zero gradient, never NaN: every set reduction goes through
:func:`lossjax.losses._core.masked_logsumexp` or a ``jnp.where`` guarded mean.

Embeddings are L2-normalised first (``normalize=True``, the pytorch-metric-learning convention)
and similarities are cosine similarities ``S = ê êᵀ``.

Losses:

* :func:`multi_similarity_loss` (+ :func:`multi_similarity_miner`) — Wang et al., CVPR 2019.
* :func:`supcon_loss` — Khosla et al., NeurIPS 2020 ("L_out").
* :func:`triplet_loss` — batch-all / batch-hard / semi-hard mining (Hermans et al. 2017).
* :func:`soft_triple_loss` (+ :func:`soft_triple_center_regularizer`) — Qian et al., ICCV 2019.
* :func:`metrix_multi_similarity_loss` (+ :func:`mixup_positiveness`) — Venkataramanan et al.,
  ICLR 2022.
* :func:`proto_triplet_loss`, :func:`icnn_loss` (+ :func:`class_prototypes`) — the SuSana
  few-shot distance losses, Mendez-Ruiz et al. 2023.

References for the formulas: each function's docstring; oracle values (pytorch-metric-learning) in
``docs/design/test_vectors.md`` §3.
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
    require_nonnegative,
    require_option,
    require_positive,
    require_rank,
)

__all__ = [
    "multi_similarity_miner",
    "multi_similarity_loss",
    "supcon_loss",
    "triplet_loss",
    "soft_triple_loss",
    "soft_triple_center_regularizer",
    "mixup_positiveness",
    "metrix_multi_similarity_loss",
    "class_prototypes",
    "proto_triplet_loss",
    "icnn_loss",
]

_HI = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# private helpers: validation, normalisation, pair masks, distances
# --------------------------------------------------------------------------------------------


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(‖x‖, eps)`` row-wise with a finite gradient at ``x = 0``."""
    n2 = jnp.sum(x * x, axis=-1, keepdims=True)
    big = n2 > eps * eps
    norm = jnp.where(big, jnp.sqrt(jnp.where(big, n2, 1.0)), eps)
    return x / norm


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 0))`` with gradient 0 (not inf) at 0 (double where)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _nan_sqrt(x: jax.Array) -> jax.Array:
    """:func:`_safe_sqrt` that keeps a NaN (value and gradient): NaN in → NaN out."""
    return jnp.where(jnp.isnan(x), x, _safe_sqrt(x))


def _row_mask(where: ArrayLike | None, n: int, name: str = "where") -> jax.Array:
    """One flag per row (:func:`bool_mask`), on every device (the pairwise losses see the whole batch)."""
    return replicate_on_explicit_mesh(bool_mask(where, (n,), name))


def _embeddings(
    embeddings: ArrayLike, normalize: bool, name: str = "embeddings"
) -> jax.Array:
    require_floating(embeddings, name)
    e = jnp.asarray(embeddings)
    require_rank(e, 2, name)
    e = replicate_on_explicit_mesh(e.astype(compute_dtype(e.dtype)))  # pairwise: whole batch
    return _l2_normalize(e) if normalize else e


def _labels(labels: ArrayLike, n: int, name: str = "labels") -> jax.Array:
    labels = jnp.asarray(labels)
    require_integer(labels, name)
    if labels.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},) (one label per embedding), got {labels.shape}.")
    return replicate_on_explicit_mesh(labels)


def _prepare(
    embeddings: ArrayLike, labels: ArrayLike, where: ArrayLike | None, normalize: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    e = _embeddings(embeddings, False)
    y = _labels(labels, e.shape[0])
    valid = _row_mask(where, e.shape[0])
    e = _mask_rows(e, valid)
    return (_l2_normalize(e) if normalize else e), y, valid


def _mask_rows(e: jax.Array, valid: jax.Array) -> jax.Array:
    """Double where: masked rows are replaced by a harmless unit vector before any arithmetic,
    so a NaN/inf there reaches neither the value nor the gradient."""
    safe = jnp.zeros(e.shape[1:], e.dtype).at[..., 0].set(1.0) if e.shape[-1] else e[:0]
    return jnp.where(valid[:, None], e, safe)


def _pair_masks(labels: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Positive and negative pair masks ``[B, B]`` (no self pairs, masked rows excluded)."""
    n = labels.shape[0]
    ok = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    same = labels[:, None] == labels[None, :]
    return ok & same, ok & ~same


def _cosine(e: jax.Array) -> jax.Array:
    return jnp.matmul(e, e.T, precision=_HI)


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``|a|² + |b|² − 2 a·b`` clamped at 0."""
    a2 = jnp.sum(a * a, axis=-1)[:, None]
    b2 = jnp.sum(b * b, axis=-1)[None, :]
    return jnp.maximum(a2 + b2 - 2.0 * jnp.matmul(a, b.T, precision=_HI), 0.0)


def _log1p_sum_exp(z: jax.Array, mask: jax.Array) -> jax.Array:
    """``log(1 + Σ_{mask} e^z)`` along the last axis; 0 with zero gradient for an empty set."""
    return jnp.logaddexp(0.0, masked_logsumexp(z, mask))


def _finish(loss: jax.Array, valid: jax.Array, dtype) -> jax.Array:
    return jnp.where(valid, loss, 0.0).astype(dtype)


# --------------------------------------------------------------------------------------------
# Multi-Similarity
# --------------------------------------------------------------------------------------------


def multi_similarity_miner(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: float = 0.1,
    normalize: bool = True,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Pair mining of the Multi-Similarity loss (Wang et al., CVPR 2019).

    With cosine similarities ``S``, positives ``P_i`` and negatives ``N_i`` of anchor ``i``:

    .. math::
        \text{keep negative } k \iff S_{ik} + \epsilon > \min_{j\in P_i} S_{ij},\qquad
        \text{keep positive } j \iff S_{ij} - \epsilon < \max_{k\in N_i} S_{ik}.

    An anchor without positives keeps no negative (``min ∅ = +∞``) and one without negatives keeps
    no positive. The selection is computed on ``stop_gradient`` similarities (it is not
    differentiable) and matches pytorch-metric-learning's ``MultiSimilarityMiner``.

    Args:
      embeddings: floating ``[B, D]``.
      labels: integer ``[B]``.
      epsilon: mining margin ε ``≥ 0``.
      normalize: L2-normalise the embeddings first.
      where: optional bool row mask ``[B]``.

    Returns:
      ``(pos_mask, neg_mask)``, bool ``[B, B]`` each.

    References:
      X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, "Multi-Similarity Loss with General Pair
      Weighting for Deep Metric Learning", CVPR 2019, arXiv:1904.06627.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]])
      >>> pos, neg = multi_similarity_miner(e, jnp.array([0, 0, 1, 1]))
      >>> pos.shape, bool(neg.any())
      ((4, 4), False)
    """
    require_nonnegative(epsilon, "epsilon")
    e, y, valid = _prepare(embeddings, labels, where, normalize)
    return _ms_mine(jax.lax.stop_gradient(_cosine(e)), *_pair_masks(y, valid), epsilon)


def _ms_mine(s, pos, neg, epsilon):
    min_pos = jnp.min(jnp.where(pos, s, jnp.inf), axis=-1, keepdims=True, initial=jnp.inf)
    max_neg = jnp.max(jnp.where(neg, s, -jnp.inf), axis=-1, keepdims=True, initial=-jnp.inf)
    return pos & (s - epsilon < max_neg), neg & (s + epsilon > min_pos)


def multi_similarity_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    lam: float = 0.5,
    epsilon: float | None = None,
    normalize: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Multi-Similarity loss per anchor (Wang et al., CVPR 2019).

    .. math::
        \ell_i = \frac1\alpha \log\Bigl(1 + \sum_{k\in P_i} e^{-\alpha (S_{ik}-\lambda)}\Bigr)
               + \frac1\beta \log\Bigl(1 + \sum_{k\in N_i} e^{\beta (S_{ik}-\lambda)}\Bigr)

    computed as ``logaddexp(0, masked_logsumexp(·))`` (no overflow of ``e^{βS}`` in half
    precision; an empty set gives exactly 0 with zero gradient). With ``epsilon`` set, ``P_i`` and
    ``N_i`` are restricted by :func:`multi_similarity_miner`.

    Defaults follow pytorch-metric-learning (α=2, β=50, λ=0.5); the official code
    (msight-tech/research-ms-loss) uses β=40, λ=0.5, ε=0.1 and the paper's text λ=1. The official
    code also drops positives with ``S ≥ 1 − 1e-5`` and divides by ``B``; here the mean over
    anchors of the returned ``[B]`` equals pytorch-metric-learning's ``MeanReducer`` value.

    Args:
      embeddings: floating ``[B, D]``.
      labels: integer ``[B]``.
      alpha: positive scale α ``> 0``.
      beta: negative scale β ``> 0``.
      lam: similarity threshold λ.
      epsilon: mining margin; ``None`` = no mining.
      normalize: L2-normalise the embeddings first.
      where: optional bool row mask ``[B]``.

    Returns:
      Per-anchor losses ``[B]`` (float32, or float64 for float64 input).

    References:
      X. Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep Metric
      Learning", CVPR 2019, arXiv:1904.06627.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]])
      >>> multi_similarity_loss(e, jnp.array([0, 0, 1, 1])).shape
      (4,)
      >>> float(multi_similarity_loss(e, jnp.array([0, 1, 2, 3]))[0] > 0)  # negatives only
      1.0
    """
    require_positive(alpha, "alpha")
    require_positive(beta, "beta")
    if epsilon is not None:
        require_nonnegative(epsilon, "epsilon")
    e, y, valid = _prepare(embeddings, labels, where, normalize)
    s = _cosine(e)
    pos, neg = _pair_masks(y, valid)
    if epsilon is not None:
        pos, neg = _ms_mine(jax.lax.stop_gradient(s), pos, neg, epsilon)
    lp = _log1p_sum_exp(-alpha * (s - lam), pos) / alpha
    ln = _log1p_sum_exp(beta * (s - lam), neg) / beta
    return _finish(lp + ln, valid, e.dtype)


# --------------------------------------------------------------------------------------------
# Supervised contrastive
# --------------------------------------------------------------------------------------------


def supcon_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 0.1,
    normalize: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Supervised contrastive loss, "L_out" form, per anchor (Khosla et al., NeurIPS 2020).

    .. math::
        \ell_i = -\frac{1}{|P(i)|}\sum_{p\in P(i)}
          \Bigl[\frac{S_{ip}}{\tau} - \operatorname{logsumexp}_{a\neq i}\frac{S_{ia}}{\tau}\Bigr],

    0 for anchors with ``|P(i)| = 0``. The denominator contains every other (unmasked) example,
    positives included (InfoNCE style); ``optax.losses.ntxent`` is the decoupled variant that
    keeps only one positive in the denominator. pytorch-metric-learning's ``SupConLoss`` reduces
    with the mean over anchors with a non-zero loss (``AvgNonZeroReducer``).

    Multi-view input ``[B, V, D]`` (V augmented views per example) is flattened to ``B·V``
    anchors sharing the label of their example; the output is then ``[B, V]``.

    Default τ=0.1 (pytorch-metric-learning); the SupContrast repository uses 0.07.

    Args:
      embeddings: floating ``[B, D]`` or ``[B, V, D]``.
      labels: integer ``[B]``.
      temperature: τ ``> 0`` (divides the similarities).
      normalize: L2-normalise the embeddings first.
      where: optional bool row mask ``[B]``.

    Returns:
      Per-anchor losses ``[B]`` (or ``[B, V]``).

    References:
      P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]])
      >>> [round(v, 4) for v in supcon_loss(e, jnp.array([0, 0, 1, 1])).tolist()]
      [0.0005, 0.0014, 0.0002, 0.002]
    """
    require_positive(temperature, "temperature")
    require_floating(embeddings, "embeddings")
    x = jnp.asarray(embeddings)
    require_rank(x, (2, 3), "embeddings")
    out_shape = x.shape[:-1]
    if x.ndim == 3:
        b, v, _ = x.shape
        y = _labels(labels, b)
        valid = _row_mask(where, b)
        x = x.reshape(b * v, x.shape[-1])
        labels = jnp.repeat(y, v)
        where = jnp.repeat(valid, v)
    e, y, valid = _prepare(x, labels, where, normalize)
    z = _cosine(e) / temperature
    pos, neg = _pair_masks(y, valid)
    lse = masked_logsumexp(z, pos | neg)
    lse = jnp.where(jnp.isinf(lse), 0.0, lse)
    n_pos = jnp.sum(pos, axis=-1)
    total = jnp.sum(jnp.where(pos, z - lse[:, None], 0.0), axis=-1)
    loss = jnp.where(n_pos > 0, -total / jnp.maximum(n_pos, 1), 0.0)
    return _finish(loss, valid, e.dtype).reshape(out_shape)


# --------------------------------------------------------------------------------------------
# Triplet with mining
# --------------------------------------------------------------------------------------------


def triplet_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.05,
    mining: str = "all",
    soft: bool = False,
    normalize: bool = True,
    where: ArrayLike | None = None,
    return_counts: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Triplet margin loss with in-batch mining, per anchor.

    .. math::
        \ell(a,p,n) = \max\bigl(0,\; d(a,p) - d(a,n) + m\bigr)
        \quad(\text{or } \operatorname{softplus}(\cdot) \text{ with } \texttt{soft=True}),

    ``d`` the Euclidean distance (on L2-normalised embeddings by default). Mining:

    * ``"all"`` — every valid triplet (``y_p = y_a ≠ y_n``, ``p ≠ a``);
    * ``"semihard"`` — triplets with ``d(a,p) < d(a,n) < d(a,p) + m``;
    * ``"hard"`` — batch-hard (Hermans et al. 2017): per anchor the farthest positive and the
      nearest negative (one triplet per anchor with both).

    The value of anchor ``a`` is the mean of its *active* (non-zero) triplet losses, and 0 when it
    has none. pytorch-metric-learning's ``TripletMarginLoss`` reduces globally
    (``Σ`` over all active triplets ``/`` number of active triplets), which is *not* the mean of
    per-anchor means: pass ``return_counts=True`` to get ``(sums, counts)`` per anchor and reduce
    with ``sums.sum() / max(counts.sum(), 1)``.

    Distances use ``|a|² + |b|² − 2a·b`` clamped at 0 and a double-``where`` square root, so the
    gradient is finite for coincident embeddings. ``mining="all"`` forms a ``[B, B, B]`` tensor.

    ``optax.losses.triplet_margin_loss`` is not called: it takes explicit triplets (no mining)
    and raises ``a − p`` to ``norm_degree`` without ``abs`` (wrong for odd degrees; optax
    ``losses/_self_supervised.py``).

    Args:
      embeddings: floating ``[B, D]``.
      labels: integer ``[B]``.
      margin: m ``≥ 0``.
      mining: ``"all"``, ``"semihard"`` or ``"hard"``.
      soft: softplus instead of the hinge (every mined triplet is then active).
      normalize: L2-normalise the embeddings first.
      where: optional bool row mask ``[B]``.
      return_counts: also return the per-anchor number of active triplets.

    Returns:
      Per-anchor losses ``[B]``, or ``(sums [B], counts [B])`` with ``return_counts=True``.

    References:
      F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet", CVPR 2015, arXiv:1503.03832;
      A. Hermans, L. Beyer, B. Leibe, "In Defense of the Triplet Loss for Person
      Re-Identification", arXiv:1703.07737, 2017.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.1]])
      >>> l = triplet_loss(e, jnp.array([0, 0, 1, 1]), margin=0.5, mining="hard")
      >>> [round(v, 4) for v in l.tolist()]
      [1.1488, 1.1488, 1.542, 0.9653]
    """
    require_nonnegative(margin, "margin")
    require_option(mining, ("all", "semihard", "hard"), "mining")
    e, y, valid = _prepare(embeddings, labels, where, normalize)
    d = _safe_sqrt(_sq_dists(e, e))
    pos, neg = _pair_masks(y, valid)
    act = jax.nn.softplus if soft else jax.nn.relu
    if mining == "hard":
        dp = jnp.max(jnp.where(pos, d, -jnp.inf), axis=-1, initial=-jnp.inf)
        dn = jnp.min(jnp.where(neg, d, jnp.inf), axis=-1, initial=jnp.inf)
        ok = jnp.any(pos, axis=-1) & jnp.any(neg, axis=-1)
        v = act(jnp.where(ok, dp - dn, 0.0) + margin)
        sums = jnp.where(ok, v, 0.0)
        counts = (ok & (v > 0)).astype(jnp.int32)
    else:
        dap = d[:, :, None]
        dan = d[:, None, :]
        trip = pos[:, :, None] & neg[:, None, :]
        if mining == "semihard":
            ds = jax.lax.stop_gradient(d)
            trip = trip & (ds[:, None, :] > ds[:, :, None]) & (ds[:, None, :] < ds[:, :, None] + margin)
        v = act(dap - dan + margin)
        active = trip & (v > 0)
        sums = jnp.sum(jnp.where(active, v, 0.0), axis=(1, 2))
        counts = jnp.sum(active, axis=(1, 2)).astype(jnp.int32)
    sums = _finish(sums, valid, e.dtype)
    counts = jnp.where(valid, counts, 0)
    if return_counts:
        return sums, counts
    return (sums / jnp.maximum(counts, 1)).astype(e.dtype)


# --------------------------------------------------------------------------------------------
# SoftTriple
# --------------------------------------------------------------------------------------------


def _soft_triple_centers(centers: ArrayLike, centers_per_class: int, dim: int) -> jax.Array:
    require_floating(centers, "centers")
    w = jnp.asarray(centers)
    require_rank(w, 2, "centers")
    if not isinstance(centers_per_class, int) or centers_per_class < 1:
        raise ValueError(f"`centers_per_class` must be a positive int, got {centers_per_class!r}.")
    if w.shape[0] != dim:
        raise ValueError(f"`centers` must have shape [D={dim}, C*K], got {w.shape}.")
    if w.shape[1] % centers_per_class:
        raise ValueError(
            f"`centers` has {w.shape[1]} columns, not a multiple of `centers_per_class`={centers_per_class}."
        )
    w = _l2_normalize(w.astype(compute_dtype(w.dtype)).T)  # [C*K, D], unit rows
    return w.reshape(-1, centers_per_class, dim)  # [C, K, D]


def soft_triple_loss(
    embeddings: ArrayLike,
    centers: ArrayLike,
    labels: ArrayLike,
    *,
    centers_per_class: int,
    la: float = 20.0,
    gamma: float = 0.1,
    margin: float = 0.01,
    normalize: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""SoftTriple loss per example (Qian et al., ICCV 2019).

    ``K`` unit-norm centers per class. Relaxed class similarity and loss:

    .. math::
        S'_{ic} = \sum_k \operatorname{softmax}_k\!\bigl(x_i\cdot w_c^k/\gamma\bigr)\,x_i\cdot w_c^k,
        \qquad
        \ell_i = -\log\frac{e^{\lambda(S'_{iy}-\delta)}}
                 {e^{\lambda(S'_{iy}-\delta)} + \sum_{c\neq y} e^{\lambda S'_{ic}}}.

    The inner softmax is a log-softmax, the outer one the shared stable cross-entropy. Add
    ``tau * soft_triple_center_regularizer(centers, ...)`` (paper τ=0.2) for the center merging
    term.

    Args:
      embeddings: floating ``[B, D]`` (L2-normalised when ``normalize``).
      centers: floating ``[D, C·K]`` (a Dense kernel; columns are class-major: column
        ``c·K + k`` is center k of class c, as pytorch-metric-learning's ``fc``); normalised
        per column.
      labels: integer ``[B]`` in ``[0, C)`` (clipped under jit).
      centers_per_class: K.
      la: λ, the outer scale (paper 20).
      gamma: γ, the inner temperature ``> 0`` (paper 0.1).
      margin: δ (paper 0.01).
      normalize: L2-normalise the embeddings first.
      where: optional bool row mask ``[B]``.

    Returns:
      Per-example losses ``[B]``.

    References:
      Q. Qian, L. Shang, B. Sun, J. Hu, H. Li, R. Jin, "SoftTriple Loss: Deep Metric Learning
      Without Triplet Sampling", ICCV 2019, arXiv:1909.05235.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> w = jnp.array([[1.0, 0.9, 0.0, 0.1], [0.0, 0.1, 1.0, 0.9]])  # C=2, K=2
      >>> soft_triple_loss(e, w, jnp.array([0, 1]), centers_per_class=2).round(4)
      Array([0., 0.], dtype=float32)
    """
    require_positive(gamma, "gamma")
    e, y, valid = _prepare(embeddings, labels, where, normalize)
    w = _soft_triple_centers(centers, centers_per_class, e.shape[1]).astype(e.dtype)
    sim = jnp.einsum("bd,ckd->bck", e, w, precision=_HI)  # [B, C, K]
    att = jax.nn.softmax(sim / gamma, axis=-1)
    s_class = jnp.sum(att * sim, axis=-1)  # [B, C]
    num_classes = s_class.shape[-1]
    yc = jnp.clip(y, 0, num_classes - 1)
    z = la * (s_class - margin * jax.nn.one_hot(yc, num_classes, dtype=e.dtype))
    loss = jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, yc[:, None], axis=-1)[:, 0]
    return _finish(loss, valid, e.dtype)


def soft_triple_center_regularizer(centers: ArrayLike, *, centers_per_class: int) -> jax.Array:
    r"""SoftTriple center-merging regulariser (Qian et al., ICCV 2019).

    .. math::
        R(W) = \frac{1}{C K (K-1)} \sum_c \sum_{t<s} \sqrt{2 - 2\, w_c^t\cdot w_c^s}

    (centers normalised per column). The square root has a double-``where`` guard: coincident
    centers give 0 with a zero (not NaN) gradient. Returns 0 for ``K = 1``.

    Args:
      centers: floating ``[D, C·K]`` (see :func:`soft_triple_loss`).
      centers_per_class: K.

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # one class, two orthogonal centers
      >>> round(float(soft_triple_center_regularizer(w, centers_per_class=2)), 4)
      0.7071
    """
    w = jnp.asarray(centers)
    require_rank(w, 2, "centers")
    w = _soft_triple_centers(w, centers_per_class, w.shape[0])  # [C, K, D]
    c, k, _ = w.shape
    if k == 1:
        return jnp.zeros((), w.dtype)
    g = jnp.einsum("ckd,cjd->ckj", w, w, precision=_HI)
    upper = jnp.triu(jnp.ones((k, k), bool), 1)
    r = jnp.where(upper, _safe_sqrt(2.0 - 2.0 * g), 0.0)
    return jnp.sum(r) / (c * k * (k - 1))


# --------------------------------------------------------------------------------------------
# Metrix
# --------------------------------------------------------------------------------------------


def mixup_positiveness(
    anchor_labels: ArrayLike, labels_a: ArrayLike, labels_b: ArrayLike, mix: ArrayLike
) -> jax.Array:
    r"""Positiveness of mixed examples w.r.t. anchors (Metrix, Venkataramanan et al. 2022).

    A mixed example ``v = Mix_λ(x_a, x_b)`` is positive to anchor ``i`` in proportion

    .. math:: w_{iv} = \lambda_v [y_{a,v} = y_i] + (1-\lambda_v)[y_{b,v} = y_i].

    Args:
      anchor_labels: integer ``[B]``.
      labels_a: integer ``[M]``, label of the first mixed component.
      labels_b: integer ``[M]``, label of the second component.
      mix: floating ``[M]`` mixing weights λ in ``[0, 1]``.

    Returns:
      ``[B, M]`` weights in ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> mixup_positiveness(jnp.array([0, 1]), jnp.array([0]), jnp.array([1]), jnp.array([0.3]))
      Array([[0.3],
             [0.7]], dtype=float32)
    """
    y = jnp.asarray(anchor_labels)
    require_integer(y, "anchor_labels")
    require_rank(y, 1, "anchor_labels")
    ya = jnp.asarray(labels_a)
    yb = jnp.asarray(labels_b)
    require_integer(ya, "labels_a")
    require_integer(yb, "labels_b")
    require_rank(ya, 1, "labels_a")
    require_floating(mix, "mix")
    lam = jnp.asarray(mix)
    if yb.shape != ya.shape or lam.shape != ya.shape:
        raise ValueError(
            f"`labels_a`, `labels_b` and `mix` must share one shape [M]; got {ya.shape}, "
            f"{yb.shape}, {lam.shape}."
        )
    lam = lam.astype(compute_dtype(lam.dtype))
    sa = (y[:, None] == ya[None, :]).astype(lam.dtype)
    sb = (y[:, None] == yb[None, :]).astype(lam.dtype)
    return lam[None, :] * sa + (1.0 - lam[None, :]) * sb


def _log_weight(w: jax.Array) -> jax.Array:
    pos = w > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, w, 1.0)), -jnp.inf)


def metrix_multi_similarity_loss(
    embeddings: ArrayLike,
    mixed_embeddings: ArrayLike,
    positiveness: ArrayLike,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    lam: float = 0.5,
    normalize: bool = True,
    where: ArrayLike | None = None,
    pair_where: ArrayLike | None = None,
) -> jax.Array:
    r"""Metrix mixed-example Multi-Similarity loss per anchor (Venkataramanan et al., ICLR 2022).

    For anchors ``a`` and mixed examples ``v`` with interpolated positiveness ``w_{av} ∈ [0,1]``
    (e.g. from :func:`mixup_positiveness`):

    .. math::
        \ell_a = \frac1\alpha\log\Bigl(1+\sum_v w_{av}\, e^{-\alpha(S_{av}-\lambda)}\Bigr)
               + \frac1\beta\log\Bigl(1+\sum_v (1-w_{av})\, e^{\beta(S_{av}-\lambda)}\Bigr),

    with the weights folded into the exponent (``log 0 = −∞``), so ``w ∈ {0, 1}`` reduces exactly
    to :func:`multi_similarity_loss` on the corresponding positives/negatives. The Metrix
    objective is ``clean_loss + weight · mixed_loss``; combine it with
    :func:`multi_similarity_loss` yourself. The paper applies this weighting to each pair-based
    loss; only the Multi-Similarity instance is provided (open question: ``docs/open_questions.md``).

    Args:
      embeddings: floating ``[B, D]`` anchors.
      mixed_embeddings: floating ``[M, D]`` embeddings of mixed examples.
      positiveness: floating ``[B, M]`` in ``[0, 1]`` (treated as constant).
      alpha, beta, lam: as in :func:`multi_similarity_loss`.
      normalize: L2-normalise both sets of embeddings.
      where: optional bool anchor mask ``[B]``.
      pair_where: optional bool ``[B, M]``: pairs to use (e.g. exclude an anchor from itself).

    Returns:
      Per-anchor losses ``[B]``.

    References:
      S. Venkataramanan, B. Psomas, E. Kijak, L. Amsaleg, K. Karantzalos, Y. Avrithis, "It Takes
      Two to Tango: Mixup for Deep Metric Learning", ICLR 2022, arXiv:2106.04990.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> v = jnp.array([[0.7, 0.7]])
      >>> metrix_multi_similarity_loss(e, v, jnp.array([[0.5], [0.5]])).shape
      (2,)
    """
    require_positive(alpha, "alpha")
    require_positive(beta, "beta")
    e = _embeddings(embeddings, False)
    v = _embeddings(mixed_embeddings, normalize, "mixed_embeddings")
    if v.shape[1] != e.shape[1]:
        raise ValueError(
            f"`mixed_embeddings` must have D={e.shape[1]} columns, got shape {v.shape}."
        )
    require_floating(positiveness, "positiveness")
    w = jnp.asarray(positiveness)
    shape = (e.shape[0], v.shape[0])
    if w.shape != shape:
        raise ValueError(f"`positiveness` must have shape {shape}, got {w.shape}.")
    valid = _row_mask(where, e.shape[0])
    if where is not None:  # double where: masked anchors are replaced before any arithmetic
        e = _mask_rows(e, valid)
    if normalize:
        e = _l2_normalize(e)
    pm = jnp.ones(shape, bool)
    if pair_where is not None:
        pm = jnp.asarray(pair_where)
        if pm.dtype != jnp.bool_:
            raise TypeError(f"`pair_where` must be a bool array, got {pm.dtype}.")
        if pm.shape != shape:
            raise ValueError(f"`pair_where` must have shape {shape}, got {pm.shape}.")
    dtype = jnp.promote_types(e.dtype, v.dtype)
    w = jax.lax.stop_gradient(jnp.clip(w.astype(dtype), 0.0, 1.0))
    s = jnp.matmul(e.astype(dtype), v.astype(dtype).T, precision=_HI)
    lp = _log1p_sum_exp(-alpha * (s - lam) + _log_weight(w), pm) / alpha
    ln = _log1p_sum_exp(beta * (s - lam) + _log_weight(1.0 - w), pm) / beta
    return _finish(lp + ln, valid, dtype)


# --------------------------------------------------------------------------------------------
# SuSana few-shot distance losses
# --------------------------------------------------------------------------------------------


def class_prototypes(
    embeddings: ArrayLike,
    labels: ArrayLike,
    num_classes: int,
    *,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Class means ``c_k = mean_{i: y_i = k} x_i`` (prototypes, Snell et al. 2017) ``[C, D]``.

    Classes without examples get a zero prototype. Computed with ``segment_sum``.

    Example:
      >>> import jax.numpy as jnp
      >>> class_prototypes(jnp.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), jnp.array([0, 0, 1]), 2)
      Array([[2., 0.],
             [0., 2.]], dtype=float32)
    """
    e = _embeddings(embeddings, False)
    y = _labels(labels, e.shape[0])
    valid = _row_mask(where, e.shape[0])
    wt = valid.astype(e.dtype)
    s = jax.ops.segment_sum(e * wt[:, None], y, num_segments=num_classes)
    n = jax.ops.segment_sum(wt, y, num_segments=num_classes)
    return s / jnp.maximum(n, 1.0)[:, None]


def proto_triplet_loss(
    queries: ArrayLike,
    labels: ArrayLike,
    prototypes: ArrayLike,
    *,
    margin: float = 0.5,
    eps: float = 1e-6,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Proto-Triplet loss per query (SuSana, Mendez-Ruiz et al. 2023).

    .. math::
        \ell_q = \max\bigl(0,\; d(q, c_{y_q}) - \min_{c\neq y_q} d(q, c) + m\bigr),\qquad
        d(u, v) = \sqrt{\lVert u - v\rVert^2 + \epsilon}

    (the ε inside the root, as in the authors' code, keeps the gradient finite when a query sits
    on its prototype). The authors average over queries; take the mean of the output.

    Args:
      queries: floating ``[Q, D]`` query embeddings (not normalised).
      labels: integer ``[Q]`` in ``[0, C)``.
      prototypes: floating ``[C, D]`` class prototypes (e.g. :func:`class_prototypes`), C ≥ 2.
      margin: m ``≥ 0`` (authors: 0.5).
      eps: ε ``≥ 0`` added under the square root.
      where: optional bool query mask ``[Q]``.

    Returns:
      Per-query losses ``[Q]``.

    References:
      M. Mendez-Ruiz, J. Gonzalez-Zapata, I. Reyes-Amezcua, D. Flores-Araiza, F. Lopez-Tiro,
      A. Mendez-Vazquez, G. Ochoa-Ruiz, "SuSana Distancia is all you need: Enforcing class
      separability in metric learning via two novel distance-based loss functions for few-shot
      image classification", arXiv:2305.09062, 2023.

    Example:
      >>> import jax.numpy as jnp
      >>> protos = jnp.array([[0.0, 0.0], [3.0, 0.0]])
      >>> l = proto_triplet_loss(jnp.array([[1.0, 0.0], [2.0, 0.0]]), jnp.array([0, 0]), protos)
      >>> [round(v, 3) for v in l.tolist()]
      [0.0, 1.5]
    """
    require_nonnegative(margin, "margin")
    require_nonnegative(eps, "eps")
    q = _embeddings(queries, False, "queries")
    y = _labels(labels, q.shape[0])
    c = _embeddings(prototypes, False, "prototypes")
    if c.shape[1] != q.shape[1]:
        raise ValueError(f"`prototypes` must have D={q.shape[1]} columns, got shape {c.shape}.")
    if c.shape[0] < 2:
        raise ValueError(f"`prototypes` needs at least 2 classes, got shape {c.shape}.")
    valid = _row_mask(where, q.shape[0])
    q = _mask_rows(q, valid)
    # labels index the prototypes: the package label rule (docs/conventions.md)
    if is_concrete(y) and (where is None or is_concrete(valid)):
        check_labels(y, c.shape[0], where=valid)
    else:
        q = poison_bad_labels(q, y, c.shape[0])
    d2 = _sq_dists(q, c.astype(q.dtype)) + eps
    d = _nan_sqrt(d2)
    onehot = jax.nn.one_hot(jnp.clip(y, 0, c.shape[0] - 1), c.shape[0], dtype=bool)
    dp = jnp.sum(jnp.where(onehot, d, 0.0), axis=-1)
    dn = jnp.min(jnp.where(onehot, jnp.inf, d), axis=-1)
    return _finish(jax.nn.relu(dp - dn + margin), valid, q.dtype)


def icnn_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 4,
    eps: float = 1e-6,
) -> jax.Array:
    r"""ICNN neighbourhood-score loss ``−log score`` (SuSana, Mendez-Ruiz et al. 2023). Scalar.

    For each sample ``i`` take its ``k`` nearest other samples ``N_i`` (Euclidean, selection under
    ``stop_gradient``; gradients flow through the distances). With ``s_ij = [y_j = y_i]``:

    * γ = mean_i ``|{j∈N_i: s_ij}| / k`` — fraction of same-class neighbours;
    * same-class term: distances normalised by the sample's nearest different-class distance
      ``δ_i`` and then by ``max(1, max_j d_ij/δ_i)``; ``λ_s = 1 −`` mean over samples with a
      same-class neighbour of their mean normalised same-class distance;
    * different-class term: neighbour distances to other classes divided by their batch maximum;
      ``λ_d`` = mean over samples with such neighbours of their mean (``λ_d = 1`` when no
      neighbour belongs to another class);
    * ``score = (½(λ_s + λ_d) + γ) / 2``, ``loss = −log score``.

    A perfectly clustered episode (each sample's k neighbours in its own class, classes far
    apart) gives score → 1 and loss → 0.

    Restated from the authors' code (``modified_score``; open question: ``docs/open_questions.md``),
    which has ad-hoc details (neighbour-set sizes, where δ_i is taken); here ``δ_i`` is the nearest
    different-class distance over the whole batch and each set-mean is guarded (empty sets give 0,
    not NaN). The authors add this loss to cross-entropy and divide by the number of terms.

    Args:
      embeddings: floating ``[N, D]`` (support and/or query embeddings of an episode), N ≥ 2.
      labels: integer ``[N]``.
      k: number of neighbours (authors: 4); reduced to ``N − 1`` for tiny batches.
      eps: added under the square root of the distances.

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> e = jnp.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
      >>> round(float(icnn_loss(e, jnp.array([0, 0, 1, 1]), k=1)), 2)
      0.0
    """
    require_nonnegative(eps, "eps")
    e = _embeddings(embeddings, False)
    n = e.shape[0]
    y = _labels(labels, n)
    if n < 2:
        raise ValueError(f"`embeddings` needs at least 2 rows, got shape {e.shape}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}.")
    k = min(k, n - 1)
    d = _nan_sqrt(_sq_dists(e, e) + eps)
    eye = jnp.eye(n, dtype=bool)
    # a NaN distance is selected first (it is never dropped): every row with a NaN neighbour
    # gets a NaN term, so a NaN embedding makes the loss NaN (docs/conventions.md)
    ds = jax.lax.stop_gradient(jnp.where(eye, jnp.inf, jnp.where(jnp.isnan(d), -jnp.inf, d)))
    _, idx = jax.lax.top_k(-ds, k)  # [N, k] nearest others
    dk = jnp.take_along_axis(d, idx, axis=1)
    same = y[idx] == y[:, None]
    diff = ~same
    dtype = e.dtype
    # nearest different-class distance over the whole batch
    other = (y[:, None] != y[None, :]) & ~eye
    has_other = jnp.any(other, axis=1)
    delta = jnp.min(jnp.where(other, d, jnp.inf), axis=1, initial=jnp.inf)
    delta = jnp.where(has_other, delta, 1.0)
    nd = dk / (delta[:, None] + eps)
    nd = nd / jnp.maximum(1.0, jax.lax.stop_gradient(jnp.max(nd, axis=1, keepdims=True, initial=0.0)))
    n_same = jnp.sum(same, axis=1)
    mean_same = jnp.sum(jnp.where(same, nd, 0.0), axis=1) / jnp.maximum(n_same, 1)
    rows_s = n_same > 0
    lam_s = 1.0 - jnp.sum(jnp.where(rows_s, mean_same, 0.0)) / jnp.maximum(jnp.sum(rows_s), 1)
    dmax = jnp.max(jnp.where(diff, dk, 0.0), initial=0.0)
    dd = jnp.where(diff, dk, 0.0) / (dmax + eps)
    n_diff = jnp.sum(diff, axis=1)
    mean_diff = jnp.sum(dd, axis=1) / jnp.maximum(n_diff, 1)
    rows_d = n_diff > 0
    lam_d = jnp.where(
        jnp.any(rows_d),
        jnp.sum(jnp.where(rows_d, mean_diff, 0.0)) / jnp.maximum(jnp.sum(rows_d), 1),
        1.0,
    )
    gam = jnp.mean(n_same.astype(dtype) / k)
    score = (0.5 * (lam_s + lam_d) + gam) / 2.0
    return (-jnp.log(jnp.maximum(score, jnp.finfo(dtype).tiny))).astype(dtype)
