"""Sequence and other closed-form losses.

* :func:`eisl_loss` — Edit-Invariant Sequence Loss (Liu et al., NAACL 2022): n-gram matching
  that does not care *where* a target n-gram appears in the output.
* :func:`cs_divergence` — Cauchy–Schwarz divergence between two samples (Gaussian KDE, exact
  log-space form; Yu et al., ICLR 2024 use it for regression).
* :func:`aggregate_response_loss` — bag-level vs instance-level squared loss for aggregate
  responses, interpolated by ``ρ`` (Javanmard et al., ICLR 2024).
* :func:`input_gradient_penalty`, :func:`ce_input_gradient_penalty` — DRAGAN-style penalty
  ``λ(‖∇_x̃ ℓ‖ − k)²`` on a loss's input gradient near the data (Kodali et al., 2017).

References: each function's docstring (the papers named above).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from lossjax.losses._core import (
    bool_mask,
    check_labels,
    compute_dtype,
    is_concrete,
    log_softmax,
    masked_logsumexp,
    prepare,
    replicate_on_explicit_mesh,
    require_floating,
    require_integer,
    require_nonnegative,
    require_option,
    require_positive,
    require_range,
)

__all__ = [
    "eisl_loss",
    "cs_divergence",
    "aggregate_response_loss",
    "input_gradient_penalty",
    "ce_input_gradient_penalty",
]


def _check_mask(mask: Any, shape: tuple[int, ...], name: str) -> jax.Array | None:
    """:func:`bool_mask`, keeping ``None`` (no mask)."""
    return None if mask is None else bool_mask(mask, shape, name)


# --------------------------------------------------------------------------------------------
# EISL
# --------------------------------------------------------------------------------------------


def eisl_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    ngrams: Sequence[int] = (2,),
    ngram_weights: Sequence[float] | None = None,
    target_mask: ArrayLike | None = None,
    selection: str = "softmax",
    key: jax.Array | None = None,
    log_clip: float = -20.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Edit-Invariant Sequence Loss (EISL).

    With ``C[i, j] = max(log p_i(y_j), log_clip)`` (model log-probability at output position
    ``i`` of target token ``j``; columns of padded target tokens set to 0), the n-gram match
    matrix is the convolution with the ``n×n`` identity kernel,

    .. math::
        M_n[i,j] = \frac1n\sum_{k<n} C[i+k,\,j+k],\qquad
        w_{\cdot j} = \mathrm{softmax}_i\,M_n[\cdot, j],\qquad
        L_n = -\operatorname{mean}_j \sum_i w_{ij} M_n[i,j],\qquad L = \sum_n \omega_n L_n :

    every target n-gram is softly matched to the output positions where it is most likely, so
    the loss is invariant to where the n-gram appears (shifts, insertions). ``n = 1`` is a
    bag-of-tokens loss (invariant to permuting the target). In practice it is mixed with CE,
    ``(1 − w)·CE + w·EISL``.

    * ``selection="softmax"`` (default, deterministic) or ``"gumbel"`` (the released code's
      ``gumbel_softmax(τ=1)`` over positions; needs ``key``). Gradients flow through the
      selection weights in both cases, as in the reference.
    * ``n`` larger than the output or target length is replaced by ``min(T_out, T_tgt)``
      (the whole-sequence term).
    * ``ω`` defaults to uniform ``1/len(ngrams)``. The mean over ``j`` runs over all
      ``T_tgt − n + 1`` target n-grams as in the reference, so padding columns (zeroed) dilute
      the loss of short targets; an all-padding target gives 0.

    Args:
      logits: floating ``[..., T_out, V]`` (vocabulary axis ``axis``).
      targets: integer ``[..., T_tgt]``.
      ngrams: n-gram orders (positive ints).
      ngram_weights: optional weights ``ω_n`` (same length as ``ngrams``).
      target_mask: optional bool ``[..., T_tgt]``, False at padding.
      selection: ``"softmax"`` or ``"gumbel"``.
      key: PRNG key for ``selection="gumbel"``.
      log_clip: lower clip of the token log-probabilities (reference −20).
      axis: vocabulary axis of ``logits``.
      where: optional bool row mask ``[...]``.

    Returns:
      Per-sequence losses ``[...]``.

    References:
      G. Liu et al., "Don't Take It Literally: An Edit-Invariant Sequence Loss for Text
      Generation", NAACL 2022 (code: github.com/guangyliu/EISL).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> tgt = jnp.array([[1, 2, 3, 0]])
      >>> logits = 50.0 * jax.nn.one_hot(tgt, 5)
      >>> float(eisl_loss(logits, tgt)[0]) < 1e-6
      True
    """
    require_option(selection, ("softmax", "gumbel"), "selection")
    if selection == "gumbel" and key is None:
        raise ValueError("`key` is required for selection='gumbel'.")
    ngrams = tuple(ngrams)
    if not ngrams or any(not isinstance(n, (int, np.integer)) or n < 1 for n in ngrams):
        raise ValueError(f"`ngrams` must be a non-empty sequence of positive ints, got {ngrams!r}.")
    if ngram_weights is None:
        ngram_weights = (1.0 / len(ngrams),) * len(ngrams)
    ngram_weights = tuple(ngram_weights)
    if len(ngram_weights) != len(ngrams):
        raise ValueError(
            f"`ngram_weights` must have one weight per n-gram order ({len(ngrams)}), "
            f"got {len(ngram_weights)}."
        )
    require_floating(logits, "logits")
    require_integer(targets, "targets")
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if logits.ndim < 2:
        raise ValueError(f"`logits` must have shape [..., T_out, V], got {logits.shape}.")
    if not -logits.ndim <= axis < logits.ndim:
        raise ValueError(f"`axis`={axis} is out of range for `logits` of rank {logits.ndim}.")
    x = jnp.moveaxis(logits, axis, -1)
    batch = x.shape[:-2]
    if targets.ndim != len(batch) + 1 or targets.shape[:-1] != batch:
        raise ValueError(
            f"`targets` must have shape {batch + ('T_tgt',)} (the batch shape of `logits`), "
            f"got {targets.shape}."
        )
    t_out, t_tgt = x.shape[-2], targets.shape[-1]
    target_mask = _check_mask(target_mask, targets.shape, "target_mask")
    where = _check_mask(where, batch, "where")

    if where is not None:
        # double where: a masked sequence never reaches the arithmetic (NaN-safe gradient)
        x = jnp.where(where.reshape(where.shape + (1, 1)), x, jnp.zeros((), x.dtype))
    p = prepare(x, jnp.zeros(x.shape[:-1], jnp.int32), axis=-1)
    # targets are class indices: the package label rule (docs/conventions.md)
    tok = targets.astype(jnp.int32)
    keep = None if target_mask is None else target_mask
    if where is not None:
        keep = jnp.broadcast_to(where[..., None], tok.shape) if keep is None else keep & where[..., None]
    if is_concrete(tok) and (keep is None or is_concrete(keep)):
        check_labels(tok, p.num_classes, where=keep, name="targets")
        logits_c = p.logits
    else:
        bad = (tok < 0) | (tok >= p.num_classes)
        if keep is not None:
            bad = bad & keep
        logits_c = p.logits + jnp.where(jnp.any(bad, -1), jnp.nan, 0.0)[..., None, None].astype(p.dtype)
    p = p._replace(logits=logits_c)
    logp = log_softmax(p)  # [..., T_out, V]
    tok = jnp.clip(tok, 0, p.num_classes - 1)
    idx = jnp.broadcast_to(tok[..., None, :], batch + (t_out, t_tgt))
    c = jnp.take_along_axis(logp, idx, axis=-1)  # [..., T_out, T_tgt]
    c = jnp.maximum(c, jnp.asarray(log_clip, c.dtype))
    if target_mask is not None:
        c = jnp.where(target_mask[..., None, :], c, 0.0)

    keys = jax.random.split(key, len(ngrams)) if selection == "gumbel" else [None] * len(ngrams)
    total = jnp.zeros(batch, p.dtype)
    for n, omega, k in zip(ngrams, ngram_weights, keys):
        n_eff = min(int(n), t_out, t_tgt)
        rows, cols = t_out - n_eff + 1, t_tgt - n_eff + 1
        m = sum(c[..., s : s + rows, s : s + cols] for s in range(n_eff)) / n_eff
        score = m
        if selection == "gumbel":
            score = m + jax.random.gumbel(k, m.shape, m.dtype)
        w = jax.nn.softmax(score, axis=-2)
        l_n = -jnp.mean(jnp.sum(w * m, axis=-2), axis=-1)
        total = total + omega * l_n
    if where is not None:
        total = jnp.where(where, total, 0.0)
    return total


