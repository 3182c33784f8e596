"""Tri-BCE: a binary cross-entropy on a fused head plus self-weighted BCEs on its two sub-heads.

In a two-branch click-through-rate model (FCN: an exponential and a linear cross network) the
fused prediction is supervised by the BCE, and each branch gets its own BCE weighted by how much
worse that branch currently is than the fused output, so a branch that already matches the
fusion receives no extra push.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import compute_dtype, is_concrete, require_floating

__all__ = ["tri_bce_loss"]


def _bce(x: jax.Array, y: jax.Array) -> jax.Array:
    """``−y log σ(x) − (1 − y) log σ(−x)`` with ``0·(−inf)`` terms dropped (double where)."""
    pos = jnp.where(y != 0, y * -jax.nn.log_sigmoid(jnp.where(y != 0, x, 0.0)), 0.0)
    neg = jnp.where(y != 1, (1.0 - y) * -jax.nn.log_sigmoid(-jnp.where(y != 1, x, 0.0)), 0.0)
    return pos + neg


def tri_bce_loss(
    fused_logits: ArrayLike,
    logits_a: ArrayLike,
    logits_b: ArrayLike,
    labels: ArrayLike,
    *,
    stop_gradient_weights: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Tri-BCE loss of a fused binary head and its two sub-heads (a scalar over the batch).

    With ``L``, ``L_a``, ``L_b`` the batch-mean binary cross-entropies of the fused head and of
    the two sub-networks:

    .. math::
        L_{\text{Tri}} = L + w_a L_a + w_b L_b,\qquad
        w_a = \max(0, L_a - L),\ w_b = \max(0, L_b - L)

    (Li et al. 2024, Sec. 3, the Tri-BCE loss of FCN: each sub-network gets supervision scaled by
    its gap to the fused prediction). The weights are computed under ``stop_gradient`` by default
    (they act as adaptive coefficients); ``stop_gradient_weights=False`` differentiates through
    them. Labels are ``{0, 1}`` integers or probabilities in ``[0, 1]``.

    Reference: H. Li et al., "FCN: Fusing Exponential and Linear Cross Network for Click-Through
    Rate Prediction", arXiv:2407.13349, 2024.

    Args:
      fused_logits: floating ``[B]`` logits of the fused prediction.
      logits_a: floating ``[B]`` logits of the first sub-network.
      logits_b: floating ``[B]`` logits of the second sub-network.
      labels: ``[B]`` labels in ``{0, 1}`` (integer) or ``[0, 1]`` (floating).
      stop_gradient_weights: block the gradient through ``w_a``, ``w_b``.
      where: optional bool ``[B]`` mask of the examples that count.

    Returns:
      A scalar (0 for an all-masked batch).

    Example:
      >>> import jax.numpy as jnp
      >>> y = jnp.array([1, 0])
      >>> z = jnp.array([2.0, -2.0])
      >>> round(float(tri_bce_loss(z, z, jnp.zeros(2), y)), 5)   # w_a = 0, w_b = ln 2 − L
      0.5194
    """
    names = ("fused_logits", "logits_a", "logits_b")
    arrs = []
    for a, n in zip((fused_logits, logits_a, logits_b), names, strict=True):
        require_floating(a, n)
        a = jnp.asarray(a)
        if a.ndim != 1:
            raise ValueError(f"`{n}` must be a vector [B], got shape {a.shape}.")
        arrs.append(a)
    b = arrs[0].shape[0]
    for a, n in zip(arrs[1:], names[1:], strict=True):
        if a.shape != (b,):
            raise ValueError(f"`{n}` must have shape ({b},) like `fused_logits`, got {a.shape}.")
    y = jnp.asarray(labels)
    if y.shape != (b,):
        raise ValueError(f"`labels` must have shape ({b},), got {y.shape}.")
    if jnp.issubdtype(y.dtype, jnp.integer) and is_concrete(y):
        y_np = np.asarray(y)
        if np.any((y_np < 0) | (y_np > 1)):
            raise ValueError("`labels` must be 0 or 1.")
    dtype = compute_dtype(jnp.result_type(*arrs))
    if jnp.issubdtype(y.dtype, jnp.integer):
        y = jnp.where((y < 0) | (y > 1), jnp.nan, y.astype(dtype))  # traced bad label: NaN
    y = y.astype(dtype)
    m = jnp.ones((b,), bool)
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape != (b,):
            raise ValueError(f"`where` must have shape ({b},), got {where.shape}.")
        m = where
    n = jnp.maximum(jnp.sum(m), 1).astype(dtype)
    ym = jnp.where(m, y, 0.0)

    def mean_bce(x: jax.Array) -> jax.Array:
        x = jnp.where(m, x.astype(dtype), 0.0)
        return jnp.sum(jnp.where(m, _bce(x, ym), 0.0)) / n

    l_f, l_a, l_b = (mean_bce(a) for a in arrs)
    w_a, w_b = jnp.maximum(l_a - l_f, 0.0), jnp.maximum(l_b - l_f, 0.0)
    if stop_gradient_weights:
        w_a, w_b = jax.lax.stop_gradient(w_a), jax.lax.stop_gradient(w_b)
    return (l_f + w_a * l_a + w_b * l_b).astype(dtype)
