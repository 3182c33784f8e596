"""Pallas Mosaic-TPU kernels for the linear cross-entropy (Cut Cross-Entropy, Wijmans et al., arXiv 2411.09009).

On a TPU the Pallas grid runs sequentially on each TensorCore, and an output block whose index does not
change between consecutive grid steps stays resident in VMEM. So, unlike the Pallas-Triton kernels
(:mod:`lossjax.kernels.linear_ce_pallas`), these kernels reduce *across* grid steps: the reduction axis is
the last grid axis (``ARBITRARY``), the running state lives in VMEM scratch, and the independent axis is
``PARALLEL`` (split over the TensorCores of a megacore chip). Block specs double-buffer the streamed operand.

* Forward, grid ``(cdiv(N, bn), cdiv(V, bv))`` (rows PARALLEL, vocabulary ARBITRARY): the E block
  ``[bn, D]`` stays resident, C blocks ``[bv, D]`` stream through VMEM; each step forms the f32 logit tile
  ``z = softcap(E C^T + b)`` ``[bn, bv]`` on the MXU and folds it into the online state (max ``M``, rescaled
  sum ``S``, target logit, and with label smoothing the logit sum) kept in ``[bn, 1]`` VMEM scratch. The
  last vocabulary step writes ``lse = M + log S`` and ``nll``. A static ``stats`` flag (used by
  :func:`lossjax.kernels.linear_ce_head`) adds the entropy accumulator and a running argmax.
* Backward: two kernels, one per gradient (no atomics, no cross-core reduction), each recomputes the logit
  tile and forms ``G = dloss/dlogits`` in VMEM; one accumulates ``dE = G C`` over the vocabulary (grid
  ``(rows, vocab)``), the other ``dC = G^T E`` and ``db = sum_i G`` over the rows (grid ``(vocab, rows)``),
  each in an f32 VMEM accumulator. No ``[N, V]`` array and no ``[N, chunk]`` gradient tile touches HBM.

Shapes need no padding: a block dimension equal to the full array dimension satisfies the (8, 128) tiling
rule whatever its size, and edge blocks (N not a multiple of ``bn``, V not a multiple of ``bv``) are masked
with ``iota`` comparisons before any reduction or matmul (out-of-range rows of E and C are zeroed, since
edge blocks hold unspecified values, NaN in interpret mode). Tiling, VMEM budget per TPU generation and the
roofline are in ``docs/design/kernels_tpu.md``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from lossjax.kernels.linear_ce_common import LinearCEConfig, apply_softcap, matmul_precision, softcap_grad_factor

__all__ = ["TpuConfig", "tpu_nll_lse", "tpu_rows", "tpu_tiles", "tpu_head_stats", "vmem_budget_bytes",
           "DEFAULT_VMEM_BUDGET"]

# Conservative budget when the chip is unknown (lowering on a CPU host): the smallest scoped VMEM default
# of the supported generations (v4: 16 MiB of VMEM per TensorCore), less headroom for Mosaic's internals.
DEFAULT_VMEM_BUDGET = 12 * 2**20
_NT = (((1,), (1,)), ((), ()))  # A @ B^T
_TN = (((0,), (0,)), ((), ()))  # A^T @ B
_NN = (((1,), (0,)), ((), ()))  # A @ B


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class TpuConfig:
    """Knobs of the Pallas Mosaic-TPU linear cross-entropy kernels.

    Attributes:
      block_n: row tile (a multiple of 8, the sublane count); None: 512 (the arithmetic intensity of the
        C stream is ``bn`` FLOP/byte for bf16, above the ridge point of v4, v5e and v5p and near v6e's;
        ``docs/design/kernels_tpu.md``). Clamped to N when N is smaller (a full-dimension block).
      block_v: vocabulary tile (a multiple of 128, the lane count); None: 512. Clamped to V when smaller.
      vmem_limit_bytes: scoped-VMEM limit passed to Mosaic, also the budget the tiles are shrunk to fit;
        None: 3/4 of the chip's VMEM on a TPU, 12 MiB when lowering without one.
      interpret: run in Pallas's TPU interpret mode (``pltpu.InterpretParams``); None: True unless the
        default backend is a TPU.

    Example:
      >>> TpuConfig(block_n=256).block_n
      256
    """

    block_n: int | None = None
    block_v: int | None = None
    vmem_limit_bytes: int | None = None
    interpret: bool | None = None

    def __post_init__(self):
        if self.block_n is not None and not (_is_int(self.block_n) and self.block_n > 0 and self.block_n % 8 == 0):
            raise ValueError(f"block_n must be a positive multiple of 8 (TPU sublanes), got {self.block_n!r}")
        if self.block_v is not None and not (
            _is_int(self.block_v) and self.block_v > 0 and self.block_v % 128 == 0
        ):
            raise ValueError(f"block_v must be a positive multiple of 128 (TPU lanes), got {self.block_v!r}")
        if self.vmem_limit_bytes is not None and not (_is_int(self.vmem_limit_bytes) and self.vmem_limit_bytes > 0):
            raise ValueError(f"vmem_limit_bytes must be a positive int, got {self.vmem_limit_bytes!r}")
        if self.interpret is not None and not isinstance(self.interpret, bool):
            raise ValueError(f"interpret must be None or a bool, got {self.interpret!r}")


@dataclasses.dataclass(frozen=True)
class _Tiles:
    """Resolved static tiling of one call."""

    bn: int
    bv: int
    vmem_limit: int
    interpret: bool


def vmem_budget_bytes(requested: int | None = None) -> int:
    """Scoped-VMEM budget: ``requested``, else 3/4 of the VMEM of the TPU in use, else 12 MiB.

    Example:
      >>> vmem_budget_bytes(8 << 20)
      8388608
    """
    if requested:
        return int(requested)
    if jax.default_backend() == "tpu":
        try:
            return int(pltpu.get_tpu_info().vmem_capacity_bytes) * 3 // 4
        except Exception:  # pragma: no cover - only on a TPU whose chip jax does not know
            pass
    return DEFAULT_VMEM_BUDGET


def _vmem_estimate(bn: int, bv: int, dim: int, itemsize: int) -> int:
    """Largest VMEM footprint of the three kernels (the dE kernel; dC is the same with bn <-> bv).

    Double-buffered E and C blocks, a double-buffered output block, the f32 accumulator and about four
    live f32 ``[bn, bv]`` temporaries (z, exp, G, masks); ``[rows, 1]`` blocks pad to 128 lanes.
    """
    big = max(bn, bv)
    return (2 * (bn + bv) * dim * itemsize + 2 * big * dim * itemsize + big * dim * 4
            + 4 * bn * bv * 4 + 8 * big * 128 * 4)


def tpu_tiles(n: int, vocab: int, dim: int, itemsize: int, tconf: TpuConfig, on_tpu: bool) -> _Tiles:
    """Fit ``(bn, bv)`` to the shapes and the VMEM budget (halving the larger tile until it fits).

    A tile not smaller than its dimension becomes the full dimension (always legal under the (8, 128) rule).

    Example:
      >>> t = tpu_tiles(37, 300, 32, 4, TpuConfig(block_n=16, block_v=128), on_tpu=False)
      >>> (t.bn, t.bv)
      (16, 128)
    """
    bn = tconf.block_n or 512
    bv = tconf.block_v or 512
    budget = vmem_budget_bytes(tconf.vmem_limit_bytes)
    while _vmem_estimate(min(bn, n), min(bv, vocab), dim, itemsize) > budget and (bn > 8 or bv > 128):
        if bv > 128 and (bv >= bn or bn <= 8):
            bv //= 2
        else:
            bn //= 2
    bn = n if bn >= n else bn
    bv = vocab if bv >= vocab else bv
    interpret = (not on_tpu) if tconf.interpret is None else tconf.interpret
    return _Tiles(bn=int(bn), bv=int(bv), vmem_limit=int(budget), interpret=bool(interpret))


def _call_kwargs(tiles: _Tiles, semantics: tuple[str, str]) -> dict:
    if tiles.interpret:
        return {"interpret": pltpu.InterpretParams()}
    return {"compiler_params": pltpu.CompilerParams(dimension_semantics=semantics,
                                                    vmem_limit_bytes=tiles.vmem_limit)}


def _logits(e, c, b_ref, prec, softcap):
    """f32 ``softcap(E C^T + b)`` of one ``[bn, bv]`` tile."""
    a = lax.dot_general(e, c, _NT, preferred_element_type=jnp.float32, precision=prec)
    if b_ref is not None:
        a = a + b_ref[...].astype(jnp.float32)
    return apply_softcap(a, softcap)


def _grad_tile(z, keep, onehot, lse, g, lam, *, vocab, cfg: LinearCEConfig):
    """f32 ``G = dloss/d(raw logits)`` of a tile (zero outside ``keep``); all per-row operands ``[bn, 1]``.

    G = (g + l) softmax(z) - g (1 - a) onehot - g a / V, times 1 - (z/s)^2 with softcap s (Wijmans et al.,
    Sec. 4); the optional CCE filter zeroes the tile when max |softmax - onehot| < filter_eps.
    """
    p = jnp.where(keep, jnp.exp(z - lse), 0.0)
    oh = jnp.logical_and(onehot, keep).astype(jnp.float32)
    a = cfg.label_smoothing
    grad = (g + lam) * p - ((1.0 - a) * g) * oh
    if a:
        grad = grad - jnp.where(keep, g * (a / vocab), 0.0)
    if cfg.softcap is not None:
        grad = grad * softcap_grad_factor(z, cfg.softcap)
    grad = jnp.where(keep, grad, 0.0)  # edge-block logits may be NaN (bias / C padding): 0 * NaN = NaN
    if cfg.filter_eps is not None:
        grad = jnp.where(jnp.max(jnp.abs(p - oh)) >= cfg.filter_eps, grad, 0.0)
    return grad


def _split_refs(refs, has_bias: bool):
    """``(e, c, b or None, *rest)`` from a kernel's refs (bias present or not)."""
    if has_bias:
        return refs
    return refs[:2] + (None,) + refs[2:]


