"""Correctness-aware (CA) calibration loss (Liu, Wang, Zou, Zou, Zheng, 2024, arXiv 2404.13016).

Post-hoc calibration: a small calibrator predicts a per-sample temperature ``T(x)`` and the loss
trains it so that the calibrated confidence ``ĉ = max_k softmax(x/T)_k`` matches the correctness
``r = [argmax_k x_k = y]`` of the frozen classifier. The loss is **batch-level** (the balancing
weights depend on the batch accuracy), so it returns one scalar per batch.

Reference: Liu, Wang, Zou, Zou, Zheng, correctness-aware calibration, arXiv:2404.13016 (2024).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import log_softmax, prepare, require_floating

__all__ = ["correctness_aware_loss"]


def correctness_aware_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    temperature: ArrayLike,
    *,
    balance: bool = True,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Correctness-aware calibration loss: squared error between confidence and correctness.

    .. math::
        \hat c_i = \max_k \mathrm{softmax}(x_i / T_i)_k,\qquad
        r_i = [\arg\max_k x_{ik} = y_i],\qquad
        L = \frac{\sum_i w_i (\hat c_i - r_i)^2}{\sum_i w_i}

    with class-balancing weights from the batch accuracy ``a``: ``w_i = 1 − a`` for correct and
    ``w_i = a`` for wrong samples (``balance=True``, the released code's final objective), or
    ``w_i = 1`` (``balance=False``). The balanced form equals the average of the two group means,
    ``½·mean_correct (ĉ − 1)² + ½·mean_wrong ĉ²``, and is computed that way: when one group is
    empty (all samples right, or all wrong) the loss is the mean over the other group, instead of
    the reference code's ``0/0``.

    ``ĉ`` is computed stably as ``exp(max(x/T) − logsumexp(x/T))``; ``r`` uses the uncalibrated
    logits (temperature scaling cannot change the argmax) and carries no gradient. Gradients flow
    to ``temperature`` (and to ``logits``). The reference calibrator clamps ``T`` to
    ``[0.1, 10]``; clamp before calling if you want the same (``jnp.clip``).

    Open question (``docs/open_questions.md``): whether the balancing weights appear in the paper's equation or
    only in the released code; the paper derives the objective as confidence-vs-correctness squared error.

    Args:
      logits: floating ``[..., K]`` (frozen classifier outputs).
      labels: integer ``[...]`` class indices.
      temperature: per-sample temperatures ``> 0``, broadcastable to ``[...]``.
      balance: use the accuracy-balanced weights (default) or a plain mean.
      axis: class axis.
      where: optional bool mask, per example ``[...]`` (removes samples from the batch, and from
        the accuracy ``a``) or per class ``[..., K]``. An all-masked batch gives 0.

    Returns:
      A scalar (float32, or float64 for float64 input).

    References:
      Y. Liu, L. Wang, Y. Zou, J. Zou, L. Zheng, "Optimizing Calibration by Gaining Aware of
      Prediction Correctness", arXiv:2404.13016, 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0], [0.2, 0.1, 0.0]])
      >>> y = jnp.array([0, 1, 1])
      >>> print(f"{float(correctness_aware_loss(x, y, 1.0)):.6f}")
      0.298304
      >>> print(f"{float(correctness_aware_loss(x, y, 1.0, balance=False)):.6f}")
      0.358978
    """
    require_floating(temperature, "temperature")
    p = prepare(logits, labels, axis=axis, where=where, allow_soft=False)
    batch_shape = p.labels.shape
    t = jnp.asarray(temperature).astype(p.dtype)
    try:
        t = jnp.broadcast_to(t, batch_shape)
    except ValueError as err:
        raise ValueError(
            f"`temperature` of shape {jnp.shape(temperature)} does not broadcast to the batch "
            f"shape {batch_shape}."
        ) from err
    if not isinstance(t, jax.core.Tracer) and bool(jnp.any(t <= 0)):
        raise ValueError("`temperature` must be > 0.")
    valid = p.logits != -jnp.inf
    x_safe = jnp.where(valid, p.logits, 0.0)  # -inf / T would give a NaN gradient in T
    scaled = p._replace(logits=jnp.where(valid, x_safe / t[..., None], -jnp.inf))
    conf = jnp.exp(jnp.max(log_softmax(scaled), axis=-1))
    pred = jnp.argmax(jax.lax.stop_gradient(p.logits), axis=-1)
    correct = pred == p.labels
    err2 = jnp.square(conf - correct.astype(p.dtype))
    rows = jnp.ones(batch_shape, bool) if p.row_mask is None else p.row_mask
    err2 = jnp.where(rows, err2, 0.0)
    if not balance:
        return jnp.sum(err2) / jnp.maximum(jnp.sum(rows), 1).astype(p.dtype)
    means = []
    present = []
    for group in (correct, ~correct):
        g = rows & group
        n = jnp.sum(g)
        means.append(jnp.sum(jnp.where(g, err2, 0.0)) / jnp.maximum(n, 1).astype(p.dtype))
        present.append(n > 0)
    n_groups = jnp.maximum(present[0].astype(p.dtype) + present[1].astype(p.dtype), 1.0)
    return (means[0] + means[1]) / n_groups
