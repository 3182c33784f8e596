"""The two unrelated "z-losses": the spherical Z-loss and the logit-normaliser penalty.

The name "z-loss" refers to two different things in the literature; they live side by side here
so that nobody confuses them:

* :func:`spherical_z_loss` — **a classification loss** (de Brébisson & Vincent, 2016,
  arXiv 1604.08859). The logits are standardised, ``z = (x − mean x) / std x``, and the loss is a
  softplus of the standardised true-class score. It replaces cross-entropy.
* :func:`logsumexp_squared_penalty` / :func:`cross_entropy_with_z_loss` — **an auxiliary
  regulariser** ``c·(log Z)²`` with ``log Z = logsumexp(x)`` (Mesh-TensorFlow / T5X; PaLM,
  Chowdhery et al., 2022, arXiv 2204.02311). It is *added* to cross-entropy to keep the softmax
  normaliser near 1 for numerical stability of large-model training.

References: A. de Brébisson, P. Vincent, "An Exploration of Softmax Alternatives Belonging to the
Spherical Loss Family", arXiv:1604.08859 (2016); A. Chowdhery et al., "PaLM", arXiv:2204.02311 (2022),
§5. Test vectors: ``docs/design/test_vectors.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    expect,
    finalize,
    label_log_prob,
    masked_logsumexp,
    prepare,
    require_floating,
    require_nonnegative,
    require_positive,
)

__all__ = [
    "spherical_z_loss",
    "logsumexp_squared_penalty",
    "cross_entropy_with_z_loss",
]


def spherical_z_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    a: float = 1.0,
    b: float = 0.0,
    eps: float = 1e-12,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Spherical-family Z-loss (de Brébisson & Vincent, 2016).

    .. math::
        \mu = \tfrac1K\sum_k x_k,\quad
        \sigma = \sqrt{\tfrac1K\sum_k (x_k-\mu)^2},\quad
        z_k = \frac{x_k-\mu}{\sigma+\varepsilon},\qquad
        L(x, y) = \frac1a\,\mathrm{softplus}\bigl(a\,(b - z_y)\bigr).

    The loss depends on ``x`` only through ``Σx``, ``Σx²`` and ``x_y`` (the "spherical family"),
    so it is invariant to ``x → αx + β`` for α > 0; ``z_y ∈ [−√(K−1), √(K−1)]``, hence the loss
    is bounded and so is its gradient. It is a *replacement* for cross-entropy; it is unrelated to
    the PaLM/T5X ``(log Z)²`` penalty (:func:`logsumexp_squared_penalty`).

    Numerics: ``σ`` is computed two-pass (no ``E[x²] − μ²`` cancellation) after a stop-gradient
    shift by the row maximum and scaling by the largest gap (exact for constant rows, no overflow
    up to ±3.4e38); ``ε`` keeps its meaning in the original units. A constant row gives
    ``z = 0`` and ``L = softplus(a·b)/a`` (also for ``K = 1``).

    Non-finite logits (``docs/conventions.md``): a ``−inf`` logit is a class (of probability 0),
    not a mask — it stays in ``μ``, ``σ`` and ``K``. ``±inf`` logits are evaluated as their limit
    with every infinite logit at the same rate ``±L``, ``L → ∞`` (the float64 value at ``±1e300``):
    since the loss is shift and scale invariant this is the loss of the row with the infinite
    logits replaced by ``±1`` and the finite ones by 0, with zero gradient. A row with no finite
    class (e.g. every logit ``−inf``) has no defined standardisation and gives NaN; so does a NaN.
    To remove a class, mask it with ``where``.

    Hyper-parameters (open question: ``docs/open_questions.md``): the paper tunes ``a`` and ``b``
    per task (to target top-k error); no universal values were confirmed. The authors' example code uses the plain form
    ``softplus((μ − x_y)/(σ + 1e-12))``, i.e. ``a = 1, b = 0``, which are the defaults here.

    Args:
      logits: floating ``[..., K]`` scores (computed in float32; float64 stays float64).
      labels: integer ``[...]`` class indices, or probability vectors ``[..., K]`` (the loss is
        then the expectation ``Σ_k t_k L(x, k)``).
      a: sharpness, ``> 0``.
      b: location of the softplus hinge (in units of standard deviations).
      eps: added to ``σ`` (original logit units), ``≥ 0``.
      axis: class axis.
      where: optional bool mask, per example ``[...]`` or per class ``[..., K]``. Masked classes
        are excluded from ``μ`` and ``σ``; masked rows give 0.

    Returns:
      Per-example losses ``[...]`` (float32, or float64 for float64 input).

    References:
      A. de Brébisson and P. Vincent, "The Z-loss: a shift and scale invariant classification
      loss belonging to the Spherical Family", arXiv:1604.08859, 2016.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> spherical_z_loss(x, jnp.array([0, 1])).round(4)
      Array([0.2529, 1.3957], dtype=float32)
      >>> bool(jnp.allclose(spherical_z_loss(3 * x + 7, jnp.array([0, 1])),
      ...                   spherical_z_loss(x, jnp.array([0, 1])), atol=1e-6))
      True
    """
    require_positive(a, "a")
    require_nonnegative(eps, "eps")
    p = prepare(logits, labels, axis=axis, where=where)
    x = p.logits
    valid = jnp.ones(x.shape, bool) if p.class_mask is None else p.class_mask
    n = jnp.sum(valid, axis=-1, keepdims=True).astype(x.dtype)
    n_safe = jnp.maximum(n, 1.0)
    xv = jnp.where(valid, x, 0.0)
    # ±inf logits: the limit with every infinite logit at the same rate ±L, L → ∞ (the float64
    # evaluation at ±1e300): the finite logits drop out (zero gradient) and the infinite ones
    # count as ±1 — the loss is shift and scale invariant. A row with no finite class is NaN.
    inf = valid & jnp.isinf(xv)
    has_inf = jnp.any(inf, axis=-1, keepdims=True)
    no_finite = jnp.all(inf | ~valid, axis=-1, keepdims=True) & has_inf
    direction = jax.lax.stop_gradient(jnp.where(inf, jnp.sign(jnp.where(inf, xv, 1.0)), 0.0))
    u = jnp.where(has_inf, direction, xv)
    # exact power-of-two scaling into [−1, 1] first (no overflow of x − max x at ±3e38), applied
    # as two normal factors: a single 2^−e can be subnormal and would be flushed to zero
    top = jax.lax.stop_gradient(jnp.max(jnp.abs(u), axis=-1, keepdims=True, initial=0.0))
    _, e = jnp.frexp(jnp.where((top > 0) & jnp.isfinite(top), top, 1.0))
    h = e // 2
    one = jnp.ones((), x.dtype)
    p2a, p2b = jnp.ldexp(one, -h), jnp.ldexp(one, h - e)
    u = u * p2a * p2b
    us = jax.lax.stop_gradient(u)
    # Stop-gradient shift (exact zeros for constant rows) and scale (no overflow in the squares).
    m = jnp.max(jnp.where(valid, us, -jnp.inf), axis=-1, keepdims=True)
    m = jnp.where(jnp.isinf(m), 0.0, m)
    d = jnp.where(valid, u - m, 0.0)
    s = jnp.max(jnp.abs(jax.lax.stop_gradient(d)), axis=-1, keepdims=True)
    s = jnp.where(s > 0, s, 1.0)
    d = d / s
    mu = jnp.sum(d, axis=-1, keepdims=True) / n_safe
    c = jnp.where(valid, d - mu, 0.0)
    var = jnp.sum(c * c, axis=-1, keepdims=True) / n_safe
    pos = var > 0
    sigma = jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)  # double where: finite grad
    eps_u = jnp.where(has_inf, 0.0, (eps / s) * p2a * p2b)  # ε in the original units
    z = c / (sigma + eps_u)
    z = jnp.where(no_finite, jnp.nan, z)
    # A soft label on a class masked by ``where``: the limit x_y → −inf of z_y, −√K.
    z = jnp.where(valid, z, -jnp.sqrt(n))
    per_class = jax.nn.softplus(a * (b - z)) / a
    if p.soft:
        loss = expect(p, per_class)
    else:
        loss = jnp.take_along_axis(per_class, p.labels[..., None], axis=-1)[..., 0]
    return finalize(p, loss)


