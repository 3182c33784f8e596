"""Memory-light linear cross-entropy (Cut Cross-Entropy): the public entry point.

``linear_cross_entropy`` = validate -> shift -> dispatch -> reduce:

* :func:`_validate` checks every argument (errors name it) and the label rule;
* :func:`_shift_targets` implements ``shift`` on the targets only;
* :func:`_dispatch` runs the per-row computation (:func:`_rows`) on one device, or per device under a
  mesh (:mod:`lossjax.kernels.linear_ce_sharded`: data-parallel rows, or vocab-parallel with
  ``vocab_axis``);
* :func:`_reduce` applies the label rule, the z-loss and the reduction.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.kernels.linear_ce_chunked import chunked_nll_lse
from lossjax.kernels.linear_ce_common import LinearCEConfig
from lossjax.kernels.linear_ce_config import ChunkedConfig, PallasConfig
from lossjax.kernels.linear_ce_pallas import pallas_rows
from lossjax.kernels.linear_ce_reference import naive_nll_lse
from lossjax.kernels.linear_ce_sharded import (
    data_parallel_rows,
    input_mesh,
    is_explicit,
    vocab_parallel_nll_lse,
    vocab_parallel_rows,
)
from lossjax.kernels.linear_ce_tpu import TpuConfig, tpu_rows, tpu_tiles
from lossjax.losses._core import check_labels

__all__ = ["linear_cross_entropy", "resolve_filter_eps", "IMPLS", "REDUCTIONS"]

IMPLS = ("auto", "naive", "chunked", "pallas", "tpu")
REDUCTIONS = ("mean", "sum", "none")
_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
# per-row flags: the row's target is ignore_index / a class / out of range (the label rule)
_IGNORED, _VALID, _BAD = 0, 1, 2


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


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Validated, static options of one call."""

    impl: str
    reduction: str
    z_loss: float
    return_lse: bool
    shift: int
    cfg: LinearCEConfig
    config: ChunkedConfig | PallasConfig | TpuConfig | None
    vocab_axis: str | None


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_labels(t, vocab: int, ignore_index: int, shift: int) -> None:
    """Outside ``jit`` (concrete targets): any target other than ``ignore_index`` outside [0, V) raises."""
    if isinstance(t, jax.core.Tracer) or not getattr(t, "is_fully_addressable", True):
        return
    # the package's label rule (docs/conventions.md), the same check every loss runs
    check_labels(np.asarray(t)[..., shift:], vocab, ignore_index=ignore_index, name="targets")


def _auto_impl(e, c, config, vocab_axis) -> str:
    """'tpu' on a TPU backend when the Mosaic-TPU kernels get tiles of at least 256 x 256 within the VMEM
    budget (about the ridge point of v4/v5e/v5p, docs/design/kernels_tpu.md) and neither ``vocab_axis``
    nor a :class:`ChunkedConfig` asks for the chunked path; 'chunked' otherwise."""
    if jax.default_backend() != "tpu" or vocab_axis is not None or isinstance(config, ChunkedConfig):
        return "chunked"
    n = int(np.prod(e.shape[:-1]))
    tconf = config if isinstance(config, TpuConfig) else TpuConfig()
    tiles = tpu_tiles(n, c.shape[0], e.shape[-1], e.dtype.itemsize, tconf, on_tpu=True)
    return "tpu" if tiles.bn >= min(256, n) and tiles.bv >= min(256, c.shape[0]) else "chunked"


