"""Tests of lossjax.losses.sequence (EISL, Cauchy-Schwarz divergence, aggregate responses, gradient penalty)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _issue6a_checks import J, battery, grad_check_x64

from lossjax.losses.sequence import (
    aggregate_response_loss,
    ce_input_gradient_penalty,
    cs_divergence,
    eisl_loss,
    input_gradient_penalty,
)

RNG = np.random.default_rng(3)
V = 6
TGT = np.array([[1, 2, 3, 4, 5], [2, 2, 0, 1, 3]], np.int32)
LOGITS = (RNG.normal(size=(2, 5, V)) * 2).astype(np.float32)
X5 = RNG.normal(size=(5, 2))
Y7 = RNG.normal(size=(7, 2)) + 1.0


# ------------------------------------------------------------------ EISL


def np_eisl(logits, tgt, ngrams, weights=None, tmask=None, clip=-20.0):
    x = np.float64(logits)
    m = x.max(-1, keepdims=True)
    ls = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    b, to, _ = x.shape
    tt = tgt.shape[1]
    weights = weights or [1.0 / len(ngrams)] * len(ngrams)
    out = np.zeros(b)
    for bi in range(b):
        c = np.maximum(ls[bi][:, tgt[bi]], clip)  # [To, Tt]
        if tmask is not None:
            c = c * tmask[bi][None, :]
        for n, w in zip(ngrams, weights):
            n = min(n, to, tt)
            mm = np.zeros((to - n + 1, tt - n + 1))
            for i in range(to - n + 1):
                for j in range(tt - n + 1):
                    mm[i, j] = np.mean([c[i + k, j + k] for k in range(n)])
            sel = np.exp(mm - mm.max(0, keepdims=True))
            sel /= sel.sum(0, keepdims=True)
            out[bi] += -w * np.mean((sel * mm).sum(0))
    return out


def test_eisl_numpy_oracle_float64():
    with jax.enable_x64(True):
        x = np.float64(LOGITS)
        for ng, w in (((2,), None), ((1, 2, 3), None), ((2, 4), (0.3, 0.7)), ((9,), None)):
            np.testing.assert_allclose(
                J(eisl_loss, x, TGT, ngrams=ng, ngram_weights=w), np_eisl(x, TGT, ng, w),
                rtol=1e-12)
        tm = np.array([[True] * 5, [True, True, True, False, False]])
        np.testing.assert_allclose(J(eisl_loss, x, TGT, ngrams=(1, 2), target_mask=tm),
                                   np_eisl(x, TGT, (1, 2), tmask=tm), rtol=1e-12)
        # output longer than the target
        x8 = np.float64(RNG.normal(size=(2, 8, V)))
        np.testing.assert_allclose(J(eisl_loss, x8, TGT, ngrams=(2, 3)),
                                   np_eisl(x8, TGT, (2, 3)), rtol=1e-12)


def test_eisl_properties():
    # exact prediction -> ~0 (clip-level residue only)
    perfect = 50.0 * np.asarray(jax.nn.one_hot(TGT, V), np.float32)
    out = np.asarray(J(eisl_loss, perfect, TGT, ngrams=(1, 2, 3)))
    assert out[0] < 1e-6  # distinct tokens: only e^{-20}-level residue
    assert out[1] < 1e-3  # a repeated token allows soft matches at weight ~e^{-10}
    # n = 1 is a bag of tokens: permuting the target leaves it unchanged, CE changes
    perm = TGT[:, ::-1].copy()
    np.testing.assert_allclose(J(eisl_loss, LOGITS, perm, ngrams=(1,)),
                               J(eisl_loss, LOGITS, TGT, ngrams=(1,)), rtol=1e-6)
    ce = lambda t: optax.losses.softmax_cross_entropy_with_integer_labels(LOGITS, t).mean(-1)  # noqa
    assert not np.allclose(ce(perm), ce(TGT))
    # prediction = target shifted right by one: L_2 far below CE
    # (12 tokens: only the last of the 11 target bigrams loses its match)
    tgt12 = np.array([[1, 2, 3, 4, 5, 0, 2, 4, 1, 3, 5, 0]], np.int32)
    shifted = np.concatenate([np.zeros((1, 1), np.int32), tgt12[:, :-1]], 1)
    pred = 8.0 * np.asarray(jax.nn.one_hot(shifted, V), np.float32)
    l2 = np.asarray(J(eisl_loss, pred, tgt12, ngrams=(2,)))
    ce_shift = np.asarray(optax.losses.softmax_cross_entropy_with_integer_labels(pred, tgt12).mean(-1))
    assert np.all(l2 < 0.2 * ce_shift), (l2, ce_shift)
    # gumbel selection: deterministic given the key, differs from softmax
    key = jax.random.key(0)
    g1 = J(eisl_loss, LOGITS, TGT, selection="gumbel", key=key)
    g2 = J(eisl_loss, LOGITS, TGT, selection="gumbel", key=key)
    np.testing.assert_array_equal(g1, g2)
    assert not np.allclose(g1, J(eisl_loss, LOGITS, TGT))
    # all-padding target and masked rows give 0 with zero gradient
    v, g = jax.value_and_grad(lambda x: J(eisl_loss, x, TGT, target_mask=np.zeros((2, 5), bool),
                                          where=np.array([True, False])).sum())(jnp.asarray(LOGITS))
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)


def test_eisl_battery_and_gradients():
    ext = LOGITS.copy()
    ext[0, 0] = [1e4, -1e4, 0.0, 3.0, -np.inf, 2.0]
    where = np.array([True, False])
    battery(lambda x, t, w: eisl_loss(x, t, ngrams=(1, 2), where=w), (ext, TGT, where),
            masked=~where, rtol=2e-5, atol=2e-5)
    grad_check_x64(jax.jit(lambda x, t: eisl_loss(x, t, ngrams=(1, 2))), (LOGITS, TGT))


# ------------------------------------------------------------------ Cauchy-Schwarz divergence


def np_cs_direct(x, y, sigma):
    """-log((∫pq)^2 / ∫p^2 ∫q^2) for Gaussian KDEs of bandwidth sigma/sqrt(2) (direct form)."""
    h2 = sigma**2 / 2  # KDE variance; products integrate to N(0, 2 h2) = N(0, sigma^2)
    d = x.shape[1]

    def ip(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.mean(np.exp(-d2 / (4 * h2)) / (4 * np.pi * h2) ** (d / 2))

    return -np.log(ip(x, y) ** 2 / (ip(x, x) * ip(y, y)))


def test_cs_divergence_oracle_and_properties():
    with jax.enable_x64(True):
        for sigma in (0.5, 1.0, 2.0):
            np.testing.assert_allclose(J(cs_divergence, X5, Y7, sigma=np.asarray(sigma)),
                                       np_cs_direct(X5, Y7, sigma), rtol=1e-10)
        d = float(J(cs_divergence, X5, Y7, sigma=np.asarray(1.0)))
        assert d > 0
        np.testing.assert_allclose(J(cs_divergence, Y7, X5, sigma=np.asarray(1.0)), d, rtol=1e-12)
        assert float(J(cs_divergence, X5, X5, sigma=np.asarray(1.0))) == 0.0
        # duplicating every sample leaves the empirical distribution, hence D, unchanged
        np.testing.assert_allclose(J(cs_divergence, np.concatenate([X5, X5]), Y7,
                                     sigma=np.asarray(1.0)), d, rtol=1e-12)
        # far-apart samples: log space keeps it finite (direct form would underflow to log 0)
        far = float(J(cs_divergence, X5, Y7 + 100.0, sigma=np.asarray(1.0)))
        assert np.isfinite(far) and far > 1e3
        # padding masks equal slicing
        pad = np.concatenate([X5, 1e3 * np.ones((2, 2))])
        wx = np.array([True] * 5 + [False] * 2)
        np.testing.assert_allclose(J(cs_divergence, pad, Y7, sigma=np.asarray(1.0), where_x=wx),
                                   d, rtol=1e-12)
        # 1-D samples are [n, 1]
        np.testing.assert_allclose(J(cs_divergence, X5[:, 0], Y7[:, 0], sigma=np.asarray(1.0)),
                                   np_cs_direct(X5[:, :1], Y7[:, :1], 1.0), rtol=1e-10)
    grad_check_x64(jax.jit(lambda a, b: cs_divergence(a, b, sigma=1.0)), (X5, Y7), argnums=(0, 1))
    # empty sample -> 0
    assert float(J(cs_divergence, X5, Y7, where_y=np.zeros(7, bool))) == 0.0


def test_cs_divergence_jit_vmap_bf16():
    x, y = np.float32(X5), np.float32(Y7)
    eager = cs_divergence(x, y)
    np.testing.assert_allclose(J(cs_divergence, x, y), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(cs_divergence))(np.stack([x, x]), np.stack([y, y])),
                               [eager, eager], rtol=1e-6)
    xb = x.astype(jnp.bfloat16)
    out = J(cs_divergence, xb, y)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, J(cs_divergence, xb.astype(np.float32), y), rtol=1e-6)


# ------------------------------------------------------------------ aggregate responses


def test_aggregate_response_identity_and_masks():
    with jax.enable_x64(True):
        f = jnp.array([1.0, 2.0, 4.0])
        ids, yb = jnp.array([0, 0, 0]), jnp.array([3.0])
        inst = J(aggregate_response_loss, f, ids, yb, rho=1.0)
        bag = J(aggregate_response_loss, f, ids, yb, rho=0.0)
        np.testing.assert_allclose(inst, 6.0, rtol=1e-12)
        np.testing.assert_allclose(bag, 4.0 / 3.0, rtol=1e-12)
        np.testing.assert_allclose(J(aggregate_response_loss, f, ids, yb, rho=0.5),
                                   4.0 / 3.0 + 0.5 * 14.0 / 3.0, rtol=1e-12)
        # several bags (one empty), instance level = sum (ybar_b - f_i)^2
        fr = RNG.normal(size=7)
        idr = np.array([0, 2, 2, 0, 3, 3, 3])
        ybr = RNG.normal(size=4)
        inst = J(aggregate_response_loss, fr, idr, ybr, rho=1.0)
        ref = np.array([((ybr[b] - fr[idr == b]) ** 2).sum() for b in range(4)])
        np.testing.assert_allclose(inst, ref, rtol=1e-12)
        assert float(inst[1]) == 0.0
        # masked instances equal removal
        w = np.array([True, True, False, True, True, False, True])
        np.testing.assert_allclose(
            J(aggregate_response_loss, fr, idr, ybr, rho=0.3, where=w),
            J(aggregate_response_loss, fr[w], idr[w], ybr, rho=0.3), rtol=1e-12)
    fr32 = np.float32(RNG.normal(size=7))
    battery(lambda f, w: aggregate_response_loss(f, jnp.array([0, 2, 2, 0, 3, 3, 3]),
                                                 jnp.arange(4.0), rho=0.4, where=w),
            (fr32, np.ones(7, bool)), rtol=1e-5, atol=1e-5)
    grad_check_x64(jax.jit(lambda f: aggregate_response_loss(f, jnp.array([0, 2, 2, 0, 3, 3, 3]),
                                                             jnp.arange(4.0), rho=0.4)), (fr32,))


# ------------------------------------------------------------------ gradient penalty

W_LIN = RNG.normal(size=(3, 4)).astype(np.float32)
B_LIN = RNG.normal(size=(4,)).astype(np.float32)
XP = RNG.normal(size=(5, 3)).astype(np.float32)
YP = np.array([0, 1, 2, 3, 1], np.int32)


def _apply(params, x):
    w, b = params
    return x @ w + b


def test_ce_penalty_closed_form_linear_model():
    params = (W_LIN, B_LIN)
    out = J(ce_input_gradient_penalty, _apply, params, XP, YP, noise="none", lam=2.0, k=0.5)
    p = np.asarray(jax.nn.softmax(XP @ W_LIN + B_LIN), np.float64)
    g = (p - np.eye(4)[YP]) @ np.float64(W_LIN).T  # rows: W (p - e_y)
    norm = np.sqrt((g**2).sum(-1) + 1e-12)
    np.testing.assert_allclose(out, 2.0 * (norm - 0.5) ** 2, rtol=1e-5)
    one = J(ce_input_gradient_penalty, _apply, params, XP, YP, noise="none", k=0.5, one_sided=True)
    np.testing.assert_allclose(one, 10.0 * np.maximum(norm - 0.5, 0) ** 2, rtol=1e-5, atol=1e-7)


def test_penalty_noise_and_double_backprop():
    params = (W_LIN, B_LIN)
    key = jax.random.key(1)
    a = J(ce_input_gradient_penalty, _apply, params, XP, YP, key)
    b = J(ce_input_gradient_penalty, _apply, params, XP, YP, key)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, J(ce_input_gradient_penalty, _apply, params, XP, YP, noise="none"))
    # dragan perturbation = x + 0.5 std(x) U[0,1): reproduce it through a probe loss
    probe = lambda prm, x, y: jnp.sum(x * prm, axis=-1)  # noqa: E731  input gradient = prm
    ones = jnp.ones(3)
    np.testing.assert_allclose(J(input_gradient_penalty, probe, ones, XP, None, key, lam=1.0, k=0.0),
                               np.full(5, 3.0 + 1e-12), rtol=1e-6)
    g = jax.grad(lambda prm: J(ce_input_gradient_penalty, _apply, prm, XP, YP, key).sum())(params)
    assert all(np.all(np.isfinite(np.asarray(t))) for t in g)
    # double-backprop gradient w.r.t. the parameters vs float64 finite differences
    grad_check_x64(
        jax.jit(lambda w, b, x: ce_input_gradient_penalty(_apply, (w, b), x, YP, noise="none")),
        (W_LIN, B_LIN, XP), argnums=(0, 1, 2), atol=1e-5, rtol=1e-5)
    # zero input gradient: finite (eps under the square root), value lam k^2
    zero = J(ce_input_gradient_penalty, _apply, (0 * W_LIN, B_LIN), XP, YP, noise="none")
    np.testing.assert_allclose(zero, 10.0, rtol=1e-5)
    gz = jax.grad(lambda w: J(ce_input_gradient_penalty, _apply, (w, B_LIN), XP, YP,
                              noise="none").sum())(0 * W_LIN)
    assert np.all(np.isfinite(np.asarray(gz)))


# ------------------------------------------------------------------ errors


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="selection"):
        eisl_loss(LOGITS, TGT, selection="argmax")
    with pytest.raises(ValueError, match="key"):
        eisl_loss(LOGITS, TGT, selection="gumbel")
    with pytest.raises(ValueError, match="ngrams"):
        eisl_loss(LOGITS, TGT, ngrams=(0,))
    with pytest.raises(ValueError, match="ngram_weights"):
        eisl_loss(LOGITS, TGT, ngrams=(1, 2), ngram_weights=(1.0,))
    with pytest.raises(ValueError, match="targets"):
        eisl_loss(LOGITS, TGT[:1])
    with pytest.raises(TypeError, match="targets"):
        eisl_loss(LOGITS, TGT.astype(np.float32))
    with pytest.raises(ValueError, match="target_mask"):
        eisl_loss(LOGITS, TGT, target_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="sigma"):
        cs_divergence(X5, Y7, sigma=0.0)
    with pytest.raises(ValueError, match="feature size"):
        cs_divergence(X5, Y7[:, :1])
    with pytest.raises(ValueError, match="where_x"):
        cs_divergence(X5, Y7, where_x=np.ones(4, bool))
    with pytest.raises(ValueError, match="rho"):
        aggregate_response_loss(X5[:, 0], np.zeros(5, np.int32), np.zeros(1), rho=2.0)
    with pytest.raises(ValueError, match="bag_ids"):
        aggregate_response_loss(X5[:, 0], np.zeros(4, np.int32), np.zeros(1), rho=0.0)
    with pytest.raises(TypeError, match="bag_ids"):
        aggregate_response_loss(X5[:, 0], np.zeros(5), np.zeros(1), rho=0.0)
    with pytest.raises(ValueError, match="noise"):
        input_gradient_penalty(lambda p, x, y: x.sum(-1), None, XP, None, noise="uniform")
    with pytest.raises(ValueError, match="key"):
        input_gradient_penalty(lambda p, x, y: x.sum(-1), None, XP, None)
    with pytest.raises(ValueError, match="loss_fn"):
        input_gradient_penalty(lambda p, x, y: x.sum(), None, XP, None, noise="none")
    with pytest.raises(ValueError, match="labels"):
        ce_input_gradient_penalty(_apply, (W_LIN, B_LIN), XP, YP[:3], noise="none")
