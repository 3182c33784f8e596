"""Label-distributionally robust losses: LDR-KL and the adaptive ALDR-KL (Zhu, Ying, Yang 2023).

With the margin vector ``z_k = c·[k≠y] + x_k − x_y`` (``z_y = 0``) the LDR-KL loss is the
KL-regularised worst case over label distributions,

    ψ_λ(x, y) = max_{p ∈ Δ_K} Σ_k p_k z_k − λ·KL(p ‖ 1/K) = λ·log((1/K) Σ_k exp(z_k/λ)),

which interpolates between the Crammer–Singer hinge (λ → 0) and the linear, symmetric
``mean_k z_k`` (λ → ∞); with ``c = 0`` it is ``λ·CE(x/λ, y) − λ log K``. Here it is evaluated as
``λ·(softplus(c/λ + ℓu(x/λ)) − log K)`` with the comp-sum statistic ``ℓu`` of the scaled scores
(no overflow, exact ``c = 0`` / temperature identities).

Class handling (``docs/conventions.md``): ``K`` counts the classes not masked by a per-class
``where`` (the uniform prior is over them); a ``−inf`` logit is a class of probability 0, not a
mask, and every ``±inf`` logit is evaluated as its limit (also through the score normalisations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    expect,
    finalize,
    is_concrete,
    log_softmax,
    margin_lse,
    masked_logsumexp,
    prepare,
    require_floating,
    require_nonnegative,
    require_option,
    require_positive,
    require_range,
)
from lossjax.losses.comp_sum import _require_static_int

__all__ = ["ldr_kl_loss", "aldr_kl_loss", "LDR_NORMALIZATIONS"]

LDR_NORMALIZATIONS = (None, "softplus_mean", "l1")
_ALDR_MODES = ("official", "exact")


# --------------------------------------------------------------------------------------------
# private helpers
# --------------------------------------------------------------------------------------------


def _cand(p: Prepared) -> jax.Array:
    """bool ``[..., K]``: candidate classes (not masked by ``where``; a ``−inf`` logit is a
    candidate with probability 0, ``docs/conventions.md``)."""
    if p.class_mask is None:
        return jnp.ones(p.logits.shape, bool)
    return p.class_mask


def _num_valid(p: Prepared) -> jax.Array:
    return jnp.sum(_cand(p), axis=-1).astype(p.dtype)


def _at_infinity(
    x: jax.Array, valid: jax.Array, n: jax.Array, target: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The limit of a normalisation dominated by infinite entries.

    ``target`` (bool ``[..., K]``) marks the infinite entries that carry the normalised mass
    ``± n/#target`` (sign of ``x``); every other entry tends to 0. Returns ``(use, f)`` with
    ``use`` true on rows with a target entry and no NaN; ``f`` carries no gradient (it is the
    limit of a function of vanishing slope).
    """
    n_t = jnp.sum(target, axis=-1, keepdims=True).astype(x.dtype)
    row_nan = jnp.any(jnp.isnan(jnp.where(valid, x, 0.0)), axis=-1, keepdims=True)
    use = (n_t > 0) & ~row_nan
    f = jnp.where(target, jnp.sign(jnp.where(target, x, 1.0)) * n / jnp.maximum(n_t, 1.0), 0.0)
    return use, jax.lax.stop_gradient(f)


