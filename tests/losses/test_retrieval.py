"""Tests of lossjax.losses.retrieval (DEXML, MW, PA-BCE; frozen values: docs/design/test_vectors.md §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _issue6a_checks import J, battery, grad_check_x64
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossjax.losses.retrieval import (
    decoupled_softmax_loss,
    infonce_loss,
    mann_whitney_loss,
    profit_aware_pairwise_bce,
    soft_topk_loss,
    weighted_listwise_bce,
)

S1 = np.array([3.0, 2.0, 0.5, -1.0, 0.0])
P1 = np.array([True, True, False, False, False])
# fixture F1/F2 embeddings (docs/design/test_vectors.md §2)
E = np.array([[1.0, 0.2, 0.0], [0.6, 0.8, 0.1], [0.3, 1.0, 0.0], [0.9, 0.4, 0.2],
              [0.2, 0.3, 1.0], [0.7, 0.1, 0.6]])
RNG = np.random.default_rng(1)
SC = (RNG.normal(size=(3, 6)) * 2).astype(np.float32)
PO = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [1, 0, 1, 0, 1, 0]], bool)
PNL = (RNG.normal(size=(3, 6)) * 3).astype(np.float32)


# ------------------------------------------------------------------ numpy oracles


def np_decoupled(s, pos, tau=1.0):
    out = []
    for r, p in zip(s / tau, pos):
        neg = r[~p]
        terms = [np.log(np.exp(r[j]) + np.exp(neg).sum()) - r[j] for j in np.where(p)[0]]
        out.append(np.mean(terms) if terms else 0.0)
    return np.array(out)


def np_infonce(s, pos, tau=1.0):
    out = []
    for r, p in zip(s / tau, pos):
        lse = np.log(np.exp(r).sum())
        terms = [lse - r[j] for j in np.where(p)[0]]
        out.append(np.mean(terms) if terms else 0.0)
    return np.array(out)


def np_mw(sp, sn):
    return np.mean(np.logaddexp(0.0, sn[None, :] - sp[:, None]))


def np_pa_graph(s, pnl, k=3):
    out = []
    for r, g in zip(s, pnl):
        idx = np.argsort(-g, kind="stable")[:k]
        kk = len(idx)
        tot = 0.0
        for a in range(kk):
            for b in range(a + 1, kk):
                i, j = idx[a], idx[b]
                tot += np.log10(1 + g[i] - g[j]) * np.logaddexp(0.0, -(r[i] - r[j]))
        out.append(tot / kk)
    return np.array(out)


# ------------------------------------------------------------------ frozen values


def test_frozen_values_float64():
    with jax.enable_x64(True):
        s, p = jnp.asarray(S1), jnp.asarray(P1)
        np.testing.assert_allclose(J(decoupled_softmax_loss, s, p), 0.2411373670, rtol=1e-9)
        np.testing.assert_allclose(J(infonce_loss, s, p), 0.9174379119, rtol=1e-9)
        np.testing.assert_allclose(J(soft_topk_loss, s, p, k=2, alpha=2.0), 0.1315467958,
                                   rtol=1e-9)
        sm = jnp.array([2.0, 0.5, 1.0, -0.5, 0.7])
        pm = jnp.array([True, True, False, False, False])
        np.testing.assert_allclose(J(mann_whitney_loss, sm, pm), 0.4531062361, rtol=1e-9)
        np.testing.assert_allclose(J(mann_whitney_loss, sm, pm, mode="per_query"), 0.4531062361,
                                   rtol=1e-9)


def test_soft_topk_threshold_solves_constraint():
    with jax.enable_x64(True):
        from lossjax.losses.retrieval import _topk_threshold

        s = jnp.asarray(S1)
        t = _topk_threshold(s, jnp.ones(5, bool), 2, 2.0, 32)
        np.testing.assert_allclose(t, -1.32102928, atol=1e-8)
        np.testing.assert_allclose(jnp.sum(jax.nn.sigmoid(2.0 * (s + t))), 2.0, atol=1e-12)
        # implicit gradient dt/ds = -v / sum v
        g = jax.grad(lambda x: _topk_threshold(x, jnp.ones(5, bool), 2, 2.0, 32))(s)
        z = 2.0 * (s + t)
        v = 2.0 * jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)
        np.testing.assert_allclose(g, -v / v.sum(), rtol=1e-7)  # v at the pre-Newton t*


def test_ntxent_equals_pair_weighted_decoupled_softmax():
    """optax.ntxent on F2 is the decoupled softmax averaged over positive pairs (optax ``ntxent``)."""
    with jax.enable_x64(True):
        e = jnp.asarray(E)
        y = jnp.array([0, 0, 0, 1, 1, 2])
        en = e / jnp.linalg.norm(e, axis=1, keepdims=True)
        sim = en @ en.T
        eye = jnp.eye(6, dtype=bool)
        pos = (y[:, None] == y[None, :]) & ~eye
        per = J(decoupled_softmax_loss, sim, pos, temperature=0.07, where=~eye)
        n = pos.sum(1)
        np.testing.assert_allclose((per * n).sum() / n.sum(), 3.3710678198, rtol=1e-9)
        np.testing.assert_allclose(optax.losses.ntxent(e, y, 0.07), 3.3710678198, rtol=1e-9)


def test_numpy_oracles_float64():
    with jax.enable_x64(True):
        s = np.float64(SC)
        np.testing.assert_allclose(J(decoupled_softmax_loss, s, PO, temperature=0.5),
                                   np_decoupled(s, PO, 0.5), rtol=1e-12)
        np.testing.assert_allclose(J(infonce_loss, s, PO, temperature=0.5),
                                   np_infonce(s, PO, 0.5), rtol=1e-12)
        np.testing.assert_allclose(J(mann_whitney_loss, s, PO),
                                   np_mw(s[PO], s[~PO]), rtol=1e-12)
        per = J(mann_whitney_loss, s, PO, mode="per_query")
        np.testing.assert_allclose(per, [np_mw(r[p], r[~p]) for r, p in zip(s, PO)], rtol=1e-12)
        g = np.float64(PNL)
        np.testing.assert_allclose(J(profit_aware_pairwise_bce, s, g), np_pa_graph(s, g),
                                   rtol=1e-12)
        lab = PO.astype(np.float64)
        bce = np.logaddexp(0, s) - s * lab
        np.testing.assert_allclose(J(weighted_listwise_bce, s, PO.astype(np.int32)),
                                   ((1 + lab) * bce).sum(1), rtol=1e-12)


def test_rax_pairwise_logistic_oracle():
    rax = pytest.importorskip("rax")
    for r, p in zip(SC, PO):
        n_pairs = p.sum() * (~p).sum()
        ref = rax.pairwise_logistic_loss(jnp.asarray(r), jnp.asarray(p, jnp.float32),
                                         reduce_fn=jnp.sum) / n_pairs
        np.testing.assert_allclose(J(mann_whitney_loss, r, p, mode="per_query"), ref, rtol=1e-5)


# ------------------------------------------------------------------ properties


def test_single_positive_decoupled_equals_infonce_and_ce():
    y = np.array([0, 3, 2])
    pos = np.eye(6, dtype=bool)[y]
    d, i = J(decoupled_softmax_loss, SC, pos), J(infonce_loss, SC, pos)
    np.testing.assert_allclose(d, i, rtol=1e-5)
    np.testing.assert_allclose(d, optax.losses.softmax_cross_entropy_with_integer_labels(SC, y),
                               rtol=1e-5)
    # several positives: decoupled < infonce (positives no longer compete)
    assert np.all(np.asarray(J(decoupled_softmax_loss, SC, PO))[[0, 2]]
                  < np.asarray(J(infonce_loss, SC, PO))[[0, 2]])


def test_where_equals_slicing_and_empty_rows():
    where = np.ones((3, 6), bool)
    where[:, 5] = False
    for fn in (decoupled_softmax_loss, infonce_loss):
        np.testing.assert_allclose(J(fn, SC, PO, where=where), J(fn, SC[:, :5], PO[:, :5]),
                                   rtol=1e-6)
    np.testing.assert_allclose(J(soft_topk_loss, SC, PO, k=2, where=where),
                               J(soft_topk_loss, SC[:, :5], PO[:, :5], k=2), rtol=1e-5)
    # rows without positives give 0
    nopos = np.zeros((3, 6), bool)
    for fn in (decoupled_softmax_loss, infonce_loss):
        np.testing.assert_array_equal(J(fn, SC, nopos), 0.0)
    np.testing.assert_array_equal(J(soft_topk_loss, SC, nopos, k=2), 0.0)
    assert float(J(mann_whitney_loss, SC, nopos)) == 0.0
    # global MW with masked entries equals the loss on the valid entries only
    np.testing.assert_allclose(J(mann_whitney_loss, SC, PO, where=where),
                               J(mann_whitney_loss, SC[:, :5], PO[:, :5]), rtol=1e-6)
    # global MW: chunk size does not matter
    np.testing.assert_allclose(J(mann_whitney_loss, SC, PO, chunk_size=4),
                               J(mann_whitney_loss, SC, PO), rtol=1e-6)


def test_mw_bounds_aoc():
    s = SC.reshape(-1)
    p = PO.reshape(-1)
    sp, sn = s[p], s[~p]
    aoc = np.mean(sn[None, :] >= sp[:, None])
    assert aoc <= float(J(mann_whitney_loss, s, p)) / np.log(2) + 1e-6


def test_mw_in_batch_global_vs_per_query():
    """In-batch [B, B] matrix: global compares diagonal with all off-diagonal scores."""
    sim = SC[:, :3]
    eye = np.eye(3, dtype=bool)
    glob = J(mann_whitney_loss, sim, eye)
    np.testing.assert_allclose(glob, np_mw(np.float64(sim[eye]), np.float64(sim[~eye])),
                               rtol=1e-5)


def test_soft_topk_gradient_matches_finite_differences():
    grad_check_x64(jax.jit(lambda s, p: soft_topk_loss(s, p, k=2, alpha=2.0)), (SC, PO))


def test_pa_graph_properties():
    # pnl is not differentiated; list shorter than top_k uses all items
    g = jax.grad(lambda q: J(profit_aware_pairwise_bce, SC, q).sum())(jnp.asarray(PNL))
    np.testing.assert_array_equal(g, 0.0)
    with jax.enable_x64(True):
        s, q = np.float64(SC[:, :2]), np.float64(PNL[:, :2])
        np.testing.assert_allclose(J(profit_aware_pairwise_bce, s, q), np_pa_graph(s, q), rtol=1e-12)
    # masking an item equals removing it
    where = np.ones((3, 6), bool)
    where[:, 0] = False
    np.testing.assert_allclose(J(profit_aware_pairwise_bce, SC, PNL, where=where),
                               J(profit_aware_pairwise_bce, SC[:, 1:], PNL[:, 1:]), rtol=1e-6)


# ------------------------------------------------------------------ generic battery


def _scenario():
    ext = np.array([[1e4, -1e4, 0.0, 3.0, -2.0, 1.0]] * 2, np.float32)
    inf = np.array([[2.0, 1.0, -np.inf, 0.5, 0.0, -np.inf]] * 2, np.float32)
    s = np.concatenate([SC, ext, inf, SC[:2]])
    pos = np.concatenate([PO, PO[:2], PO[:2], PO[:2]])
    where = np.ones(s.shape, bool)
    where[7:9] = False
    masked = np.arange(9) >= 7
    return s, pos, where, masked


CASES = {
    "decoupled": lambda s, p, w: decoupled_softmax_loss(s, p, temperature=0.5, where=w),
    "infonce": lambda s, p, w: infonce_loss(s, p, where=w),
    "soft_topk": lambda s, p, w: soft_topk_loss(s, p, k=2, where=w),
    "mw_per_query": lambda s, p, w: mann_whitney_loss(s, p, mode="per_query", where=w),
    "pa_bce_graph": lambda s, p, w: profit_aware_pairwise_bce(s, jnp.where(p, 2.0, -1.0) +
                                                             jnp.arange(6.0), where=w),
    "pa_bce_listwise": lambda s, p, w: weighted_listwise_bce(s, p, where=w),
}


@pytest.mark.parametrize("name", list(CASES))
def test_battery(name):
    s, pos, where, masked = _scenario()
    if name.startswith("pa_bce"):
        s = np.where(np.isinf(s), 0.0, s).astype(np.float32)  # BCE logits are finite scores
    battery(CASES[name], (s, pos, where), masked=masked, rtol=2e-5, atol=2e-6)


def test_global_mw_jit_vmap_bf16():
    f = lambda s, p: mann_whitney_loss(s, p)  # noqa: E731
    eager = f(SC, PO)
    np.testing.assert_allclose(jax.jit(f)(SC, PO), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(np.stack([SC, SC]), np.stack([PO, PO])),
                               [eager, eager], rtol=1e-6)
    b = SC.astype(jnp.bfloat16)
    out = jax.jit(f)(b, PO)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, jax.jit(f)(b.astype(np.float32), PO), rtol=1e-6)
    g = jax.jit(jax.grad(f))(SC, PO)
    assert np.all(np.isfinite(g))


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (2, 6), elements=st.floats(-1e4, 1e4, width=32)))
def test_stability_hypothesis(s):
    for fn in _JITTED:
        v, g = fn(s, PO[:2])
        assert np.all(np.isfinite(np.asarray(v))) and np.all(np.asarray(v) >= -1e-4)
        assert np.all(np.isfinite(np.asarray(g)))


_JITTED = [jax.jit(jax.value_and_grad(lambda s, p, f=f: jnp.sum(f(s, p, None))))
           for f in (CASES["decoupled"], CASES["infonce"], CASES["soft_topk"], CASES["mw_per_query"])]


# ------------------------------------------------------------------ errors


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="positives"):
        decoupled_softmax_loss(SC, PO[:, :5])
    with pytest.raises(TypeError, match="scores"):
        infonce_loss(PO.astype(np.int32), PO)
    with pytest.raises(ValueError, match="where"):
        decoupled_softmax_loss(SC, PO, where=np.ones(5, bool))
    with pytest.raises(ValueError, match="temperature"):
        infonce_loss(SC, PO, temperature=0.0)
    with pytest.raises(ValueError, match="`k`"):
        soft_topk_loss(SC, PO, k=6)
    with pytest.raises(ValueError, match="`k`"):
        soft_topk_loss(SC, PO, k=0)
    with pytest.raises(ValueError, match="alpha"):
        soft_topk_loss(SC, PO, k=2, alpha=-1.0)
    with pytest.raises(ValueError, match="num_iters"):
        soft_topk_loss(SC, PO, k=2, num_iters=0)
    with pytest.raises(ValueError, match="mode"):
        mann_whitney_loss(SC, PO, mode="pairwise")
    with pytest.raises(ValueError, match="chunk_size"):
        mann_whitney_loss(SC, PO, chunk_size=0)
    with pytest.raises(ValueError, match="pnl"):
        profit_aware_pairwise_bce(SC, PNL[:, :3])
    with pytest.raises(ValueError, match="top_k"):
        profit_aware_pairwise_bce(SC, PNL, top_k=0)
    with pytest.raises(ValueError, match="positive_weight"):
        weighted_listwise_bce(SC, PO, positive_weight=0.0)


# ------------------------------------------------------------------ non-finite scores (docs/conventions.md)

_NEG_INF_CASES = {
    "decoupled": lambda s, p: decoupled_softmax_loss(s, p),
    "infonce": lambda s, p: infonce_loss(s, p),
    "soft_topk": lambda s, p: soft_topk_loss(s, p, k=2),
    "listwise_bce": lambda s, p: weighted_listwise_bce(s, p.astype(s.dtype)),
}


@pytest.mark.parametrize("name", list(_NEG_INF_CASES))
def test_neg_inf_positive_is_probability_zero_not_an_absent_label(name):
    # only `where` removes a label: a -inf positive gives the limit +inf, with the gradient of
    # the finite problem at -1e4 (float64); a -inf negative is a label of probability 0
    fn = _NEG_INF_CASES[name]
    s = np.array([[-np.inf, 0.5, 1.0, -0.3], [0.7, -np.inf, 1.0, -0.3]], np.float32)
    pos = np.array([[True, False, False, False], [True, False, False, False]])
    v, g = jax.jit(jax.vmap(jax.value_and_grad(lambda a, p: jnp.sum(fn(a, p)))))(s[:, None], pos[:, None])
    assert v[0] == np.inf and np.isfinite(v[1])
    with jax.enable_x64(True):
        s64 = np.where(np.isinf(s), -1e4, s).astype(np.float64)
        v64, g64 = jax.vmap(jax.value_and_grad(lambda a, p: jnp.sum(fn(a, p))))(s64[:, None], pos[:, None])
    np.testing.assert_allclose(v[1], v64[1], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g)[:, 0], np.asarray(g64)[:, 0], rtol=1e-5, atol=1e-6)


def test_soft_topk_threshold_ignores_a_very_low_score():
    # the bisection bracket comes from the top ranks: a -inf (or -1e30) score does not widen it,
    # so a few bisection steps give the same threshold as with a merely low score
    s = np.array([[2.0, 0.5, 1.0, -0.3, x] for x in (-50.0, -np.inf, -1e30)], np.float32)
    pos = np.zeros(s.shape, bool)
    pos[:, 1] = True
    out = np.asarray(soft_topk_loss(s, pos, k=2, num_iters=6))
    np.testing.assert_allclose(out[1:], [out[0], out[0]], rtol=1e-6)
    np.testing.assert_allclose(out[0], soft_topk_loss(s[0], pos[0], k=2), rtol=1e-3)


def test_nan_score_is_never_dropped():
    # PA-BCE (pairwise): the NaN item has the lowest P&L, outside the top-2 pairs
    s = np.array([[0.2, 1.0, np.nan, 0.3], [0.2, 1.0, -0.5, 0.3]], np.float32)
    pnl = np.array([[5.0, 1.0, -3.0, 2.0]] * 2, np.float32)
    v, g = jax.value_and_grad(lambda a: jnp.sum(profit_aware_pairwise_bce(a, pnl, top_k=2)))(s)
    out = profit_aware_pairwise_bce(s, pnl, top_k=2)
    assert np.isnan(out[0]) and np.isfinite(out[1]) and np.isnan(v)
    assert np.isnan(g[0, 2]) and np.all(np.isfinite(g[1]))
    # a NaN P&L is selected, not sorted away
    pnl_nan = pnl.copy()
    pnl_nan[1, 2] = np.nan
    assert np.isnan(profit_aware_pairwise_bce(s, pnl_nan, top_k=2)[1])
    # soft top-k: a NaN negative reaches the threshold
    assert np.isnan(soft_topk_loss(s, s > 0.5, k=2)[0])
