"""Direct Coverage Optimization (DCO) loss for pass@N (Chen, Raventós, Cheng, Ganguli, Druckmann,
NeurIPS 2025, arXiv 2502.07154).

A pass@N evaluation succeeds when any of N i.i.d. samples is correct. DCO trains on the negative
log-probability of that event:

    ℓ_DCO^N(p) = −log(1 − (1 − p)^N),        p = model probability of the correct answer,

whose gradient is the cross-entropy gradient scaled by
``F(N, p) = N p (1 − p)^{N−1} / (1 − (1 − p)^N) ∈ (0, 1]`` (F = 1 at N = 1, and F → 0 once
``p ≳ 1/N``: confident examples stop being pushed — the "limiting confidence" effect).

Numerics. With ``s = log(−log(1 − p))`` (the log cumulative hazard) and ``a = N·log(1 − p) =
−N e^s``, the loss is ``−log1p(−e^a)`` for ``a ≤ −ln 2`` and ``−log(−a) − log(expm1(a)/a)`` for
``a > −ln 2``. ``s`` is formed without ever rounding ``1 − p`` or ``log(1 − p)``: from logits
``s = log softplus(−ℓu)`` (ℓu the comp-sum statistic of :mod:`lossjax.losses._core`), from a
sequence log-probability ``s = log(−log1mexp(log p))``. The loss stays finite and exact both for
``p → 1`` (underflows gracefully to 0) and for ``p → 0`` (≈ ``−log p − log N``), where the
textbook ``−log(−expm1(N·log_sigmoid(ℓu)))`` gives ``inf``.

Reference: Chen, Raventós, Cheng, Ganguli, Druckmann, Direct Coverage Optimization (DCO), NeurIPS 2025,
arXiv:2502.07154.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    expect,
    finalize,
    margin_lse,
    prepare,
    require_floating,
    require_positive,
)

__all__ = ["dco_loss", "dco_loss_from_log_prob", "dco_gradient_factor"]

_LN2 = math.log(2.0)


def _log_softplus(t: jax.Array) -> jax.Array:
    """``log(softplus(t)) = log(log1p(e^t))``, accurate for t → −∞ (≈ t) and finite gradients."""
    small = t < -5.0
    t_big = jnp.where(small, 0.0, t)
    big_branch = jnp.log(jax.nn.softplus(t_big))
    t_small = jnp.where(small, t, -10.0)
    u = jnp.exp(t_small)
    # log(log1p(u)/u) = −u/2 + 5u²/24 + O(u³); the quotient's derivative underflows for tiny u
    tiny = u < 1e-3
    u_safe = jnp.where(tiny, 0.5, u)
    log_ratio = jnp.where(tiny, u * (-0.5 + u * (5.0 / 24.0)), jnp.log(jnp.log1p(u_safe) / u_safe))
    small_branch = t_small + log_ratio
    return jnp.where(small, small_branch, big_branch)


def _log1mexp(x: jax.Array) -> jax.Array:
    """``log(1 − e^x)`` for ``x ≤ 0`` (two-branch form, Mächler 2012)."""
    near0 = x > -_LN2
    x_near = jnp.where(near0, x, -1.0)
    x_far = jnp.where(near0, -1.0, x)
    return jnp.where(near0, jnp.log(-jnp.expm1(x_near)), jnp.log1p(-jnp.exp(x_far)))


def _log_neg_log1mexp(lp: jax.Array) -> jax.Array:
    """``log(−log(1 − e^lp))`` for ``lp < 0``, accurate for lp → −∞ (≈ lp)."""
    small = lp < -5.0
    lp_big = jnp.where(small, -1.0, lp)
    big_branch = jnp.log(-_log1mexp(lp_big))
    lp_small = jnp.where(small, lp, -10.0)
    u = jnp.exp(lp_small)
    # log(−log1p(−u)/u) = u/2 + 5u²/24 + O(u³); series where the quotient's derivative underflows
    tiny = u < 1e-3
    u_safe = jnp.where(tiny, 0.5, u)
    log_ratio = jnp.where(tiny, u * (0.5 + u * (5.0 / 24.0)), jnp.log(-jnp.log1p(-u_safe) / u_safe))
    return jnp.where(small, lp_small + log_ratio, big_branch)


def _dco_from_log_hazard(s: jax.Array, n: ArrayLike, certain: jax.Array) -> jax.Array:
    """DCO loss from ``s = log(−log(1 − p))``; ``certain`` marks p = 1 (loss 0, zero gradient)."""
    s = jnp.where(certain, 0.0, s)
    log_neg_a = jnp.log(jnp.asarray(n, s.dtype)) + s
    far = log_neg_a >= math.log(_LN2)  # a ≤ −ln 2
    # a < −200: the loss e^a (< 1e-87) is 0 with zero gradient (no e^a·(−a) = 0·inf at a = −inf)
    deep = log_neg_a > math.log(200.0)
    a_far = -jnp.exp(jnp.where(far & ~deep, log_neg_a, math.log(_LN2)))
    loss_far = jnp.where(deep, 0.0, -jnp.log1p(-jnp.exp(a_far)))
    log_neg_a_near = jnp.where(far, math.log(0.5 * _LN2), log_neg_a)
    a_near = -jnp.exp(log_neg_a_near)
    # log(expm1(a)/a): a series for small |a| (the quotient's derivative underflows there)
    tiny = a_near > -1e-3
    a_safe = jnp.where(tiny, -1.0, a_near)
    log_ratio = jnp.where(
        tiny, a_near * (0.5 + a_near / 24.0), jnp.log(jnp.expm1(a_safe) / a_safe)
    )
    loss_near = -log_neg_a_near - log_ratio
    loss = jnp.where(far, loss_far, loss_near)
    return jnp.where(certain, 0.0, loss)


def dco_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n: float,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Direct Coverage Optimization loss for classification, ``p̂ = softmax(x)_y``.

    .. math::
        \ell^{N}_{\mathrm{DCO}}(x, y) = -\log\bigl(1 - (1 - p_y)^N\bigr),\qquad
        \nabla \ell^{N}_{\mathrm{DCO}} = F(N, p_y)\,\nabla \ell_{\mathrm{CE}},\quad
        F(N, p) = \frac{N p (1-p)^{N-1}}{1 - (1-p)^N}.

    ``N = 1`` is cross-entropy; the loss decreases in ``N`` and never exceeds CE. Computed from
    ``1 − p_y = sigmoid(ℓu)`` in log space (see the module docstring), float32 internally.
    Probability labels ``[..., K]`` use the expectation ``Σ_k t_k ℓ(x, k)``.

    The paper's training recipe also swaps out examples whose factor ``F`` falls below a
    threshold to keep the effective batch size; that is data-pipeline logic, not part of the
    loss — :func:`dco_gradient_factor` gives ``F``.

    Args:
      logits: floating ``[..., K]``.
      labels: integer ``[...]`` or probability vectors ``[..., K]``.
      n: number of attempts ``N > 0`` (an integer in the paper; real values are accepted). No
        default: the paper picks the training ``N`` close to the test-time ``N``.
      axis: class axis.
      where: optional bool mask, per example or per class; masked rows give 0.

    Returns:
      Per-example losses ``[...]``.

    References:
      Chen, Raventós, Cheng, Ganguli, Druckmann, "Rethinking Fine-Tuning when Scaling Test-Time
      Compute: Limiting Confidence Improves Mathematical Reasoning", NeurIPS 2025,
      arXiv:2502.07154.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> dco_loss(x, jnp.array([0, 1]), n=4).round(4)
      Array([0.0136, 2.7344], dtype=float32)
    """
    require_positive(n, "n")
    p = prepare(logits, labels, axis=axis, where=where)
    lu = margin_lse(p)
    certain = lu == -jnp.inf
    s = _log_softplus(jnp.where(certain, 0.0, -lu))
    return finalize(p, expect(p, _dco_from_log_hazard(s, n, certain)))