# --------------------------------------------------------------------------------------------
# Cauchy-Schwarz divergence
# --------------------------------------------------------------------------------------------


def _as_samples(a: ArrayLike, name: str) -> jax.Array:
    require_floating(a, name)
    a = jnp.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"`{name}` must have shape [n] or [n, d], got {a.shape}.")
    return a.astype(compute_dtype(a.dtype))


def _log_gram_lse(a: jax.Array, b: jax.Array, wa: jax.Array, wb: jax.Array, sigma: Any) -> jax.Array:
    d2 = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    mask = wa[:, None] & wb[None, :]
    return masked_logsumexp(-d2.reshape(-1) / (2.0 * sigma**2), mask.reshape(-1))


def cs_divergence(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: float = 1.0,
    where_x: ArrayLike | None = None,
    where_y: ArrayLike | None = None,
) -> jax.Array:
    r"""Cauchy–Schwarz divergence between two samples via Gaussian kernel density estimates.

    .. math::
        D_{CS}(p\|q) = -\log\frac{(\int pq)^2}{\int p^2\int q^2},\qquad
        \hat D_{CS} = \mathrm{lse}_{i,j}\,\kappa(x_i,x_j) + \mathrm{lse}_{i,j}\,\kappa(y_i,y_j)
                      - 2\,\mathrm{lse}_{i,j}\,\kappa(x_i,y_j),

    with ``log κ(a, b) = −‖a − b‖²/(2σ²)`` (the Gram-matrix kernel of the CS-IB estimator): all
    normalising constants cancel, and the estimate is exactly the CS divergence between the two
    Gaussian KDEs of bandwidth ``σ/√2`` (their convolution has width ``σ``). **Convention:**
    ``sigma`` is the width of the Gram kernel, not of the KDE; for KDEs of bandwidth ``h`` pass
    ``sigma = h√2``. Hence ``D̂ ≥ 0`` (up to rounding), symmetric, and 0 iff the two empirical
    distributions coincide. Log-space throughout (no underflow of ``e^{−‖a−b‖²/2σ²}`` for distant samples);
    squared distances are formed from differences (``O(n·m·d)`` memory, exact).

    Only the marginal divergence is implemented; the conditional CS-IB estimator of Yu et al.
    (``D_CS(p(y|x) ‖ q(ŷ|x))``), known to us from the abstract only, is not
    (``docs/open_questions.md``). A set-level quantity: returns a scalar.

    Args:
      x: floating ``[n]`` or ``[n, d]`` samples of ``p``.
      y: floating ``[m]`` or ``[m, d]`` samples of ``q``.
      sigma: kernel width ``σ > 0``.
      where_x, where_y: optional bool ``[n]`` / ``[m]`` masks of valid (non-padding) samples.

    Returns:
      A scalar (float32, or float64 for float64 input); 0 if either sample is empty.

    References:
      S. Yu et al., "Cauchy-Schwarz Divergence Information Bottleneck for Regression",
      ICLR 2024; R. Jenssen et al.,
      "The Cauchy–Schwarz divergence and Parzen windowing", J. Franklin Inst., 2006.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([0.0, 1.0, 2.0])
      >>> float(cs_divergence(x, x))
      0.0
      >>> round(float(cs_divergence(x, x + 1.0)), 6)
      0.381322
    """
    require_positive(sigma, "sigma")
    a, b = _as_samples(x, "x"), _as_samples(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`x` and `y` must have the same feature size, got {a.shape} and {b.shape}.")
    dtype = jnp.promote_types(a.dtype, b.dtype)
    a, b = a.astype(dtype), b.astype(dtype)
    wa = _check_mask(where_x, a.shape[:1], "where_x")
    wb = _check_mask(where_y, b.shape[:1], "where_y")
    wa = jnp.ones(a.shape[:1], bool) if wa is None else wa
    wb = jnp.ones(b.shape[:1], bool) if wb is None else wb
    # pairwise (Gram) sums need every sample on every device; masked samples are replaced
    # before any arithmetic (NaN-safe gradient)
    a, b, wa, wb = (replicate_on_explicit_mesh(v) for v in (a, b, wa, wb))
    a = jnp.where(wa[:, None], a, jnp.zeros((), dtype))
    b = jnp.where(wb[:, None], b, jnp.zeros((), dtype))
    lxx = _log_gram_lse(a, a, wa, wa, sigma)
    lyy = _log_gram_lse(b, b, wb, wb, sigma)
    lxy = _log_gram_lse(a, b, wa, wb, sigma)
    ok = (lxx != -jnp.inf) & (lyy != -jnp.inf) & (lxy != -jnp.inf)  # empty sums; NaN propagates
    safe = lambda v: jnp.where(ok, v, 0.0)  # noqa: E731
    return jnp.where(ok, safe(lxx) + safe(lyy) - 2.0 * safe(lxy), 0.0).astype(dtype)


# --------------------------------------------------------------------------------------------
# aggregate responses
# --------------------------------------------------------------------------------------------


def aggregate_response_loss(
    preds: ArrayLike,
    bag_ids: ArrayLike,
    bag_targets: ArrayLike,
    *,
    rho: float,
    num_bags: int | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Interpolated bag-level / instance-level squared loss for aggregate responses.

    Each bag ``b`` has one aggregate response ``ȳ_b``; ``f̄_b`` is the mean prediction in it:

    .. math::
        L_b = |b|\,(\bar y_b - \bar f_b)^2 + \rho \sum_{i\in b} (f_i - \bar f_b)^2 .

    ``ρ = 0`` is the bag-level loss, ``ρ = 1`` the instance-level loss
    ``Σ_{i∈b} (ȳ_b − f_i)²`` (exact identity: instance = bag + within-bag variance), and
    ``ρ ∈ (0, 1)`` the paper's interpolating estimator. Sums use ``jax.ops.segment_sum``.
    ``ρ`` has no universal default (it trades bias for variance; tune it), so it is required.

    Args:
      preds: floating ``[N]`` instance predictions.
      bag_ids: integer ``[N]`` bag index of each instance, in ``[0, num_bags)``.
      bag_targets: floating ``[num_bags]`` aggregate responses.
      rho: interpolation weight ``ρ ∈ [0, 1]``.
      num_bags: number of bags (static); defaults to ``len(bag_targets)``.
      where: optional bool ``[N]`` mask of valid instances.

    Returns:
      Per-bag losses ``[num_bags]`` (empty bags give 0).

    References:
      A. Javanmard et al., "Learning from Aggregate Responses: Instance Level versus Bag Level
      Loss Functions", ICLR 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> f, ids, yb = jnp.array([1.0, 2.0, 4.0]), jnp.array([0, 0, 0]), jnp.array([3.0])
      >>> round(float(aggregate_response_loss(f, ids, yb, rho=1.0)[0]), 5)
      6.0
      >>> round(float(aggregate_response_loss(f, ids, yb, rho=0.0)[0]), 5)
      1.33333
    """
    require_range(rho, "rho", 0.0, 1.0)
    require_floating(preds, "preds")
    require_integer(bag_ids, "bag_ids")
    require_floating(bag_targets, "bag_targets")
    preds, bag_ids, bag_targets = jnp.asarray(preds), jnp.asarray(bag_ids), jnp.asarray(bag_targets)
    if preds.ndim != 1:
        raise ValueError(f"`preds` must have shape [N], got {preds.shape}.")
    if bag_ids.shape != preds.shape:
        raise ValueError(f"`bag_ids` must have the shape of `preds` {preds.shape}, got {bag_ids.shape}.")
    if bag_targets.ndim != 1:
        raise ValueError(f"`bag_targets` must have shape [num_bags], got {bag_targets.shape}.")
    if num_bags is None:
        num_bags = bag_targets.shape[0]
    if bag_targets.shape[0] != num_bags:
        raise ValueError(f"`bag_targets` must have shape [{num_bags}] (num_bags), got {bag_targets.shape}.")
    where = _check_mask(where, preds.shape, "where")
    dtype = compute_dtype(jnp.promote_types(preds.dtype, bag_targets.dtype))
    # bags mix instances from the whole batch: on an Explicit mesh the instances are gathered
    # (the result is per bag, replicated; the gradient comes back with the input's sharding)
    f = replicate_on_explicit_mesh(preds.astype(dtype))
    w = jnp.ones_like(f) if where is None else replicate_on_explicit_mesh(where).astype(dtype)
    f = jnp.where(w > 0, f, 0.0)
    ids = replicate_on_explicit_mesh(bag_ids.astype(jnp.int32))
    cnt = jax.ops.segment_sum(w, ids, num_bags)
    f_bar = jax.ops.segment_sum(w * f, ids, num_bags) / jnp.maximum(cnt, 1.0)
    bag = cnt * (bag_targets.astype(dtype) - f_bar) ** 2
    var = jax.ops.segment_sum(w * (f - f_bar[ids]) ** 2, ids, num_bags)
    return bag + rho * var


# --------------------------------------------------------------------------------------------
# DRAGAN-style input-gradient penalty
# --------------------------------------------------------------------------------------------


def input_gradient_penalty(
    loss_fn: Callable[[Any, jax.Array, Any], jax.Array],
    params: Any,
    x: ArrayLike,
    y: Any,
    key: jax.Array | None = None,
    *,
    lam: float = 10.0,
    k: float = 1.0,
    noise: str = "dragan",
    noise_scale: float = 0.5,
    one_sided: bool = False,
    eps: float = 1e-12,
) -> jax.Array:
    r"""DRAGAN-style gradient penalty on a per-example loss's input gradient.

    .. math::
        R_i = \lambda\,\bigl(\|\nabla_{\tilde x_i}\,\ell(f(\tilde x_i), y_i)\|_2 - k\bigr)^2
        \quad(\text{or } \lambda\,\mathrm{relu}(\|\cdot\|-k)^2 \text{ with } \texttt{one\_sided}),

    evaluated at perturbed inputs ``x̃`` near the data:

    * ``noise="dragan"``: ``x̃ = x + noise_scale · std(x) · U[0, 1)`` (the authors' code; std over
      the whole batch, no gradient);
    * ``noise="gaussian"``: ``x̃ = x + noise_scale · N(0, I)`` (the paper's ``δ ~ N(0, cI)``);
    * ``noise="none"``: ``x̃ = x``.

    ``loss_fn(params, x, y)`` must return per-example losses ``[B]`` with examples independent
    (no batch statistics), so that the gradient of their sum gives every example's own input
    gradient. Half-precision ``x`` (bf16/f16) is cast to float32 first, so ``loss_fn`` sees and
    is differentiated at float32 inputs and the result is float32 (a bf16 network casts its input
    itself). The norm is ``sqrt(Σ g² + eps)`` (finite gradient at ``g = 0``). Differentiating the
    result with respect to ``params`` is double backprop (about twice the cost of a step).
    Defaults: ``λ = 10``, ``k = 1``.

    Args:
      loss_fn: ``(params, x, y) -> [B]`` per-example loss.
      params: model parameters (any pytree).
      x: floating ``[B, ...]`` inputs.
      y: targets passed through to ``loss_fn``.
      key: PRNG key (required unless ``noise="none"``).
      lam: weight ``λ ≥ 0``.
      k: target norm ``k ≥ 0``.
      noise: ``"dragan"``, ``"gaussian"`` or ``"none"``.
      noise_scale: perturbation scale ``≥ 0``.
      one_sided: penalise only norms above ``k``.
      eps: ``> 0`` inside the square root.

    Returns:
      Per-example penalties ``[B]``.

    References:
      N. Kodali, J. Abernethy, J. Hays and Z. Kira, "On Convergence and Stability of GANs"
      (DRAGAN), arXiv:1705.07215, 2017.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda w, x, y: jnp.sum(x * w, axis=-1)  # input gradient = w
      >>> w, x = jnp.array([3.0, 4.0]), jnp.ones((2, 2))
      >>> input_gradient_penalty(loss_fn, w, x, None, noise="none", lam=1.0).round(4)
      Array([16., 16.], dtype=float32)
    """
    require_option(noise, ("dragan", "gaussian", "none"), "noise")
    require_nonnegative(lam, "lam")
    require_nonnegative(k, "k")
    require_nonnegative(noise_scale, "noise_scale")
    require_positive(eps, "eps")
    require_floating(x, "x")
    # half-precision inputs are differentiated in float32 (the penalty's result dtype), as every
    # loss of the package computes in float32; float64 stays float64
    x = jnp.asarray(x)
    x = x.astype(compute_dtype(x.dtype))
    if x.ndim < 1:
        raise ValueError("`x` must have a batch axis; got a scalar.")
    if noise != "none" and key is None:
        raise ValueError(f"`key` is required for noise={noise!r}.")
    if noise == "dragan":
        std = jax.lax.stop_gradient(jnp.std(x))
        x_t = x + noise_scale * std * jax.random.uniform(key, x.shape, x.dtype)
    elif noise == "gaussian":
        x_t = x + noise_scale * jax.random.normal(key, x.shape, x.dtype)
    else:
        x_t = x

    def total(xt: jax.Array) -> jax.Array:
        losses = loss_fn(params, xt, y)
        if jnp.shape(losses) != x.shape[:1]:
            raise ValueError(
                f"`loss_fn` must return per-example losses of shape {x.shape[:1]}, got "
                f"{jnp.shape(losses)}."
            )
        return jnp.sum(losses)

    g = jax.grad(total)(x_t)
    # explicit size, not -1: an empty batch reshapes to (0, D) instead of dividing by zero
    g = g.reshape(g.shape[0], math.prod(g.shape[1:])).astype(compute_dtype(g.dtype))
    norm = jnp.sqrt(jnp.sum(g * g, axis=-1) + eps)
    gap = norm - k
    if one_sided:
        gap = jax.nn.relu(gap)
    return lam * gap**2


def ce_input_gradient_penalty(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    x: ArrayLike,
    labels: ArrayLike,
    key: jax.Array | None = None,
    **kwargs: Any,
) -> jax.Array:
    r"""DRAGAN-style penalty on the input gradient of the softmax cross-entropy of a classifier.

    ``R_i = λ(‖∇_x̃ CE(apply_fn(params, x̃)_i, y_i)‖₂ − k)²`` with
    :func:`optax.losses.softmax_cross_entropy_with_integer_labels`; for a linear model
    ``logits = x W + b`` the input gradient is ``W (softmax(logits) − onehot(y))``. Keyword
    arguments are those of :func:`input_gradient_penalty`.

    Args:
      apply_fn: ``(params, x) -> logits [B, K]``.
      params: model parameters.
      x: floating ``[B, ...]`` inputs.
      labels: integer ``[B]`` class labels.
      key: PRNG key (unless ``noise="none"``).
      **kwargs: ``lam``, ``k``, ``noise``, ``noise_scale``, ``one_sided``, ``eps``.

    Returns:
      Per-example penalties ``[B]``.

    References:
      N. Kodali et al., arXiv:1705.07215, 2017.

    Example:
      >>> import jax.numpy as jnp
      >>> W = jnp.zeros((3, 4))
      >>> x, y = jnp.ones((2, 3)), jnp.array([0, 1])
      >>> ce_input_gradient_penalty(lambda w, x: x @ w, W, x, y, noise="none").round(3)
      Array([10., 10.], dtype=float32)
    """
    labels = jnp.asarray(labels)
    require_integer(labels, "labels")
    if labels.shape != jnp.shape(x)[:1]:
        raise ValueError(f"`labels` must have shape {jnp.shape(x)[:1]}, got {labels.shape}.")

    def loss_fn(p: Any, xt: jax.Array, yy: jax.Array) -> jax.Array:
        logits = apply_fn(p, xt)
        logits = logits.astype(compute_dtype(logits.dtype))
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yy)

    return input_gradient_penalty(loss_fn, params, x, labels, key, **kwargs)