def _normalize_scores(p: Prepared, normalize: str | None) -> jax.Array:
    """Score normalisation of the official code; classes masked by ``where`` stay ``−inf``.

    A ``±inf`` logit is evaluated as its limit: for ``'softplus_mean'`` a ``−inf`` logit has
    ``softplus = 0`` (normalised score 0) and ``+inf`` logits share the whole mass ``K``; for
    ``'l1'`` the infinite logits share ``±K`` and the finite ones tend to 0 (with zero gradient).
    """
    x = p.logits
    if normalize is None:
        return x
    valid = _cand(p)
    n = jnp.maximum(_num_valid(p), 1.0)[..., None]
    xv = jnp.where(valid, x, 0.0)
    if normalize == "softplus_mean":
        # s_k / mean_j s_j = exp(log s_k − log mean_j s_j) with log s = log(softplus(x)) formed
        # without underflow (log softplus(x) = x + O(e^x) below −30): a row whose logits are all
        # below ≈ −104 (softplus underflows to 0 in float32) keeps a finite value and gradient.
        # A −inf logit gives log s = −inf (score 0).
        neg = xv < -30.0
        log_s = jnp.where(neg, xv, jnp.log(jax.nn.softplus(jnp.where(neg, 0.0, xv))))
        log_mean = masked_logsumexp(log_s, valid)[..., None] - jnp.log(n)
        f = jnp.exp(log_s - jnp.where(jnp.isinf(log_mean), 0.0, log_mean))
        use, f_inf = _at_infinity(xv, valid, n, valid & (xv == jnp.inf))
    else:  # 'l1'
        # mean |x| as Σ(|x|/K): each term is at most max|x|/K, so the sum cannot overflow at
        # |x| ≈ 3e38 (dividing by max|x| instead would meet a subnormal reciprocal, flushed to 0)
        fin = jnp.where(jnp.isinf(xv), 0.0, xv)
        scale = jnp.sum(jnp.abs(fin) / n, axis=-1, keepdims=True)
        scale = jnp.where(jnp.any(jnp.isnan(xv), axis=-1, keepdims=True), jnp.nan, scale)
        pos = scale != 0  # an all-zero row gives 0 with a finite (zero) gradient; NaN propagates
        # XLA divides by multiplying with the reciprocal, which is subnormal (flushed to 0) for a
        # scale above 2^126: there both sides are first divided by 2^64 (exact)
        c = jnp.where(scale > 2.0**100, 2.0**-64, 1.0).astype(fin.dtype)
        f = jnp.where(pos, (fin * c) / jnp.where(pos, scale * c, 1.0), 0.0)
        use, f_inf = _at_infinity(xv, valid, n, valid & jnp.isinf(xv))
    f = jnp.where(use, f_inf, f)
    return jnp.where(valid, f, -jnp.inf)


def _loo_max_margin(p: Prepared, f: jax.Array) -> jax.Array:
    """``max_{j≠y}(f_j − f_y)``: ``[...]`` (integer labels) or ``[..., K]`` (every candidate)."""
    k = f.shape[-1]
    if not p.soft:
        onehot = jnp.arange(k) == p.labels[..., None]
        fy = jnp.take_along_axis(f, p.labels[..., None], axis=-1)[..., 0]
        # a −inf label score gives +inf (its limit); a +inf one gives −inf (hinge 0)
        return jnp.max(jnp.where(onehot, -jnp.inf, f), axis=-1) - fy
    if k == 1:
        return jnp.full(f.shape, -jnp.inf, f.dtype)
    top2, idx = jax.lax.top_k(f, 2)
    is_top = jnp.arange(k) == idx[..., :1]
    other = jnp.where(is_top, top2[..., 1:2], top2[..., :1])
    cand = _cand(p)
    fk = jnp.where(cand, f, 0.0)
    return jnp.where(cand, other - fk, -jnp.inf)


def _psi(
    p: Prepared, f: jax.Array, lam: ArrayLike, margin: ArrayLike, log_k: jax.Array
) -> jax.Array:
    """``λ·(softplus(c/λ + ℓu(f/λ)) − log K)``; λ is a scalar or ``[...]`` (broadcast on K)."""
    lam = jnp.asarray(lam, p.dtype)
    lam_k = lam[..., None] if lam.ndim else lam
    lu = margin_lse(p._replace(logits=f / lam_k))
    if p.soft:
        lam, log_k = lam_k, log_k[..., None]
    return lam * (jax.nn.softplus(margin / lam + lu) - log_k)


def _check_normalize(normalize: str | None) -> None:
    if normalize not in LDR_NORMALIZATIONS:
        raise ValueError(
            f"Unknown `normalize`={normalize!r}; expected one of {list(LDR_NORMALIZATIONS)}."
        )


# --------------------------------------------------------------------------------------------
# public losses
# --------------------------------------------------------------------------------------------


