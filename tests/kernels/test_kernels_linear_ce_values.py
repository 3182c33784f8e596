"""Checks 1 (values and gradients, f32, awkward shapes) and 2 (bf16) of docs/design/kernels.md §5,
against a float64 oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kernels_oracle import make_data, ref_linear_ce, rel, split_knobs

from lossjax.kernels import linear_cross_entropy


def _run(impl, e, c, t, *, bias=None, cot=None, **kw):
    def f(e, c, b):
        out = linear_cross_entropy(e, c, t, bias=b, impl=impl, **split_knobs(impl, kw))
        if kw.get("reduction") == "none":
            return jnp.sum(out.astype(jnp.float32) * cot), out
        return out.astype(jnp.float32), out

    argnums = (0, 1, 2) if bias is not None else (0, 1)
    (val, out), grads = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))(e, c, bias)
    return out, grads


# (impl, N, D, V, block_v, softcap, reduction, bias, block_n)
CASES = [
    ("chunked", 37, 32, 777, 128, None, "mean", False, None),
    ("chunked", 192, 48, 1000, 256, 5.0, "sum", True, None),
    ("chunked", 64, 192, 4099, 256, None, "none", False, None),
    ("chunked", 37, 64, 1000, 128, 5.0, "mean", True, None),
    ("pallas", 37, 48, 777, 128, 5.0, "mean", True, 32),
    ("pallas", 192, 32, 1000, 256, None, "none", False, 64),
    ("pallas", 64, 64, 4099, 256, None, "sum", False, 64),
]


@pytest.mark.parametrize("impl,n,d,v,bv,softcap,reduction,use_bias,bn", CASES)
def test_values_and_grads_f32(impl, n, d, v, bv, softcap, reduction, use_bias, bn):
    e, c, t, b = make_data(n, d, v, seed=n + v)
    cot = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    bias = b if use_bias else None
    kw = dict(softcap=softcap, reduction=reduction, block_v=bv)
    if bn:
        kw["block_n"] = bn
    out, grads = _run(impl, e, c, t, bias=bias, cot=cot, **kw)
    loss64, _, de64, dc64, db64 = ref_linear_ce(e, c, t, bias=bias, softcap=softcap, reduction=reduction, cot=cot)
    assert out.dtype == jnp.float32
    assert rel(out, loss64) <= 1e-5
    assert rel(grads[0], de64) <= 1e-5
    assert rel(grads[1], dc64) <= 1e-5
    if use_bias:
        assert rel(grads[2], db64) <= 1e-5
    if reduction == "none":
        ignored = t == -100
        assert np.all(np.asarray(out)[ignored] == 0.0)
        assert np.all(np.asarray(grads[0])[ignored] == 0.0)


# (N, D, V, block_n, block_v, block_d, v_splits, softcap, smoothing, bias, dtype, bwd_impl)
FLAT_CASES = [
    (37, 48, 777, 32, 128, 16, 1, 5.0, 0.1, True, "float32", "pallas"),   # N, V not divisible; 3 D slices/tile
    (64, 64, 1000, 32, 128, 32, 3, None, 0.0, False, "float32", "xla"),   # 8 tiles over 3 splits: an empty slot
    (37, 48, 777, 32, 128, 16, 2, 5.0, 0.1, True, "float32", "xla"),      # XLA backward with bias and smoothing
    (64, 64, 1000, 32, 256, 64, 2, 30.0, 0.0, False, "bfloat16", "xla"),  # one D slice per tile
]


@pytest.mark.parametrize("n,d,v,bn,bv,bd,splits,softcap,smooth,use_bias,dtype,bwd", FLAT_CASES)
def test_flat_forward_loop_and_xla_backward_match_oracle(n, d, v, bn, bv, bd, splits, softcap, smooth, use_bias,
                                                         dtype, bwd):
    """``fwd_loop='flat'`` (one loop over (tile, D slice), epilogue under cond) is the same computation as
    the nested loop, and ``bwd_impl='xla'`` gives the same gradients as the float64 oracle."""
    e, c, t, b = make_data(n, d, v, seed=7 * n + v)
    dt = jnp.dtype(dtype)
    e_in, c_in = jnp.asarray(e, dt), jnp.asarray(c, dt)
    bias = jnp.asarray(b) if use_bias else None
    kw = dict(softcap=softcap, label_smoothing=smooth, z_loss=1e-3, return_lse=True, block_n=bn, block_v=bv,
              block_d=bd, v_splits=splits, bwd_impl=bwd, bwd_chunk=256)
    outs = {}
    for loop in ("flat", "nested"):
        def f(e, c, b, loop=loop):
            opts = split_knobs("pallas", dict(kw, fwd_loop=loop))
            loss, lse = linear_cross_entropy(e, c, t, bias=b, impl="pallas", **opts)
            return loss.astype(jnp.float32), lse

        argnums = (0, 1, 2) if use_bias else (0, 1)
        outs[loop] = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))(e_in, c_in, bias)
    (loss, lse), (de, dc, *db) = outs["flat"]
    e64, c64 = np.asarray(e_in, np.float32), np.asarray(c_in, np.float32)
    loss64, lse64, de64, dc64, db64 = ref_linear_ce(e64, c64, t, bias=bias, softcap=softcap, smooth=smooth,
                                                    z_loss=1e-3)
    if use_bias:
        assert rel(db[0], db64) <= 1e-5
    assert rel(lse, lse64) <= 1e-5
    tol = 1e-5 if dtype == "float32" else 2e-2
    assert rel(np.float32(loss), loss64) <= (1e-5 if dtype == "float32" else 4e-3)
    assert rel(np.asarray(de, np.float32), de64) <= tol and rel(np.asarray(dc, np.float32), dc64) <= tol
    (loss_n, lse_n), _ = outs["nested"]
    np.testing.assert_allclose(np.asarray(lse), np.asarray(lse_n), rtol=1e-6, atol=1e-6)


def test_naive_matches_oracle():
    e, c, t, b = make_data(37, 32, 777, seed=3)
    out, grads = _run("naive", e, c, t, bias=b, softcap=5.0)
    loss64, _, de64, dc64, db64 = ref_linear_ce(e, c, t, bias=b, softcap=5.0)
    assert rel(out, loss64) <= 1e-5 and rel(grads[0], de64) <= 1e-5 and rel(grads[2], db64) <= 1e-5


@pytest.mark.parametrize("impl", ["chunked", "pallas"])
def test_bf16_inputs(impl):
    e, c, t, _ = make_data(64, 64, 1000, seed=11)
    e16, c16 = jnp.asarray(e, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16)
    kw = dict(block_v=256, block_n=32) if impl == "pallas" else dict(block_v=256)

    def f(e, c):
        loss, lse = linear_cross_entropy(e, c, t, impl=impl, return_lse=True, **split_knobs(impl, kw))
        return loss.astype(jnp.float32), (loss, lse)

    (_, (loss, lse)), (de, dc) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(e16, c16)
    assert loss.dtype == jnp.bfloat16 and de.dtype == jnp.bfloat16 and dc.dtype == jnp.bfloat16
    assert lse.dtype == jnp.float32
    # reference on the same bf16-rounded inputs
    e32, c32 = np.asarray(e16, np.float32), np.asarray(c16, np.float32)
    loss64, lse64, de64, dc64, _ = ref_linear_ce(e32, c32, t)
    assert rel(lse, lse64) <= 1e-5  # lse is computed and returned in f32
    assert rel(np.float32(loss), loss64) <= 4e-3  # the loss is rounded to bf16 (2^-8 relative spacing)
    assert rel(jnp.asarray(loss, jnp.float32), jnp.asarray(jnp.asarray(loss64, jnp.bfloat16), jnp.float32)) <= 4e-3
    assert rel(np.asarray(de, np.float32), de64) <= 2e-2
    assert rel(np.asarray(dc, np.float32), dc64) <= 2e-2
