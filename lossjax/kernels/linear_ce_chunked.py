"""Pure-JAX chunked linear cross-entropy with a ``jax.custom_vjp`` (the portable default on CPU).

The forward streams vocabulary tiles of ``block_v`` columns through ``lax.fori_loop`` with the online
(max, sum) log-sum-exp state; the backward re-streams the same tiles, recomputes the logits, forms the
gradient tile ``G`` and runs two GEMMs per tile (``dE += G C_tile``, ``dC_tile = G^T E``). The last tile
is clamped to ``[V - block_v, V)`` and its re-read columns are masked, so the classifier is never
padded or copied. Temporary memory is O(N * block_v) whatever V is (Wijmans et al., arXiv 2411.09009).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lossjax.kernels.linear_ce_common import (
    LinearCEConfig,
    apply_softcap,
    matmul_precision,
    online_lse_update,
    tile_grad_logits,
    vary_like,
)

__all__ = [
    "chunked_nll_lse", "chunked_backward", "tile_logits", "vocab_tiles", "accumulate_tile_grads", "grad_accumulators",
]


def tile_logits(e, c, bias, v0, bv, softcap):
    """f32 capped logits of columns ``[v0, v0 + bv)`` for all rows, and that [bv, D] slice of C."""
    c_t = lax.dynamic_slice_in_dim(c, v0, bv, axis=0)
    a = lax.dot_general(
        e, c_t, (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32, precision=matmul_precision(e.dtype),
    )
    if bias is not None:
        a = a + lax.dynamic_slice_in_dim(bias, v0, bv).astype(jnp.float32)[None, :]
    return apply_softcap(a, softcap), c_t


def vocab_tiles(vocab: int, bv: int) -> tuple[int, int]:
    """``(tile width, number of tiles)`` for ``vocab`` columns in tiles of at most ``bv``."""
    bv = min(bv, vocab)
    return bv, -(-vocab // bv)


def _forward(e, c, bias, targets, cfg: LinearCEConfig):
    n = e.shape[0]
    vocab = c.shape[0]
    bv, n_tiles = vocab_tiles(vocab, cfg.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = targets[:, None]

    def body(j, carry):
        m, s, zt, sz = carry
        v0 = jnp.minimum(j * bv, vocab - bv)
        cols = v0 + iota
        keep = cols >= j * bv
        z, _ = tile_logits(e, c, bias, v0, bv, cfg.softcap)
        zm = jnp.where(keep, z, -jnp.inf)
        m, s = online_lse_update(m, s, zm)
        hit = jnp.logical_and(cols == tcol, keep)
        zt = zt + jnp.sum(jnp.where(hit, z, 0.0), axis=1)
        if cfg.label_smoothing:
            sz = sz + jnp.sum(jnp.where(keep, z, 0.0), axis=1)
        return m, s, zt, sz

    f32 = jnp.float32
    init = (jnp.full((n,), -jnp.inf, f32), jnp.zeros((n,), f32), jnp.zeros((n,), f32), jnp.zeros((n,), f32))
    # fori_loop (not scan over an index array) keeps the temp size independent of V
    m, s, zt, sz = lax.fori_loop(0, n_tiles, body, vary_like(init, e, c, bias, targets))
    lse = m + jnp.log(s)
    valid = targets != cfg.ignore_index
    nll = lse - (1.0 - cfg.label_smoothing) * zt
    if cfg.label_smoothing:
        nll = nll - (cfg.label_smoothing / vocab) * sz
    nll = jnp.where(valid, nll, 0.0)
    return nll, lse


def _filter_mask(d: jax.Array, eps: float, block: int) -> jax.Array:
    """True where the (block x block) sub-tile of ``d`` has some |d| >= eps (i.e. is kept)."""
    n, bv = d.shape
    rb = min(block, n)
    cb = min(block, bv)
    n_pad = -(-n // rb) * rb
    v_pad = -(-bv // cb) * cb
    a = jnp.pad(jnp.abs(d), ((0, n_pad - n), (0, v_pad - bv)))
    big = jnp.max(a.reshape(n_pad // rb, rb, v_pad // cb, cb), axis=(1, 3)) >= eps
    big = jnp.repeat(jnp.repeat(big, rb, axis=0), cb, axis=1)
    return big[:n, :bv]


def chunked_backward(cfg: LinearCEConfig, res, cts):
    """The VJP of :func:`chunked_nll_lse` from its residuals ``(e, c, bias, targets, lse)`` and the
    cotangents of ``(nll, lse)``; also the Pallas path's ``bwd_impl='xla'`` backward.

    Per vocabulary tile: ``G = (g + l) softmax(z) - g (1 - a) onehot - g a / V`` (times the softcap
    derivative), ``dE += G C_tile``, ``dC_tile = G^T E``, ``db_tile = sum_i G`` (equations in
    :mod:`lossjax.kernels.linear_ce_common`; Wijmans et al., arXiv 2411.09009, Sec. 4). Internal:
    reached through ``linear_cross_entropy(..., impl='chunked')`` (example there).
    """
    e, c, bias, targets, lse = res
    g_nll, g_lse = cts
    vocab = c.shape[0]
    bv, n_tiles = vocab_tiles(vocab, cfg.block_v)
    valid = targets != cfg.ignore_index
    g = jnp.where(valid, g_nll.astype(jnp.float32), 0.0)
    lam = g_lse.astype(jnp.float32)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = targets[:, None]

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vocab - bv)
        cols = v0 + iota
        keep = cols >= j * bv
        z, c_t = tile_logits(e, c, bias, v0, bv, cfg.softcap)
        grad, d = tile_grad_logits(
            z, keep, cols == tcol, lse, g, lam,
            vocab_size=vocab, softcap=cfg.softcap, label_smoothing=cfg.label_smoothing,
        )
        if cfg.filter_eps is not None:
            grad = jnp.where(_filter_mask(d, cfg.filter_eps, cfg.filter_block), grad, 0.0)
        return accumulate_tile_grads(carry, grad, e, c_t, v0, keep[0], skip_zero=cfg.filter_eps is not None)

    de, dc, db = lax.fori_loop(0, n_tiles, body, grad_accumulators(e, c, bias))
    return de.astype(e.dtype), dc, db, None


def grad_accumulators(e, c, bias):
    """Zero ``(dE f32, dC, db)`` carries of the tile loops."""
    db0 = None if bias is None else jnp.zeros(bias.shape, bias.dtype)
    return vary_like((jnp.zeros(e.shape, jnp.float32), jnp.zeros(c.shape, c.dtype), db0), e, c, bias)


def accumulate_tile_grads(carry, grad, e, c_t, v0, keep, *, skip_zero: bool = False):
    """``dE += G C_tile`` and write ``dC_tile = G^T E``, ``db_tile = sum_i G`` at rows ``v0 + keep``.

    ``grad`` is the f32 [N, bv] gradient tile w.r.t. the raw logits of columns ``[v0, v0 + bv)``; columns
    where ``keep`` is False (re-read by a clamped last tile) keep their earlier value. ``skip_zero`` skips
    both GEMMs (``lax.cond``) when the tile is all zero (after gradient filtering).
    """
    de, dc, db = carry
    n, dim = e.shape
    bv = c_t.shape[0]
    f32 = jnp.float32
    gc = grad.astype(e.dtype)

    def gemms(_):
        de_t = lax.dot_general(gc, c_t, (((1,), (0,)), ((), ())), preferred_element_type=f32,
                               precision=matmul_precision(e.dtype))
        dc_t = lax.dot_general(gc, e, (((0,), (0,)), ((), ())), preferred_element_type=f32,
                               precision=matmul_precision(e.dtype))
        return de_t, dc_t

    if skip_zero:
        zeros = vary_like((jnp.zeros((n, dim), f32), jnp.zeros((bv, dim), f32)), gc, e, c_t)
        de_t, dc_t = lax.cond(jnp.any(grad != 0), gemms, lambda _: zeros, None)
    else:
        de_t, dc_t = gemms(None)
    de = de + de_t
    # Each vocabulary tile's dC is complete over all rows: write it (keeping the clamped overlap).
    old = lax.dynamic_slice_in_dim(dc, v0, bv, axis=0)
    dc = lax.dynamic_update_slice_in_dim(dc, jnp.where(keep[:, None], dc_t.astype(dc.dtype), old), v0, axis=0)
    if db is not None:
        db_t = jnp.sum(grad, axis=0)
        old_b = lax.dynamic_slice_in_dim(db, v0, bv)
        db = lax.dynamic_update_slice_in_dim(db, jnp.where(keep, db_t.astype(db.dtype), old_b), v0, 0)
    return de, dc, db


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_nll_lse(e, c, bias, targets, cfg: LinearCEConfig):
    """Per-row ``(nll, lse)`` (f32) of the linear cross-entropy, streamed over vocabulary tiles.

    Args:
      e: [N, D] embeddings; c: [V, D] classifier; bias: [V] or None; targets: [N] int32.
      cfg: static options (:class:`LinearCEConfig`).
    """
    return _forward(e, c, bias, targets, cfg)


def _fwd(e, c, bias, targets, cfg):
    nll, lse = _forward(e, c, bias, targets, cfg)
    return (nll, lse), (e, c, bias, targets, lse)


chunked_nll_lse.defvjp(_fwd, chunked_backward)
