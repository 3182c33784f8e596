"""linear_ce_head: every output (loss, z-loss, nll/logprob, lse, entropy, argmax, accuracy) and the
gradients of a loss that uses loss, entropy and logprob, against a float64 PyTorch oracle on materialised
logits, for 'naive', 'chunked' (awkward V, clamped last tile), 'pallas' (interpret mode: two vocabulary
splits, clamped row and vocabulary tiles) and 'tpu' (TPU interpret mode: edge row and vocabulary blocks),
with exact argmax ties across tiles / splits (first index wins), plus bf16, NaN propagation and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kernels_oracle import rel
from _linear_head_oracle import head_ref
from test_kernels_lowering import _lower as _lower_cuda

from lossjax.kernels import ChunkedConfig, PallasConfig, TpuConfig, linear_ce_head, linear_cross_entropy

B, T, D, V = 3, 7, 12, 45  # V = 2 tiles of 16 + a clamped last tile
CFG = {"naive": None, "chunked": ChunkedConfig(block_v=16),
       "pallas": PallasConfig(block_n=16, block_v=16, v_splits=2),  # 21 rows: a clamped row tile
       "tpu": TpuConfig(block_n=8, block_v=128)}  # V = 150 there: a full and an edge vocabulary block
OPTS = dict(temperature=1.7, softcap=4.0, z_loss=1e-3, shift=1)


def _data(dtype=np.float32, seed=0, vocab=V, tie=None):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((B, T, D)).astype(dtype)
    c = (rng.standard_normal((vocab, D)) / 2).astype(dtype)
    b = (rng.standard_normal(vocab) * 0.5).astype(np.float32)
    if tie is not None:  # class 7 and the classes `tie` (other tiles / splits) share a winning logit on two rows
        e[2, 1] = e[0, 4]
        for k in (7, *tie):
            c[k], b[k] = e[0, 4] / 2, b[7]
    t = rng.integers(0, vocab, (B, T)).astype(np.int32)
    t[0, 2] = t[2, 5] = -100
    t[1, 4] = int(np.argmax(e[1, 3].astype(np.float64) @ c.T.astype(np.float64) + b))  # one correct argmax
    w = rng.uniform(0.2, 2.0, (B, T)).astype(np.float32)
    cw = rng.uniform(0.5, 1.5, vocab).astype(np.float32)
    return e, c, b, t, w, cw


def _objective(impl, t, w, cw, **opts):
    def f(e, c, b):
        out = linear_ce_head(e, c, t, bias=b, weights=w, class_weights=cw, impl=impl, config=CFG[impl], **opts)
        return out.loss + 0.3 * jnp.sum(out.entropy) + 0.1 * jnp.sum(out.logprob), out

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))


@pytest.mark.parametrize("impl", ["naive", "chunked"])
def test_outputs_and_grads_match_float64(impl):
    e, c, b, t, w, cw = _data()
    (_, out), (de, dc, db) = _objective(impl, t, w, cw, **OPTS)(e, c, b)
    ref = head_ref(e, c, b, t, w=w, cw=cw, **OPTS)
    assert out.nll.shape == (B, T - 1)
    np.testing.assert_allclose(out.loss, ref["loss"], rtol=2e-5)
    np.testing.assert_allclose(out.z_loss, ref["z_loss"], rtol=2e-5)
    for k in ("nll", "lse", "entropy"):
        np.testing.assert_allclose(getattr(out, k), ref[k], rtol=2e-5, atol=2e-6, err_msg=k)
    np.testing.assert_allclose(out.logprob, -ref["nll"], rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(out.argmax, ref["argmax"])
    np.testing.assert_array_equal(out.correct, ref["correct"])
    assert ref["correct"].any() and not ref["correct"].all()  # the accuracy test can fail both ways
    np.testing.assert_allclose(out.accuracy, ref["accuracy"], rtol=1e-6)
    for got, want in ((de, ref["de"]), (dc, ref["dc"]), (db, ref["db"])):
        assert rel(got, want) < 3e-5


# pallas: 7 and 20 in two tiles of split 0, 40 in split 1; tpu: 7 and 140 in two vocabulary blocks
@pytest.mark.parametrize("impl, vocab, tie", [("pallas", V, (20, 40)), ("tpu", 150, (140,))])
def test_kernel_impls_match_float64_with_ties(impl, vocab, tie):
    e, c, b, t, w, cw = _data(seed=1, vocab=vocab, tie=tie)
    (_, out), (de, dc, db) = _objective(impl, t, w, cw, **OPTS)(e, c, b)
    ref = head_ref(e, c, b, t, w=w, cw=cw, **OPTS)
    assert ref["argmax"][0, 4] == ref["argmax"][2, 1] == 7  # the tie is real and resolved to the first index
    np.testing.assert_allclose(out.loss, ref["loss"], rtol=2e-5)
    for k in ("nll", "lse", "entropy"):
        np.testing.assert_allclose(getattr(out, k), ref[k], rtol=2e-5, atol=2e-6, err_msg=k)
    np.testing.assert_array_equal(out.argmax, ref["argmax"])
    np.testing.assert_array_equal(out.correct, ref["correct"])
    assert ref["correct"].any() and not ref["correct"].all()
    np.testing.assert_allclose(out.accuracy, ref["accuracy"], rtol=1e-6)
    for got, want in ((de, ref["de"]), (dc, ref["dc"]), (db, ref["db"])):  # loss + entropy + logprob
        assert rel(got, want) < 3e-5


def test_pallas_bf16_matches_chunked():
    e, c, b, t, _, _ = _data(seed=4)
    e, c = jnp.asarray(e, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16)
    outs = jax.jit(lambda e, c: [linear_ce_head(e, c, t, bias=b, impl=impl, config=CFG[impl], temperature=0.8)
                                 for impl in ("pallas", "chunked")])(e, c)
    for k in ("loss", "nll", "lse", "entropy"):
        np.testing.assert_allclose(np.asarray(getattr(outs[0], k), np.float32),
                                   np.asarray(getattr(outs[1], k), np.float32), rtol=1e-5, atol=1e-5, err_msg=k)
    np.testing.assert_array_equal(outs[0].argmax, outs[1].argmax)


def test_plain_head_equals_linear_cross_entropy_and_bf16():
    e, c, b, t, _, _ = _data(jnp.bfloat16, seed=2)
    e, c = jnp.asarray(e, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16)
    f = jax.jit(lambda e, c: linear_ce_head(e, c, t, config=CFG["chunked"]))
    out = f(e, c)
    assert out.loss.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(out.loss), float(linear_cross_entropy(e, c, t, config=CFG["chunked"])),
                               rtol=1e-2)
    ref = head_ref(np.asarray(e, np.float32), np.asarray(c, np.float32), np.zeros(V), t)
    np.testing.assert_allclose(out.nll, ref["nll"], rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(out.entropy, ref["entropy"], rtol=2e-2, atol=2e-2)
    assert (np.asarray(out.argmax) == ref["argmax"]).mean() > 0.9  # bf16 ties may flip a few


def test_nan_in_nan_out_and_errors():
    e, c, b, t, w, _ = _data(seed=3)
    e = e.copy()
    e[0, 0, 3] = np.nan
    out = linear_ce_head(e, c, t, config=CFG["chunked"], reduction="none")
    assert np.isnan(out.nll[0, 0]) and np.isnan(out.entropy[0, 0]) and np.isfinite(out.nll[1]).all()
    assert np.isnan(out.loss[0, 0])
    with pytest.raises(ValueError, match="temperature"):
        linear_ce_head(e, c, t, temperature=0.0)
    with pytest.raises(ValueError, match="weights"):
        linear_ce_head(e, c, t, weights=w[:, :3])
    with pytest.raises(TypeError, match="class_weights"):
        linear_ce_head(e, c, t, class_weights=np.ones(V, np.int32))
    with pytest.raises(ValueError, match="targets"):
        linear_ce_head(e, c, np.full((B, T), V, np.int32))
    with pytest.raises(ValueError, match="vocab_axis"):
        linear_ce_head(e, c, t, vocab_axis="model")  # no mesh with a 'model' axis
    with pytest.raises(ValueError, match="vocab_axis"):
        linear_ce_head(e, c, t, impl="pallas", vocab_axis="model")


def test_kernel_head_lowers_to_triton():
    # the statistics kernel (entropy accumulator, running argmax, temperature + softcap) through the
    # Pallas-Triton lowering for an abstract H100; Gemma-2-like D, N and V not multiples of the tiles
    s = jax.ShapeDtypeStruct
    e, c, t = s((1000, 2304), jnp.bfloat16), s((5000, 2304), jnp.bfloat16), s((1000,), jnp.int32)

    def f(e, c, t):
        def g(e, c):
            o = linear_ce_head(e, c, t, impl="pallas", softcap=30.0, temperature=1.5,
                               config=PallasConfig(interpret=False, fwd_loop="flat"))
            return o.loss.astype(jnp.float32) + jnp.sum(o.entropy) + o.accuracy
        return jax.value_and_grad(g, argnums=(0, 1))(e, c)

    text = _lower_cuda(f, e, c, t)
    assert "lossjax_cce_head_fwd" in text and "triton" in text.lower()
