"""Fused-linear distillation: KD / KL / JSD between a student head and a teacher head, without the logits.

Student logits ``u = (E_s C_s^T + b_s) / T`` and teacher logits ``w = (E_t C_t^T + b_t) / T`` share the
vocabulary V (the hidden sizes may differ). With ``lq = log softmax(u)`` (student) and ``lp = log
softmax(w)`` (teacher), every divergence here is a per-row sum over the vocabulary of an elementwise term
``l(lq_v, lp_v)``:

    kd / forward_kl:  l = p (lp - lq)                        KL(teacher || student)
    reverse_kl:       l = q (lq - lp)                        KL(student || teacher)
    jsd (beta):       l = beta p (lp - lm) + (1 - beta) q (lq - lm),   m = beta p + (1 - beta) q

The chunked path makes two streaming passes in the forward (each forms one [N, block_v] tile of both
heads at a time): the online log-sum-exp of both heads, then ``L = sum_v l`` and ``A = sum_v a_v`` with
``a_v = dl/dlq_v``. As ``dlq_v / du_k = [v = k] - q_k``, the gradient w.r.t. the student logits is

    dL/du_k = a_k - q_k A,

which the backward (a ``custom_vjp``) recomputes tile by tile and turns into ``dE_s += G C_s``,
``dC_s = G^T E_s`` (the Cut Cross-Entropy backward, Wijmans et al., arXiv 2411.09009, Sec. 4). The teacher
is under ``stop_gradient``. Temporary memory is O(N * block_v), independent of V.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from lossjax.kernels.linear_ce_chunked import accumulate_tile_grads, grad_accumulators, tile_logits, vocab_tiles
from lossjax.kernels.linear_ce_common import LinearCEConfig, vary_like
from lossjax.kernels.linear_ce_config import ChunkedConfig
from lossjax.kernels.linear_ce_reference import naive_logits
from lossjax.kernels.linear_ce_sharded import (
    _lead_spec,
    _place,
    _spec_axes,
    _vary,
    input_mesh,
    is_explicit,
    shard_partials,
)

__all__ = ["DIVERGENCES", "linear_kd_loss", "kd_rows_chunked", "kd_rows_naive"]

DIVERGENCES = ("kd", "forward_kl", "reverse_kl", "jsd")
_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


@dataclasses.dataclass(frozen=True)
class _KDCfg:
    divergence: str
    temperature: float
    beta: float
    block_v: int


def _elementwise(lq: jax.Array, lp: jax.Array, kc: _KDCfg) -> jax.Array:
    """The per-class term ``l(lq, lp)`` of the divergence (student / teacher log-probabilities)."""
    if kc.divergence in ("kd", "forward_kl"):
        return jnp.exp(lp) * (lp - lq)
    if kc.divergence == "reverse_kl":
        return jnp.exp(lq) * (lq - lp)
    b = kc.beta
    lm = jnp.logaddexp(math.log(b) + lp, math.log1p(-b) + lq)
    return b * jnp.exp(lp) * (lp - lm) + (1.0 - b) * jnp.exp(lq) * (lq - lm)


def _scale(kc: _KDCfg) -> float:
    return kc.temperature**2 if kc.divergence == "kd" else 1.0


def kd_rows_naive(es, cs, bs, et, ct, bt, kc: _KDCfg) -> jax.Array:
    """Per-row divergence from materialised f32 logits (the reference; autodiff)."""
    lq = jax.nn.log_softmax(naive_logits(es, cs, bs, None) / kc.temperature, axis=-1)
    lp = jax.nn.log_softmax(naive_logits(et, ct, bt, None) / kc.temperature, axis=-1)
    return _scale(kc) * jnp.sum(_elementwise(lq, lp, kc), axis=-1)


def _tiles(es, cs, bs, et, ct, bt, v0, bv, kc):
    u, cs_t = tile_logits(es, cs, bs, v0, bv, None)
    w, _ = tile_logits(et, ct, bt, v0, bv, None)
    inv = 1.0 / kc.temperature
    return u * inv, w * inv, cs_t


def _passes(es, cs, bs, et, ct, bt, kc: _KDCfg):
    n, vocab = es.shape[0], cs.shape[0]
    bv, n_tiles = vocab_tiles(vocab, kc.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    f32 = jnp.float32
    like = (es, cs, bs, et, ct, bt)

    def lse_body(j, carry):
        ms, ss, mt, st = carry
        v0 = jnp.minimum(j * bv, vocab - bv)
        keep = v0 + iota >= j * bv
        u, w, _ = _tiles(es, cs, bs, et, ct, bt, v0, bv, kc)
        out = []
        for m, s, z in ((ms, ss, u), (mt, st, w)):
            zm = jnp.where(keep, z, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(zm, axis=1))
            sh = jnp.where(m_new == -jnp.inf, 0.0, m_new)
            out += [m_new, s * jnp.exp(m - sh) + jnp.sum(jnp.exp(zm - sh[:, None]), axis=1)]
        return tuple(out)

    neg, zero = jnp.full((n,), -jnp.inf, f32), jnp.zeros((n,), f32)
    ms, ss, mt, st = lax.fori_loop(0, n_tiles, lse_body, vary_like((neg, zero, neg, zero), *like))
    lse_s, lse_t = ms + jnp.log(ss), mt + jnp.log(st)

    def sum_body(j, carry):
        loss, asum = carry
        v0 = jnp.minimum(j * bv, vocab - bv)
        keep = v0 + iota >= j * bv
        u, w, _ = _tiles(es, cs, bs, et, ct, bt, v0, bv, kc)
        lq, lp = u - lse_s[:, None], w - lse_t[:, None]
        val, a = jax.jvp(lambda x: _elementwise(x, lp, kc), (lq,), (jnp.ones_like(lq),))
        return (loss + jnp.sum(jnp.where(keep, val, 0.0), axis=1), asum + jnp.sum(jnp.where(keep, a, 0.0), axis=1))

    loss, asum = lax.fori_loop(0, n_tiles, sum_body, vary_like((zero, zero), *like))
    return _scale(kc) * loss, (lse_s, lse_t, asum)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def kd_rows_chunked(es, cs, bs, et, ct, bt, kc: _KDCfg) -> jax.Array:
    """Per-row divergence (f32 [N]) streamed over vocabulary tiles; gradients for the student only.

    Args:
      es, cs, bs: student [N, Ds], [V, Ds], [V] or None; et, ct, bt: teacher [N, Dt], [V, Dt], [V] or None.
    """
    return _passes(es, cs, bs, et, ct, bt, kc)[0]


def _fwd(es, cs, bs, et, ct, bt, kc):
    loss, (lse_s, lse_t, asum) = _passes(es, cs, bs, et, ct, bt, kc)
    return loss, (es, cs, bs, et, ct, bt, lse_s, lse_t, asum)


def _bwd(kc: _KDCfg, res, g):
    es, cs, bs, et, ct, bt, lse_s, lse_t, asum = res
    vocab = cs.shape[0]
    bv, n_tiles = vocab_tiles(vocab, kc.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    coef = (g.astype(jnp.float32) * (_scale(kc) / kc.temperature))[:, None]

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vocab - bv)
        keep = v0 + iota >= j * bv
        u, w, cs_t = _tiles(es, cs, bs, et, ct, bt, v0, bv, kc)
        lq, lp = u - lse_s[:, None], w - lse_t[:, None]
        _, a = jax.jvp(lambda x: _elementwise(x, lp, kc), (lq,), (jnp.ones_like(lq),))
        grad = jnp.where(keep, coef * (a - jnp.exp(lq) * asum[:, None]), 0.0)
        return accumulate_tile_grads(carry, grad, es, cs_t, v0, keep[0])

    de, dc, db = lax.fori_loop(0, n_tiles, body, grad_accumulators(es, cs, bs))
    zeros = jax.tree.map(jnp.zeros_like, (et, ct, bt))
    return (de.astype(es.dtype), dc, db) + zeros


kd_rows_chunked.defvjp(_fwd, _bwd)


# ---- vocab-parallel: per-shard partial sums, combined with collectives outside the custom_vjp ----------


def _partial_forward(es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, kc: _KDCfg):
    n, vl = es.shape[0], cs.shape[0]
    bv, n_tiles = vocab_tiles(vl, kc.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)

    def body(j, carry):
        loss, asum = carry
        v0 = jnp.minimum(j * bv, vl - bv)
        cols = v0 + iota
        keep = jnp.logical_and(cols >= j * bv, cols < n_real)
        u, w, _ = _tiles(es, cs, bs, et, ct, bt, v0, bv, kc)
        lq, lp = u - lse_s[:, None], w - lse_t[:, None]
        val, a = jax.jvp(lambda x: _elementwise(x, lp, kc), (lq,), (jnp.ones_like(lq),))
        return (loss + jnp.sum(jnp.where(keep, val, 0.0), axis=1), asum + jnp.sum(jnp.where(keep, a, 0.0), axis=1))

    zero = jnp.zeros((n,), jnp.float32)
    return lax.fori_loop(0, n_tiles, body, vary_like((zero, zero), es, cs, bs, et, ct, bt, lse_s, lse_t))


@functools.partial(jax.custom_vjp, nondiff_argnums=(9,))
def kd_shard_partial(es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, kc: _KDCfg):
    """``L_k = sum_{v in shard} l(u_v - lse_s, w_v - lse_t)`` (unscaled, f32 [N]) of one vocabulary shard
    with the global log-sum-exps given; differentiable in the student and in ``lse_s``
    (``dL_k/dlse_s = -A_k``)."""
    return _partial_forward(es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, kc)[0]


def _partial_fwd(es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, kc):
    loss, asum = _partial_forward(es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, kc)
    return loss, (es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, asum)


def _partial_bwd(kc: _KDCfg, res, g):
    es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, asum = res
    vl = cs.shape[0]
    bv, n_tiles = vocab_tiles(vl, kc.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    g = g.astype(jnp.float32)
    coef = (g / kc.temperature)[:, None]

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vl - bv)
        cols = v0 + iota
        keep = jnp.logical_and(cols >= j * bv, cols < n_real)
        u, w, cs_t = _tiles(es, cs, bs, et, ct, bt, v0, bv, kc)
        lq, lp = u - lse_s[:, None], w - lse_t[:, None]
        _, a = jax.jvp(lambda x: _elementwise(x, lp, kc), (lq,), (jnp.ones_like(lq),))
        return accumulate_tile_grads(carry, jnp.where(keep, coef * a, 0.0), es, cs_t, v0, (cols >= j * bv)[0])

    de, dc, db = lax.fori_loop(0, n_tiles, body, grad_accumulators(es, cs, bs))
    zeros = jax.tree.map(jnp.zeros_like, (et, ct, bt, lse_t))
    return (de.astype(es.dtype), dc, db, -g * asum) + zeros + (None,)


kd_shard_partial.defvjp(_partial_fwd, _partial_bwd)


def _global_lse(lse_k, axis_name):
    mx = lax.stop_gradient(lax.pmax(lax.stop_gradient(lse_k), axis_name))
    mx = jnp.where(jnp.isinf(mx), 0.0, mx)
    return mx + jnp.log(lax.psum(jnp.exp(lse_k - mx), axis_name))


def _vocab_parallel_rows(es, cs, bs, et, ct, bt, kc: _KDCfg, *, axis_name: str, vocab: int):
    """Per-row divergence inside ``shard_map`` when ``cs``/``ct`` are this device's vocabulary shards.

    Local log-sum-exps of both heads (``shard_partials`` on ``E / T``, ``b / T``) are combined with
    ``pmax``/``psum``; the local partial sums :func:`kd_shard_partial` are ``psum``-ed. The gradient through
    the global student lse gives the ``-q_k A`` term of ``dL/du_k = a_k - q_k A``.
    """
    n, vl = es.shape[0], cs.shape[0]
    offset = lax.axis_index(axis_name) * vl
    n_real = jnp.clip(vocab - offset, 0, vl).astype(jnp.int32)
    cfg = LinearCEConfig(block_v=kc.block_v)
    inv = 1.0 / kc.temperature
    tl = jnp.full((n,), -1, jnp.int32)

    def lse(e, c, b):  # the log-sum-exp of (E C^T + b) / T over all shards
        e_t = e * jnp.asarray(inv, e.dtype)
        b_t = None if b is None else b * inv
        return _global_lse(shard_partials(e_t, c, b_t, tl, n_real, cfg)[0], axis_name)

    lse_s, lse_t = lse(es, cs, bs), lse(et, ct, bt)
    lse_s, lse_t = _vary(lse_s, (axis_name,)), _vary(lax.stop_gradient(lse_t), (axis_name,))
    part = kd_shard_partial(es, cs, bs, lse_s, et, ct, bt, lse_t, n_real, kc)
    return _scale(kc) * lax.psum(part, axis_name)


def _vocab_parallel(kc: _KDCfg, mesh, axis_name: str, es, cs, bs, et, ct, bt):
    """``shard_map`` of :func:`_vocab_parallel_rows`: classifiers split over ``axis_name`` (V padded to a
    multiple of its size and masked), rows over the other axes."""
    m = mesh.shape[axis_name]
    vocab = cs.shape[0]
    vp = -(-vocab // m) * m
    if vp != vocab:
        cs, ct = (jnp.pad(x, ((0, vp - vocab), (0, 0))) for x in (cs, ct))
        bs, bt = (None if x is None else jnp.pad(x, (0, vp - vocab)) for x in (bs, bt))
    lead = _lead_spec(es, es.ndim - 1, mesh, drop=(axis_name,))
    both = _spec_axes(lead) + (axis_name,)
    es, et = (_place(x, mesh, lead + (None,)) for x in (es, et))
    cs, ct = (_place(x, mesh, (axis_name, None)) for x in (cs, ct))
    bs, bt = (_place(x, mesh, (axis_name,)) for x in (bs, bt))

    def local(es, cs, bs, et, ct, bt):
        es, cs, bs, et, ct, bt = (_vary(x, both) for x in (es, cs, bs, et, ct, bt))
        flat = _vocab_parallel_rows(es.reshape(-1, es.shape[-1]), cs, bs, et.reshape(-1, et.shape[-1]), ct, bt,
                                    kc, axis_name=axis_name, vocab=vocab)
        return flat.reshape(es.shape[:-1])

    row, cls, vec = P(*lead, None), P(axis_name, None), P(axis_name)
    in_specs = (row, cls, None if bs is None else vec, row, cls, None if bt is None else vec)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(*lead))(es, cs, bs, et, ct, bt)


def _check_head(e, c, b, who: str):
    e, c = jnp.asarray(e), jnp.asarray(c)
    if e.ndim < 2:
        raise ValueError(f"{who}_embeddings must have shape [..., D], got shape {e.shape}")
    if c.ndim != 2 or c.shape[1] != e.shape[-1]:
        raise ValueError(f"{who}_classifier must have shape [V, {e.shape[-1]}], got shape {c.shape}")
    if e.dtype not in _FLOAT_DTYPES or c.dtype != e.dtype:
        raise TypeError(f"{who}_embeddings/{who}_classifier must share a float32/bfloat16/float16 dtype, "
                        f"got {e.dtype} and {c.dtype}")
    if b is not None:
        b = jnp.asarray(b)
        if b.shape != (c.shape[0],) or not jnp.issubdtype(b.dtype, jnp.floating):
            raise ValueError(f"{who}_bias must be a float array of shape ({c.shape[0]},), got {b.dtype}{b.shape}")
    return e, c, b


def linear_kd_loss(
    student_embeddings: ArrayLike,
    student_classifier: ArrayLike,
    teacher_embeddings: ArrayLike,
    teacher_classifier: ArrayLike,
    *,
    student_bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    divergence: Literal["kd", "forward_kl", "reverse_kl", "jsd"] = "kd",
    temperature: float = 1.0,
    beta: float = 0.5,
    reduction: Literal["mean", "sum", "none"] = "mean",
    impl: Literal["auto", "naive", "chunked"] = "auto",
    config: ChunkedConfig | None = None,
    vocab_axis: str | None = None,
) -> jax.Array:
    r"""Distillation loss between two linear heads, streamed over the vocabulary (no N x V logits).

    With student ``q = softmax((E_s C_s^T + b_s) / T)`` and teacher ``p = softmax((E_t C_t^T + b_t) / T)``
    per token (row)::

        kd          T^2 KL(p || q)        (Hinton et al., arXiv 1503.02531, Sec. 2; = lossjax.losses.kd_loss)
        forward_kl  KL(p || q)
        reverse_kl  KL(q || p)
        jsd         beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q
                    (the generalized JSD of Agarwal et al., "On-Policy Distillation of Language Models",
                    ICLR 2024, Sec. 3; beta = 0.5 is the symmetric JSD)

    ``reduction='mean'`` averages over the tokens where ``mask`` is True (0 if none), ``'sum'`` sums
    them, ``'none'`` returns per-token values (0 where masked). The teacher enters under
    ``stop_gradient``: gradients reach ``student_embeddings``, ``student_classifier`` and
    ``student_bias`` only. 'chunked' (= 'auto') streams vocabulary tiles of both heads (two forward
    passes, one backward pass, a ``custom_vjp``; equations in this module's docstring); 'naive'
    materialises both f32 logits. The heads may have different hidden sizes and dtypes but the same V.
    On Explicit meshes each device computes its own rows (``shard_map``, classifiers gathered). With
    ``vocab_axis`` both classifiers are split over their vocabulary along that mesh axis and never gathered:
    each device streams its shard, the per-row log-sum-exps and partial sums are combined with
    ``pmax``/``psum`` (the Megatron parallel cross-entropy pattern, Shoeybi et al., arXiv 1909.08053,
    Sec. 3), and ``dC_s`` keeps the vocabulary sharding.

    Args:
      student_embeddings, student_classifier: [..., Ds] and [V, Ds] (same float dtype).
      teacher_embeddings, teacher_classifier: [..., Dt] and [V, Dt] (same leading shape as the student).
      student_bias, teacher_bias: optional [V] biases.
      mask: optional bool array of the leading shape (padding / prompt tokens False).
      divergence: 'kd', 'forward_kl', 'reverse_kl' or 'jsd'.
      temperature: ``T > 0`` dividing both heads' logits.
      beta: JSD weight in (0, 1).
      reduction: 'mean', 'sum' or 'none'.
      impl: 'auto' (= 'chunked'), 'chunked' or 'naive'.
      config: :class:`ChunkedConfig` (``block_v``) or None.
      vocab_axis: mesh axis to split both classifiers' vocabulary over (vocab-parallel, 'chunked'), or None.

    Returns:
      The loss (f32 scalar, or per-token for 'none').

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.losses import kd_loss
      >>> from lossjax.kernels import linear_kd_loss
      >>> ks = jax.random.split(jax.random.key(0), 4)
      >>> es, cs = jax.random.normal(ks[0], (4, 8)), jax.random.normal(ks[1], (30, 8))
      >>> et, ct = jax.random.normal(ks[2], (4, 12)), jax.random.normal(ks[3], (30, 12))
      >>> loss = jax.jit(lambda es, cs: linear_kd_loss(es, cs, et, ct, temperature=2.0))(es, cs)
      >>> bool(jnp.allclose(loss, kd_loss(es @ cs.T, et @ ct.T, temperature=2.0).mean(), rtol=1e-4))
      True
    """
    if not isinstance(divergence, str) or divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if impl not in ("auto", "naive", "chunked"):
        raise ValueError(f"impl must be 'auto', 'naive' or 'chunked', got {impl!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive float, got {temperature!r}")
    if divergence == "jsd" and (isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 1):
        raise ValueError(f"beta must be a float in (0, 1), got {beta!r}")
    if config is not None and not isinstance(config, ChunkedConfig):
        raise TypeError(f"config must be a ChunkedConfig or None, got {type(config).__name__}")
    es, cs, bs = _check_head(student_embeddings, student_classifier, student_bias, "student")
    et, ct, bt = _check_head(teacher_embeddings, teacher_classifier, teacher_bias, "teacher")
    if et.shape[:-1] != es.shape[:-1]:
        raise ValueError(f"teacher_embeddings leading shape {et.shape[:-1]} must equal the student's {es.shape[:-1]}")
    if ct.shape[0] != cs.shape[0]:
        raise ValueError(f"teacher_classifier V={ct.shape[0]} must equal student_classifier V={cs.shape[0]}")
    lead = es.shape[:-1]
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_ or mask.shape != lead:
            raise ValueError(f"mask must be a bool array of shape {lead}, got {mask.dtype}{mask.shape}")
    if mask is not None:  # double where: a masked (padding) row reaches neither the value nor the gradient
        es = jnp.where(mask[..., None], es, jnp.zeros((), es.dtype))
        et = jnp.where(mask[..., None], et, jnp.zeros((), et.dtype))
    et, ct, bt = jax.tree.map(lax.stop_gradient, (et, ct, bt))
    kc = _KDCfg(divergence=divergence, temperature=float(temperature), beta=float(beta),
                block_v=(config or ChunkedConfig()).resolved_block_v(jax.default_backend()))
    fn = kd_rows_naive if impl == "naive" else kd_rows_chunked

    def rows(es, cs, bs, et, ct, bt):
        flat = fn(es.reshape(-1, es.shape[-1]), cs, bs, et.reshape(-1, et.shape[-1]), ct, bt, kc)
        return flat.reshape(es.shape[:-1])

    mesh = input_mesh(cs, es, et, ct, min_size=1 if vocab_axis is not None else 2)
    if vocab_axis is not None:
        if impl == "naive":
            raise ValueError("vocab_axis needs impl='chunked' (or 'auto')")
        if mesh is None or vocab_axis not in mesh.axis_names:
            raise ValueError(f"vocab_axis={vocab_axis!r} is not an axis of the inputs' mesh; shard the inputs on "
                             "a mesh or call under jax.set_mesh(mesh)")
        per_row = _vocab_parallel(kc, mesh, vocab_axis, es, cs, bs, et, ct, bt)
    elif mesh is not None and is_explicit(mesh):
        per_row = _data_parallel(rows, mesh, es, cs, bs, et, ct, bt)
    else:
        per_row = rows(es, cs, bs, et, ct, bt)
    if mask is not None:
        per_row = jnp.where(mask, per_row, 0.0)
    if reduction == "none":
        return per_row
    total = jnp.sum(per_row)
    if reduction == "sum":
        return total
    count = per_row.size if mask is None else jnp.sum(mask.astype(jnp.float32))
    return total / jnp.maximum(count, 1.0)


def _data_parallel(rows, mesh, es, cs, bs, et, ct, bt):
    """Each device's rows of both heads (``shard_map``); the classifiers are replicated (gathered)."""
    lead = _lead_spec(es, es.ndim - 1, mesh)
    axes = _spec_axes(lead)
    es, et = (_place(x, mesh, lead + (None,)) for x in (es, et))
    cs, ct = (_place(x, mesh, (None, None)) for x in (cs, ct))
    bs, bt = (_place(x, mesh, (None,)) for x in (bs, bt))

    def local(*xs):
        return rows(*(_vary(x, axes) for x in xs))

    row, rep, vec = P(*lead, None), P(None, None), P(None)
    in_specs = (row, rep, None if bs is None else vec, row, rep, None if bt is None else vec)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(*lead))(es, cs, bs, et, ct, bt)