def _validate(embeddings, classifier, targets, bias, *, ignore_index, reduction, softcap, label_smoothing,
              z_loss, return_lse, shift, filter_eps, impl, config, vocab_axis):
    if not isinstance(impl, str) or impl not in IMPLS:
        if impl == "triton":
            raise ValueError("impl='triton' was removed: impl='pallas' runs the same kernels through the "
                             "Pallas-Triton lowering on GPU")
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    e = jnp.asarray(embeddings)
    c = jnp.asarray(classifier)
    t = targets if isinstance(targets, jax.Array) else jnp.asarray(targets)
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
    if softcap is not None and not (_is_real(softcap) and softcap > 0):
        raise ValueError(f"softcap must be None or a positive float, got {softcap!r}")
    if not (_is_real(label_smoothing) and 0.0 <= label_smoothing < 1.0):
        raise ValueError(f"label_smoothing must be a float in [0, 1), got {label_smoothing!r}")
    if not (_is_real(z_loss) and z_loss >= 0.0):
        raise ValueError(f"z_loss must be a non-negative float, got {z_loss!r}")
    if not _is_int(shift) or shift < 0:
        raise ValueError(f"shift must be a non-negative int, got {shift!r}")
    if shift and shift >= t.shape[-1]:
        raise ValueError(f"shift={shift} must be smaller than the sequence length {t.shape[-1]}")
    if not _is_int(ignore_index):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if impl == "auto":
        # Measured on an H100 (benchmarks/results/kernels_gpu_h100.md): the chunked path (cuBLAS GEMMs,
        # block_v=8192) ran fwd+bwd 1.2-1.25x faster than the Pallas-Triton path at (8192, 4096, 32k/128k),
        # with temp memory still free of any N*V term; so 'auto' is 'chunked' on GPU and CPU. On a TPU it is
        # the Mosaic-TPU kernels (docs/design/kernels_tpu.md; unmeasured) when their tiles fit VMEM.
        impl = _auto_impl(e, c, config, vocab_axis)
    elif impl == "pallas" and config is None and jax.default_backend() == "tpu":
        impl = "tpu"  # the Triton-layout kernels would run in interpret mode there
    want = {"chunked": ChunkedConfig, "pallas": PallasConfig, "tpu": TpuConfig}.get(impl)
    if config is not None and (want is None or not isinstance(config, want)):
        raise TypeError(f"config for impl={impl!r} must be {want.__name__ if want else 'None'}, "
                        f"got {type(config).__name__}")
    if vocab_axis is not None:
        if not isinstance(vocab_axis, str):
            raise TypeError(f"vocab_axis must be a mesh axis name (str) or None, got {vocab_axis!r}")
        if impl != "chunked":
            raise ValueError(f"vocab_axis needs impl='chunked' (or 'auto'), got impl={impl!r}")
    eps = resolve_filter_eps(filter_eps, e.dtype)
    if eps is not None and vocab_axis is not None:
        raise ValueError("filter_eps is not supported with vocab_axis (the vocab-parallel path is exact)")
    _check_labels(t, c.shape[0], int(ignore_index), int(shift))
    cfg = LinearCEConfig(softcap=None if softcap is None else float(softcap),
                         label_smoothing=float(label_smoothing), ignore_index=int(ignore_index), filter_eps=eps)
    plan = _Plan(impl=impl, reduction=reduction, z_loss=float(z_loss), return_lse=bool(return_lse),
                 shift=int(shift), cfg=cfg, config=config, vocab_axis=vocab_axis)
    return e, c, t.astype(jnp.int32), b, plan


def _shift_targets(t: jax.Array, shift: int, ignore_index: int) -> jax.Array:
    """Targets of position p become those of p + shift; the last ``shift`` positions are ignored."""
    if not shift:
        return t
    pad = jnp.full(t.shape[:-1] + (shift,), ignore_index, t.dtype)
    return jnp.concatenate([t[..., shift:], pad], axis=-1)


def _nll_lse(e2, c, b, t2, plan: _Plan):
    """Per-row (nll, lse) of flattened rows on one device (or one device's shard)."""
    cfg = plan.cfg
    gpu = jax.default_backend() == "gpu"
    if plan.impl == "naive":
        return naive_nll_lse(e2, c, b, t2, cfg)
    if plan.impl == "chunked":
        conf = plan.config or ChunkedConfig()
        cfg = dataclasses.replace(cfg, block_v=conf.resolved_block_v("gpu" if gpu else "cpu"),
                                  filter_block=conf.filter_block)
        return chunked_nll_lse(e2, c, b, t2, cfg)
    if plan.impl == "tpu":
        return tpu_rows(e2, c, b, t2, cfg, plan.config or TpuConfig())
    return pallas_rows(e2, c, b, t2, cfg, plan.config or PallasConfig(), gpu)


