"""StableMax and its cross-entropy (Prieto, Barsbey, Mediano, Birdal, 2025, arXiv 2501.04697).

StableMax replaces the exponential of softmax by the slowly growing

    s(x) = x + 1          for x ≥ 0,
    s(x) = 1 / (1 − x)    for x < 0,

``StableMax(x)_i = s(x_i) / Σ_j s(x_j)``. Because ``log s(x) = sign(x)·log(1 + |x|)``,

    StableMax(x) = softmax(g(x)),   g(x) = sign(x)·log1p(|x|),

which is how it is computed here: ``g`` is evaluated in float32 and the normalisation reuses the
masked log-softmax of :mod:`lossjax.losses._core`, so nothing overflows and no float64 is needed.
(The authors' PyTorch code instead casts to float64 and forms ``s(x)`` and its sum directly, with
``1e-30`` added inside ``1/(1 − x + 1e-30)``.) The two-branch form of ``g`` has the right
gradient, 1, at ``x = 0`` (``sign(x)·log1p(|x|)`` would give 0 there in JAX).

Reference: L. Prieto, M. Barsbey, P. Mediano, T. Birdal, "Grokking at the Edge of Numerical Stability",
arXiv:2501.04697 (2025).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    expect,
    finalize,
    margin_lse,
    nll_from_lu,
    prepare,
    require_floating,
)

__all__ = [
    "stablemax_log_transform",
    "stablemax",
    "log_stablemax",
    "stablemax_cross_entropy_loss",
]


def stablemax_log_transform(x: ArrayLike) -> jax.Array:
    r"""``g(x) = log s(x) = sign(x)·log1p(|x|)``, elementwise, with ``g'(0) = 1``.

    Computed with a double ``where`` (``log1p`` of ``x`` on ``x ≥ 0``, ``−log1p(−x)`` otherwise, each
    branch fed only its own inputs) so that neither branch sees a bad input (finite gradients everywhere,
    ``g(±inf) = ±inf``). Keeps the input dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> float(jax.grad(stablemax_log_transform)(0.0))
      1.0
    """
    require_floating(x, "x")
    x = jnp.asarray(x)
    pos = x >= 0
    zero = jnp.zeros((), x.dtype)
    # double where (not maximum: jnp.maximum splits the gradient 1/2-1/2 at the tie x = 0)
    return jnp.where(pos, jnp.log1p(jnp.where(pos, x, zero)), -jnp.log1p(jnp.where(pos, zero, -x)))


def log_stablemax(x: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Log of StableMax: ``g(x) − logsumexp(g(x))`` along ``axis``.

    .. math::
        \log \mathrm{StableMax}(x)_i = \log s(x_i) - \log\sum_j s(x_j),\qquad
        s(x) = \begin{cases} x + 1 & x \ge 0 \\ 1/(1 - x) & x < 0 \end{cases}

    Computed in float32 for half/bfloat16 input (float64 stays float64); ``-inf`` entries have
    probability 0.

    References:
      L. Prieto, M. Barsbey, P. A. M. Mediano, T. Birdal, "Grokking at the Edge of Numerical
      Stability", ICLR 2025, arXiv:2501.04697.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 4) for v in jnp.exp(log_stablemax(jnp.array([0.5, -1.0, 3.0])))]
      [0.25, 0.0833, 0.6667]
    """
    require_floating(x, "x")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError("`x` must have at least one axis; got a scalar.")
    dt = jnp.promote_types(x.dtype, jnp.float32)
    return jax.nn.log_softmax(stablemax_log_transform(x.astype(dt)), axis=axis)


def stablemax(x: ArrayLike, axis: int = -1) -> jax.Array:
    r"""StableMax ``s(x_i)/Σ_j s(x_j)`` along ``axis`` (= ``softmax(sign(x)·log1p|x|)``).

    Same ordering as softmax (``s`` is strictly increasing) but **not** shift-invariant; for
    ``x ≥ 0`` it is the linear normalisation ``(x + 1)/Σ(x + 1)``.

    References:
      L. Prieto et al., "Grokking at the Edge of Numerical Stability", ICLR 2025,
      arXiv:2501.04697.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 4) for v in stablemax(jnp.array([2.0, 1.0, 0.1]))]
      [0.4918, 0.3279, 0.1803]
    """
    return jnp.exp(log_stablemax(x, axis=axis))


def stablemax_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Cross-entropy with StableMax in place of softmax ("log-StableMax CE").

    .. math::
        L(x, y) = -\log \mathrm{StableMax}(x)_y
                = \mathrm{softplus}\Bigl(\log\sum_{k\ne y} \frac{s(x_k)}{s(x_y)}\Bigr)

    computed through ``g = log s`` and the stable comp-sum statistic of ``g``, so it stays exact
    where ``1 − StableMax_y`` rounds to 0. Where softmax cross-entropy has collapsed (float32
    logit gaps beyond ≈ 17, loss and gradient exactly 0), StableMax CE keeps a non-zero loss and
    gradient because ``s`` grows only linearly. Integer labels ``[...]`` or probability labels
    ``[..., K]`` (``−Σ_k t_k log StableMax_k``). Computed in float32 (float64 stays float64); the
    authors' code uses float64 throughout, which this log-space form does not need.

    Args:
      logits: floating ``[..., K]``.
      labels: integer ``[...]`` or probability vectors ``[..., K]``.
      axis: class axis.
      where: optional bool mask, per example or per class (masked classes get ``s = 0``).

    Returns:
      Per-example losses ``[...]``.

    References:
      L. Prieto, M. Barsbey, P. A. M. Mediano, T. Birdal, "Grokking at the Edge of Numerical
      Stability", ICLR 2025, arXiv:2501.04697.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
      >>> stablemax_cross_entropy_loss(x, jnp.array([0, 1])).round(4)  # log(6.1/3), log 12
      Array([0.7097, 2.4849], dtype=float32)
    """
    p = prepare(logits, labels, axis=axis, where=where)
    p = p._replace(logits=stablemax_log_transform(p.logits))
    return finalize(p, expect(p, nll_from_lu(margin_lse(p))))
