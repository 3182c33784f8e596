"""Pallas kernels for the linear cross-entropy (Cut Cross-Entropy, Wijmans et al., arXiv 2411.09009).

Layout ("GPU-correct"): the grid covers only independent axes, every reduction is a ``lax.fori_loop``
inside the kernel, and no output block is accumulated across grid steps, so the same kernels are correct
in interpret mode (CPU tests) and compiled through Pallas-Triton on CUDA GPUs.

* Forward: grid ``(cdiv(N, bn), S)``. Program (i, s) owns rows ``[r0, r0 + bn)`` and the s-th share of the
  vocabulary tiles; it streams tiles of ``bv`` columns, each a ``[bn, bv]`` f32 logit tile accumulated over
  ``D / bd`` slices of E and C, and keeps the online (max, sum) state, the target logit and (with label
  smoothing) the logit sum. The S partial states are merged by XLA. ``fwd_loop='flat'`` runs the same
  work as one loop over (tile, D slice) pairs with the epilogue under ``lax.cond`` (see
  :func:`_fwd_kernel`); ``'nested'`` (default) nests the D loop inside the tile loop. Neither E
  nor C is padded: the last row tile is clamped to ``[N - bn, N)`` and the last vocabulary tile to
  ``[V - bv, V)``; re-read columns are masked and re-computed rows are written twice with identical
  values. A static ``stats`` flag (used by :func:`lossjax.kernels.linear_ce_head`) also carries the
  entropy accumulator ``sum_v exp(z_v - max) z_v`` and a running argmax; the default compiles without them.
* Backward ("B1"): for each vocabulary super-chunk of ``bwd_chunk`` columns a Pallas kernel writes the
  gradient tile ``G = dloss/dlogits`` (fused recompute, softmax, one-hot, softcap derivative and optional
  filter) in the operand dtype, and XLA runs ``dE += G C_chunk`` and ``dC_chunk = G^T E``. Extra memory is
  ``N * bwd_chunk`` elements of G plus an f32 dE accumulator; the logits are never materialised.
  ``bwd_impl='xla'`` instead recomputes each ``[N, bwd_chunk]`` logit tile with an XLA GEMM (the
  chunked path's backward): f32 tiles, more temporary memory, cuBLAS speed for the recompute.

All loads are power-of-two ``pl.ds`` slices (a Pallas-Triton rule); the wrapper rejects other block sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from lossjax.kernels.linear_ce_chunked import chunked_backward, chunked_nll_lse, grad_accumulators
from lossjax.kernels.linear_ce_common import (
    LinearCEConfig,
    apply_softcap,
    matmul_precision,
    online_lse_merge,
    online_lse_update,
    tile_grad_logits,
    varying_axes,
)
from lossjax.kernels.linear_ce_config import PallasConfig, device_core_count

__all__ = ["pallas_nll_lse", "pallas_rows", "pallas_lse_partials", "pallas_grad_logits", "is_power_of_two",
           "compiler_params", "fit_pallas", "pallas_head_stats"]


def is_power_of_two(x: int) -> bool:
    """True for 1, 2, 4, ..."""
    return isinstance(x, int) and x > 0 and (x & (x - 1)) == 0


def compiler_params(cfg: LinearCEConfig):
    """Explicit Pallas-Triton compiler parameters (selects the Triton lowering on every jax version)."""
    from jax.experimental.pallas import triton as plt

    return plt.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _out_struct(shape, dtype, *inputs):
    """Output type of a ``pallas_call``; inside ``shard_map`` it varies over the inputs' manual axes."""
    axes = varying_axes(*inputs)
    if not axes:
        return jax.ShapeDtypeStruct(shape, dtype)
    mat = type(jax.typeof(inputs[0]).mat)(varying=frozenset(axes))
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=mat)


def _full_spec(shape):
    nd = len(shape)
    return pl.BlockSpec(tuple(shape), lambda *_: (0,) * nd)