def dco_loss_from_log_prob(
    log_prob: ArrayLike,
    *,
    n: float,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""DCO loss from a per-example log-probability of the correct answer (e.g. a sequence).

    .. math::
        \ell^{N}_{\mathrm{DCO}} = -\log\bigl(1 - (1 - e^{\log \hat p})^N\bigr),\qquad
        \log \hat p = \sum_t \log p(y_t \mid y_{<t}, x)\ \text{for sequences.}

    ``log_prob ≤ 0`` (values above 0 are clipped to 0, i.e. ``p̂ = 1``, which gives 0). Stable
    for ``log p̂`` from ``−1e4`` (≈ ``−log p̂ − log N``) to 0.

    Args:
      log_prob: floating ``[...]`` log-probabilities.
      n: number of attempts ``N > 0``.
      where: optional bool ``[...]`` mask; masked entries give 0.

    Returns:
      ``[...]`` losses (float32, or float64 for float64 input).

    References:
      Chen et al., NeurIPS 2025, arXiv:2502.07154.

    Example:
      >>> import jax.numpy as jnp
      >>> dco_loss_from_log_prob(jnp.log(jnp.array([0.5])), n=2).round(4)  # -log(1 - 0.25)
      Array([0.2877], dtype=float32)
    """
    require_floating(log_prob, "log_prob")
    require_positive(n, "n")
    lp = jnp.asarray(log_prob)
    dummy = jnp.zeros(lp.shape, jnp.int32)
    p = prepare(lp[..., None], dummy, where=where, logits_name="log_prob")
    lp = jnp.where(p.logits[..., 0] > 0, 0.0, p.logits[..., 0])  # clamp to ≤ 0; NaN stays NaN
    certain = lp == 0
    lp_safe = jnp.where(certain, -1.0, lp)
    s = _log_neg_log1mexp(lp_safe)  # log(−log(1 − p̂))
    return finalize(p, _dco_from_log_hazard(s, n, certain))


def dco_gradient_factor(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n: float,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""The DCO gradient scale ``F(N, p_y) = N p (1−p)^{N−1} / (1 − (1−p)^N) ∈ [0, 1]``.

    ``∇ℓ_DCO = F·∇ℓ_CE``; the paper drops (swaps out) examples with ``F`` below a small
    threshold. Computed in log space, ``log F = log N − softplus(ℓu) + (N−1)·log_sigmoid(ℓu) +
    ℓ_DCO``; integer labels only; no gradient (a diagnostic). Masked rows give 0.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> [round(float(v), 4) for v in dco_gradient_factor(x, jnp.array([0, 1]), n=4)]
      [0.106, 0.975]
    """
    require_positive(n, "n")
    p = prepare(logits, labels, axis=axis, where=where, allow_soft=False)
    lu = jax.lax.stop_gradient(margin_lse(p))
    certain = lu == -jnp.inf
    never = lu == jnp.inf  # p_y = 0 (a -inf label logit): F → N·p/(N·p) = 1 in the limit
    lu_safe = jnp.where(certain | never, 0.0, lu)
    loss = _dco_from_log_hazard(_log_softplus(-lu_safe), n, certain)
    log_1mp = jnp.maximum(jax.nn.log_sigmoid(lu_safe), -1e30)
    nn_ = jnp.asarray(n, p.dtype)
    log_f = jnp.log(nn_) - jax.nn.softplus(lu_safe) + (nn_ - 1.0) * log_1mp + loss
    f = jnp.exp(log_f)
    f_certain = jnp.where(nn_ == 1.0, 1.0, 0.0)  # p = 1: F = N·0^{N−1}
    return finalize(p, jnp.where(certain, f_certain, jnp.where(never, 1.0, f)))