def ldr_kl_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    lambda_: float = 10.0,
    margin: float = 0.1,
    normalize: str | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""LDR-KL loss: KL-regularised label-distributionally robust loss.

    .. math::

        z_k = c\,[k \ne y] + x_k - x_y, \qquad
        \psi_\lambda(x, y) = \max_{p \in \Delta_K} \sum_k p_k z_k - \lambda\,\mathrm{KL}(p \,\|\, 1/K)
        = \lambda \log\Big(\frac1K \sum_k e^{z_k/\lambda}\Big)

    Limits: ``λ → 0`` gives the Crammer–Singer hinge ``[max_{k≠y}(c + x_k − x_y)]_+``
    (``lambda_=0`` is accepted and evaluates it exactly; with ``c = 1`` this is
    ``optax.losses.multiclass_hinge_loss``); ``λ → ∞`` gives ``mean_k z_k`` (symmetric, hence
    noise-robust); ``c = 0`` gives ``λ·CE(x/λ, y) − λ log K``. Bounds
    ``−λ log K ≤ ψ ≤ max_k z_k`` — the loss can be negative. Float32 absolute error grows like
    ``λ·eps``, so for very large λ compute in float64 or use the λ → ∞ limit.

    Defaults follow the official experiments (``--margin`` 0.1, ``Lambda`` 10). The official
    ``LDRLoss_V1`` first normalises the scores, ``f ← softplus(f)/mean_k softplus(f_k)``, which
    is ``normalize='softplus_mean'`` here (the paper's maths is ``normalize=None``, the default);
    ``'l1'`` divides by ``mean_k |f_k|`` (the ALDR code's normalisation). The official code
    returns the batch mean; this returns per-example values.

    Reference: D. Zhu, Y. Ying, T. Yang, "Label Distributionally Robust Losses for Multi-class
    Classification: Consistency, Robustness and Adaptivity", ICML 2023, arXiv:2112.14869.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` or probability ``[..., K]`` labels (expectation convention).
      lambda_: λ ≥ 0 (0 = Crammer–Singer hinge; a traced λ must be > 0), or a ``[...]``
        array of per-example λ > 0 (e.g. the λ returned by :func:`aldr_kl_loss`).
      margin: c ≥ 0.
      normalize: None, ``'softplus_mean'`` or ``'l1'`` (score normalisation, see above).
      axis: class axis.
      where: optional bool mask, per example or per class.

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 5) for v in ldr_kl_loss(x, jnp.array([0, 1]))]
      [-0.87302, 2.0439]
    """
    require_nonnegative(lambda_, "lambda_")
    require_nonnegative(margin, "margin")
    _check_normalize(normalize)
    p = prepare(logits, labels, axis=axis, where=where)
    f = _normalize_scores(p, normalize)
    log_k = jnp.log(jnp.maximum(_num_valid(p), 1.0))
    if is_concrete(lambda_) and jnp.ndim(lambda_) == 0 and float(lambda_) == 0.0:
        per = jnp.maximum(margin + _loo_max_margin(p, f), 0.0)
    else:
        per = _psi(p, f, lambda_, margin, log_k)
    return finalize(p, expect(p, per))


def aldr_kl_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    lambdas: ArrayLike | None = None,
    *,
    lambda_ref: float = 10.0,
    alpha: float = 2.0,
    margin: float = 0.1,
    normalize: str | None = "l1",
    mode: str = "official",
    num_inner_steps: int = 1,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Adaptive LDR-KL (ALDR-KL): LDR-KL with a per-instance λ chosen by maximisation.

    .. math::

        \psi_\alpha(x, y) = \max_{\lambda} \Big[\psi_\lambda(x, y)
            - \frac{\alpha \log K}{2\lambda_0}(\lambda - \lambda_0)^2\Big]

    For a fixed label distribution ``p`` the maximising λ is closed-form,
    ``λ = λ₀ − λ₀·KL(p ‖ 1/K)/(α log K)``, and since ``0 ≤ KL ≤ log K`` it lies in
    ``[λ₀(1 − 1/α), λ₀]`` — hence **α > 1** is required. λ is per example and is carried by the
    caller (e.g. a ``[N]`` array indexed by sample id): pass the stored ``lambdas`` of the batch
    and store the returned ones. ``lambdas=None`` starts from ``λ₀``.

    One call performs ``num_inner_steps`` coordinate steps ``p ← p(λ)``,
    ``λ ← clip(λ₀ − λ₀·KL(p‖1/K)/(α log K))`` (with stop-gradient), then returns
    ``ψ_λ(x, y) − (α log K/(2λ₀))(λ − λ₀)²`` whose gradient flows through the scores only.

    ``mode`` selects ``p(λ)``:

    * ``'official'`` (default): as the authors' ``ALDRLoss_V1`` — ``p = softmax(f/λ)`` of the
      normalised scores **without** the margin, smoothed by ``+1e-5`` and renormalised; one step
      per visit of a sample. Reproduces that code (golden values verified against it).
    * ``'exact'``: the paper's inner maximiser ``p = softmax(z/λ)`` (margin included, no
      smoothing). The fixed points of the iteration are the stationary points of the objective
      in λ, so with enough ``num_inner_steps`` it approaches the exact ``ψ_α`` (it is a
      fixed-point iteration, not guaranteed to find the global maximum).

    The α scaling is the code's ``α log K/λ₀``; that the paper's is the same is an open question
    (``docs/open_questions.md``).
    Scores are normalised as in the code: ``normalize='l1'`` divides by ``‖f‖₁/K`` (the code uses
    ``'softplus_mean'`` for CIFAR-100); None uses raw logits. Defaults follow the official
    experiments: α = 2, λ₀ = 10, c = 0.1.

    Reference: D. Zhu, Y. Ying, T. Yang, "Label Distributionally Robust Losses for Multi-class
    Classification: Consistency, Robustness and Adaptivity", ICML 2023, arXiv:2112.14869.

    Args:
      logits: ``[..., K]`` floating scores.
      labels: integer ``[...]`` labels (probability labels are not supported: λ is chosen for
        the observed label).
      lambdas: ``[...]`` stored per-example λ, or None (= ``lambda_ref``); values are clipped
        into ``[λ₀(1 − 1/α), λ₀]`` before use.
      lambda_ref: λ₀ > 0.
      alpha: α > 1.
      margin: c ≥ 0.
      normalize: None, ``'l1'`` or ``'softplus_mean'``.
      mode: ``'official'`` or ``'exact'``.
      num_inner_steps: python int ≥ 1.
      axis: class axis.
      where: optional bool mask, per example or per class (masked rows keep their λ).

    Returns:
      ``(loss, new_lambdas)``, both ``[...]``; ``new_lambdas`` carries no gradient.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> loss, lam = aldr_kl_loss(x, jnp.array([0, 1]), lambda_ref=1.0, alpha=2.0)
      >>> [round(float(v), 5) for v in loss], [round(float(v), 5) for v in lam]
      ([-0.61904, 1.9625], [0.89142, 0.78547])
    """
    require_positive(lambda_ref, "lambda_ref")
    require_range(alpha, "alpha", low=1.0, low_inclusive=False)
    require_nonnegative(margin, "margin")
    _check_normalize(normalize)
    require_option(mode, _ALDR_MODES, "mode")
    num_inner_steps = _require_static_int(num_inner_steps, "num_inner_steps", 1)
    p = prepare(logits, labels, axis=axis, where=where, allow_soft=False)
    batch_shape = p.labels.shape
    if lambdas is None:
        # built from the labels so that it carries their sharding (an Explicit mesh)
        lam0 = jnp.full_like(p.labels, lambda_ref, dtype=p.dtype)
    else:
        require_floating(lambdas, "lambdas")
        if jnp.shape(lambdas) != batch_shape:
            raise ValueError(
                f"`lambdas` must have shape {batch_shape} (one λ per example), "
                f"got {jnp.shape(lambdas)}."
            )
        lam0 = jnp.asarray(lambdas).astype(p.dtype)
    lam_ref = jnp.asarray(lambda_ref, p.dtype)
    f = _normalize_scores(p, normalize)
    valid = _cand(p)
    n = _num_valid(p)
    log_k = jnp.log(jnp.maximum(n, 1.0))
    has_choice = log_k > 0
    coef = lam_ref / (alpha * jnp.where(has_choice, log_k, 1.0))
    lo, hi = lam_ref * (1.0 - 1.0 / alpha), lam_ref

    fs = jax.lax.stop_gradient(f)
    if mode == "exact":
        onehot = jnp.arange(p.num_classes) == p.labels[..., None]
        # softmax(z/λ) with z_k = c·[k≠y] + f_k − f_y: the shift by f_y is not formed (no
        # overflow at ±3e38; a −inf label score gives its limit q_y = 0)
        scores = jnp.where(valid, fs + jnp.where(onehot, 0.0, margin), -jnp.inf)
    else:
        scores = fs
    lam = jax.lax.stop_gradient(jnp.clip(lam0, lo, hi))
    for _ in range(num_inner_steps):
        logq = log_softmax(p._replace(logits=scores / lam[..., None]))
        if mode == "official":
            q = jnp.where(valid, jnp.exp(logq) + 1e-5, 0.0)
            q = q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-30)
            logq = jnp.where(valid, jnp.log(jnp.where(valid, q, 1.0)), -jnp.inf)
        else:
            q = jnp.exp(logq)
        kl = jnp.sum(jnp.where(q == 0, 0.0, q * (logq + log_k[..., None])), axis=-1)  # NaN stays
        lam = jnp.where(has_choice, jnp.clip(lam_ref - coef * kl, lo, hi), lam_ref)
    lam = jax.lax.stop_gradient(lam)
    psi = _psi(p, f, lam, margin, log_k)
    penalty = (alpha * log_k / (2.0 * lam_ref)) * (lam - lam_ref) ** 2
    loss = finalize(p, psi - penalty)
    if p.row_mask is not None:
        lam = jnp.where(p.row_mask, lam, lam0)
    return loss, lam.astype(p.dtype)
