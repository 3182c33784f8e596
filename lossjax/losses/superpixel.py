"""Superpixel pooling: per-segment mean (or max) of per-pixel values, without parameters.

The parameter-free pooling layer of the saliency "group loss" (ICONIP 2019): per-pixel
predictions or features are pooled over precomputed superpixels (e.g. SLIC), so a loss that
compares regions pairwise costs ``O(S²)`` instead of ``O(P²)``. The group loss built on top of it is
not restated here: only the paper's abstract is available to the project, and it does not give
its equation (``docs/open_questions.md``).

Reference: "Group Loss: An Efficient Strategy for Salient Object Detection", ICONIP 2019,
Communications in Computer and Information Science vol. 1142, doi:10.1007/978-3-030-36808-1_12.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import (
    bool_mask,
    compute_dtype,
    is_concrete,
    require_floating,
    require_integer,
    require_option,
)

__all__ = ["superpixel_pool"]


def superpixel_pool(
    values: ArrayLike,
    segments: ArrayLike,
    *,
    num_segments: int,
    reduction: str = "mean",
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Pool per-pixel values over superpixels, per image.

    .. math::
        v_{bs} = \frac{1}{|R_{bs}|}\sum_{p\in R_{bs}} x_{bp}\ \ (\texttt{"mean"}),\qquad
        v_{bs} = \max_{p\in R_{bs}} x_{bp}\ \ (\texttt{"max"}),

    with ``R_{bs} = {p : segments[b, p] = s, where[b, p]}``. An empty segment gives 0 (and a zero
    gradient). Segment ids outside ``[0, num_segments)`` raise ``ValueError`` naming ``segments``
    outside ``jit``; under ``jit`` they make their image's pooled values NaN (never silently
    dropped). NaN in a kept pixel propagates to its segment.

    The parameter-free superpixel pooling layer of "Group Loss: An Efficient Strategy for Salient Object
    Detection" (ICONIP 2019); the group loss itself is not provided (see docs/open_questions.md).

    Args:
      values: floating ``[B, *spatial, C]`` per-pixel values (predictions or features).
      segments: integer ``[B, *spatial]`` superpixel ids.
      num_segments: ``S``, the number of ids per image (static).
      reduction: ``"mean"`` or ``"max"``.
      where: optional bool ``[B, *spatial]`` keep mask (ignored pixels).

    Returns:
      ``(pooled [B, S, C], counts [B, S])`` — the pooled values and the number of kept pixels of
      each segment (float).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[1.0], [3.0], [10.0], [0.0]]])
      >>> seg = jnp.array([[0, 0, 1, 2]])
      >>> v, n = superpixel_pool(x, seg, num_segments=4)
      >>> v[0, :, 0].tolist(), n[0].tolist()
      ([2.0, 10.0, 0.0, 0.0], [2.0, 1.0, 1.0, 0.0])
    """
    require_option(reduction, ("mean", "max"), "reduction")
    require_floating(values, "values")
    require_integer(segments, "segments")
    x = jnp.asarray(values)
    seg = jnp.asarray(segments)
    if not isinstance(num_segments, (int, np.integer)) or num_segments < 1:
        raise ValueError(f"`num_segments` must be a positive int, got {num_segments!r}.")
    if x.ndim < 2 or seg.shape != x.shape[:-1]:
        raise ValueError(f"`segments` must have shape {x.shape[:-1]} (`values` without its channel axis), "
                         f"got {seg.shape}.")
    b, c = x.shape[0], x.shape[-1]
    keep = bool_mask(where, seg.shape)
    if is_concrete(seg) and is_concrete(keep):
        s_np, k_np = np.asarray(seg), np.asarray(keep)
        bad = k_np & ((s_np < 0) | (s_np >= num_segments))
        if bad.any():
            raise ValueError(f"`segments` must lie in [0, {num_segments}); found {s_np[bad].min()}..{s_np[bad].max()}.")
    dtype = compute_dtype(x.dtype)
    x = x.astype(dtype).reshape(b, -1, c)
    seg = seg.reshape(b, -1)
    keep = keep.reshape(b, -1)
    in_range = (seg >= 0) & (seg < num_segments)
    bad_img = jnp.any(keep & ~in_range, axis=1)  # [B]
    ok = keep & in_range
    x = jnp.where(ok[..., None], x, jnp.zeros((), dtype))  # double where: dropped pixels never reach the sum
    sid = jnp.where(ok, seg, 0)

    def one(xi, si, oi):
        cnt = jax.ops.segment_sum(oi.astype(dtype), si, num_segments=num_segments)
        if reduction == "mean":
            tot = jax.ops.segment_sum(xi, si, num_segments=num_segments)
            out = tot / jnp.maximum(cnt, 1.0)[:, None]
        else:
            xm = jnp.where(oi[:, None], xi, -jnp.inf)
            out = jax.ops.segment_max(xm, si, num_segments=num_segments)
            out = jnp.where(cnt[:, None] > 0, out, 0.0)
        return out, cnt

    pooled, counts = jax.vmap(one)(x, sid, ok)
    pooled = pooled + jnp.where(bad_img, jnp.nan, 0.0).astype(dtype)[:, None, None]
    return pooled, counts
