"""The outputs of a linear cross-entropy head an LM trainer logs, without the N x V logits.

:func:`linear_ce_head` returns, from hidden states ``E`` [..., D] and a classifier ``C`` [V, D], the
(weighted) cross-entropy, the z-loss term on its own, and per token the target log-probability, the
log-sum-exp, the entropy of the softmax, the argmax and whether it hits the target. With temperature ``T``
and softcap ``s`` the logits are ``z_iv = s tanh((<E_i, C_v> + b_v) / s) / T``.

The chunked path streams vocabulary tiles once in the forward with an online state extended by the
entropy accumulator and a running argmax: per row, with the running max ``m``,

    S = sum_v exp(z_v - m),  U = sum_v exp(z_v - m) z_v,  lse = m + log S,  H = lse - U / S,

both ``S`` and ``U`` being rescaled by ``exp(m_old - m_new)`` when the max grows (Milakov & Gimelshein,
arXiv 1805.02867). The backward recomputes each tile (Wijmans et al., "Cut Your Losses in
Large-Vocabulary Language Models", ICLR 2025, arXiv 2411.09009, Sec. 4) with, for cotangents ``g`` (of
nll), ``l`` (of lse) and ``h`` (of H) and ``p = softmax(z)``,

    dL/dz_v = (g + l) p_v - g [v = t] - h p_v (z_v - (lse - H)),

since dH/dz_v = -p_v (z_v - E_p[z]) and E_p[z] = lse - H; then ``dE += G C_tile``, ``dC_tile = G^T E``.
Temporary memory is O(N * block_v) whatever V is.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from lossjax.kernels.linear_ce import _shift_targets, _validate
from lossjax.kernels.linear_ce_chunked import accumulate_tile_grads, grad_accumulators, tile_logits, vocab_tiles
from lossjax.kernels.linear_ce_common import LinearCEConfig, softcap_grad_factor, vary_like
from lossjax.kernels.linear_ce_config import ChunkedConfig, PallasConfig
from lossjax.kernels.linear_ce_pallas import fit_pallas, pallas_head_stats
from lossjax.kernels.linear_ce_reference import naive_logits
from lossjax.kernels.linear_ce_sharded import data_parallel_rows, input_mesh, is_explicit, vocab_parallel_rows
from lossjax.kernels.linear_ce_tpu import TpuConfig, _Tiles, tpu_head_stats, tpu_tiles
from lossjax.kernels.linear_head_sharded import fold_init, fold_tile, head_vocab_parallel_stats

__all__ = ["LinearHeadOutput", "linear_ce_head", "head_stats_chunked", "head_stats_naive", "head_stats_kernel"]


class LinearHeadOutput(NamedTuple):
    """Outputs of :func:`linear_ce_head` (per-token arrays have the targets' shape, minus ``shift``).

    Attributes:
      loss: reduced weighted cross-entropy plus the z-loss term (what to differentiate).
      z_loss: the z-loss term alone, reduced like ``loss`` (0 when ``z_loss=0``).
      nll: per-token ``-log softmax(z)[t]`` (unweighted; 0 at ignored tokens, NaN at bad targets).
      logprob: per-token target log-probability ``-nll`` (0 at ignored tokens).
      lse: per-token f32 log-sum-exp of the (tempered) logits.
      entropy: per-token entropy of ``softmax(z)`` (every token, ignored ones included).
      argmax: per-token int32 argmax of the logits (first index on ties).
      correct: per-token bool ``argmax == target`` (False at ignored tokens).
      accuracy: mean of ``correct`` over the non-ignored tokens (0 if none).
    """

    loss: jax.Array
    z_loss: jax.Array
    nll: jax.Array
    logprob: jax.Array
    lse: jax.Array
    entropy: jax.Array
    argmax: jax.Array
    correct: jax.Array
    accuracy: jax.Array


@dataclasses.dataclass(frozen=True)
class _HeadCfg:
    """Static options of the head kernels."""

    ce: LinearCEConfig
    temperature: float = 1.0


def head_stats_naive(e, c, bias, targets, hc: _HeadCfg):
    """Per-row ``(nll, lse, entropy, argmax)`` from materialised f32 logits (the reference; autodiff)."""
    z = naive_logits(e, c, bias, hc.ce.softcap) / hc.temperature
    vocab = c.shape[0]
    lse = jax.nn.logsumexp(z, axis=-1)
    logp = z - lse[:, None]
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    in_range = (targets >= 0) & (targets < vocab)
    zt = jnp.take_along_axis(z, jnp.where(in_range, targets, 0)[:, None], axis=-1)[:, 0]
    nll = jnp.where(targets != hc.ce.ignore_index, lse - jnp.where(in_range, zt, 0.0), 0.0)
    return nll, lse, ent, jnp.argmax(z, axis=-1).astype(jnp.int32)


def _tile(e, c, bias, v0, bv, hc: _HeadCfg):
    zc, c_t = tile_logits(e, c, bias, v0, bv, hc.ce.softcap)
    return zc, zc * (1.0 / hc.temperature), c_t


def _forward(e, c, bias, targets, hc: _HeadCfg):
    n, vocab = e.shape[0], c.shape[0]
    bv, n_tiles = vocab_tiles(vocab, hc.ce.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = targets[:, None]

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vocab - bv)
        cols = v0 + iota
        _, z, _ = _tile(e, c, bias, v0, bv, hc)
        return fold_tile(carry, z, cols >= j * bv, cols, tcol)

    m, s, u, zt, _, arg = lax.fori_loop(0, n_tiles, body, vary_like(fold_init(n), e, c, bias, targets))
    lse = m + jnp.log(s)
    ent = lse - u / s
    nll = jnp.where(targets != hc.ce.ignore_index, lse - zt, 0.0)
    return nll, lse, ent, arg


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def head_stats_chunked(e, c, bias, targets, hc: _HeadCfg):
    """Per-row ``(nll, lse, entropy, argmax)`` (f32, f32, f32, int32) streamed over vocabulary tiles.

    Args:
      e: [N, D]; c: [V, D]; bias: [V] or None; targets: [N] int32; hc: static options.
    """
    return _forward(e, c, bias, targets, hc)


def _fwd(e, c, bias, targets, hc):
    nll, lse, ent, arg = _forward(e, c, bias, targets, hc)
    return (nll, lse, ent, arg), (e, c, bias, targets, lse, ent)


def _bwd(hc: _HeadCfg, res, cts):
    e, c, bias, targets, lse, ent = res
    g_nll, g_lse, g_ent, _ = cts
    vocab = c.shape[0]
    bv, n_tiles = vocab_tiles(vocab, hc.ce.block_v)
    f32 = jnp.float32
    g = jnp.where(targets != hc.ce.ignore_index, g_nll.astype(f32), 0.0)[:, None]
    lam = g_lse.astype(f32)[:, None]
    h = g_ent.astype(f32)[:, None]
    ez = (lse - ent)[:, None]  # E_p[z]
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = targets[:, None]

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vocab - bv)
        cols = v0 + iota
        keep = cols >= j * bv
        zc, z, c_t = _tile(e, c, bias, v0, bv, hc)
        p = jnp.where(keep, jnp.exp(z - lse[:, None]), 0.0)
        oh = jnp.logical_and(cols == tcol, keep).astype(f32)
        grad = (g + lam) * p - g * oh - h * p * (jnp.where(keep, z, 0.0) - ez)
        grad = grad * (1.0 / hc.temperature)
        if hc.ce.softcap is not None:
            grad = grad * softcap_grad_factor(zc, hc.ce.softcap)
        return accumulate_tile_grads(carry, grad, e, c_t, v0, keep[0])

    de, dc, db = lax.fori_loop(0, n_tiles, body, grad_accumulators(e, c, bias))
    return de.astype(e.dtype), dc, db, None


head_stats_chunked.defvjp(_fwd, _bwd)


@dataclasses.dataclass(frozen=True)
class _KernelCfg:
    """Static plan of the Pallas forward: 'pallas' (fitted :class:`LinearCEConfig`) or 'tpu' (+ tiles)."""

    kind: str
    cfg: LinearCEConfig
    tiles: _Tiles | None = None


def _kernel_forward(e, c, bias, targets, hc: _HeadCfg, kc: _KernelCfg):
    inv = 1.0 / hc.temperature
    if kc.kind == "tpu":
        return tpu_head_stats(e, c, bias, targets, kc.cfg, kc.tiles, inv_temp=inv)
    return pallas_head_stats(e, c, bias, targets, kc.cfg, inv_temp=inv)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def head_stats_kernel(e, c, bias, targets, hc: _HeadCfg, kc: _KernelCfg):
    """Per-row ``(nll, lse, entropy, argmax)`` from the Pallas forward kernels with the entropy accumulator
    and running argmax (:func:`lossjax.kernels.linear_ce_pallas.pallas_head_stats`,
    :func:`lossjax.kernels.linear_ce_tpu.tpu_head_stats`); the backward is the chunked path's tile recompute
    (``hc.ce.block_v`` columns per XLA tile), which differentiates ``nll``, ``lse`` and ``entropy``."""
    return _kernel_forward(e, c, bias, targets, hc, kc)


def _kfwd(e, c, bias, targets, hc, kc):
    nll, lse, ent, arg = _kernel_forward(e, c, bias, targets, hc, kc)
    return (nll, lse, ent, arg), (e, c, bias, targets, lse, ent)


def _kbwd(hc, kc, res, cts):
    return _bwd(hc, res, cts)


head_stats_kernel.defvjp(_kfwd, _kbwd)


def _kernel_rows(e, c, bias, targets, hc: _HeadCfg, impl: str, config):
    """Per-row statistics on impl 'pallas'/'tpu': tiles fitted to the shapes (padding as in
    :func:`lossjax.kernels.linear_ce_pallas.pallas_rows`), the chunked path below one Triton tile."""
    n = e.shape[0]
    if impl == "tpu":
        on_tpu = jax.default_backend() == "tpu"
        tiles = tpu_tiles(n, c.shape[0], e.shape[1], jnp.dtype(e.dtype).itemsize, config or TpuConfig(), on_tpu)
        return head_stats_kernel(e, c, bias, targets, hc, _KernelCfg("tpu", hc.ce, tiles))
    fit = fit_pallas(e, c, targets, hc.ce, config or PallasConfig(), jax.default_backend() == "gpu")
    if fit is None:
        return head_stats_chunked(e, c, bias, targets, hc)
    e, c, t, cfg, pad_n = fit
    outs = head_stats_kernel(e, c, bias, t, hc, _KernelCfg("pallas", cfg))
    return tuple(x[:n] for x in outs) if pad_n else outs


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _float_array(x, name: str, shape: tuple) -> jax.Array:
    a = jnp.asarray(x)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a.astype(jnp.float32)


def linear_ce_head(
    embeddings: ArrayLike,
    classifier: ArrayLike,
    targets: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    z_loss: float = 0.0,
    ignore_index: int = -100,
    shift: int = 0,
    reduction: Literal["mean", "sum", "none"] = "mean",
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | None = None,
    vocab_axis: str | None = None,
) -> LinearHeadOutput:
    r"""Cross-entropy of ``embeddings @ classifier.T`` with the per-token statistics, without the logits.

    With ``z_iv = softcap(<E_i, C_v> + b_v) / T``, ``lse_i = log sum_v exp z_iv`` and, per non-ignored
    token, the weight ``w_i = weights_i * class_weights[t_i]``::

        nll_i  = lse_i - z_{i,t_i}                   logprob_i = -nll_i
        H_i    = lse_i - sum_v softmax(z_i)_v z_iv   (entropy)
        loss   = sum_i w_i nll_i / sum_i w_i  +  z_loss * mean_i lse_i^2      ('mean')

    ``'sum'`` sums both terms, ``'none'`` returns ``w_i nll_i + z_loss lse_i^2`` per token. The weighted
    mean is PyTorch's ``cross_entropy(weight=...)`` rule (divide by the summed weights; 0 when they sum to
    0); the z-loss (PaLM, Chowdhery et al., arXiv 2204.02311, Sec. 5) is averaged over the non-ignored
    tokens, unweighted, and is also returned alone. ``shift=k`` scores position p against target p + k
    (``weights`` index the scoring position). Out-of-range targets follow
    :func:`lossjax.kernels.linear_cross_entropy` (an error outside ``jit``, NaN under it).

    The 'chunked' path (default) streams vocabulary tiles once, carrying the online log-sum-exp, the
    entropy accumulator and a running argmax; its ``custom_vjp`` recomputes each tile and differentiates
    ``nll``, ``lse`` and ``entropy`` (Wijmans et al., ICLR 2025, arXiv 2411.09009, Sec. 4; equations in
    this module's docstring). 'naive' materialises the f32 logits (the reference). 'pallas'/'tpu' run
    the forward kernels of :func:`linear_cross_entropy` (Pallas-Triton layout, Mosaic-TPU) with a static
    flag that adds the entropy accumulator ``U`` and the running argmax to their online state, and
    temperature and softcap inside the kernel; their backward is the chunked path's tile recompute (XLA
    GEMMs; it differentiates entropy too). On Explicit meshes, and for 'pallas'/'tpu' on any mesh, each
    device computes its own rows (``shard_map``), as in :func:`linear_cross_entropy`; with ``vocab_axis``
    the classifier is split over its vocabulary along that mesh axis and never gathered: each device
    streams its shard and the per-row log-sum-exp, target logit, entropy expectation and argmax are
    merged with ``pmax``/``psum``/``pmin``
    (:mod:`lossjax.kernels.linear_head_sharded`; Shoeybi et al., arXiv 1909.08053, Sec. 3).

    Args:
      embeddings: [..., D] float32/bfloat16/float16 hidden states.
      classifier: [V, D] output embedding (same dtype).
      targets: integer array of shape ``embeddings.shape[:-1]``.
      bias: optional [V] bias.
      weights: optional per-token float weights, shape of ``targets``.
      class_weights: optional per-class float weights, shape [V].
      temperature: ``T > 0`` dividing the (capped) logits.
      softcap: logit soft-capping ``s > 0`` or None.
      z_loss: weight of the z-loss term (>= 0).
      ignore_index: target value of ignored tokens.
      shift: non-negative int (causal LM: 1).
      reduction: 'mean', 'sum' or 'none'.
      impl: 'auto' (= 'chunked'), 'naive', 'chunked', 'pallas' or 'tpu'.
      config: :class:`ChunkedConfig` ('chunked') or :class:`PallasConfig` ('pallas'), or None.
      vocab_axis: mesh axis to split the classifier's vocabulary over ('chunked'), or None.

    Returns:
      A :class:`LinearHeadOutput`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.kernels import ChunkedConfig, linear_ce_head
      >>> e = jax.random.normal(jax.random.key(0), (6, 8))
      >>> c = jax.random.normal(jax.random.key(1), (50, 8))
      >>> t = jnp.array([1, 2, 3, -100, 5, 6])
      >>> out = jax.jit(lambda e, c: linear_ce_head(e, c, t, config=ChunkedConfig(block_v=16)))(e, c)
      >>> logits = e @ c.T
      >>> bool(jnp.allclose(out.lse, jax.nn.logsumexp(logits, axis=-1), rtol=1e-5))
      True
      >>> bool(jnp.all(out.argmax == jnp.argmax(logits, axis=-1)))
      True
    """
    if impl == "auto":
        impl = "chunked"
    e, c, t, b, plan = _validate(
        embeddings, classifier, targets, bias, ignore_index=ignore_index, reduction=reduction, softcap=softcap,
        label_smoothing=0.0, z_loss=z_loss, return_lse=True, shift=shift, filter_eps=None, impl=impl,
        config=config, vocab_axis=None)
    if not (_is_real(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive float, got {temperature!r}")
    temperature = float(temperature)
    w = None if weights is None else _float_array(weights, "weights", t.shape)
    cw = None if class_weights is None else _float_array(class_weights, "class_weights", (c.shape[0],))
    vocab = c.shape[0]

    kernel = plan.impl in ("pallas", "tpu")
    if vocab_axis is not None and plan.impl != "chunked":
        raise ValueError(f"vocab_axis needs impl='chunked' (or 'auto'), got impl={plan.impl!r}")
    # 'pallas'/'tpu': the chunked backward recomputes tiles of the backend's default chunked width
    conf = ChunkedConfig() if kernel else (plan.config or ChunkedConfig())
    ce = dataclasses.replace(plan.cfg, block_v=conf.resolved_block_v(jax.default_backend()))
    hc = _HeadCfg(ce=ce, temperature=temperature)
    if kernel:
        stats = functools.partial(_kernel_rows, impl=plan.impl, config=plan.config)
    else:
        stats = head_stats_naive if plan.impl == "naive" else head_stats_chunked

    def rows(e, c, b, t):
        lead = e.shape[:-1]
        outs = stats(e.reshape(-1, e.shape[-1]), c, b, t.reshape(-1), hc)
        return tuple(x.reshape(lead) for x in outs)

    ts = _shift_targets(t, plan.shift, plan.cfg.ignore_index)
    mesh = input_mesh(c, e, t, b, min_size=1 if vocab_axis is not None else 2)
    if vocab_axis is not None:
        if mesh is None or vocab_axis not in mesh.axis_names:
            raise ValueError(f"vocab_axis={vocab_axis!r} is not an axis of the inputs' mesh; shard the inputs "
                             "on a mesh or call under jax.set_mesh(mesh)")
        local = functools.partial(head_vocab_parallel_stats, hc=hc, axis_name=vocab_axis, vocab=vocab)

        def vp_rows(e, c, b, t):
            lead = e.shape[:-1]
            outs = local(e.reshape(-1, e.shape[-1]), c, b, t.reshape(-1))
            return tuple(x.reshape(lead) for x in outs)

        nll, lse, ent, arg = vocab_parallel_rows(vp_rows, mesh, vocab_axis, e, c, b, ts,
                                                 unshard_last=bool(plan.shift))
    elif mesh is not None and (is_explicit(mesh) or kernel):
        # Pallas kernels are opaque to the partitioner: per-device rows on Auto meshes too
        nll, lse, ent, arg = data_parallel_rows(rows, mesh, e, c, b, ts, unshard_last=bool(plan.shift),
                                                check_vma=not kernel)
    else:
        nll, lse, ent, arg = rows(e, c, b, ts)
    if plan.shift:
        cut = t.shape[-1] - plan.shift
        ts, nll, lse = (x[..., :cut] for x in (ts, nll, lse))
        ent, arg = ent[..., :cut], arg[..., :cut]
        w = None if w is None else w[..., :cut]
    valid = ts != plan.cfg.ignore_index
    bad = valid & ((ts < 0) | (ts >= vocab))
    nll = nll * jnp.where(bad, jnp.nan, 1.0)
    omega = valid.astype(jnp.float32)
    if w is not None:
        omega = omega * w
    if cw is not None:
        omega = omega * jnp.where(valid & ~bad, cw[jnp.clip(ts, 0, vocab - 1)], 0.0)
    ce_rows = jnp.where(valid, omega * nll, 0.0)
    z_rows = jnp.where(valid, plan.z_loss * lse * lse, 0.0)
    count = jnp.sum(valid.astype(jnp.float32))
    if plan.reduction == "mean":
        den = jnp.sum(omega)
        ce_red = jnp.where(den != 0, jnp.sum(ce_rows) / jnp.where(den != 0, den, 1.0), 0.0)
        z_red = jnp.sum(z_rows) / jnp.maximum(count, 1.0)
    elif plan.reduction == "sum":
        ce_red, z_red = jnp.sum(ce_rows), jnp.sum(z_rows)
    else:
        ce_red, z_red = ce_rows, z_rows
    correct = valid & (arg == ts)
    accuracy = jnp.sum(correct.astype(jnp.float32)) / jnp.maximum(count, 1.0)
    return LinearHeadOutput(loss=(ce_red + z_red).astype(e.dtype), z_loss=z_red.astype(e.dtype), nll=nll,
                            logprob=jnp.where(valid, -nll, 0.0), lse=lse, entropy=ent, argmax=arg,
                            correct=correct, accuracy=accuracy)
