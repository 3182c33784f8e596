"""Tests of lossjax.losses.preference (DPO, SPO; frozen value: docs/design/test_vectors.md §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _issue6a_checks import J, battery, grad_check_x64

from lossjax.losses.preference import dpo_loss, sequence_logprob, spo_loss

RNG = np.random.default_rng(2)
LOGITS = (RNG.normal(size=(2, 4, 6)) * 2).astype(np.float32)  # [B, T, V]
TOK = np.array([[1, 5, 0, 2], [3, 3, 4, 0]], np.int32)
MASK = np.array([[True, True, True, False], [False, True, True, True]])
LP = (-RNG.uniform(5, 15, size=(4, 3))).astype(np.float32)  # pc, pr, rc, rr columns x batch 3


def np_seq_logprob(logits, tok, mask):
    x = np.float64(logits)
    m = x.max(-1, keepdims=True)
    ls = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    tl = np.take_along_axis(ls, tok[..., None], -1)[..., 0]
    return (tl * mask).sum(-1)


def test_frozen_value_and_symmetries_float64():
    with jax.enable_x64(True):
        a = lambda v: jnp.array([v])  # noqa: E731
        out = J(dpo_loss, a(-10.0), a(-12.0), a(-11.0), a(-11.5), beta=0.1)
        np.testing.assert_allclose(out, 0.6209570478, rtol=1e-9)
        # Delta = 0 -> log 2
        np.testing.assert_allclose(J(dpo_loss, a(-3.0), a(-5.0), a(-3.0), a(-5.0)), np.log(2),
                                   rtol=1e-12)
        pc, pr, rc, rr = (jnp.asarray(np.float64(c)) for c in LP)
        for eps in (0.0, 0.1, 0.5):
            kw = dict(beta=0.1, label_smoothing=eps)
            fwd = J(dpo_loss, pc, pr, rc, rr, **kw)
            swp = J(dpo_loss, pr, pc, rr, rc, **kw)
            delta = 0.1 * ((pc - rc) - (pr - rr))
            # L(D) - L(-D) = -(1 - 2 eps) beta D
            np.testing.assert_allclose(fwd - swp, -(1 - 2 * eps) * delta, atol=1e-12)
            ref = (1 - eps) * np.logaddexp(0, -delta) + eps * np.logaddexp(0, delta)
            np.testing.assert_allclose(fwd, ref, rtol=1e-12)
        # shifting policy and reference log-probs of the same response cancels
        np.testing.assert_allclose(J(dpo_loss, pc + 3, pr, rc + 3, rr, beta=0.1),
                                   J(dpo_loss, pc, pr, rc, rr, beta=0.1), rtol=1e-12)


def test_dpo_gradients():
    pc, pr, rc, rr = LP
    grad_check_x64(jax.jit(lambda a, b, c, d: dpo_loss(a, b, c, d, beta=0.5, label_smoothing=0.1)),
                   (pc, pr, rc, rr), argnums=(0, 1))
    # the reference log-probs are stop-gradient
    g = jax.grad(lambda r: J(dpo_loss, pc, pr, r, rr).sum())(jnp.asarray(rc))
    np.testing.assert_array_equal(g, 0.0)
    # d/d pc of softplus(-beta D) = -beta sigmoid(-beta D)
    g = jax.grad(lambda p: J(dpo_loss, p, pr, rc, rr, beta=0.5).sum())(jnp.asarray(pc))
    d = 0.5 * ((pc - rc) - (pr - rr))
    np.testing.assert_allclose(g, -0.5 / (1 + np.exp(d)), rtol=1e-5)


def test_sequence_logprob():
    out = J(sequence_logprob, LOGITS, TOK, MASK)
    np.testing.assert_allclose(out, np_seq_logprob(LOGITS, TOK, MASK), rtol=1e-6)
    np.testing.assert_allclose(J(sequence_logprob, LOGITS, TOK),
                               np_seq_logprob(LOGITS, TOK, np.ones_like(MASK)), rtol=1e-6)
    np.testing.assert_allclose(J(sequence_logprob, LOGITS, TOK, MASK, average=True),
                               np_seq_logprob(LOGITS, TOK, MASK) / MASK.sum(-1), rtol=1e-6)
    # equals minus optax CE summed over unmasked tokens
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(LOGITS, TOK)
    np.testing.assert_allclose(out, -(ce * MASK).sum(-1), rtol=1e-5)
    # vocabulary axis elsewhere
    np.testing.assert_allclose(J(sequence_logprob, np.moveaxis(LOGITS, -1, 1), TOK, MASK, axis=1),
                               out, rtol=1e-6)
    # empty mask -> 0 (also averaged), zero gradient
    empty = np.zeros_like(MASK)
    for avg in (False, True):
        v, g = jax.value_and_grad(lambda x, avg=avg: J(sequence_logprob, x, TOK, empty, average=avg).sum())(
            jnp.asarray(LOGITS))
        assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)
    # extreme logits: exact, finite
    ext = np.zeros((1, 2, 3), np.float32)
    ext[0, 0] = [1e4, -1e4, 0.0]
    ext[0, 1] = [-np.inf, 5.0, -np.inf]
    v, g = jax.value_and_grad(lambda x: J(sequence_logprob, x, np.array([[1, 1]])).sum())(
        jnp.asarray(ext))
    np.testing.assert_allclose(v, -2e4, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(g)))


def test_sequence_logprob_battery():
    battery(lambda x, t, m: sequence_logprob(x, t, m), (LOGITS, TOK, MASK), rtol=1e-5, atol=1e-5)
    grad_check_x64(jax.jit(lambda x, t, m: sequence_logprob(x, t, m)), (LOGITS, TOK, MASK))


def test_dpo_battery_and_dtypes():
    pc, pr, rc, rr = LP
    where = np.array([True, False, True])
    out = battery(lambda a, b, c, d, w: dpo_loss(a, b, c, d, where=w), (pc, pr, rc, rr, where),
                  masked=~where, diff_argnums=(0, 1))
    assert out[1] == 0.0


def test_spo():
    pc, pr, rc, rr = LP
    dl = RNG.normal(size=(3, 4)).astype(np.float32)
    dy = np.array([0, 3, 1], np.int32)
    out = J(spo_loss, pc, pr, rc, rr, dl, dy, ssl_weight=0.5)
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(dl, dy)
    np.testing.assert_allclose(out, J(dpo_loss, pc, pr, rc, rr) + 0.5 * ce, rtol=1e-6)
    # several variants per pair: CE averaged over them
    dl2 = RNG.normal(size=(3, 2, 4)).astype(np.float32)
    dy2 = np.array([[0, 1], [2, 3], [1, 1]], np.int32)
    out2 = J(spo_loss, pc, pr, rc, rr, dl2, dy2)
    ce2 = optax.losses.softmax_cross_entropy_with_integer_labels(dl2, dy2).mean(-1)
    np.testing.assert_allclose(out2, J(dpo_loss, pc, pr, rc, rr) + ce2, rtol=1e-6)
    where = np.array([True, True, False])
    battery(lambda a, l, w: spo_loss(a, pr, rc, rr, l, dy, where=w), (pc, dl, where),
            masked=~where, diff_argnums=(0, 1))


def test_errors_name_the_argument():
    pc, pr, rc, rr = LP
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        dpo_loss(pc, pr[:2], rc, rr)
    with pytest.raises(TypeError, match="ref_chosen_logps"):
        dpo_loss(pc, pr, rc.astype(np.int32), rr)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.7)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=-1.0)
    with pytest.raises(ValueError, match="where"):
        dpo_loss(pc, pr, rc, rr, where=np.ones(2, bool))
    with pytest.raises(ValueError, match="tokens"):
        sequence_logprob(LOGITS, TOK[:, :3])
    with pytest.raises(TypeError, match="tokens"):
        sequence_logprob(LOGITS, TOK.astype(np.float32))
    with pytest.raises(ValueError, match="mask"):
        sequence_logprob(LOGITS, TOK, MASK[:, :3])
    with pytest.raises(TypeError, match="mask"):
        sequence_logprob(LOGITS, TOK, MASK.astype(np.int32))
    dl = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="degree_labels"):
        spo_loss(pc, pr, rc, rr, dl, np.zeros(2, np.int32))
    with pytest.raises(TypeError, match="degree_labels"):
        spo_loss(pc, pr, rc, rr, dl, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="ssl_weight"):
        spo_loss(pc, pr, rc, rr, dl, np.zeros(3, np.int32), ssl_weight=-1.0)