def _fwd_kernel(*refs, n, vocab, cfg: LinearCEConfig, has_bias, prec, stats=False, inv_temp=1.0):
    """Online forward; ``stats`` adds the entropy accumulator ``U = sum_v exp(z_v - M) z_v`` (rescaled with
    ``S``; ``H = lse - U / S``) and the running argmax (first index on ties), ``inv_temp`` scales ``z``."""
    if stats:
        (*ins, nll_ref, lse_ref, ent_ref, arg_ref, m_sc, s_sc, zt_sc, sz_sc, u_sc, best_sc, arg_sc) = refs
    else:
        *ins, nll_ref, lse_ref, m_sc, s_sc, zt_sc, sz_sc = refs
    e_ref, c_ref, b_ref, t_ref = _split_refs(tuple(ins), has_bias)
    j = pl.program_id(1)
    bn, bv = e_ref.shape[0], c_ref.shape[0]

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
        s_sc[...] = jnp.zeros(s_sc.shape, jnp.float32)
        zt_sc[...] = jnp.zeros(zt_sc.shape, jnp.float32)
        sz_sc[...] = jnp.zeros(sz_sc.shape, jnp.float32)
        if stats:
            u_sc[...] = jnp.zeros(u_sc.shape, jnp.float32)
            best_sc[...] = jnp.full(best_sc.shape, -jnp.inf, jnp.float32)
            arg_sc[...] = jnp.zeros(arg_sc.shape, jnp.int32)

    z = _logits(e_ref[...], c_ref[...], b_ref, prec, cfg.softcap)
    if inv_temp != 1.0:
        z = z * inv_temp
    cols = j * bv + lax.broadcasted_iota(jnp.int32, (bn, bv), 1)
    keep = cols < vocab
    zm = jnp.where(keep, z, -jnp.inf)
    m_old = m_sc[...]
    m_new = jnp.maximum(m_old, jnp.max(zm, axis=1, keepdims=True))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s_sc[...] = s_sc[...] * jnp.exp(m_old - shift) + jnp.sum(jnp.exp(zm - shift), axis=1, keepdims=True)
    m_sc[...] = m_new
    t = t_ref[...]
    zt_sc[...] += jnp.sum(jnp.where(jnp.logical_and(cols == t, keep), z, 0.0), axis=1, keepdims=True)
    if cfg.label_smoothing:
        sz_sc[...] += jnp.sum(jnp.where(keep, z, 0.0), axis=1, keepdims=True)
    if stats:
        pz = jnp.exp(zm - shift)  # as in the sum above (CSE'd by the compiler)
        u_sc[...] = u_sc[...] * jnp.exp(m_old - shift) + jnp.sum(pz * jnp.where(keep, z, 0.0), axis=1,
                                                                  keepdims=True)
        tmax = jnp.max(zm, axis=1, keepdims=True)
        hit = jnp.min(jnp.where(zm == tmax, cols, jnp.iinfo(jnp.int32).max), axis=1, keepdims=True)
        better = tmax > best_sc[...]
        arg_sc[...] = jnp.where(better, hit, arg_sc[...])
        best_sc[...] = jnp.where(better, tmax, best_sc[...])

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        lse = m_sc[...] + jnp.log(s_sc[...])
        a = cfg.label_smoothing
        nll = lse - (1.0 - a) * zt_sc[...]
        if a:
            nll = nll - (a / vocab) * sz_sc[...]
        nll_ref[...] = jnp.where(t != cfg.ignore_index, nll, 0.0)
        lse_ref[...] = lse
        if stats:
            ent_ref[...] = lse - u_sc[...] / s_sc[...]
            arg_ref[...] = arg_sc[...]


