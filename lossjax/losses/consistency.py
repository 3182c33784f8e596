"""Teacher–student consistency losses for mean teachers.

* :func:`symmetric_consistency_loss` — the symmetric cross-entropy of the Robust Mean Teacher
  (RMT, Döbler, Marsden & Yang, CVPR 2023): the teacher's probabilities are the target of *both*
  directions, ``½[H(q, p) + H(p, q)]``.

This is not :func:`lossjax.losses.symmetric_cross_entropy_loss` (Wang et al. 2019), whose reverse
term uses a clipped one-hot label and, for soft labels, the expectation convention
``−A(1 − Σ_k t_k p_k)``; with a teacher distribution as the label the two differ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    finalize,
    log_softmax,
    prepare,
    require_floating,
    require_positive,
)

__all__ = ["symmetric_consistency_loss"]


def _limit_log_softmax(p: Prepared) -> jax.Array:
    """Masked log-softmax that evaluates ``+inf`` logits as their limit.

    A row with ``+inf`` logits puts all its mass, evenly, on them (``log p = −log n`` there,
    ``−inf`` elsewhere); other rows are :func:`lossjax.losses._core.log_softmax` (a NaN logit
    makes the row NaN).
    """
    x = p.logits
    pinf = x == jnp.inf
    any_pinf = jnp.any(pinf, axis=-1, keepdims=True)
    n = jnp.sum(pinf, axis=-1, keepdims=True).astype(x.dtype)
    lim = jnp.where(pinf, -jnp.log(jnp.maximum(n, 1.0)), -jnp.inf)
    x_safe = jnp.where(any_pinf, jnp.zeros((), x.dtype), x)
    out = log_softmax(p._replace(logits=x_safe))
    row_nan = jnp.any(jnp.isnan(x), axis=-1, keepdims=True)
    out = jnp.where(any_pinf, lim, out)
    return jnp.where(row_nan, jnp.nan, out)


def _cross_entropy(t_log: jax.Array, s_log: jax.Array) -> jax.Array:
    """``−Σ_k t_k log s_k``; terms with ``t_k = 0`` are exactly 0 (double where)."""
    keep = t_log != -jnp.inf  # a NaN teacher entry is kept, so it propagates
    t = jnp.exp(jnp.where(keep, t_log, 0.0))
    return -jnp.sum(jnp.where(keep, t * jnp.where(keep, s_log, 0.0), 0.0), axis=-1)


def _forward_cross_entropy(t_log: jax.Array, x: jax.Array, s_log: jax.Array) -> jax.Array:
    """``H(q, p) = −Σ_k q_k log p_k``, with ``q_k·(m − x_k)`` split where ``m − x_k`` overflows.

    ``−log p_k = (m − x_k) + log Σ_j e^{x_j − m}``. When the logits span more than the float
    range (``m − x_k`` rounds to ``inf`` although both are finite) ``log p_k`` is ``−inf`` in
    the dtype while ``q_k·(−log p_k)`` may still be finite: that term is then computed as
    ``q_k·m − q_k·x_k + q_k·(log-normaliser)``.
    """
    base = _cross_entropy(t_log, s_log)
    keep = t_log != -jnp.inf  # a NaN teacher entry is kept, so it propagates
    q = jnp.exp(jnp.where(keep, t_log, 0.0))
    m = jax.lax.stop_gradient(jnp.max(jnp.where(jnp.isfinite(x), x, -jnp.inf), axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    over = keep & jnp.isfinite(x) & (s_log == -jnp.inf)
    any_over = jnp.any(over, axis=-1)
    # log-normaliser log Σ_j e^{x_j − m} = −log p at the (finite) argmax, where x_j − m = 0
    top = jnp.argmax(jnp.where(jnp.isfinite(x), jax.lax.stop_gradient(x), -jnp.inf), axis=-1)
    x_top = jnp.take_along_axis(jnp.where(jnp.isfinite(x), x, 0.0), top[..., None], -1)
    shift = (x_top - m) - jnp.take_along_axis(s_log, top[..., None], -1)  # value log S, exact gradient
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    xs = jnp.where(keep & jnp.isfinite(x), x, 0.0)
    split = jnp.sum(jnp.where(keep & jnp.isfinite(x), q * m - q * xs + q * shift, 0.0), axis=-1)
    return jnp.where(any_over & ~jnp.any(keep & ~jnp.isfinite(x), axis=-1), split, base)


def symmetric_consistency_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    stop_gradient_teacher: bool = True,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""RMT symmetric cross-entropy between a student and its mean teacher.

    .. math::
        \ell(z_s, z_t) = -\tfrac12\Big[\sum_k q_k \log p_k + \sum_k p_k \log q_k\Big]
        = \tfrac12\big[H(q, p) + H(p, q)\big],\qquad
        p = \mathrm{softmax}(z_s/T),\ q = \mathrm{softmax}(z_t/T).

    The teacher's probabilities ``q`` are the target of both the forward cross-entropy
    ``H(q, p)`` and the reverse one ``H(p, q)`` (RMT, Sec. 3, the symmetric cross-entropy ``L_SCE``
    used as the consistency loss of the mean teacher). The loss is symmetric in ``(p, q)``, at least
    ``½[H(p) + H(q)]`` (equality iff ``p = q``), and its gradient with respect to ``z_s`` is, at
    ``T = 1``, ``½[(p − q) − p ⊙ (log q + H(p, q))]``.

    The teacher enters under ``stop_gradient`` (an EMA teacher is not trained by the loss); pass
    ``stop_gradient_teacher=False`` for a two-way consistency. Classes masked by a per-class
    ``where`` are removed from both distributions. A class with ``q_k = 0`` and ``p_k > 0`` (or the
    reverse) gives ``+inf``, the value of the mathematics. Integer labels are not accepted: with a
    one-hot target the reverse term is ``+inf`` (that case is Wang et al.'s clipped RCE,
    :func:`lossjax.losses.symmetric_cross_entropy_loss`).

    Reference: M. Döbler, R. A. Marsden and B. Yang, "Robust Mean Teacher for Continual and Gradual
    Test-Time Adaptation", CVPR 2023, arXiv:2211.13081.

    Args:
      student_logits: floating ``[..., K]`` student logits.
      teacher_logits: floating ``[..., K]`` teacher logits (same shape).
      temperature: ``T > 0``; divides both logits.
      stop_gradient_teacher: block the gradient into ``teacher_logits`` (default).
      axis: class axis.
      where: optional bool mask, per example ``[...]`` or per class ``[..., K]``.

    Returns:
      ``[...]`` per-example losses (float32, or float64 for float64 input).

    Example:
      >>> import jax.numpy as jnp
      >>> zs, zt = jnp.array([2.0, 0.0, -1.0]), jnp.array([1.0, 1.0, 0.0])
      >>> round(float(symmetric_consistency_loss(zs, zt)), 5)
      1.19229
    """
    require_positive(temperature, "temperature")
    require_floating(teacher_logits, "teacher_logits")
    t = jnp.asarray(teacher_logits)
    if stop_gradient_teacher:
        t = jax.lax.stop_gradient(t)
    p = prepare(
        student_logits,
        t,
        axis=axis,
        where=where,
        allow_int=False,
        logits_name="student_logits",
        labels_name="teacher_logits",
    )
    pt = p._replace(logits=p.labels)
    if p.class_mask is not None:
        pt = pt._replace(logits=jnp.where(p.class_mask, p.labels, -jnp.inf))
    ps = p._replace(logits=p.logits / temperature)
    s_log = _limit_log_softmax(ps)
    t_log = _limit_log_softmax(pt._replace(logits=pt.logits / temperature))
    loss = 0.5 * (_forward_cross_entropy(t_log, ps.logits, s_log) + _cross_entropy(s_log, t_log))
    return finalize(p, loss)