def _rows(e, c, b, t, *, plan: _Plan, vocab: int, nll_lse=None):
    """Shift, flatten, compute per-row (nll, lse, flag), restore the lead shape and drop shifted positions."""
    lead = e.shape[:-1]
    t = _shift_targets(t, plan.shift, plan.cfg.ignore_index)
    e2 = e.reshape(-1, e.shape[-1])
    t2 = t.reshape(-1)
    nll, lse = (nll_lse or functools.partial(_nll_lse, plan=plan))(e2, c, b, t2)
    valid = t2 != plan.cfg.ignore_index
    bad = jnp.logical_and(valid, jnp.logical_or(t2 < 0, t2 >= vocab))
    flag = jnp.where(bad, _BAD, jnp.where(valid, _VALID, _IGNORED)).astype(jnp.int8)
    outs = tuple(x.reshape(lead) for x in (nll, lse, flag))
    if plan.shift:
        outs = tuple(x[..., : lead[-1] - plan.shift] for x in outs)
    return outs


def _dispatch(e, c, b, t, plan: _Plan):
    """One device, data-parallel rows (Explicit meshes), or vocab-parallel (``vocab_axis``)."""
    vocab = c.shape[0]
    rows = functools.partial(_rows, plan=plan, vocab=vocab)
    if plan.vocab_axis is not None:
        mesh = input_mesh(c, e, t, min_size=1)
        if mesh is None or plan.vocab_axis not in mesh.axis_names:
            names = None if mesh is None else mesh.axis_names
            raise ValueError(f"vocab_axis={plan.vocab_axis!r} is not an axis of the inputs' mesh ({names}); "
                             "shard the inputs on a mesh or call under jax.set_mesh(mesh)")
        cfg = dataclasses.replace(plan.cfg, block_v=(plan.config or ChunkedConfig()).resolved_block_v(
            jax.default_backend()))
        local = functools.partial(vocab_parallel_nll_lse, cfg=cfg, axis_name=plan.vocab_axis, vocab=vocab)
        return vocab_parallel_rows(functools.partial(rows, nll_lse=local), mesh, plan.vocab_axis, e, c, b, t,
                                   unshard_last=bool(plan.shift))
    mesh = input_mesh(c, e, t, b)
    # Pallas kernels are opaque custom calls to the partitioner (it would replicate their operands): give
    # them per-device rows on Auto meshes too
    if mesh is not None and (is_explicit(mesh) or plan.impl in ("pallas", "tpu")):
        return data_parallel_rows(rows, mesh, e, c, b, t, unshard_last=bool(plan.shift),
                                  check_vma=plan.impl not in ("pallas", "tpu"))
    return rows(e, c, b, t)  # single device, or an Auto mesh: the compiler partitions the program


