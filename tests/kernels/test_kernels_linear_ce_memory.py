"""docs/design/kernels.md §5 checks 6-7: compiled temp memory
(``memory_analysis().temp_size_in_bytes``) of each path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _kernels_oracle import split_knobs

from lossjax.kernels import linear_cross_entropy

KIB = 1024
MIB = 1024 * KIB


def _temp(fn, *shapes):
    comp = jax.jit(fn).lower(*shapes).compile()
    stats = comp.memory_analysis()
    if stats is None:
        pytest.skip("memory_analysis() unavailable on this backend")
    return stats.temp_size_in_bytes


def _sds(n, d, v, dtype=jnp.float32):
    return (jax.ShapeDtypeStruct((n, d), dtype), jax.ShapeDtypeStruct((v, d), dtype),
            jax.ShapeDtypeStruct((n,), jnp.int32))


def _fwd(impl, **kw):
    return lambda e, c, t: linear_cross_entropy(e, c, t, impl=impl, **split_knobs(impl, kw))


def _fwd_bwd(impl, **kw):
    return lambda e, c, t: jax.value_and_grad(
        lambda e, c: linear_cross_entropy(e, c, t, impl=impl, **split_knobs(impl, kw)).astype(jnp.float32),
        argnums=(0, 1))(e, c)


def test_chunked_temp_is_flat_in_v_and_bounded():
    n, d, bv = 1024, 64, 1024
    bound = 2 * n * bv * 4 + 64 * KIB
    f8 = _temp(_fwd("chunked", block_v=bv), *_sds(n, d, 8192))
    f32k = _temp(_fwd("chunked", block_v=bv), *_sds(n, d, 32768))
    assert f8 == f32k
    assert f8 <= bound
    b8 = _temp(_fwd_bwd("chunked", block_v=bv), *_sds(n, d, 8192))
    b32k = _temp(_fwd_bwd("chunked", block_v=bv), *_sds(n, d, 32768))
    assert b8 == b32k
    assert b8 <= bound + n * d * 4  # + the f32 dE accumulator
    # bf16 inputs: the design allows f32 copies of the gradients (dE, dC); XLA:CPU also upcasts the bf16
    # operands of its dots (an f32 copy of E), so allow n*d*4 more. No N*V term: the growth from V=8192 to
    # V=32768 is at most the f32 dC-sized term.
    bb = _temp(_fwd_bwd("chunked", block_v=bv), *_sds(n, d, 32768, jnp.bfloat16))
    assert bb <= bound + 2 * n * d * 4 + 32768 * d * 4
    bb8 = _temp(_fwd_bwd("chunked", block_v=bv), *_sds(n, d, 8192, jnp.bfloat16))
    assert bb - bb8 <= (32768 - 8192) * d * 4 + 64 * KIB


def test_naive_temp_detects_materialised_logits():
    n, d, v = 1024, 64, 8192
    assert _temp(_fwd("naive"), *_sds(n, d, v)) >= n * v * 4
    assert _temp(_fwd_bwd("naive"), *_sds(n, d, v)) >= n * v * 4


def test_pallas_interpret_temp_has_no_nv_term():
    d, v = 64, 8192
    kw = dict(block_n=128, block_v=512)
    small = _temp(_fwd("pallas", **kw), *_sds(1024, d, v))
    large = _temp(_fwd("pallas", **kw), *_sds(4096, d, v))
    assert large - small <= 0.1 * 3072 * v * 4
    c_bytes, e_bytes = v * d * 4, 4096 * d * 4
    assert large <= 4.5 * c_bytes + 4 * e_bytes + MIB
    fb = _temp(_fwd_bwd("pallas", **kw), *_sds(4096, d, v))
    assert fb < 4096 * v * 4  # well under one copy of the f32 logits (128 MiB here)
    # the XLA-GEMM backward holds [N, bwd_chunk] f32 tiles: bounded by the chunk, not by V
    fb_xla = _temp(_fwd_bwd("pallas", bwd_impl="xla", bwd_chunk=1024, **kw), *_sds(4096, d, v))
    assert fb_xla < 4096 * 1024 * 4 * 4 + 4 * e_bytes + 2 * c_bytes
