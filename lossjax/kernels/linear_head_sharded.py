"""Vocab-parallel statistics of :func:`lossjax.kernels.linear_ce_head` (classifier split over V).

Device k holds classifier rows ``[k V_l, (k+1) V_l)`` and streams only them, producing per row the local
log-sum-exp ``lse_k``, the local target logit ``z_t^k`` (0 unless the target is in shard k), the local
expectation ``E_k[z] = sum_v p^k_v z_v`` under the local softmax ``p^k``, and the local max and argmax.
They are combined with collectives over the vocabulary axis (the Megatron parallel cross-entropy pattern,
Shoeybi et al., arXiv 1909.08053, Sec. 3)::

    lse = log sum_k exp(lse_k)        w_k = exp(lse_k - lse)
    E[z] = sum_k w_k E_k[z]           H = lse - E[z]          nll = lse - sum_k z_t^k
    argmax = smallest global index among the shards holding the global max

The combination is plain differentiable JAX; the per-shard partials have a ``custom_vjp`` that recomputes
the local tiles with, for cotangents ``a, b, c`` of ``(lse_k, z_t^k, E_k[z])``,

    G_v = a p^k_v + b [v = t] + c p^k_v (1 + z_v - E_k[z])

(``dE_k[z]/dz_v = p^k_v (1 + z_v - E_k[z])``), times ``1/T`` and the softcap derivative.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lossjax.kernels.linear_ce_chunked import accumulate_tile_grads, grad_accumulators, tile_logits, vocab_tiles
from lossjax.kernels.linear_ce_common import softcap_grad_factor, vary_like

__all__ = ["head_shard_partials", "head_vocab_parallel_stats"]


def fold_init(n: int) -> tuple:
    """Empty online state ``(max, Σe^{z−max}, Σ z e^{z−max}, target logit, best logit, argmax)`` of ``n`` rows."""
    f32 = jnp.float32
    return (jnp.full((n,), -jnp.inf, f32), jnp.zeros((n,), f32), jnp.zeros((n,), f32), jnp.zeros((n,), f32),
            jnp.full((n,), -jnp.inf, f32), jnp.zeros((n,), jnp.int32))


def fold_tile(carry: tuple, z: jax.Array, keep: jax.Array, cols: jax.Array, tcol: jax.Array) -> tuple:
    """Fold one ``[N, bv]`` logit tile (columns ``cols``, valid where ``keep``) into the online state.

    The running max rescales the sums (Milakov & Gimelshein, arXiv:1805.02867); ``Σ z e^{z−max}`` gives
    the entropy ``lse − u/s``; the argmax keeps the earlier tile on ties (``jnp.argmax``'s first index).
    """
    m, s, u, zt, best, arg = carry
    zm = jnp.where(keep, z, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(zm, axis=1))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    alpha = jnp.exp(m - shift)
    pz = jnp.exp(zm - shift[:, None])
    s = s * alpha + jnp.sum(pz, axis=1)
    u = u * alpha + jnp.sum(pz * jnp.where(keep, z, 0.0), axis=1)
    zt = zt + jnp.sum(jnp.where(jnp.logical_and(cols == tcol, keep), z, 0.0), axis=1)
    tmax = jnp.max(zm, axis=1)
    better = tmax > best
    arg = jnp.where(better, cols[0, 0] + jnp.argmax(zm, axis=1).astype(jnp.int32), arg)
    return m_new, s, u, zt, jnp.where(better, tmax, best), arg


def _forward(e, c, bias, tl, n_real, hc):
    n, vl = e.shape[0], c.shape[0]
    bv, n_tiles = vocab_tiles(vl, hc.ce.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = tl[:, None]
    inv = 1.0 / hc.temperature

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vl - bv)
        cols = v0 + iota
        keep = jnp.logical_and(cols >= j * bv, cols < n_real)
        zc, _ = tile_logits(e, c, bias, v0, bv, hc.ce.softcap)
        return fold_tile(carry, zc * inv, keep, cols, tcol)

    m, s, u, zt, best, arg = lax.fori_loop(0, n_tiles, body, vary_like(fold_init(n), e, c, bias, tl))
    ez = jnp.where(s > 0, u / jnp.where(s > 0, s, 1.0), 0.0)  # an empty (all-padding) shard: 0, weight 0
    return m + jnp.log(s), zt, ez, best, arg


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def head_shard_partials(e, c, bias, tl, n_real, hc):
    """Per-row ``(lse_k, z_t^k, E_k[z], max_k, argmax_k)`` of one vocabulary shard (local indices).

    Args:
      e: [N, D]; c: [V_l, D] local classifier rows; bias: [V_l] or None; tl: [N] int32 targets relative to
      the shard; n_real: number of real (unpadded) rows of ``c``; hc: the head's static options.
    """
    return _forward(e, c, bias, tl, n_real, hc)


def _fwd(e, c, bias, tl, n_real, hc):
    out = _forward(e, c, bias, tl, n_real, hc)
    return out, (e, c, bias, tl, n_real, out[0], out[2])


def _bwd(hc, res, cts):
    e, c, bias, tl, n_real, lse, ez = res
    a, b, cz = (x.astype(jnp.float32)[:, None] for x in cts[:3])
    vl = c.shape[0]
    bv, n_tiles = vocab_tiles(vl, hc.ce.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = tl[:, None]
    inv = 1.0 / hc.temperature

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vl - bv)
        cols = v0 + iota
        keep = jnp.logical_and(cols >= j * bv, cols < n_real)
        zc, c_t = tile_logits(e, c, bias, v0, bv, hc.ce.softcap)
        z = jnp.where(keep, zc * inv, 0.0)
        p = jnp.where(keep, jnp.exp(z - lse[:, None]), 0.0)
        oh = jnp.logical_and(cols == tcol, keep).astype(jnp.float32)
        grad = (a * p + b * oh + cz * p * (1.0 + z - ez[:, None])) * inv
        if hc.ce.softcap is not None:
            grad = grad * softcap_grad_factor(zc, hc.ce.softcap)
        return accumulate_tile_grads(carry, grad, e, c_t, v0, (cols >= j * bv)[0])

    de, dc, db = lax.fori_loop(0, n_tiles, body, grad_accumulators(e, c, bias))
    return de.astype(e.dtype), dc, db, None, None


head_shard_partials.defvjp(_fwd, _bwd)


def head_vocab_parallel_stats(e, c, bias, targets, hc, *, axis_name: str, vocab: int):
    """Per-row ``(nll, lse, entropy, argmax)`` inside ``shard_map`` when ``c`` is this device's vocabulary
    shard (equations in the module docstring); ``linear_ce_head(..., vocab_axis=...)`` builds the
    ``shard_map``. Internal; example there."""
    vl = c.shape[0]
    offset = lax.axis_index(axis_name) * vl
    n_real = jnp.clip(vocab - offset, 0, vl).astype(jnp.int32)
    lse_k, zt_k, ez_k, best_k, arg_k = head_shard_partials(e, c, bias, targets - offset, n_real, hc)
    mx = lax.stop_gradient(lax.pmax(lax.stop_gradient(lse_k), axis_name))
    mx = jnp.where(jnp.isinf(mx), 0.0, mx)
    lse = mx + jnp.log(lax.psum(jnp.exp(lse_k - mx), axis_name))
    ent = lse - lax.psum(jnp.exp(lse_k - lse) * ez_k, axis_name)
    nll = jnp.where(targets != hc.ce.ignore_index, lse - lax.psum(zt_k, axis_name), 0.0)
    best_k = lax.stop_gradient(best_k)
    top = lax.pmax(best_k, axis_name)
    arg = lax.pmin(jnp.where(best_k == top, arg_k + offset, vocab), axis_name)
    return nll, lse, ent, arg.astype(jnp.int32)
