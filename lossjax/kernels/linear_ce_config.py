"""Tuning knobs of the linear cross-entropy backends: one frozen config object per backend.

The loss options (``softcap``, ``ignore_index``, ...) are arguments of
:func:`lossjax.kernels.linear_cross_entropy`; the knobs here change speed and memory, never the value
(up to float rounding). Pass one as ``config=``; ``None`` picks the defaults below.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import numpy as np

__all__ = ["ChunkedConfig", "PallasConfig", "FWD_LOOPS", "BWD_IMPLS", "device_core_count"]

FWD_LOOPS = ("nested", "flat")
BWD_IMPLS = ("pallas", "xla")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_pow2(name: str, value) -> None:
    if value is None:
        return
    if not _is_int(value) or value < 1 or (int(value) & (int(value) - 1)):
        raise ValueError(f"{name} must be a power of two (Pallas-Triton loads need power-of-two shapes), got {value!r}")


def _check_pos(name: str, value) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ChunkedConfig:
    """Knobs of ``impl='chunked'`` (pure JAX, ``lax.fori_loop`` over vocabulary tiles).

    Attributes:
      block_v: vocabulary tile; temp memory is about ``2 * N * block_v * 4`` bytes. None: 8192 on GPU
        (cuBLAS-sized GEMMs), 1024 elsewhere.
      filter_block: rows x columns granularity of the optional gradient filter (``filter_eps``).

    Example:
      >>> from lossjax.kernels import ChunkedConfig
      >>> ChunkedConfig(block_v=2048).block_v
      2048
    """

    block_v: int | None = None
    filter_block: int = 128

    def __post_init__(self):
        _check_pos("block_v", self.block_v)
        _check_pos("filter_block", self.filter_block)

    def resolved_block_v(self, backend: str) -> int:
        """``block_v`` or the backend default."""
        return int(self.block_v or (8192 if backend == "gpu" else 1024))


@dataclasses.dataclass(frozen=True)
class PallasConfig:
    """Knobs of ``impl='pallas'`` (Pallas kernels; interpret mode off-GPU, Pallas-Triton on GPU).

    Attributes:
      block_n, block_v, block_d: row, vocabulary and contraction tiles (powers of two; None: 128 x 256 x 64
        on GPU, the best of the H100 sweep in ``benchmarks/results/kernels_gpu_h100.md``).
      v_splits: forward vocabulary splits (an independent grid axis). None: about two programs per core of
        the device (``num_cores``).
      bwd_chunk: backward vocabulary super-chunk (G is [N, bwd_chunk]; power of two).
      num_warps, num_stages: Pallas-Triton compiler parameters.
      fwd_loop: 'nested' (a D loop inside the tile loop) or 'flat' (one loop over (tile, D slice) pairs).
      bwd_impl: 'pallas' (gradient-tile kernel + XLA GEMMs) or 'xla' (the chunked backward on
        ``bwd_chunk`` tiles; more temp memory).
      interpret: Pallas interpret mode; None: True unless the default backend is a GPU.
      num_cores: cores (SMs) used to size ``v_splits``; None: queried from the device
        (:func:`device_core_count`).

    Example:
      >>> from lossjax.kernels import PallasConfig
      >>> PallasConfig(block_n=64, fwd_loop="flat").fwd_loop
      'flat'
    """

    block_n: int | None = None
    block_v: int | None = None
    block_d: int | None = None
    v_splits: int | None = None
    bwd_chunk: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    fwd_loop: Literal["nested", "flat"] = "nested"
    bwd_impl: Literal["pallas", "xla"] = "pallas"
    interpret: bool | None = None
    num_cores: int | None = None

    def __post_init__(self):
        for name in ("block_n", "block_v", "block_d", "bwd_chunk"):
            _check_pow2(name, getattr(self, name))
        for name in ("v_splits", "num_warps", "num_stages", "num_cores"):
            _check_pos(name, getattr(self, name))
        if not isinstance(self.fwd_loop, str) or self.fwd_loop not in FWD_LOOPS:
            raise ValueError(f"fwd_loop must be one of {FWD_LOOPS}, got {self.fwd_loop!r}")
        if not isinstance(self.bwd_impl, str) or self.bwd_impl not in BWD_IMPLS:
            raise ValueError(f"bwd_impl must be one of {BWD_IMPLS}, got {self.bwd_impl!r}")
        if self.interpret is not None and not isinstance(self.interpret, bool):
            raise ValueError(f"interpret must be None or a bool, got {self.interpret!r}")


def device_core_count(default: int = 1) -> int:
    """Cores (GPU SMs) of the device being compiled for.

    Looks at the abstract mesh in context (e.g. an abstract H100 used to lower for CUDA on a CPU host),
    then at ``jax.devices()[0].core_count`` (set for GPUs); ``default`` when neither says.

    Example:
      >>> device_core_count(default=7) >= 1
      True
    """
    try:
        adev = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
        n = getattr(adev, "num_cores", None)
        if n:
            return int(n)
    except Exception:  # pragma: no cover - older jax
        pass
    n = getattr(jax.devices()[0], "core_count", None)
    return int(n) if n else int(default)