def logsumexp_squared_penalty(
    logits: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""The logit-normaliser penalty ``(log Z)²`` of Mesh-TF/T5X and PaLM ("z-loss").

    .. math::
        \mathrm{penalty}(x) = \bigl(\log Z\bigr)^2,\qquad \log Z = \log\sum_k e^{x_k}.

    PaLM adds ``1e-4 · (log Z)²`` per token to the cross-entropy, pushing the softmax normaliser
    towards 1; the coefficient is applied by the caller (or use
    :func:`cross_entropy_with_z_loss`). The gradient is ``2·log Z·softmax(x)``; the penalty is
    zero iff the logits are normalised log-probabilities, and it is deliberately **not**
    shift-invariant. ST-MoE's router z-loss is the same function applied to router logits.
    This is *not* the spherical Z-loss (:func:`spherical_z_loss`).

    Args:
      logits: floating ``[..., K]`` (computed in float32; float64 stays float64).
      axis: class axis.
      where: optional bool mask, per example ``[...]`` or per class ``[..., K]`` (masked classes
        are left out of ``Z``). Masked rows, and rows with no finite class, give 0.

    Returns:
      ``[...]`` penalties (without the coefficient).

    References:
      A. Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", JMLR 2023,
      arXiv:2204.02311 (§5, "z_loss"); T5X ``cross_entropy_with_logits(..., z_loss)``.

    Example:
      >>> import jax.numpy as jnp
      >>> logsumexp_squared_penalty(jnp.array([[2.0, 1.0, 0.1]])).round(5)
      Array([5.84203], dtype=float32)
    """
    require_floating(logits, "logits")
    dummy = jnp.zeros(jnp.shape(logits), jnp.result_type(logits))  # soft labels: mask handling only
    p = prepare(logits, dummy, axis=axis, where=where, labels_name="logits")
    return finalize(p, _lse_squared(p.logits))


def _lse0(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    lse = masked_logsumexp(x)
    return jnp.where(lse == -jnp.inf, 0.0, lse), lse  # empty row: 0 (zero gradient); NaN/+inf stay


@jax.custom_jvp
def _lse_squared(x: jax.Array) -> jax.Array:
    lse, _ = _lse0(x)
    return lse * lse


@_lse_squared.defjvp
def _lse_squared_jvp(primals, tangents):
    # d(log Z)² = Σ_k 2·(log Z·p_k)·dx_k with the classes of probability 0 dropped by a select:
    # at log Z ≈ 3e38 the cotangent 2·log Z overflows, and inf·0 must not reach those classes.
    (x,), (t,) = primals, tangents
    lse, raw = _lse0(x)
    prob = jnp.exp(x - jnp.where(jnp.isfinite(raw), raw, 0.0)[..., None])
    coef = lse[..., None] * prob
    dt = 2.0 * jnp.sum(jnp.where(prob == 0, 0.0, coef * t), axis=-1)  # NaN (prob NaN) stays
    return lse * lse, dt


def cross_entropy_with_z_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    z_loss: float = 1e-4,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Softmax cross-entropy plus the PaLM/T5X normaliser penalty ``z_loss·(log Z)²``.

    .. math::
        \mathrm{total}(x, y) = -\log \mathrm{softmax}(x)_y + c\,(\log Z)^2,\qquad
        \mathrm{aux} = c\,(\log Z)^2,

    with ``c = z_loss`` (PaLM: ``1e-4``). Mirrors T5X's ``cross_entropy_with_logits(logits,
    targets, z_loss)``, which returns ``(total_loss, z_loss)``, but per example. Integer labels
    ``[...]`` or probability labels ``[..., K]`` (then ``−Σ_k t_k log p_k``). The cross-entropy
    is computed as ``softplus(logsumexp_{k≠y}(x_k − x_y))`` (exact where ``1 − p_y`` underflows).

    Args:
      logits: floating ``[..., K]``.
      labels: integer ``[...]`` or probability vectors ``[..., K]``.
      z_loss: coefficient ``c ≥ 0``.
      axis: class axis.
      where: optional bool mask, per example or per class (masked classes leave both the
        softmax and ``Z``). Masked rows give 0 in both outputs.

    Returns:
      ``(total, aux)``, both ``[...]``: the per-example total loss and its z-loss part.

    References:
      A. Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", arXiv:2204.02311.

    Example:
      >>> import jax.numpy as jnp
      >>> total, aux = cross_entropy_with_z_loss(jnp.array([[2.0, 1.0, 0.1]]), jnp.array([0]))
      >>> print(f"{float(total[0]):.6f} {float(aux[0]):.4e}")
      0.417614 5.8420e-04
    """
    require_nonnegative(z_loss, "z_loss")
    p = prepare(logits, labels, axis=axis, where=where)
    ce = expect(p, -label_log_prob(p))
    aux = z_loss * _lse_squared(p.logits)
    return finalize(p, ce + aux), finalize(p, aux)
