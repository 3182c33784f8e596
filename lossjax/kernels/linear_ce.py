"""Memory-light linear cross-entropy (Cut Cross-Entropy): public API, validation and dispatch."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.kernels.linear_ce_chunked import chunked_nll_lse
from lossjax.kernels.linear_ce_common import LinearCEConfig
from lossjax.kernels.linear_ce_pallas import is_power_of_two, pallas_nll_lse
from lossjax.kernels.linear_ce_reference import naive_nll_lse

__all__ = ["linear_cross_entropy", "resolve_filter_eps", "IMPLS", "REDUCTIONS"]

IMPLS = ("auto", "naive", "chunked", "pallas", "triton")
REDUCTIONS = ("mean", "sum", "none")
FWD_LOOPS = ("nested", "flat")
BWD_IMPLS = ("pallas", "xla")
_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def resolve_filter_eps(filter_eps: float | str | None, dtype) -> float | None:
    """CCE's threshold: ``"auto"`` means ``finfo(dtype).eps / 32`` (bf16: 2^-12, f32: 2^-28).

    Example:
      >>> import jax.numpy as jnp
      >>> resolve_filter_eps("auto", jnp.bfloat16), resolve_filter_eps(None, jnp.float32)
      (0.000244140625, None)
    """
    if filter_eps is None:
        return None
    if isinstance(filter_eps, str):
        if filter_eps != "auto":
            raise ValueError(f"filter_eps must be None, 'auto' or a positive float, got {filter_eps!r}")
        return float(jnp.finfo(dtype).eps) / 32.0
    if isinstance(filter_eps, bool) or not isinstance(filter_eps, (int, float)) or not filter_eps > 0:
        raise ValueError(f"filter_eps must be None, 'auto' or a positive float, got {filter_eps!r}")
    return float(filter_eps)


def _prev_pow2(x: int) -> int:
    return 1 << (max(int(x), 1).bit_length() - 1)


def _check_block(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not is_power_of_two(int(value)):
        raise ValueError(f"{name} must be a power of two (Pallas-Triton loads need power-of-two shapes), got {value!r}")


def _largest_pow2_divisor(d: int, cap: int) -> int:
    b = _prev_pow2(cap)
    while b > 1 and d % b:
        b //= 2
    return b


def _backend() -> str:
    return jax.default_backend()


def _pallas_setup(e, c, bias, t, cfg: LinearCEConfig, interpret: bool, block_n, block_v, block_d,
                  v_splits, num_warps, num_stages, bwd_chunk, fwd_loop="nested", bwd_impl="pallas"):
    """Choose legal block sizes for the given shapes; pad only tiny dimensions (never C for real V)."""
    n, dim = e.shape
    vocab = c.shape[0]
    min_tile = 1 if interpret else 16  # Triton dots need >= 16 along every axis
    pad_n = 0
    if n < min_tile:
        pad_n = min_tile - n
    if dim % min_tile:
        pad_d = min_tile - dim % min_tile  # rare: copies E and C once
        e = jnp.pad(e, ((0, 0), (0, pad_d)))
        c = jnp.pad(c, ((0, 0), (0, pad_d)))
        dim += pad_d
    if pad_n:
        e = jnp.pad(e, ((0, pad_n), (0, 0)))
        t = jnp.pad(t, (0, pad_n), constant_values=cfg.ignore_index)
    n_eff = n + pad_n
    # GPU defaults from the H100 sweep (benchmarks/results/kernels_gpu_h100.md): 128x256x64, 8 warps, 3 stages
    bn = min(block_n or 128, _prev_pow2(n_eff))
    bv = min(block_v or 256, _prev_pow2(vocab))
    bd = _largest_pow2_divisor(dim, block_d or (64 if not interpret else 256))
    bwd_bv = min(128 if not interpret else 256, bv if block_v else 1 << 30, _prev_pow2(vocab))
    chunk_req = bwd_chunk or (8192 if not interpret else 1024)
    chunk = max(bwd_bv, min(_prev_pow2(chunk_req), (vocab // bwd_bv) * bwd_bv))
    chunk = (chunk // bwd_bv) * bwd_bv
    n_tiles = -(-vocab // bv)
    if v_splits is None:
        v_splits = 1 if interpret else max(1, min(n_tiles, math.ceil(2 * 132 / -(-n_eff // bn))))
    cfg = dataclasses.replace(
        cfg, block_n=bn, block_v=bv, block_d=bd, v_splits=int(v_splits), interpret=interpret,
        num_warps=num_warps or (8 if not interpret else 4), num_stages=num_stages or 3, bwd_block_v=bwd_bv, bwd_chunk=chunk,
        fwd_loop=fwd_loop, bwd_impl=bwd_impl,
    )
    return e, c, bias, t, cfg, pad_n


def linear_cross_entropy(
    embeddings: ArrayLike,
    classifier: ArrayLike,
    targets: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    softcap: float | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    return_lse: bool = False,
    shift: int = 0,
    filter_eps: float | str | None = None,
    impl: Literal["auto", "naive", "chunked", "pallas", "triton"] = "auto",
    block_n: int | None = None,
    block_v: int | None = None,
    block_d: int | None = None,
    v_splits: int | None = None,
    bwd_chunk: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    fwd_loop: Literal["nested", "flat"] = "nested",
    bwd_impl: Literal["pallas", "xla"] = "pallas",
    interpret: bool | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Cross-entropy of ``embeddings @ classifier.T`` against ``targets`` without materialising the logits.

    With ``E = embeddings`` ([..., D], flattened to N rows), ``C = classifier`` ([V, D]), bias ``b``, softcap
    ``s`` and label smoothing ``a``, per valid row (``t_i != ignore_index``)::

        z_iv  = s * tanh((<E_i, C_v> + b_v) / s)            (z = <E_i, C_v> + b_v without softcap)
        lse_i = log sum_v exp(z_iv)
        nll_i = lse_i - (1 - a) z_{i,t_i} - (a / V) sum_v z_iv  (+ z_loss * lse_i^2)

    ``reduction='mean'`` divides the sum by the number of valid rows; if there are none the loss is 0 with
    zero gradients (PyTorch and CCE return NaN there). ``'none'`` returns per-row values, 0 at ignored rows.
    ``shift=k`` scores position p against target p+k along the last target axis (causal LM), by shifting the
    targets only; the per-row outputs then have ``T - k`` positions. The log-sum-exp is returned in f32
    (differentiable, e.g. for a custom z-loss) when ``return_lse=True``; the loss has the embeddings' dtype.

    The forward streams vocabulary tiles with the online (max, sum) state and the backward recomputes the
    logits tile by tile (Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025,
    arXiv 2411.09009), so temporary memory does not grow with N*V. ``filter_eps`` (None by default, "auto" =
    ``finfo(dtype).eps / 32`` as in CCE) zeroes gradient tiles whose ``|softmax - onehot|`` is below the
    threshold everywhere; it changes the gradients (measured: up to ~2% relative error on near-uniform
    softmaxes), so it is opt-in. Out-of-range targets (not ``ignore_index``) are undefined behaviour: they
    contribute ``z_t = 0``.

    Args:
      embeddings: [..., D] float32/bfloat16/float16 hidden states.
      classifier: [V, D] output embedding (same dtype as ``embeddings``).
      targets: integer array of shape ``embeddings.shape[:-1]``.
      bias: optional [V] bias.
      ignore_index: target value whose rows are ignored.
      reduction: 'mean' (over valid rows), 'sum' or 'none'.
      softcap: logit soft-capping ``s > 0`` (Gemma 2 uses 30), or None.
      label_smoothing: ``a`` in [0, 1) (PyTorch semantics: target distribution (1-a) onehot + a/V).
      z_loss: weight ``w`` of the PaLM z-loss ``w * lse^2`` added per valid row.
      return_lse: also return the f32 log-sum-exp per row.
      shift: non-negative int, see above.
      filter_eps: None, 'auto' or a positive float (gradient filtering, opt-in).
      impl: 'naive' (materialised logits, reference), 'chunked' (pure JAX, custom_vjp), 'pallas' (Pallas
        kernels; interpret mode off-GPU, Pallas-Triton on GPU; smallest forward temp memory), 'triton'
        (jax-triton; raises, see below) or 'auto' (= 'chunked': it was the faster memory-light path in
        the H100 measurements, ``benchmarks/results/kernels_gpu_h100.md``).
      block_n, block_v, block_d: tile sizes (powers of two); ``block_v`` is also the chunked path's tile.
      v_splits: Pallas forward vocabulary splits (default: enough programs to fill the GPU).
      bwd_chunk: Pallas backward vocabulary super-chunk (G is [N, bwd_chunk]).
      num_warps, num_stages: Pallas-Triton compiler parameters.
      fwd_loop: Pallas forward loop structure: 'nested' (a D loop inside the vocabulary-tile loop) or
        'flat' (one loop over (tile, D slice) pairs, so the software pipeline does not drain between
        tiles); same values, a tuning choice measured by ``benchmarks/kernels_gpu.py``.
      bwd_impl: Pallas-path backward: 'pallas' (a kernel writes each [N, bwd_chunk] gradient tile in the
        input dtype, XLA runs the two GEMMs) or 'xla' (the chunked backward, ``bwd_chunk`` f32 tiles
        recomputed by XLA GEMMs; more temporary memory).
      interpret: Pallas interpret mode (default: True unless the default backend is a GPU).

    Returns:
      The loss (scalar, or per-row for 'none'), and the [...] f32 log-sum-exp if ``return_lse``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.kernels import linear_cross_entropy
      >>> e = jax.random.normal(jax.random.key(0), (8, 16))
      >>> c = jax.random.normal(jax.random.key(1), (100, 16))
      >>> t = jnp.arange(8)
      >>> loss = linear_cross_entropy(e, c, t, impl="chunked")
      >>> bool(jnp.isfinite(loss))
      True
    """
    # ---- argument validation (messages name the argument) -------------------------------------------
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    e = jnp.asarray(embeddings)
    c = jnp.asarray(classifier)
    t = jnp.asarray(targets)
    if e.ndim < 2:
        raise ValueError(f"embeddings must have shape [..., D] with rank >= 2, got shape {e.shape}")
    if c.ndim != 2:
        raise ValueError(f"classifier must have shape [V, D], got shape {c.shape}")
    if c.shape[1] != e.shape[-1]:
        raise ValueError(f"classifier D={c.shape[1]} does not match embeddings D={e.shape[-1]}")
    if c.shape[0] < 1:
        raise ValueError("classifier must have at least one row (V >= 1)")
    if e.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"embeddings must be float32, bfloat16 or float16, got {e.dtype}")
    if c.dtype != e.dtype:
        raise TypeError(f"classifier dtype {c.dtype} must equal embeddings dtype {e.dtype}")
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"targets must be an integer array, got dtype {t.dtype}")
    if t.shape != e.shape[:-1]:
        raise ValueError(f"targets shape {t.shape} must equal embeddings.shape[:-1] = {e.shape[:-1]}")
    b = None
    if bias is not None:
        b = jnp.asarray(bias)
        if b.shape != (c.shape[0],):
            raise ValueError(f"bias must have shape [V] = ({c.shape[0]},), got {b.shape}")
        if not jnp.issubdtype(b.dtype, jnp.floating):
            raise TypeError(f"bias must be floating point, got {b.dtype}")
    if softcap is not None and (isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or not softcap > 0):
        raise ValueError(f"softcap must be None or a positive float, got {softcap!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be a float in [0, 1), got {label_smoothing!r}")
    if isinstance(z_loss, bool) or not isinstance(z_loss, (int, float)) or not z_loss >= 0.0:
        raise ValueError(f"z_loss must be a non-negative float, got {z_loss!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
        raise ValueError(f"shift must be a non-negative int, got {shift!r}")
    if shift and shift >= t.shape[-1]:
        raise ValueError(f"shift={shift} must be smaller than the sequence length {t.shape[-1]}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    for name, val in (("block_n", block_n), ("block_v", block_v), ("block_d", block_d), ("bwd_chunk", bwd_chunk)):
        _check_block(name, val)
    if not isinstance(fwd_loop, str) or fwd_loop not in FWD_LOOPS:
        raise ValueError(f"fwd_loop must be one of {FWD_LOOPS}, got {fwd_loop!r}")
    if not isinstance(bwd_impl, str) or bwd_impl not in BWD_IMPLS:
        raise ValueError(f"bwd_impl must be one of {BWD_IMPLS}, got {bwd_impl!r}")
    if v_splits is not None and (isinstance(v_splits, bool) or not isinstance(v_splits, (int, np.integer)) or v_splits < 1):
        raise ValueError(f"v_splits must be a positive int, got {v_splits!r}")
    eps = resolve_filter_eps(filter_eps, e.dtype)

    if impl == "auto":
        # Measured on an H100 (benchmarks/results/kernels_gpu_h100.md): the chunked path (cuBLAS GEMMs,
        # block_v=8192) ran fwd+bwd 1.2-1.25x faster than the Pallas-Triton path at (8192, 4096, 32k/128k),
        # with temp memory still free of any N*V term; so 'auto' is 'chunked' on every backend.
        impl = "chunked"
    if impl == "triton":
        try:
            import jax_triton  # noqa: F401
        except Exception as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "impl='triton' needs the optional package jax-triton (Python >= 3.12, jax >= 0.11, pinned "
                "jax < 0.12); it is not importable here. Use impl='pallas', which lowers through Triton on GPU."
            ) from err
        raise NotImplementedError(  # pragma: no cover
            "impl='triton': raw jax-triton kernels are not shipped; impl='pallas' runs the same kernels "
            "through the Pallas-Triton lowering."
        )

    # ---- shift by targets only, flatten --------------------------------------------------------------
    lead = e.shape[:-1]
    t = t.astype(jnp.int32)
    if shift:
        pad = jnp.full(t.shape[:-1] + (shift,), ignore_index, jnp.int32)
        t = jnp.concatenate([t[..., shift:], pad], axis=-1)
    e2 = e.reshape(-1, e.shape[-1])
    t2 = t.reshape(-1)
    n = e2.shape[0]

    cfg = LinearCEConfig(softcap=None if softcap is None else float(softcap),
                         label_smoothing=float(label_smoothing), ignore_index=int(ignore_index), filter_eps=eps)
    if impl == "naive":
        nll, lse = naive_nll_lse(e2, c, b, t2, cfg)
    elif impl == "chunked":
        default_bv = 8192 if _backend() == "gpu" else 1024
        cfg = dataclasses.replace(cfg, block_v=int(block_v or default_bv))
        nll, lse = chunked_nll_lse(e2, c, b, t2, cfg)
    else:  # pallas
        if interpret is None:
            interpret = _backend() != "gpu"
        ep, cp, bp, tp, cfg, pad_n = _pallas_setup(e2, c, b, t2, cfg, bool(interpret), block_n, block_v,
                                                    block_d, v_splits, num_warps, num_stages, bwd_chunk,
                                                    fwd_loop, bwd_impl)
        if not interpret and c.shape[0] < 16:
            nll, lse = chunked_nll_lse(e2, c, b, t2, dataclasses.replace(cfg, block_v=c.shape[0]))
        else:
            nll, lse = pallas_nll_lse(ep, cp, bp, tp, cfg)
            if pad_n:
                nll, lse = nll[:n], lse[:n]

    valid = t2 != ignore_index
    per_row = nll
    if z_loss:
        per_row = per_row + jnp.where(valid, z_loss * lse * lse, 0.0)
    out_dtype = e.dtype
    if reduction == "mean":
        count = jnp.sum(valid.astype(jnp.float32))
        loss = (jnp.sum(per_row) / jnp.maximum(count, 1.0)).astype(out_dtype)
    elif reduction == "sum":
        loss = jnp.sum(per_row).astype(out_dtype)
    else:
        loss = per_row.reshape(lead).astype(out_dtype)
        if shift:
            loss = loss[..., : lead[-1] - shift]
    if not return_lse:
        return loss
    lse = lse.reshape(lead)
    if shift:
        lse = lse[..., : lead[-1] - shift]
    return loss, lse
