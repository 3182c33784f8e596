"""Shared configuration and per-tile maths for the linear cross-entropy implementations.

Every implementation (``chunked`` pure JAX, ``pallas``) computes, per row i and vocabulary tile,

    z_iv   = softcap(<E_i, C_v> + b_v)                 (f32 accumulation)
    lse_i  = log sum_v exp z_iv                        (streamed with the online (M, S) state)
    nll_i  = lse_i - (1 - a) z_{i,t_i} - (a / V) sum_v z_iv   (a = label smoothing; 0 if t_i ignored)

and, in the backward pass, with cotangents g_i (of nll_i, zero for ignored rows) and l_i (of lse_i),

    P_iv = exp(z_iv - lse_i)
    G_iv = (g_i + l_i) P_iv - g_i (1 - a) [v = t_i] - g_i a / V
    G_iv *= 1 - (z_iv / s)^2                           (softcap s only)
    dE = G C,  dC = G^T E,  db = sum_i G_iv.

The helpers here are plain ``jnp`` code so that they run unchanged inside Pallas kernels (they avoid
primitives without a Pallas-Triton lowering such as ``round``). Reference: Wijmans et al., "Cut Your Losses
in Large-Vocabulary Language Models", ICLR 2025, arXiv 2411.09009, Sec. 4.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "LinearCEConfig",
    "apply_softcap",
    "softcap_grad_factor",
    "online_lse_update",
    "online_lse_merge",
    "tile_grad_logits",
    "matmul_precision",
    "varying_axes",
    "vary_like",
]


@dataclasses.dataclass(frozen=True)
class LinearCEConfig:
    """Static (hashable) options shared by the implementations.

    Attributes:
      softcap: ``s`` in ``z = s * tanh(a / s)``, or None.
      label_smoothing: ``a`` in [0, 1).
      ignore_index: target value marking ignored rows.
      filter_eps: gradient-filter threshold (CCE ``filter_eps``) or None for exact gradients.
      block_v: vocabulary tile of the pure-JAX path (and super-chunk of the Pallas backward).
      block_n, block_d: Pallas row / contraction tiles.
      v_splits: Pallas forward vocabulary splits (independent grid axis).
      fwd_loop: Pallas forward loop structure, 'nested' (tile loop around a D loop) or 'flat' (one loop
        over (tile, D slice) pairs, epilogue under ``lax.cond``).
      bwd_impl: Pallas-path backward, 'pallas' (gradient-tile kernel + XLA GEMMs) or 'xla' (the
        chunked path's backward with ``bwd_chunk`` tiles).
      interpret: run Pallas kernels in interpret mode.
      num_warps, num_stages: Pallas-Triton compiler parameters.
      filter_block: rows x columns granularity of the gradient filter in the pure-JAX path.
    """

    softcap: float | None = None
    label_smoothing: float = 0.0
    ignore_index: int = -100
    filter_eps: float | None = None
    block_v: int = 1024
    block_n: int = 64
    block_d: int = 64
    v_splits: int = 1
    interpret: bool = True
    num_warps: int = 4
    num_stages: int = 3
    filter_block: int = 128
    bwd_block_v: int = 128
    bwd_chunk: int = 8192
    fwd_loop: str = "nested"
    bwd_impl: str = "pallas"


def matmul_precision(dtype) -> lax.Precision:
    """HIGHEST for float32 operands (no TF32 on GPU), DEFAULT for 16-bit operands."""
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def apply_softcap(a: jax.Array, softcap: float | None) -> jax.Array:
    """``s * tanh(a / s)`` (identity when ``softcap`` is None)."""
    if softcap is None:
        return a
    return softcap * jnp.tanh(a / softcap)


def softcap_grad_factor(z: jax.Array, softcap: float) -> jax.Array:
    """d z / d a = 1 - (z / s)^2 for z = s tanh(a / s)."""
    r = z / softcap
    return 1.0 - r * r


def online_lse_update(m: jax.Array, s: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of the online log-sum-exp state (Milakov & Gimelshein, arXiv 1805.02867).

    ``m``, ``s``: running max and rescaled sum, shape [rows]; ``z``: a [rows, cols] tile (masked entries
    are -inf). Returns the updated state; ``lse = m + log(s)``. If the running max is still -inf the
    exponentials use 0 as the shift, so empty tiles give exp(-inf) = 0 rather than NaN.
    """
    m_new = jnp.maximum(m, jnp.max(z, axis=1))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(z - shift[:, None]), axis=1)
    return m_new, s


def online_lse_merge(m: jax.Array, s: jax.Array, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """Merge partial (max, sum) states stacked along ``axis`` into one state."""
    m_all = jnp.max(m, axis=axis)
    shift = jnp.where(m_all == -jnp.inf, 0.0, m_all)
    s_all = jnp.sum(s * jnp.exp(m - jnp.expand_dims(shift, axis)), axis=axis)
    return m_all, s_all


def tile_grad_logits(
    z: jax.Array,
    keep: jax.Array,
    onehot: jax.Array,
    lse: jax.Array,
    g: jax.Array,
    lam: jax.Array,
    *,
    vocab_size: int,
    softcap: float | None,
    label_smoothing: float,
) -> tuple[jax.Array, jax.Array]:
    """Gradient of the loss w.r.t. the raw (pre-softcap) logits of one tile.

    Args:
      z: [rows, cols] f32 capped logits (finite).
      keep: [rows, cols] or [1, cols] bool, columns that belong to this tile.
      onehot: [rows, cols] bool, ``col == target``.
      lse, g, lam: [rows] f32 log-sum-exp, nll cotangent, lse cotangent.

    Returns:
      ``(G, d)`` where ``G`` is the f32 gradient tile (zero outside ``keep``) and ``d = P - onehot``
      (zero outside ``keep``), the quantity CCE's gradient filter thresholds.
    """
    p = jnp.exp(z - lse[:, None])
    p = jnp.where(keep, p, 0.0)
    oh = jnp.logical_and(onehot, keep).astype(jnp.float32)
    gg = g[:, None]
    grad = (gg + lam[:, None]) * p - (1.0 - label_smoothing) * gg * oh
    if label_smoothing:
        grad = grad - jnp.where(keep, gg * (label_smoothing / vocab_size), 0.0)
    if softcap is not None:
        grad = grad * softcap_grad_factor(z, softcap)
    return grad, p - oh


def varying_axes(*xs) -> tuple:
    """Manual mesh axes (inside ``shard_map``) over which any of ``xs`` varies; () outside ``shard_map``."""
    out: list = []
    for x in xs:
        if x is None:
            continue
        aval = jax.typeof(x)
        mat = getattr(aval, "mat", None)
        names = mat.varying if mat is not None else getattr(aval, "vma", ())
        out += [a for a in names if a not in out]
    return tuple(out)


def vary_like(tree, *like):
    """Mark the arrays in ``tree`` as varying over the manual axes of ``like`` (loop carries inside
    ``shard_map`` must have the varying axes of the loop body's outputs); identity outside ``shard_map``."""
    axes = varying_axes(*like)
    if not axes:
        return tree

    def one(x):
        missing = tuple(a for a in axes if a not in varying_axes(x))
        return lax.pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(one, tree)