def _forward(e, c, bias, targets, cfg: LinearCEConfig, tiles: _Tiles, stats: bool = False, inv_temp: float = 1.0):
    n, dim = e.shape
    vocab = c.shape[0]
    bn, bv = tiles.bn, tiles.bv
    has_bias = bias is not None
    in_specs = [pl.BlockSpec((bn, dim), lambda i, j: (i, 0)), pl.BlockSpec((bv, dim), lambda i, j: (j, 0))]
    args = [e, c]
    if has_bias:
        in_specs.append(pl.BlockSpec((1, bv), lambda i, j: (0, j)))
        args.append(bias.reshape(1, vocab))
    in_specs.append(pl.BlockSpec((bn, 1), lambda i, j: (i, 0)))
    args.append(targets.reshape(n, 1))
    row = jax.ShapeDtypeStruct((n, 1), jnp.float32)
    row_spec = pl.BlockSpec((bn, 1), lambda i, j: (i, 0))
    kernel = functools.partial(_fwd_kernel, n=n, vocab=vocab, cfg=cfg, has_bias=has_bias,
                               prec=matmul_precision(e.dtype), stats=stats, inv_temp=float(inv_temp))
    out_shape, scratch = (row, row), [pltpu.VMEM((bn, 1), jnp.float32) for _ in range(4)]
    if stats:
        out_shape += (row, jax.ShapeDtypeStruct((n, 1), jnp.int32))
        scratch += [pltpu.VMEM((bn, 1), jnp.float32) for _ in range(2)] + [pltpu.VMEM((bn, 1), jnp.int32)]
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(pl.cdiv(n, bn), pl.cdiv(vocab, bv)),
        in_specs=in_specs,
        out_specs=tuple(row_spec for _ in out_shape),
        scratch_shapes=scratch,
        name="lossjax_cce_tpu_head_fwd" if stats else "lossjax_cce_tpu_fwd",
        **_call_kwargs(tiles, ("parallel", "arbitrary")),
    )(*args)
    return tuple(x[:, 0] for x in outs)


