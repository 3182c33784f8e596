"""linear_kd_loss: the four divergences (chunked and naive) against a float64 PyTorch oracle on
materialised logits (values, student gradients, zero teacher gradients, padding mask, awkward V, different
hidden sizes), 'kd' against lossjax.losses.kd_loss, bf16, NaN propagation and argument errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kernels_oracle import rel
from _linear_head_oracle import kd_ref

from lossjax.kernels import DIVERGENCES, ChunkedConfig, linear_kd_loss
from lossjax.losses import kd_loss

B, T, DS, DT, V = 2, 5, 8, 12, 37  # V = 2 tiles of 16 + a clamped last tile
CFG = ChunkedConfig(block_v=16)
TEMP, BETA = 2.0, 0.3


def _data(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    es = rng.standard_normal((B, T, DS)).astype(dtype)
    cs = (rng.standard_normal((V, DS)) / 2).astype(dtype)
    bs = (rng.standard_normal(V) * 0.3).astype(np.float32)
    et = rng.standard_normal((B, T, DT)).astype(dtype)
    ct = (rng.standard_normal((V, DT)) / 2).astype(dtype)
    bt = (rng.standard_normal(V) * 0.3).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[0, 3:] = False  # padding
    return es, cs, bs, et, ct, bt, mask


@pytest.fixture(scope="module")
def all_divergences():
    """One compiled program: value and gradients (student and teacher) of every divergence, both impls."""
    *_, mask = _data()

    def one(impl, div, es, cs, bs, et, ct, bt):
        return jax.value_and_grad(
            lambda *a: linear_kd_loss(a[0], a[1], a[3], a[4], student_bias=a[2], teacher_bias=a[5], mask=mask,
                                      divergence=div, temperature=TEMP, beta=BETA, impl=impl, config=CFG),
            argnums=(0, 1, 2, 3, 4, 5))(es, cs, bs, et, ct, bt)

    f = jax.jit(lambda *a: {(i, d): one(i, d, *a) for i in ("naive", "chunked") for d in DIVERGENCES})
    return f(*_data()[:6])


@pytest.mark.parametrize("impl", ["naive", "chunked"])
@pytest.mark.parametrize("div", DIVERGENCES)
def test_value_and_student_grads_match_float64(all_divergences, impl, div):
    es, cs, bs, et, ct, bt, mask = _data()
    val, grads = all_divergences[(impl, div)]
    want, wgrads = kd_ref(es, cs, bs, et, ct, bt, mask, div, TEMP, BETA)
    np.testing.assert_allclose(val, want, rtol=2e-5)
    for got, ref in zip(grads[:3], wgrads):
        assert rel(got, ref) < 5e-5, div
    for g in grads[3:]:
        assert not np.any(np.asarray(g))  # teacher under stop_gradient
    assert not np.any(np.asarray(grads[0])[0, 3:])  # padded rows get no gradient


def test_kd_equals_kd_loss_and_reduction_none():
    es, cs, bs, et, ct, bt, mask = _data(seed=1)
    def both(es, cs, bs, et, ct, bt):
        kw = dict(student_bias=bs, teacher_bias=bt, mask=mask, temperature=4.0, config=CFG)
        return (linear_kd_loss(es, cs, et, ct, reduction="none", **kw),
                linear_kd_loss(es, cs, et, ct, reduction="sum", **kw))

    got, tot = jax.jit(both)(es, cs, bs, et, ct, bt)
    want = kd_loss(es @ cs.T + bs, et @ ct.T + bt, temperature=4.0, where=mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tot, np.sum(want), rtol=1e-4)


def test_bf16_and_nan():
    es, cs, bs, et, ct, bt, mask = _data(seed=2)
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (es, cs, et, ct)]
    f = jax.jit(jax.value_and_grad(lambda e, c: linear_kd_loss(e, c, bf[2], bf[3], mask=mask, divergence="jsd",
                                                               config=CFG), argnums=(0, 1)))
    val, (de, dc) = f(bf[0], bf[1])
    assert de.dtype == jnp.bfloat16
    f32 = [np.asarray(x, np.float32) for x in bf]
    want, (wde, wdc, _) = kd_ref(f32[0], f32[1], np.zeros(V), f32[2], f32[3], np.zeros(V), mask, "jsd", 1.0)
    np.testing.assert_allclose(val, want, rtol=2e-2)
    assert rel(dc, wdc) < 3e-2 and rel(de, wde) < 3e-2
    es = es.copy()
    es[1, 1, 0] = np.nan
    rows = linear_kd_loss(es, cs, et, ct, reduction="none", config=CFG)
    assert np.isnan(rows[1, 1]) and np.isfinite(np.delete(np.asarray(rows).ravel(), T + 1)).all()
    et = et.copy()
    es[0, 4, 0] = et[0, 4, 1] = np.nan  # in padded rows: reaches neither the value nor the gradient
    keep = mask & (np.arange(B) == 0)[:, None]  # row 1 (with the NaN above) and row 0's tail are padding
    val, (de, dc) = jax.jit(jax.value_and_grad(
        lambda e, c: linear_kd_loss(e, c, et, ct, mask=keep, config=CFG), argnums=(0, 1)))(es, cs)
    assert np.isfinite(val) and np.isfinite(de).all() and np.isfinite(dc).all()


def test_errors():
    es, cs, bs, et, ct, bt, mask = _data()
    with pytest.raises(ValueError, match="divergence"):
        linear_kd_loss(es, cs, et, ct, divergence="js")
    with pytest.raises(ValueError, match="beta"):
        linear_kd_loss(es, cs, et, ct, divergence="jsd", beta=1.0)
    with pytest.raises(ValueError, match="temperature"):
        linear_kd_loss(es, cs, et, ct, temperature=-1.0)
    with pytest.raises(ValueError, match="teacher_classifier"):
        linear_kd_loss(es, cs, et, ct[:-1])
    with pytest.raises(ValueError, match="mask"):
        linear_kd_loss(es, cs, et, ct, mask=mask.astype(np.int32))
    with pytest.raises(ValueError, match="student_classifier"):
        linear_kd_loss(es, ct, et, ct)
    with pytest.raises(ValueError, match="vocab_axis"):
        linear_kd_loss(es, cs, et, ct, vocab_axis="model")  # no mesh with a 'model' axis
