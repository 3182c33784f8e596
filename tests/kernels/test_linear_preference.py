"""Fused-linear sequence log-probabilities, DPO, SPO, ORPO and KTO against float64 PyTorch restatements of the
papers' formulas on materialised logits (values and gradients; prompt and padding masks holding garbage
token ids; reference under stop_gradient), against lossjax.losses.sequence_logprob, bf16, and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _kernels_oracle import rel
from _linear_head_oracle import LOG2, kto_rows, log1mexp, log_sigmoid, seq_logps, t64

from lossjax.kernels import (
    ChunkedConfig,
    linear_dpo_loss,
    linear_kto_loss,
    linear_orpo_loss,
    linear_sequence_logprob,
    linear_spo_loss,
)
from lossjax.losses import sequence_logprob, spo_loss

P, T, D, DR, V = 3, 6, 8, 10, 29  # pairs, length, policy / reference hidden sizes, vocabulary
CFG = ChunkedConfig(block_v=8)
BETA = 0.5


def _data(seed=0):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((2, P, T, D)).astype(np.float32)
    c = (rng.standard_normal((V, D)) / 2).astype(np.float32)
    er = rng.standard_normal((2, P, T, DR)).astype(np.float32)
    cr = (rng.standard_normal((V, DR)) / 2).astype(np.float32)
    y = rng.integers(0, V, (2, P, T)).astype(np.int32)
    m = np.ones((2, P, T), bool)
    m[:, :, :2] = False  # prompt
    m[1, 0, 4:] = False  # padding
    m[0, 2, 5:] = False
    y[~m] = rng.choice([-1, V + 3, 7], size=int((~m).sum()))  # garbage ids at masked positions
    return e, c, er, cr, y, m


@pytest.fixture(scope="module")
def results():
    e, c, er, cr, y, m = _data()
    deg_logits = jnp.asarray(np.random.default_rng(5).standard_normal((P, 4)), jnp.float32)
    deg_labels = jnp.array([0, 3, 1])

    def f(e, c, er, cr):
        kw = dict(config=CFG)

        def dpo(e, c, er, cr):
            return jnp.sum(linear_dpo_loss(e, c, y, m, ref_embeddings=er, ref_classifier=cr, beta=BETA, **kw))

        def spo(e, c):
            return jnp.sum(linear_spo_loss(e, c, y, deg_logits, deg_labels, m, ref_embeddings=er,
                                           ref_classifier=cr, beta=BETA, **kw))

        def orpo(e, c):
            return jnp.sum(linear_orpo_loss(e, c, y, m, lam=0.7, **kw))

        def seq(e, c):
            return linear_sequence_logprob(e, c, y, m, **kw)

        return dict(
            seq=seq(e, c), seq_avg=linear_sequence_logprob(e, c, y, m, average=True, **kw),
            seq_grad=jax.grad(lambda e, c: jnp.sum(seq(e, c) * jnp.arange(1.0, 1.0 + P)), argnums=(0, 1))(e, c),
            dpo=jax.value_and_grad(dpo, argnums=(0, 1, 2, 3))(e, c, er, cr),
            spo=spo(e, c),
            orpo=jax.value_and_grad(orpo, argnums=(0, 1))(e, c),
        )

    return jax.jit(f)(e, c, er, cr), (deg_logits, deg_labels)


def test_sequence_logprob_matches_float64_and_lossjax(results):
    out, _ = results
    e, c, _, _, y, m = _data()
    e_, c_ = t64(e, True), t64(c, True)
    lp = seq_logps(e_, c_, y, m)
    np.testing.assert_allclose(out["seq"], lp.detach().numpy(), rtol=2e-5)
    np.testing.assert_allclose(out["seq_avg"], (lp / torch.tensor(m.sum(-1))).detach().numpy(), rtol=2e-5)
    de, dc = torch.autograd.grad((lp * torch.arange(1.0, 1.0 + P, dtype=torch.float64)).sum(), (e_, c_))
    assert rel(out["seq_grad"][0], de.numpy()) < 3e-5 and rel(out["seq_grad"][1], dc.numpy()) < 3e-5
    assert not np.any(np.asarray(out["seq_grad"][0])[~m])  # prompt / padding positions get no gradient
    np.testing.assert_allclose(out["seq"], sequence_logprob(e @ c.T, np.where(m, y, 0), m), rtol=1e-5)


def test_dpo_spo_match_float64(results):
    out, (deg_logits, deg_labels) = results
    e, c, er, cr, y, m = _data()
    e_, c_ = t64(e, True), t64(c, True)
    pol = seq_logps(e_, c_, y, m)
    ref = seq_logps(t64(er), t64(cr), y, m)
    delta = BETA * ((pol[0] - ref[0]) - (pol[1] - ref[1]))
    want = -log_sigmoid(delta)
    de, dc = torch.autograd.grad(want.sum(), (e_, c_))
    val, (ge, gc, ger, gcr) = out["dpo"]
    np.testing.assert_allclose(val, want.sum().item(), rtol=2e-5)
    assert rel(ge, de.numpy()) < 3e-5 and rel(gc, dc.numpy()) < 3e-5
    assert not np.any(np.asarray(ger)) and not np.any(np.asarray(gcr))  # reference under stop_gradient
    ce = spo_loss(np.zeros(P), np.zeros(P), np.zeros(P), np.zeros(P), deg_logits, deg_labels) - LOG2
    np.testing.assert_allclose(out["spo"], want.sum().item() + float(jnp.sum(ce)), rtol=2e-5)


def test_orpo_matches_float64(results):
    out, _ = results
    e, c, _, _, y, m = _data()
    e_, c_ = t64(e, True), t64(c, True)
    avg = seq_logps(e_, c_, y, m) / torch.tensor(m.sum(-1))
    lo = avg - log1mexp(avg)
    want = (-avg[0] - 0.7 * log_sigmoid(lo[0] - lo[1])).sum()
    de, dc = torch.autograd.grad(want, (e_, c_))
    val, (ge, gc) = out["orpo"]
    np.testing.assert_allclose(val, want.item(), rtol=2e-5)
    assert rel(ge, de.numpy()) < 3e-5 and rel(gc, dc.numpy()) < 3e-5


def test_ref_logps_bf16_and_errors():
    e, c, er, cr, y, m = _data(seed=1)
    ref = np.asarray(linear_sequence_logprob(er, cr, y, m, config=CFG))
    eb, cb = jnp.asarray(e, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16)
    got = jax.jit(lambda e, c: linear_dpo_loss(e, c, y, m, ref_logps=ref, beta=BETA, config=CFG))(eb, cb)
    pol = seq_logps(t64(np.asarray(eb, np.float32)), t64(np.asarray(cb, np.float32)), y, m).numpy()
    want = -log_sigmoid(torch.tensor(BETA * ((pol[0] - ref[0]) - (pol[1] - ref[1])))).numpy()
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2)
    with pytest.raises(ValueError, match="ref_logps"):
        linear_dpo_loss(e, c, y, m)
    with pytest.raises(ValueError, match="policy_embeddings"):
        linear_dpo_loss(e[0], c, y[0], m[0], ref_logps=ref)
    with pytest.raises(ValueError, match="mask"):
        linear_sequence_logprob(e, c, y, m.astype(np.int32))
    with pytest.raises(ValueError, match="targets"):
        linear_sequence_logprob(e, c, np.full(y.shape, V, np.int32))  # an unmasked out-of-range token
    with pytest.raises(ValueError, match="lam"):
        linear_orpo_loss(e, c, y, m, lam=-1.0)


def test_kto_matches_float64_with_batch_reference_point():
    e, c, er, cr, y, m = _data(seed=2)
    e, er, y, m = (x.reshape((2 * P,) + x.shape[2:]) for x in (e, er, y, m))  # 6 unpaired examples
    des = np.array([True, False, True, True, False, True])
    # mismatched pairs (x_i, y_{i+1}): other hidden states, the next example's tokens and mask
    rng = np.random.default_rng(9)
    ke, ker = rng.standard_normal(e.shape).astype(np.float32), rng.standard_normal(er.shape).astype(np.float32)
    ky, km = np.roll(y, 1, axis=0), np.roll(m, 1, axis=0)
    where = np.array([True, True, True, False, True, True])
    kw = dict(beta=BETA, desirable_weight=1.3, undesirable_weight=0.8, where=where, config=CFG)

    def f(e, c, er, cr, ke):
        return jnp.sum(linear_kto_loss(e, c, y, des, m, ref_embeddings=er, ref_classifier=cr, kl_embeddings=ke,
                                       kl_tokens=ky, kl_mask=km, ref_kl_embeddings=ker, **kw))

    val, (ge, gc, ger, gcr, gke) = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4)))(e, c, er, cr, ke)
    e_, c_ = t64(e, True), t64(c, True)
    pol, ref = seq_logps(e_, c_, y, m), seq_logps(t64(er), t64(cr), y, m)
    gap = (seq_logps(t64(ke), t64(c), ky, km) - seq_logps(t64(ker), t64(cr), ky, km)).numpy()
    z0 = max(0.0, float(gap[where].mean()))
    assert z0 > 0.1  # the estimate is active (not clamped to 0)
    want = (kto_rows(pol, ref.detach(), des, z0, BETA, 1.3, 0.8) * torch.tensor(where)).sum()
    de, dc = torch.autograd.grad(want, (e_, c_))
    np.testing.assert_allclose(val, want.item(), rtol=2e-5)
    assert rel(ge, de.numpy()) < 3e-5 and rel(gc, dc.numpy()) < 3e-5
    for g in (ger, gcr, gke):  # reference model and the KL pass: stop_gradient
        assert not np.any(np.asarray(g))
    # precomputed reference log-probs and reference point give the same losses
    got = jax.jit(lambda e, c: linear_kto_loss(e, c, y, des, m, ref_logps=ref.numpy(), reference_point=z0, **kw))(e, c)
    np.testing.assert_allclose(jnp.sum(got), val, rtol=2e-5)
    with pytest.raises(ValueError, match="ref_kl_logps"):
        linear_kto_loss(e, c, y, des, m, ref_logps=ref.numpy(), kl_embeddings=ke, kl_tokens=ky)
    with pytest.raises(ValueError, match="kl_tokens"):
        linear_kto_loss(e, c, y, des, m, ref_logps=ref.numpy(), kl_embeddings=ke)
    with pytest.raises(ValueError, match="kl_embeddings"):
        linear_kto_loss(e, c, y, des, m, ref_logps=ref.numpy(), kl_tokens=ky, reference_point=0.0)
    with pytest.raises(ValueError, match="reference_point"):
        linear_kto_loss(e, c, y, des, m, ref_logps=ref.numpy())
    with pytest.raises(ValueError, match="desirable"):
        linear_kto_loss(e, c, y, des[:3], m, ref_logps=ref.numpy(), reference_point=0.0)