def _bwd_kernel(*refs, n, vocab, cfg: LinearCEConfig, has_bias, prec, wrt):
    """``wrt='e'``: grid (rows, vocab), ``dE_i += G C_j``. ``wrt='c'``: grid (vocab, rows), ``dC_j += G^T E_i``
    (and ``db_j += sum_rows G``). Out-of-range rows of the streamed operand are zeroed before the matmul."""
    if wrt == "c" and has_bias:
        e_ref, c_ref, b_ref, t_ref, lse_ref, g_ref, lam_ref, dc_ref, db_ref, acc, bacc = refs
    else:
        e_ref, c_ref, b_ref, t_ref, lse_ref, g_ref, lam_ref, out_ref, acc = _split_refs(refs, has_bias)
    if wrt == "e":
        i, j = pl.program_id(0), pl.program_id(1)
    else:
        j, i = pl.program_id(0), pl.program_id(1)
    red = pl.program_id(1)
    bn, bv = e_ref.shape[0], c_ref.shape[0]

    @pl.when(red == 0)
    def _init():
        acc[...] = jnp.zeros(acc.shape, jnp.float32)
        if wrt == "c" and has_bias:
            bacc[...] = jnp.zeros(bacc.shape, jnp.float32)

    e = e_ref[...]
    c = c_ref[...]
    rows_e = i * bn + lax.broadcasted_iota(jnp.int32, (bn, 1), 0)
    rows_c = j * bv + lax.broadcasted_iota(jnp.int32, (bv, 1), 0)
    e = jnp.where(rows_e < n, e, jnp.zeros_like(e))
    c = jnp.where(rows_c < vocab, c, jnp.zeros_like(c))
    z = _logits(e, c, b_ref, prec, cfg.softcap)
    cols = j * bv + lax.broadcasted_iota(jnp.int32, (bn, bv), 1)
    keep = jnp.logical_and(cols < vocab, rows_e < n)
    g = jnp.where(rows_e < n, g_ref[...], 0.0)
    lam = jnp.where(rows_e < n, lam_ref[...], 0.0)
    lse = jnp.where(rows_e < n, lse_ref[...], 0.0)
    grad = _grad_tile(z, keep, cols == t_ref[...], lse, g, lam, vocab=vocab, cfg=cfg)
    if wrt == "e":
        acc[...] += lax.dot_general(grad.astype(c.dtype), c, _NN, preferred_element_type=jnp.float32, precision=prec)
    else:
        acc[...] += lax.dot_general(grad.astype(e.dtype), e, _TN, preferred_element_type=jnp.float32, precision=prec)
        if has_bias:
            bacc[...] += jnp.sum(grad, axis=0, keepdims=True)

    @pl.when(red == pl.num_programs(1) - 1)
    def _finish():
        if wrt == "c" and has_bias:
            dc_ref[...] = acc[...].astype(dc_ref.dtype)
            db_ref[...] = bacc[...].astype(db_ref.dtype)
        else:
            out_ref[...] = acc[...].astype(out_ref.dtype)


