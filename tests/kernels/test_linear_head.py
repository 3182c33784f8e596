"""linear_ce_head: every output (loss, z-loss, nll/logprob, lse, entropy, argmax, accuracy) and the
gradients of a loss that uses loss, entropy and logprob, against a float64 PyTorch oracle on materialised
logits, for 'naive', 'chunked' (awkward V, clamped last tile) and 'pallas' (interpret mode), plus bf16,
NaN propagation and argument errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kernels_oracle import rel
from _linear_head_oracle import head_ref

from lossjax.kernels import ChunkedConfig, PallasConfig, linear_ce_head, linear_cross_entropy

B, T, D, V = 3, 7, 12, 45  # V = 2 tiles of 16 + a clamped last tile
CFG = {"naive": None, "chunked": ChunkedConfig(block_v=16), "pallas": PallasConfig(block_n=16, block_v=16)}
OPTS = dict(temperature=1.7, softcap=4.0, z_loss=1e-3, shift=1)


def _data(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((B, T, D)).astype(dtype)
    c = (rng.standard_normal((V, D)) / 2).astype(dtype)
    b = (rng.standard_normal(V) * 0.5).astype(np.float32)
    t = rng.integers(0, V, (B, T)).astype(np.int32)
    t[0, 2] = t[2, 5] = -100
    t[1, 4] = int(np.argmax(e[1, 3].astype(np.float64) @ c.T.astype(np.float64) + b))  # one correct argmax
    w = rng.uniform(0.2, 2.0, (B, T)).astype(np.float32)
    cw = rng.uniform(0.5, 1.5, V).astype(np.float32)
    return e, c, b, t, w, cw


def _objective(impl, t, w, cw, **opts):
    def f(e, c, b):
        out = linear_ce_head(e, c, t, bias=b, weights=w, class_weights=cw, impl=impl, config=CFG[impl], **opts)
        obj = out.loss
        if out.entropy is not None:
            obj = obj + 0.3 * jnp.sum(out.entropy)
        return obj + 0.1 * jnp.sum(out.logprob), out

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


def test_pallas_interpret_matches_float64_nll_lse():
    e, c, b, t, w, cw = _data(seed=1)
    opts = dict(temperature=1.7, z_loss=1e-3, shift=1)  # pallas: temperature without softcap
    (_, out), (de, dc, db) = _objective("pallas", t, w, cw, **opts)(e, c, b)
    ref = head_ref(e, c, b, t, w=w, cw=cw, coef_ent=0.0, **opts)
    assert out.entropy is None and out.argmax is None and out.accuracy is None
    np.testing.assert_allclose(out.loss, ref["loss"], rtol=2e-5)
    np.testing.assert_allclose(out.lse, ref["lse"], rtol=2e-5)
    np.testing.assert_allclose(out.nll, ref["nll"], rtol=2e-5, atol=2e-6)
    for got, want in ((de, ref["de"]), (dc, ref["dc"]), (db, ref["db"])):
        assert rel(got, want) < 3e-5


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
    with pytest.raises(ValueError, match="softcap"):
        linear_ce_head(e, c, t, impl="pallas", softcap=3.0, temperature=2.0)
    with pytest.raises(ValueError, match="vocab_axis"):
        linear_ce_head(e, c, t, vocab_axis="model")  # no mesh with a 'model' axis
    with pytest.raises(ValueError, match="vocab_axis"):
        linear_ce_head(e, c, t, impl="pallas", vocab_axis="model")