def _slice_dot(e_ref, c_ref, r0, v0, k, *, bn, bv, bd, prec):
    """f32 ``E[r0:r0+bn, k*bd:(k+1)*bd] @ C[v0:v0+bv, k*bd:(k+1)*bd]^T`` (one D slice of a logit tile)."""
    ek = e_ref[pl.ds(r0, bn), pl.ds(k * bd, bd)]
    ck = c_ref[pl.ds(v0, bv), pl.ds(k * bd, bd)]
    return lax.dot_general(ek, ck, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32, precision=prec)


def _logit_tile(e_ref, c_ref, b_ref, r0, v0, *, bn, bv, bd, dim, softcap, prec):
    """f32 capped logits of rows [r0, r0+bn) x columns [v0, v0+bv)."""

    def dbody(k, acc):
        return acc + _slice_dot(e_ref, c_ref, r0, v0, k, bn=bn, bv=bv, bd=bd, prec=prec)

    acc = lax.fori_loop(0, dim // bd, dbody, jnp.zeros((bn, bv), jnp.float32))
    return _bias_softcap(acc, b_ref, v0, bv, softcap)


def _bias_softcap(acc, b_ref, v0, bv, softcap):
    """Add the bias of columns [v0, v0+bv) (if any) to an f32 tile, then apply the softcap."""
    if b_ref is not None:
        acc = acc + b_ref[pl.ds(v0, bv)].astype(jnp.float32)[None, :]
    return apply_softcap(acc, softcap)


def _online_tile(z, state, v0, j, *, iota, tcol, n_tiles, bv, smooth, stats=False):
    """Fold the capped logit tile ``z`` of vocabulary tile ``j`` (loaded from column ``v0``) into the
    forward state ``(max, sum, target logit, logit sum)``; re-read and out-of-range columns are masked.

    With ``stats`` the state also carries the entropy accumulator ``u = sum_v exp(z_v - max) z_v``
    (rescaled with the sum) and the running (best logit, argmax), the first index on ties."""
    m_old, s, zt, sz = state[:4]
    cols = v0 + iota
    keep = jnp.logical_and(cols >= j * bv, j < n_tiles)
    zm = jnp.where(keep, z, -jnp.inf)
    m, s = online_lse_update(m_old, s, zm)
    zt = zt + jnp.sum(jnp.where(jnp.logical_and(cols == tcol, keep), z, 0.0), axis=1)
    if smooth:
        sz = sz + jnp.sum(jnp.where(keep, z, 0.0), axis=1)
    if not stats:
        return m, s, zt, sz
    u, best, arg = state[4:]
    shift = jnp.where(m == -jnp.inf, 0.0, m)
    u = u * jnp.exp(m_old - shift) + jnp.sum(jnp.exp(zm - shift[:, None]) * jnp.where(keep, z, 0.0), axis=1)
    tmax = jnp.max(zm, axis=1)
    hit = jnp.min(jnp.where(zm == tmax[:, None], cols, jnp.iinfo(jnp.int32).max), axis=1)
    better = tmax > best
    return m, s, zt, sz, u, jnp.where(better, tmax, best), jnp.where(better, hit, arg)


def _fwd_kernel(*refs, n, vocab, dim, bn, bv, bd, per, n_tiles, softcap, smooth, has_bias, prec, flat,
                stats=False, inv_temp=1.0):
    """Program (i, s): rows [r0, r0+bn) against the s-th share of ``per`` vocabulary tiles.

    ``flat=False`` (``fwd_loop='nested'``): a loop over tiles, each a loop over the D slices.
    ``flat=True`` (``fwd_loop='flat'``): one loop over (tile, D slice) pairs, so the Triton software
    pipeliner (``num_stages``) keeps prefetching E and C slices across tile boundaries instead of
    draining at the end of every tile; the online (max, sum) epilogue runs under ``lax.cond`` on the
    last slice of each tile (the layout of Triton's persistent matmul). Same values either way.
    ``stats``: also the entropy accumulator and running argmax (:func:`_online_tile`); ``inv_temp``
    scales the capped logits (``z / T``).
    """
    n_out = 7 if stats else 4
    out_refs = refs[-n_out:]
    if has_bias:
        e_ref, c_ref, b_ref, t_ref = refs[:-n_out]
    else:
        e_ref, c_ref, t_ref = refs[:-n_out]
        b_ref = None
    i = pl.program_id(0)
    sp = pl.program_id(1)
    r0 = jnp.minimum(i * bn, n - bn)
    tcol = t_ref[pl.ds(r0, bn)][:, None]
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    f32 = jnp.float32
    fold = functools.partial(_online_tile, iota=iota, tcol=tcol, n_tiles=n_tiles, bv=bv, smooth=smooth,
                             stats=stats)
    state0 = (jnp.full((bn,), -jnp.inf, f32), jnp.zeros((bn,), f32), jnp.zeros((bn,), f32), jnp.zeros((bn,), f32))
    if stats:
        state0 = state0 + (jnp.zeros((bn,), f32), jnp.full((bn,), -jnp.inf, f32), jnp.zeros((bn,), jnp.int32))

    def capped(z):
        return z if inv_temp == 1.0 else z * inv_temp

    def tile_origin(jj):
        j = sp * per + jj
        return j, jnp.minimum(j * bv, vocab - bv)

    if not flat:
        def body(jj, state):
            j, v0 = tile_origin(jj)
            z = _logit_tile(e_ref, c_ref, b_ref, r0, v0, bn=bn, bv=bv, bd=bd, dim=dim, softcap=softcap, prec=prec)
            return fold(capped(z), state, v0, j)

        state = lax.fori_loop(0, per, body, state0)
    else:
        kd = dim // bd

        def body(it, carry):
            acc, state = carry
            jj = it // kd
            k = it - jj * kd
            j, v0 = tile_origin(jj)
            acc = acc + _slice_dot(e_ref, c_ref, r0, v0, k, bn=bn, bv=bv, bd=bd, prec=prec)

            def epilogue(carry):
                acc, state = carry
                z = _bias_softcap(acc, b_ref, v0, bv, softcap)
                return jnp.zeros_like(acc), fold(capped(z), state, v0, j)

            return lax.cond(k == kd - 1, epilogue, lambda carry: carry, (acc, state))

        _, state = lax.fori_loop(0, per * kd, body, (jnp.zeros((bn, bv), f32), state0))
    for ref, val in zip(out_refs, state):
        ref[sp, pl.ds(r0, bn)] = val


def pallas_lse_partials(e, c, bias, targets, cfg: LinearCEConfig, *, stats: bool = False, inv_temp: float = 1.0):
    """Run the forward kernel; returns per-split partials ``(M, S, z_t, sum z)``, each [splits, N] f32.

    ``stats=True`` appends ``(U, best, argmax)`` (f32, f32, int32): the entropy accumulator
    ``sum_v exp(z_v - M) z_v`` and the best logit and its first index within the split. ``inv_temp``
    multiplies the capped logits. Both are static; the defaults compile the plain cross-entropy kernel.
    """
    n, dim = e.shape
    vocab = c.shape[0]
    bn, bv, bd = cfg.block_n, cfg.block_v, cfg.block_d
    n_tiles = -(-vocab // bv)
    splits = max(1, min(cfg.v_splits, n_tiles))
    per = -(-n_tiles // splits)
    kernel = functools.partial(
        _fwd_kernel, flat=cfg.fwd_loop == "flat", n=n, vocab=vocab, dim=dim, bn=bn, bv=bv, bd=bd, per=per,
        n_tiles=n_tiles,
        softcap=cfg.softcap, smooth=bool(cfg.label_smoothing), has_bias=bias is not None,
        prec=matmul_precision(e.dtype), stats=stats, inv_temp=float(inv_temp),
    )
    args = [e, c] + ([bias] if bias is not None else []) + [targets]
    out = _out_struct((splits, n), jnp.float32, *args)
    outs = (out,) * 4
    if stats:
        outs = outs + (out, out, _out_struct((splits, n), jnp.int32, *args))
    return pl.pallas_call(
        kernel,
        out_shape=outs,
        grid=(-(-n // bn), splits),
        in_specs=[_full_spec(a.shape) for a in args],
        out_specs=tuple(_full_spec((splits, n)) for _ in outs),
        interpret=cfg.interpret,
        compiler_params=None if cfg.interpret else compiler_params(cfg),
        name="lossjax_cce_head_fwd" if stats else "lossjax_cce_fwd",
    )(*args)


def _grad_kernel(*refs, n, vocab, dim, bn, bv, bd, softcap, smooth, has_bias, filter_eps, prec):
    if has_bias:
        e_ref, c_ref, b_ref, t_ref, lse_ref, g_ref, lam_ref, sc_ref, out_ref = refs
    else:
        e_ref, c_ref, t_ref, lse_ref, g_ref, lam_ref, sc_ref, out_ref = refs
        b_ref = None
    i = pl.program_id(0)
    j = pl.program_id(1)
    r0 = jnp.minimum(i * bn, n - bn)
    c0 = sc_ref[0]
    lo = sc_ref[1]
    v0 = c0 + j * bv
    cols = v0 + lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    keep = cols >= lo
    z = _logit_tile(e_ref, c_ref, b_ref, r0, v0, bn=bn, bv=bv, bd=bd, dim=dim, softcap=softcap, prec=prec)
    tcol = t_ref[pl.ds(r0, bn)][:, None]
    grad, d = tile_grad_logits(
        z, keep, cols == tcol, lse_ref[pl.ds(r0, bn)], g_ref[pl.ds(r0, bn)], lam_ref[pl.ds(r0, bn)],
        vocab_size=vocab, softcap=softcap, label_smoothing=smooth,
    )
    if filter_eps is not None:
        grad = jnp.where(jnp.max(jnp.abs(d)) >= filter_eps, grad, 0.0)
    out_ref[pl.ds(r0, bn), pl.ds(j * bv, bv)] = grad.astype(out_ref.dtype)


def pallas_grad_logits(e, c, bias, targets, lse, g, lam, chunk_start, chunk_lo, chunk, cfg: LinearCEConfig):
    """Gradient w.r.t. the logits of columns ``[chunk_start, chunk_start + chunk)`` as [N, chunk].

    Columns below ``chunk_lo`` (re-read by the clamped last chunk) are zero.
    """
    n, dim = e.shape
    vocab = c.shape[0]
    bn, bv, bd = cfg.block_n, cfg.bwd_block_v, cfg.block_d
    sc = jnp.stack([chunk_start, chunk_lo]).astype(jnp.int32)
    kernel = functools.partial(
        _grad_kernel, n=n, vocab=vocab, dim=dim, bn=bn, bv=bv, bd=bd, softcap=cfg.softcap,
        smooth=cfg.label_smoothing, has_bias=bias is not None, filter_eps=cfg.filter_eps,
        prec=matmul_precision(e.dtype),
    )
    args = [e, c] + ([bias] if bias is not None else []) + [targets, lse, g, lam, sc]
    return pl.pallas_call(
        kernel,
        out_shape=_out_struct((n, chunk), e.dtype, *args),
        grid=(-(-n // bn), chunk // bv),
        in_specs=[_full_spec(a.shape) for a in args],
        out_specs=_full_spec((n, chunk)),
        interpret=cfg.interpret,
        compiler_params=None if cfg.interpret else compiler_params(cfg),
        name="lossjax_cce_grad_logits",
    )(*args)


def _forward(e, c, bias, targets, cfg):
    vocab = c.shape[0]
    m, s, zt, sz = pallas_lse_partials(e, c, bias, targets, cfg)
    m, s = online_lse_merge(m, s, axis=0)
    lse = m + jnp.log(s)
    zt = jnp.sum(zt, axis=0)
    nll = lse - (1.0 - cfg.label_smoothing) * zt
    if cfg.label_smoothing:
        nll = nll - (cfg.label_smoothing / vocab) * jnp.sum(sz, axis=0)
    nll = jnp.where(targets != cfg.ignore_index, nll, 0.0)
    return nll, lse


def _backward(cfg: LinearCEConfig, res, cts):
    if cfg.bwd_impl == "xla":
        # recompute each [N, bwd_chunk] logit tile with XLA GEMMs (the chunked path's backward)
        return chunked_backward(dataclasses.replace(cfg, block_v=cfg.bwd_chunk), res, cts)
    e, c, bias, targets, lse = res
    g_nll, g_lse = cts
    n, dim = e.shape
    vocab = c.shape[0]
    chunk = cfg.bwd_chunk
    n_chunks = -(-vocab // chunk)
    g = jnp.where(targets != cfg.ignore_index, g_nll.astype(jnp.float32), 0.0)
    lam = g_lse.astype(jnp.float32)
    f32 = jnp.float32
    prec = matmul_precision(e.dtype)

    def body(carry, k):
        de, dc, db = carry
        lo = k * chunk
        c0 = jnp.minimum(lo, vocab - chunk)
        grad = pallas_grad_logits(e, c, bias, targets, lse, g, lam, c0, lo, chunk, cfg)
        c_k = lax.dynamic_slice_in_dim(c, c0, chunk, axis=0)
        de = de + lax.dot_general(grad, c_k, (((1,), (0,)), ((), ())), preferred_element_type=f32, precision=prec)
        dc_k = lax.dot_general(grad, e, (((0,), (0,)), ((), ())), preferred_element_type=f32, precision=prec)
        keep = (c0 + jnp.arange(chunk)) >= lo
        old = lax.dynamic_slice_in_dim(dc, c0, chunk, axis=0)
        dc = lax.dynamic_update_slice_in_dim(dc, jnp.where(keep[:, None], dc_k.astype(dc.dtype), old), c0, 0)
        if db is not None:
            db_k = jnp.sum(grad.astype(f32), axis=0)
            old_b = lax.dynamic_slice_in_dim(db, c0, chunk)
            db = lax.dynamic_update_slice_in_dim(db, jnp.where(keep, db_k.astype(db.dtype), old_b), c0, 0)
        return (de, dc, db), None

    (de, dc, db), _ = lax.scan(body, grad_accumulators(e, c, bias), jnp.arange(n_chunks, dtype=jnp.int32))
    return de.astype(e.dtype), dc, db, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def pallas_nll_lse(e, c, bias, targets, cfg: LinearCEConfig):
    """Per-row ``(nll, lse)`` (f32) computed by the Pallas forward kernel; backward by the B1 scheme.

    Requires ``N >= block_n``, ``V >= block_v``, ``V >= bwd_chunk`` (a multiple of ``bwd_block_v``) and
    ``D % block_d == 0``; :func:`lossjax.kernels.linear_cross_entropy` arranges this.
    """
    return _forward(e, c, bias, targets, cfg)


def _fwd(e, c, bias, targets, cfg):
    nll, lse = _forward(e, c, bias, targets, cfg)
    return (nll, lse), (e, c, bias, targets, lse)


pallas_nll_lse.defvjp(_fwd, _backward)


def _prev_pow2(x: int) -> int:
    return 1 << (max(int(x), 1).bit_length() - 1)


def _largest_pow2_divisor(d: int, cap: int) -> int:
    b = _prev_pow2(cap)
    while b > 1 and d % b:
        b //= 2
    return b


def fit_pallas(e, c, targets, cfg: LinearCEConfig, pconf: PallasConfig, gpu: bool):
    """Block sizes fitted to the shapes: ``(e, c, targets, cfg, pad_n)`` with E, C (and the targets)
    padded where needed, or None when V is below one Triton tile (the caller then runs the chunked path).

    Pads only tiny dimensions (N below one tile, D not a multiple of 16 on GPU), never C along V. The
    default ``v_splits`` gives about two programs per core of the target device (:func:`device_core_count`).
    """
    interpret = (not gpu) if pconf.interpret is None else pconf.interpret
    n, dim = e.shape
    vocab = c.shape[0]
    if not interpret and vocab < 16:  # below one Triton tile: the chunked path is exact and cheap here
        return None
    min_tile = 1 if interpret else 16  # Triton dots need >= 16 along every axis
    pad_n = max(0, min_tile - n)
    if dim % min_tile:
        pad_d = min_tile - dim % min_tile  # rare: copies E and C once
        e = jnp.pad(e, ((0, 0), (0, pad_d)))
        c = jnp.pad(c, ((0, 0), (0, pad_d)))
        dim += pad_d
    t = targets
    if pad_n:
        e = jnp.pad(e, ((0, pad_n), (0, 0)))
        t = jnp.pad(t, (0, pad_n), constant_values=cfg.ignore_index)
    n_eff = n + pad_n
    bn = min(pconf.block_n or 128, _prev_pow2(n_eff))
    bv = min(pconf.block_v or 256, _prev_pow2(vocab))
    bd = _largest_pow2_divisor(dim, pconf.block_d or (64 if not interpret else 256))
    bwd_bv = min(128 if not interpret else 256, bv if pconf.block_v else 1 << 30, _prev_pow2(vocab))
    chunk_req = pconf.bwd_chunk or (8192 if not interpret else 1024)
    chunk = max(bwd_bv, min(_prev_pow2(chunk_req), (vocab // bwd_bv) * bwd_bv))
    chunk = (chunk // bwd_bv) * bwd_bv
    v_splits = pconf.v_splits
    if v_splits is None:
        n_tiles = -(-vocab // bv)
        cores = pconf.num_cores or device_core_count(default=1)
        v_splits = 1 if interpret else max(1, min(n_tiles, math.ceil(2 * cores / -(-n_eff // bn))))
    cfg = dataclasses.replace(
        cfg, block_n=bn, block_v=bv, block_d=bd, v_splits=int(v_splits), interpret=bool(interpret),
        num_warps=pconf.num_warps or (8 if not interpret else 4), num_stages=pconf.num_stages or 3,
        bwd_block_v=bwd_bv, bwd_chunk=chunk, fwd_loop=pconf.fwd_loop, bwd_impl=pconf.bwd_impl,
    )
    return e, c, t, cfg, pad_n


def pallas_rows(e, c, bias, targets, cfg: LinearCEConfig, pconf: PallasConfig, gpu: bool):
    """Per-row ``(nll, lse)`` of [N, D] rows via the Pallas kernels, with block sizes fitted to the shapes
    (:func:`fit_pallas`)."""
    fit = fit_pallas(e, c, targets, cfg, pconf, gpu)
    if fit is None:
        return chunked_nll_lse(e, c, bias, targets, dataclasses.replace(cfg, block_v=c.shape[0]))
    n = e.shape[0]
    e, c, t, cfg, pad_n = fit
    nll, lse = pallas_nll_lse(e, c, bias, t, cfg)
    if pad_n:
        nll, lse = nll[:n], lse[:n]
    return nll, lse


def pallas_head_stats(e, c, bias, targets, cfg: LinearCEConfig, inv_temp: float = 1.0):
    """Per-row ``(nll, lse, entropy, argmax)`` (f32, f32, f32, int32) of ``z = softcap(E C^T + b) * inv_temp``
    from the forward kernel with ``stats=True`` (a fitted ``cfg``, :func:`fit_pallas`; no label
    smoothing). The split partials merge as ``S = sum_k S_k e^{M_k - M}``, ``U = sum_k U_k e^{M_k - M}``,
    ``lse = M + log S``, ``H = lse - U / S``; the argmax is the smallest index among the splits holding
    the best logit. Forward only: the caller supplies the gradient
    (:func:`lossjax.kernels.linear_head.linear_ce_head` recomputes tiles with XLA)."""
    vocab = c.shape[0]
    m, s, zt, _, u, best, arg = pallas_lse_partials(e, c, bias, targets, cfg, stats=True, inv_temp=inv_temp)
    m_all = jnp.max(m, axis=0)
    w = jnp.exp(m - jnp.where(m_all == -jnp.inf, 0.0, m_all)[None])
    s_all, u_all = jnp.sum(s * w, axis=0), jnp.sum(u * w, axis=0)
    lse = m_all + jnp.log(s_all)
    ent = lse - u_all / s_all
    nll = jnp.where(targets != cfg.ignore_index, lse - jnp.sum(zt, axis=0), 0.0)
    top = jnp.max(best, axis=0)
    arg = jnp.min(jnp.where(best == top[None], arg, vocab), axis=0)
    return nll, lse, ent, arg.astype(jnp.int32)
