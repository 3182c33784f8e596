"""Compiled temp memory (``memory_analysis().temp_size_in_bytes``) of the linear-head family: the chunked
forward + backward of linear_ce_head, linear_kd_loss, linear_dpo_loss and linear_kto_loss does not grow with V,
while the materialised-logits versions hold at least one [N, V] f32 array."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from lossjax.kernels import ChunkedConfig, linear_ce_head, linear_dpo_loss, linear_kd_loss, linear_kto_loss

N, D, BV = 256, 32, 512
CFG = ChunkedConfig(block_v=BV)


def _temp(fn, *args):
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    if stats is None:
        pytest.skip("memory_analysis() unavailable on this backend")
    return stats.temp_size_in_bytes


def _sds(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _head(impl):
    def f(e, c, t):
        def g(e, c):
            return (lambda o: o.loss + jnp.sum(o.entropy))(
                    linear_ce_head(e, c, t, z_loss=1e-4, impl=impl, config=CFG if impl == "chunked" else None))
        return jax.value_and_grad(g, argnums=(0, 1))(e, c)
    return f


def _kd(impl):
    def f(es, cs, et, ct):
        def g(es, cs):
            return linear_kd_loss(es, cs, et, ct, divergence="jsd", impl=impl,
                                                  config=CFG if impl == "chunked" else None)
        return jax.value_and_grad(g, argnums=(0, 1))(es, cs)
    return f


def _dpo(impl):
    def f(e, c, y, ref):
        def g(e, c):
            return jnp.sum(linear_dpo_loss(e, c, y, ref_logps=ref, impl=impl,
                                                         config=CFG if impl == "chunked" else None))
        return jax.value_and_grad(g, argnums=(0, 1))(e, c)
    return f


def test_head_temp_flat_in_v():
    def args(v):
        return (_sds(N, D), _sds(v, D), _sds(N, dtype=jnp.int32))
    small, large = _temp(_head("chunked"), *args(4096)), _temp(_head("chunked"), *args(16384))
    assert small == large
    assert large <= 5 * N * BV * 4 + 2 * N * D * 4 + 64 * 1024  # a few [N, block_v] f32 tiles
    assert _temp(_head("naive"), *args(4096)) >= N * 4096 * 4


def test_kd_temp_flat_in_v():
    def args(v):
        return (_sds(N, D), _sds(v, D), _sds(N, 2 * D), _sds(v, 2 * D))
    small, large = _temp(_kd("chunked"), *args(4096)), _temp(_kd("chunked"), *args(16384))
    assert small == large
    assert large <= 6 * N * BV * 4 + 2 * N * D * 4 + 64 * 1024
    assert _temp(_kd("naive"), *args(4096)) >= 2 * N * 4096 * 4  # student and teacher logits


def test_dpo_temp_flat_in_v():
    def args(v):
        return (_sds(2, 4, N // 8, D), _sds(v, D), _sds(2, 4, N // 8, dtype=jnp.int32), _sds(2, 4))
    small, large = _temp(_dpo("chunked"), *args(4096)), _temp(_dpo("chunked"), *args(16384))
    assert small == large
    assert _temp(_dpo("naive"), *args(4096)) >= N * 4096 * 4


def _kto(impl):
    def f(e, c, y, ref, ke, ky, kref):
        des = jnp.arange(y.shape[0]) % 3 != 0

        def g(e, c):
            return jnp.sum(linear_kto_loss(e, c, y, des, ref_logps=ref, kl_embeddings=ke, kl_tokens=ky,
                                           ref_kl_logps=kref, impl=impl, config=CFG if impl == "chunked" else None))
        return jax.value_and_grad(g, argnums=(0, 1))(e, c)
    return f


def test_kto_temp_flat_in_v():
    def args(v):
        return (_sds(8, N // 8, D), _sds(v, D), _sds(8, N // 8, dtype=jnp.int32), _sds(8),
                _sds(8, N // 8, D), _sds(8, N // 8, dtype=jnp.int32), _sds(8))
    small, large = _temp(_kto("chunked"), *args(4096)), _temp(_kto("chunked"), *args(16384))
    assert small == large
    assert _temp(_kto("naive"), *args(4096)) >= N * 4096 * 4
