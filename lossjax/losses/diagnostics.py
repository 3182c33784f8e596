"""Softmax-Collapse diagnostics (Prieto et al., 2025, arXiv 2501.04697).

Two **metrics** (not losses, not differentiable) from the authors' training logger:

* :func:`softmax_collapse_fraction` — fraction of examples whose shifted softmax normaliser
  ``Σ_k exp(x_k − max x)`` is *exactly* 1 in the working precision: every non-maximal class
  has rounded away, the probabilities are one-hot and the softmax gradient vanishes. In float32
  this happens once every non-max gap exceeds about ``ln 2^24 ≈ 16.6`` (plus ``ln(K − 1)``).
* :func:`zero_loss_fraction` — fraction of examples whose per-example loss is exactly 0.0.

They are evaluated in the precision of the logits (the "training dtype"), **not** upcast, since
rounding in that precision is what is being measured. (Neural-collapse diagnostics live in a
separate module.)

Reference: L. Prieto, M. Barsbey, P. Mediano, T. Birdal, "Grokking at the Edge of Numerical Stability",
arXiv:2501.04697 (2025).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from lossjax.losses._core import prepare, reduce_loss, require_floating

__all__ = ["softmax_collapse_fraction", "zero_loss_fraction"]


def _working_dtype(logits: ArrayLike, dtype: Any) -> jnp.dtype:
    if dtype is None:
        return jnp.result_type(logits)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
    return dtype


def _fraction(flags: jax.Array, row_mask: jax.Array | None) -> jax.Array:
    return jax.lax.stop_gradient(reduce_loss(flags.astype(jnp.float32), "mean", where=row_mask))


def softmax_collapse_fraction(
    logits: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    dtype: Any = None,
) -> jax.Array:
    r"""Fraction of rows in Softmax Collapse: ``Σ_k exp(x_k − max_j x_j) == 1`` exactly.

    .. math::
        \mathrm{SC} = \frac{1}{N}\sum_i \Bigl[\,\mathrm{fl}\Bigl(\sum_k e^{x_{ik}-\max_j x_{ij}}\Bigr) = 1\Bigr]

    evaluated in ``dtype`` (default: the dtype of ``logits``). Independent of the labels. A row
    in SC has one-hot softmax probabilities, exactly-zero cross-entropy for its argmax label and
    an exactly-zero gradient. Float32 examples: ``[0, −17, −20]`` is in SC, ``[0, −16, −20]`` is
    not; ``[40, 0, 0]`` is.

    Args:
      logits: floating ``[..., K]``.
      axis: class axis.
      where: optional bool mask: per example ``[...]`` (rows to count) or per class ``[..., K]``
        (classes left out of the sum). An all-masked input gives 0.
      dtype: precision in which to test (e.g. ``jnp.bfloat16``); default the logits' dtype.

    Returns:
      A scalar in ``[0, 1]`` (float32), with no gradient.

    References:
      L. Prieto et al., "Grokking at the Edge of Numerical Stability", ICLR 2025,
      arXiv:2501.04697 (§3, Softmax Collapse).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, -17.0, -20.0], [0.0, -16.0, -20.0]])
      >>> float(softmax_collapse_fraction(x))
      0.5
    """
    require_floating(logits, "logits")
    dt = _working_dtype(logits, dtype)
    dummy = jnp.zeros(jnp.shape(logits), jnp.result_type(logits))
    p = prepare(logits, dummy, axis=axis, where=where, labels_name="logits")
    x = jax.lax.stop_gradient(p.logits).astype(dt)  # exact: p.logits came from the input dtype
    valid = x > -jnp.inf
    m = jnp.max(jnp.where(valid, x, -jnp.inf), axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), dt))
    e = jnp.where(valid, jnp.exp(jnp.where(valid, x - m, jnp.zeros((), dt))), jnp.zeros((), dt))
    total = jnp.sum(e, axis=-1, dtype=dt)
    collapsed = total == jnp.ones((), dt)
    rows = jnp.any(valid, axis=-1)
    row_mask = rows if p.row_mask is None else (p.row_mask & rows)
    return _fraction(collapsed, row_mask)


def zero_loss_fraction(
    values: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Fraction of examples whose loss is exactly 0.0 (the "zero terms" metric).

    Two call forms:

    * ``zero_loss_fraction(per_example_loss, where=None)`` — ``values`` are per-example losses
      from any loss; counts ``loss == 0``.
    * ``zero_loss_fraction(logits, labels, axis=-1, where=None)`` — ``values`` are logits and
      the loss is the *standard* softmax cross-entropy ``logsumexp(x) − x_y`` (via
      ``optax.losses``) evaluated **in the dtype of the logits**, as a training run computes it.
      (The stable lossjax form ``softplus(ℓu)`` would not round to 0, which is the point of the
      metric.) Integer labels ``[...]`` or probability labels ``[..., K]``.

    .. math::
        Z = \frac{1}{N}\sum_i [\,\ell_i = 0\,]

    Args:
      values: per-example losses ``[...]`` or, with ``labels``, floating logits ``[..., K]``.
      labels: optional labels (see above).
      axis: class axis (only with ``labels``).
      where: optional bool mask, per example (or per class, only with ``labels``). An
        all-masked input gives 0.

    Returns:
      A scalar in ``[0, 1]`` (float32), with no gradient.

    References:
      L. Prieto et al., "Grokking at the Edge of Numerical Stability", ICLR 2025,
      arXiv:2501.04697.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, -17.0, -20.0], [0.0, -16.0, -20.0]])
      >>> float(zero_loss_fraction(x, jnp.array([0, 0])))
      0.5
      >>> float(zero_loss_fraction(jnp.array([0.0, 1e-30, 0.0, 2.0])))
      0.5
    """
    require_floating(values, "values")
    if labels is None:
        loss = jax.lax.stop_gradient(jnp.asarray(values))
        row_mask = None
        if where is not None:
            where = jnp.asarray(where)
            if where.dtype != jnp.bool_:
                raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
            if where.shape != loss.shape:
                raise ValueError(f"`where` must have shape {loss.shape}, got {where.shape}.")
            row_mask = where
        return _fraction(loss == 0, row_mask)
    dt = jnp.result_type(values)
    p = prepare(values, labels, axis=axis, where=where, logits_name="values")
    x = jax.lax.stop_gradient(p.logits).astype(dt)
    cmask = p.class_mask
    if p.soft:
        loss = optax.losses.softmax_cross_entropy(x, p.labels.astype(dt), where=cmask)
    else:
        loss = optax.losses.softmax_cross_entropy_with_integer_labels(x, p.labels, where=cmask)
    return _fraction(loss == 0, p.row_mask)