def _reduce(nll, lse, flag, plan: _Plan, out_dtype):
    """Label rule (out-of-range targets give NaN value and gradient), z-loss, reduction."""
    per_row = nll * jnp.where(flag == _BAD, jnp.nan, 1.0)
    valid = flag != _IGNORED
    if plan.z_loss:
        per_row = per_row + jnp.where(valid, plan.z_loss * lse * lse, 0.0)
    if plan.reduction == "mean":
        count = jnp.sum(valid.astype(jnp.float32))
        loss = (jnp.sum(per_row) / jnp.maximum(count, 1.0)).astype(out_dtype)
    elif plan.reduction == "sum":
        loss = jnp.sum(per_row).astype(out_dtype)
    else:
        loss = per_row.astype(out_dtype)
    return (loss, lse) if plan.return_lse else loss


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
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | TpuConfig | None = None,
    vocab_axis: str | None = None,
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

    Labels: ``ignore_index`` (default -100, the PyTorch convention) masks a row exactly like a where-mask;
    any other target outside ``[0, V)`` is an error: with concrete targets (outside ``jit``) a
    ``ValueError`` naming ``targets``, under ``jit`` a NaN loss and NaN gradients for that row (so it never
    silently becomes a valid class).

    The forward streams vocabulary tiles with the online (max, sum) state and the backward recomputes the
    logits tile by tile (Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025,
    arXiv 2411.09009, Sec. 4), so temporary memory does not grow with N*V. ``filter_eps`` (None by default,
    "auto" = ``finfo(dtype).eps / 32`` as in CCE) zeroes gradient tiles whose ``|softmax - onehot|`` is
    below the threshold everywhere; it changes the gradients (measured: up to ~2% relative error on
    near-uniform softmaxes), so it is opt-in.

    Meshes: inside ``jit`` with sharded inputs, on Auto meshes the compiler partitions the computation; on
    Explicit meshes (``jax.make_mesh``'s default), and for 'pallas' on any mesh, each device computes the
    losses of its own rows (``shard_map``), with the classifier gathered along any axis it is sharded over
    (FSDP). With
    ``vocab_axis='model'`` the classifier is split over its vocabulary along that mesh axis and is never
    gathered (the Megatron-style parallel cross-entropy, Shoeybi et al., arXiv 1909.08053, Sec. 3): each
    device forms logits for its vocabulary shard only, the row max, sum of exponentials and target logit
    are combined with ``pmax``/``psum``, and ``dC`` keeps the classifier's sharding. A V that the axis size
    does not divide is padded and masked (C is then copied once; choose V divisible to avoid it). See the
    README section "Scaling out" and ``examples/sharded_lm_step.py``.

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
      filter_eps: None, 'auto' or a positive float (gradient filtering, opt-in; not with ``vocab_axis``).
      impl: 'naive' (materialised logits, reference), 'chunked' (pure JAX, custom_vjp), 'pallas' (Pallas
        kernels; interpret mode off-GPU, Pallas-Triton on GPU; smallest forward temp memory; on a TPU
        without a ``config`` it means 'tpu'), 'tpu' (Pallas Mosaic-TPU kernels, interpret mode off-TPU;
        ``docs/design/kernels_tpu.md``) or 'auto' (= 'chunked' on GPU and CPU: it was the faster
        memory-light path in the H100 measurements, ``benchmarks/results/kernels_gpu_h100.md``; = 'tpu' on
        a TPU unless ``vocab_axis`` or a :class:`ChunkedConfig` is given or VMEM forces tiles below
        256 x 256, e.g. D >= 4096 in bf16 on a v4).
      config: tuning knobs of the backend: :class:`ChunkedConfig` for 'chunked' / 'auto' (also used by the
        vocab-parallel path), :class:`PallasConfig` for 'pallas', :class:`TpuConfig` for 'tpu', None for
        the defaults.
      vocab_axis: mesh axis to split the classifier's vocabulary over (vocab-parallel path; impl 'chunked'
        or 'auto'), or None.

    Returns:
      The loss (scalar, or per-row for 'none'), and the [...] f32 log-sum-exp if ``return_lse``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.kernels import ChunkedConfig, linear_cross_entropy
      >>> e = jax.random.normal(jax.random.key(0), (8, 16))
      >>> c = jax.random.normal(jax.random.key(1), (100, 16))
      >>> t = jnp.arange(8)
      >>> loss = linear_cross_entropy(e, c, t, config=ChunkedConfig(block_v=32))
      >>> bool(jnp.isfinite(loss))
      True

    Vocab-parallel example (any mesh with a 'model' axis; on one device it is a 1-device mesh)::

      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((1, 1), ("data", "model"))
      >>> c_sharded = jax.device_put(c, NamedSharding(mesh, P("model", None)))
      >>> e_sharded = jax.device_put(e, NamedSharding(mesh, P("data", None)))
      >>> f = jax.jit(jax.value_and_grad(
      ...     lambda e, c: linear_cross_entropy(e, c, t, vocab_axis="model"), argnums=(0, 1)))
      >>> loss_vp, (de, dc) = f(e_sharded, c_sharded)
      >>> bool(jnp.allclose(loss_vp, loss, rtol=1e-5)), dc.sharding.spec == P("model", None)
      (True, True)
    """
    e, c, t, b, plan = _validate(
        embeddings, classifier, targets, bias, ignore_index=ignore_index, reduction=reduction, softcap=softcap,
        label_smoothing=label_smoothing, z_loss=z_loss, return_lse=return_lse, shift=shift,
        filter_eps=filter_eps, impl=impl, config=config, vocab_axis=vocab_axis)
    nll, lse, flag = _dispatch(e, c, b, t, plan)
    return _reduce(nll, lse, flag, plan, e.dtype)
