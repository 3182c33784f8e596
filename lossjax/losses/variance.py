"""varCE: cross-entropy with a spatial variance constraint inside ground-truth instances.

Instance segmentation networks trained with the pixel-wise cross-entropy alone can predict
uneven probabilities inside one object, which splits or merges instances after thresholding. The
variance-constrained cross-entropy adds the within-instance variance of the predicted probability
of the instance's class, averaged over instances (Qu et al., MICCAI 2019, the loss of FullNet).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import (
    finalize,
    is_concrete,
    margin_lse,
    nll_from_lu,
    prepare,
    require_floating,
    require_integer,
    require_nonnegative,
)

__all__ = ["variance_constrained_cross_entropy_loss"]


def variance_constrained_cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    instances: ArrayLike,
    *,
    num_instances: int,
    lam: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""varCE: mean pixel cross-entropy plus the mean within-instance variance of ``p_y``.

    Per image, with ``p_i = softmax(x_i)_{y_i}`` the predicted probability of pixel ``i``'s label
    and ``Ω_1..Ω_N`` the (non-empty) ground-truth instances:

    .. math::
        \ell = \frac{1}{|\Omega|}\sum_{i} \mathrm{CE}(x_i, y_i)
        + \lambda\,\frac{1}{N}\sum_{n=1}^{N} \frac{1}{|\Omega_n|}\sum_{i\in\Omega_n}
          \big(p_i - \bar p_n\big)^2,\qquad
        \bar p_n = \frac{1}{|\Omega_n|}\sum_{i\in\Omega_n} p_i

    (Qu et al. 2019, Sec. 2.2, the variance-constrained cross-entropy). The variance term is 0 when
    every instance is predicted with a uniform probability. ``λ = 1`` by default (this
    implementation's choice: set it to the paper's value for a reproduction).

    Reference: H. Qu, Z. Yan, G. M. Riedlinger, S. De, D. N. Metaxas, "Improving Nuclei/Gland
    Instance Segmentation in Histopathology Images by Full Resolution Neural Network and Spatial
    Constrained Loss", MICCAI 2019.

    Args:
      logits: floating ``[B, *spatial, C]``.
      labels: integer ``[B, *spatial]`` class map.
      instances: integer ``[B, *spatial]`` instance ids in ``[0, num_instances]``; 0 is "no
        instance" (background), ids are per image.
      num_instances: the largest instance id (static).
      lam: ``λ ≥ 0``.
      where: optional bool ``[B, *spatial]`` (per pixel) or ``[B]`` (per image).

    Returns:
      ``[B]`` per-image losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])     # 1 image, 3 pixels, 2 classes
      >>> y = jnp.array([[0, 0, 1]])
      >>> inst = jnp.array([[1, 1, 0]])                              # pixels 0, 1 form instance 1
      >>> round(float(variance_constrained_cross_entropy_loss(x, y, inst, num_instances=1)[0]), 5)
      0.41403
    """
    require_floating(logits, "logits")
    require_integer(instances, "instances")
    require_nonnegative(lam, "lam")
    if not isinstance(num_instances, int) or num_instances < 1:
        raise ValueError(f"`num_instances` must be an int >= 1, got {num_instances!r}.")
    x = jnp.asarray(logits)
    if x.ndim < 3:
        raise ValueError(f"`logits` must be [B, *spatial, C], got shape {x.shape}.")
    pix = x.shape[:-1]
    lab = jnp.asarray(labels)
    if not jnp.issubdtype(lab.dtype, jnp.integer):
        raise TypeError(f"`labels` must be an integer class map, got {lab.dtype}.")
    inst = jnp.asarray(instances)
    if inst.shape != pix:
        raise ValueError(f"`instances` must have shape {pix}, got {inst.shape}.")
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape == pix[:1]:
            where = jnp.broadcast_to(where.reshape(pix[:1] + (1,) * (len(pix) - 1)), pix)
        elif where.shape != pix:
            raise ValueError(f"`where` must have shape {pix} (per pixel) or {pix[:1]} (per image), got {where.shape}.")
    if is_concrete(inst) and is_concrete(where):
        inst_np = np.asarray(inst)
        bad = (inst_np < 0) | (inst_np > num_instances)
        if where is not None:
            bad = bad & np.asarray(where)
        if np.any(bad):
            raise ValueError(f"`instances` must lie in [0, {num_instances}] (`num_instances`).")
    p = prepare(x, lab, where=where)
    ce = finalize(p, nll_from_lu(margin_lse(p)))  # [B, *S]
    py = jnp.exp(-ce)
    m = jnp.ones(pix, bool) if p.row_mask is None else p.row_mask
    b = pix[0]
    if b == 0 or ce.size == 0:
        return jnp.zeros((b,), p.dtype)
    ce_f, py_f, m_f = ce.reshape(b, -1), py.reshape(b, -1), m.reshape(b, -1)
    onehot = jax.nn.one_hot(inst.reshape(b, -1), num_instances + 1, dtype=bool)[..., 1:]  # [B, P, N]
    onehot = onehot & m_f[..., None]
    cnt = jnp.sum(onehot, axis=1).astype(p.dtype)  # [B, N]
    safe = jnp.maximum(cnt, 1.0)
    mean = jnp.sum(jnp.where(onehot, py_f[..., None], 0.0), axis=1) / safe
    dev = jnp.where(onehot, py_f[..., None] - mean[:, None, :], 0.0)
    var = jnp.sum(dev**2, axis=1) / safe
    present = cnt > 0
    n_inst = jnp.sum(present, axis=-1)
    var_term = jnp.sum(jnp.where(present, var, 0.0), axis=-1) / jnp.maximum(n_inst, 1).astype(p.dtype)
    ce_term = jnp.sum(jnp.where(m_f, ce_f, 0.0), axis=-1) / jnp.maximum(jnp.sum(m_f, axis=-1), 1).astype(p.dtype)
    return (ce_term + lam * var_term).astype(p.dtype)