def _grad_call(e, c, bias, targets, lse, g, lam, cfg, tiles: _Tiles, wrt: str):
    n, dim = e.shape
    vocab = c.shape[0]
    bn, bv = tiles.bn, tiles.bv
    has_bias = bias is not None
    if wrt == "e":
        grid = (pl.cdiv(n, bn), pl.cdiv(vocab, bv))

        def rix(i, j):
            return i

        def vix(i, j):
            return j
    else:
        grid = (pl.cdiv(vocab, bv), pl.cdiv(n, bn))

        def rix(j, i):
            return i

        def vix(j, i):
            return j
    in_specs = [pl.BlockSpec((bn, dim), lambda a, b: (rix(a, b), 0)),
                pl.BlockSpec((bv, dim), lambda a, b: (vix(a, b), 0))]
    args = [e, c]
    if has_bias:
        in_specs.append(pl.BlockSpec((1, bv), lambda a, b: (0, vix(a, b))))
        args.append(bias.reshape(1, vocab))
    row_spec = pl.BlockSpec((bn, 1), lambda a, b: (rix(a, b), 0))
    in_specs += [row_spec] * 4
    args += [targets.reshape(n, 1), lse.reshape(n, 1), g.reshape(n, 1), lam.reshape(n, 1)]
    if wrt == "e":
        out_shape = jax.ShapeDtypeStruct((n, dim), e.dtype)
        out_specs = pl.BlockSpec((bn, dim), lambda a, b: (a, 0))
        scratch = [pltpu.VMEM((bn, dim), jnp.float32)]
    else:
        out_shape = jax.ShapeDtypeStruct((vocab, dim), c.dtype)
        out_specs = pl.BlockSpec((bv, dim), lambda a, b: (a, 0))
        scratch = [pltpu.VMEM((bv, dim), jnp.float32)]
        if has_bias:
            out_shape = (out_shape, jax.ShapeDtypeStruct((1, vocab), bias.dtype))
            out_specs = (out_specs, pl.BlockSpec((1, bv), lambda a, b: (0, a)))
            scratch.append(pltpu.VMEM((1, bv), jnp.float32))
    kernel = functools.partial(_bwd_kernel, n=n, vocab=vocab, cfg=cfg, has_bias=has_bias,
                               prec=matmul_precision(e.dtype), wrt=wrt)
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=grid, in_specs=in_specs, out_specs=out_specs,
        scratch_shapes=scratch, name=f"lossjax_cce_tpu_d{wrt}",
        **_call_kwargs(tiles, ("parallel", "arbitrary")),
    )(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def tpu_nll_lse(e, c, bias, targets, cfg: LinearCEConfig, tiles: _Tiles):
    """Per-row ``(nll, lse)`` (f32) from the Mosaic-TPU forward kernel; the backward runs the dE and dC kernels.

    ``nll_i = lse_i - (1 - a) z_{i,t_i} - (a / V) sum_v z_iv`` (0 where ``t_i == ignore_index``),
    ``lse_i = log sum_v exp z_iv``, ``z = softcap(E C^T + b)`` (Wijmans et al., arXiv 2411.09009, Sec. 4).
    Use :func:`tpu_rows` (which fits the tiles) or :func:`lossjax.kernels.linear_cross_entropy`.

    Example:
      >>> import jax.numpy as jnp
      >>> cfg, tiles = LinearCEConfig(), tpu_tiles(2, 3, 4, 4, TpuConfig(), on_tpu=False)
      >>> nll, lse = tpu_nll_lse(jnp.zeros((2, 4)), jnp.zeros((3, 4)), None, jnp.array([0, 2]), cfg, tiles)
      >>> [round(float(v), 4) for v in nll]   # log 3 for uniform logits
      [1.0986, 1.0986]
    """
    return _forward(e, c, bias, targets, cfg, tiles)


def _fwd(e, c, bias, targets, cfg, tiles):
    nll, lse = _forward(e, c, bias, targets, cfg, tiles)
    return (nll, lse), (e, c, bias, targets, lse)


def _bwd(cfg, tiles, res, cts):
    e, c, bias, targets, lse = res
    g_nll, g_lse = cts
    g = jnp.where(targets != cfg.ignore_index, g_nll.astype(jnp.float32), 0.0)
    lam = g_lse.astype(jnp.float32)
    de = _grad_call(e, c, bias, targets, lse, g, lam, cfg, tiles, "e")
    out = _grad_call(e, c, bias, targets, lse, g, lam, cfg, tiles, "c")
    if bias is None:
        return de, out, None, None
    dc, db = out
    return de, dc, db.reshape(bias.shape), None


tpu_nll_lse.defvjp(_fwd, _bwd)


def tpu_head_stats(e, c, bias, targets, cfg: LinearCEConfig, tiles: _Tiles, inv_temp: float = 1.0):
    """Per-row ``(nll, lse, entropy, argmax)`` (f32, f32, f32, int32) of ``z = softcap(E C^T + b) * inv_temp``
    from the forward kernel with the entropy accumulator and running argmax (``H = lse - U / S``). Forward
    only: :func:`lossjax.kernels.linear_head.linear_ce_head` supplies the gradient (tile recompute)."""
    return _forward(e, c, bias, targets.astype(jnp.int32), cfg, tiles, stats=True, inv_temp=inv_temp)


def tpu_rows(e, c, bias, targets, cfg: LinearCEConfig, tconf: TpuConfig | None = None, on_tpu: bool | None = None):
    """Per-row ``(nll, lse)`` of [N, D] rows via the Mosaic-TPU kernels, tiles fitted to shapes and VMEM.

    The TPU counterpart of :func:`lossjax.kernels.linear_ce_pallas.pallas_rows` (same arguments, plus the
    :class:`TpuConfig`); ``on_tpu`` defaults to ``jax.default_backend() == 'tpu'`` and decides interpret mode
    when ``tconf.interpret`` is None. Nothing is padded.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> e = jax.random.normal(jax.random.key(0), (5, 8))
      >>> c = jax.random.normal(jax.random.key(1), (7, 8))
      >>> nll, lse = tpu_rows(e, c, None, jnp.arange(5), LinearCEConfig())
      >>> bool(jnp.allclose(lse, jax.nn.logsumexp(e @ c.T, axis=1), rtol=1e-5))
      True
    """
    tconf = tconf or TpuConfig()
    on_tpu = (jax.default_backend() == "tpu") if on_tpu is None else on_tpu
    n, dim = e.shape
    tiles = tpu_tiles(n, c.shape[0], dim, jnp.dtype(e.dtype).itemsize, tconf, on_tpu)
    return tpu_nll_lse(e, c, bias, targets.astype(jnp.int32), cfg, tiles)
