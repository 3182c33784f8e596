"""Tests of lossjax.losses.preference (DPO, SPO, KTO; frozen value: docs/design/test_vectors.md §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _issue6a_checks import J, battery, grad_check_x64

from lossjax.losses.preference import dpo_loss, kto_loss, sequence_logprob, spo_loss

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


# ------------------------------------------------------------------------------------------------
# KTO (Ethayarajh et al., ICML 2024, Eq. 8) against a float64 torch restatement
# ------------------------------------------------------------------------------------------------
KTO_LP = (-RNG.uniform(5, 15, size=(4, 7))).astype(np.float32)  # policy, ref, kl policy, kl ref
KTO_LP[2] = KTO_LP[3] + np.array([0.9, -0.3, 1.5, 0.2, 1.1, 0.6, -0.1], np.float32)  # a positive KL estimate
DESIRABLE = np.array([True, False, True, True, False, False, True])
KTO_WHERE = np.array([True, True, False, True, True, True, True])
KTO_KW = dict(beta=0.5, desirable_weight=1.3, undesirable_weight=0.8)


def torch_kto(pol, ref, desirable, z0, beta, lam_d, lam_u):
    """Eq. 8 as written: lambda_y - v(x, y), with v = lambda sigma(beta (r - z0)) (desirable) or
    lambda sigma(beta (z0 - r)) (undesirable); z0 a constant."""
    import torch

    r = pol - torch.tensor(np.float64(ref))
    des = torch.tensor(desirable)
    v = torch.where(des, lam_d * torch.sigmoid(beta * (r - z0)), lam_u * torch.sigmoid(beta * (z0 - r)))
    return torch.where(des, torch.full_like(v, lam_d), torch.full_like(v, lam_u)) - v


def test_kto_matches_float64_torch():
    import torch

    pol, ref, klp, klr = KTO_LP
    keep = KTO_WHERE
    z_batch = max(0.0, float(np.mean(np.float64(klp)[keep] - np.float64(klr)[keep])))
    assert z_batch > 0.3  # the estimate is not clamped here (the clamp is tested below)
    cot = np.linspace(0.5, 2.0, 7)
    for kw, z0 in ((dict(kl_policy_logps=klp, kl_ref_logps=klr), z_batch), (dict(reference_point=0.7), 0.7)):
        def f(p, r, kp, kr, kw=kw):
            kw = {k: (kp if k == "kl_policy_logps" else kr if k == "kl_ref_logps" else v) for k, v in kw.items()}
            return kto_loss(p, r, DESIRABLE, where=KTO_WHERE, **kw, **KTO_KW)

        out, grads = jax.jit(lambda *a, f=f: (f(*a), jax.grad(lambda *b: jnp.sum(f(*b) * cot), argnums=(0, 1, 2, 3))(
            *a)))(pol, ref, klp, klr)
        p64 = torch.tensor(np.float64(pol), requires_grad=True)
        want = torch_kto(p64, ref, DESIRABLE, z0, 0.5, 1.3, 0.8) * torch.tensor(keep)
        (g64,) = torch.autograd.grad((want * torch.tensor(cot)).sum(), (p64,))
        np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grads[0], g64.numpy(), rtol=1e-5, atol=1e-8)
        assert out[2] == 0.0 and grads[0][2] == 0.0
        for g in grads[1:]:  # reference model and reference point: stop_gradient
            np.testing.assert_array_equal(g, 0.0)


def test_kto_reference_point_clamp_and_masked_estimate():
    pol, ref, klp, klr = KTO_LP
    with jax.enable_x64(True):
        zero = J(kto_loss, pol, ref, DESIRABLE, reference_point=0.0, **KTO_KW)
        # a negative KL estimate / reference point is clamped to 0
        np.testing.assert_array_equal(J(kto_loss, pol, ref, DESIRABLE, kl_policy_logps=klr - 1.0,
                                        kl_ref_logps=klr, **KTO_KW), zero)
        np.testing.assert_array_equal(J(kto_loss, pol, ref, DESIRABLE, reference_point=-3.0, **KTO_KW), zero)
        # a masked example leaves the batch estimate: NaN there reaches nothing
        klp_nan = klp.copy()
        klp_nan[2] = np.nan
        a = J(kto_loss, pol, ref, DESIRABLE, kl_policy_logps=klp_nan, kl_ref_logps=klr, where=KTO_WHERE, **KTO_KW)
        z = np.mean((np.float64(klp) - klr)[KTO_WHERE])
        b = J(kto_loss, pol, ref, DESIRABLE, reference_point=z, where=KTO_WHERE, **KTO_KW)
        np.testing.assert_allclose(a, b, rtol=1e-12)
        # unmasked NaN in the estimate: every example is NaN (one reference point for the batch)
        assert np.isnan(J(kto_loss, pol, ref, DESIRABLE, kl_policy_logps=klp_nan, kl_ref_logps=klr,
                          **KTO_KW)).all()
        # desirable: the loss falls as the implied reward grows; undesirable: it rises
        up = J(kto_loss, pol + 1.0, ref, DESIRABLE, reference_point=0.0, **KTO_KW)
        assert np.all((up < zero) == DESIRABLE)
        # per-example reference point, and r = z0 gives lambda_y / 2
        ref64 = np.float64(ref)
        gap = np.abs(np.float64(pol) - ref64)
        mid = J(kto_loss, ref64 + gap, ref64, DESIRABLE, reference_point=gap, **KTO_KW)
        np.testing.assert_allclose(mid, np.where(DESIRABLE, 0.65, 0.4), rtol=1e-12)


def test_kto_battery_and_grads():
    pol, ref, _, _ = KTO_LP
    where = KTO_WHERE
    battery(lambda p, r, d, w: kto_loss(p, r, d, where=w, reference_point=0.3, **KTO_KW),
            (pol, ref, DESIRABLE, where), masked=~where, diff_argnums=(0,))
    grad_check_x64(jax.jit(lambda p, r: kto_loss(p, r, DESIRABLE, reference_point=0.3, **KTO_KW)), (pol, ref))


def test_kto_errors_name_the_argument():
    pol, ref, klp, klr = KTO_LP
    with pytest.raises(ValueError, match="reference_point"):
        kto_loss(pol, ref, DESIRABLE)
    with pytest.raises(ValueError, match="reference_point"):
        kto_loss(pol, ref, DESIRABLE, reference_point=0.1, kl_policy_logps=klp, kl_ref_logps=klr)
    with pytest.raises(ValueError, match="kl_ref_logps"):
        kto_loss(pol, ref, DESIRABLE, kl_policy_logps=klp)
    with pytest.raises(ValueError, match="kl_policy_logps"):
        kto_loss(pol, ref, DESIRABLE, kl_policy_logps=klp[:3], kl_ref_logps=klr[:3])
    with pytest.raises(ValueError, match="reference_point"):
        kto_loss(pol, ref, DESIRABLE, reference_point=np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="desirable"):
        kto_loss(pol, ref, DESIRABLE.astype(np.int32), reference_point=0.0)
    with pytest.raises(ValueError, match="desirable"):
        kto_loss(pol, ref, DESIRABLE[:3], reference_point=0.0)
    with pytest.raises(ValueError, match="ref_logps"):
        kto_loss(pol, ref[:3], DESIRABLE, reference_point=0.0)
    for name in ("beta", "desirable_weight", "undesirable_weight"):
        with pytest.raises(ValueError, match=name):
            kto_loss(pol, ref, DESIRABLE, reference_point=0.0, **{name: -1.0})
