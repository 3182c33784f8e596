"""Trajectory KL loss: the extra loss term of SAF and MESA.

Du et al., "Sharpness-Aware Training for Free", NeurIPS 2022 (arXiv 2205.14083), Eq. 8 and
Eq. 12; official code AngusDujw/SAF (``SAF_train.py``, ``MESA_train.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses import _core

__all__ = ["trajectory_kl_loss"]


def trajectory_kl_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    tau: float = 5.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example ``τ² · KL(softmax(ŷ/τ) ‖ softmax(z/τ))`` against reference logits ``ŷ``.

    .. math::
        ℓ(z, ŷ) = τ^2 \sum_k q_k (\log q_k − \log \mathrm{softmax}(z/τ)_k),\quad
        q = \mathrm{softmax}(\mathrm{stop\_gradient}(ŷ)/τ),\qquad
        \frac{∂ℓ}{∂z} = τ\,(\mathrm{softmax}(z/τ) − q).

    SAF uses as ``ŷ`` the logits recorded for the same training example ``Ẽ`` epochs earlier
    (:func:`lossjax.sharpness.saf` / :func:`lossjax.sharpness.saf_targets`), MESA the logits of
    an EMA copy of the model (:func:`lossjax.sharpness.mesa`); both add
    ``λ · mean_batch(ℓ)`` to the CE loss (λ = 0.3 SAF, 0.8 MESA in the paper). The direction is
    KL(reference ‖ current) as in the official ``F.kl_div(log q_current, p_reference)``. The
    reference gets no gradient.

    Args:
      logits: current logits ``[..., K]``.
      targets: reference logits, same shape (any floating dtype, e.g. a bf16 buffer).
      tau: temperature τ > 0 (5 in the paper).
      axis: class axis.
      where: per-example ``[...]`` or per-class ``[..., K]`` bool mask (masked classes are
        removed from both softmaxes; masked rows give 0 -- e.g. examples whose reference is not
        available yet).

    Returns:
      ``[...]`` float32 (float64 for float64 inputs).

    Example:
        >>> import jax.numpy as jnp
        >>> z = jnp.array([2.0, -1.0, 0.5]); ref = jnp.array([1.0, 0.0, 0.0])
        >>> round(float(trajectory_kl_loss(z, ref, tau=5.0)), 5)
        0.34463
        >>> float(trajectory_kl_loss(z, z))
        0.0
    """
    _core.require_positive(tau, "tau")
    _core.require_floating(logits, "logits")
    _core.require_floating(targets, "targets")
    z = jnp.asarray(logits)
    ref = jnp.asarray(targets)
    if ref.shape != z.shape:
        raise ValueError(f"`targets` must have the shape of `logits` {z.shape}, got {ref.shape}.")
    if z.ndim < 1:
        raise ValueError("`logits` must have a class axis; got a scalar.")
    z = jnp.moveaxis(z, axis, -1)
    ref = jnp.moveaxis(ref, axis, -1)
    if where is not None and jnp.ndim(where) == z.ndim:
        where = jnp.moveaxis(jnp.asarray(where), axis, -1)
    dt = _core.compute_dtype(z.dtype)
    tau_c = jnp.asarray(tau, dt)
    ref = jax.lax.stop_gradient(ref).astype(dt) / tau_c
    # reference distribution q (masked log-softmax; the dummy labels are not used)
    p_ref = _core.prepare(ref, jnp.zeros(ref.shape[:-1], jnp.int32), where=where)
    log_q = _core.log_softmax(p_ref)
    q = jnp.exp(log_q)
    p = _core.prepare(z.astype(dt) / tau_c, q, where=where)
    log_cur = _core.log_softmax(p)
    per_class = jnp.where(q > 0, log_q - jnp.where(q > 0, log_cur, 0.0), 0.0)
    kl = jnp.sum(q * per_class, axis=-1)
    return _core.finalize(p, jnp.square(tau_c) * kl)
