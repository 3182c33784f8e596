"""Tests of lossjax.losses.metric against the frozen pytorch-metric-learning values
(docs/design/test_vectors.md §3), float64 brute-force NumPy oracles, and stability/shape properties."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from lossjax.losses import metric as M

# Fixture F1 (docs/design/test_vectors.md §2)
E = np.array(
    [[1.0, 0.2, 0.0], [0.6, 0.8, 0.1], [0.3, 1.0, 0.0], [0.9, 0.4, 0.2], [0.2, 0.3, 1.0], [0.7, 0.1, 0.6]]
)
Y = np.array([0, 0, 1, 1, 2, 2], np.int32)
W_ST = np.array(
    [[1.0, 0.5, 0.0, 0.2, 0.1, 0.3], [0.0, 0.5, 1.0, 0.8, 0.2, 0.0], [0.1, 0.0, 0.2, 0.1, 1.0, 0.9]]
)


def _pml_triplet(m, mining):
    s, c = M.triplet_loss(E, Y, margin=m, mining=mining, return_counts=True)
    return float(s.sum() / c.sum()), int(c.sum())


# ------------------------------------------------------------------ frozen oracle values (§8)


def test_frozen_values_f64():
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(M.multi_similarity_loss(E, Y).mean()), 0.6049104717, atol=1e-9)
        np.testing.assert_allclose(
            float(M.multi_similarity_loss(E, Y, epsilon=0.1).mean()), 0.5666235292, atol=1e-9
        )
        sc = np.asarray(M.supcon_loss(E, Y))
        np.testing.assert_allclose(sc[sc > 0].mean(), 2.1832470174, atol=1e-9)  # AvgNonZero
        v, n = _pml_triplet(0.05, "all")
        np.testing.assert_allclose(v, 0.3281043559, atol=1e-9)
        assert n == 10
        np.testing.assert_allclose(_pml_triplet(0.5, "all")[0], 0.4975670027, atol=1e-9)
        np.testing.assert_allclose(_pml_triplet(0.5, "hard")[0], 0.7599575377, atol=1e-9)
        st_ = M.soft_triple_loss(E, W_ST, Y, centers_per_class=2)
        np.testing.assert_allclose(float(st_.mean()), 1.2277464945, atol=1e-9)


def test_frozen_values_f32():
    e = E.astype(np.float32)
    np.testing.assert_allclose(float(M.multi_similarity_loss(e, Y).mean()), 0.6049104717, rtol=1e-6)
    sc = np.asarray(M.supcon_loss(e, Y))
    np.testing.assert_allclose(sc[sc > 0].mean(), 2.1832470174, rtol=1e-6)
    st_ = M.soft_triple_loss(e, W_ST.astype(np.float32), Y, centers_per_class=2)
    np.testing.assert_allclose(float(st_.mean()), 1.2277464945, rtol=1e-6)


# ------------------------------------------------------------------ float64 brute-force oracles


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_ms(e, y, alpha=2.0, beta=50.0, lam=0.5, eps=None):
    e = _unit(e)
    s = e @ e.T
    out = []
    for i in range(len(y)):
        P = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        N = [j for j in range(len(y)) if y[j] != y[i]]
        if eps is not None:
            minp = min((s[i, j] for j in P), default=np.inf)
            maxn = max((s[i, k] for k in N), default=-np.inf)
            P2 = [j for j in P if s[i, j] - eps < maxn]
            N = [k for k in N if s[i, k] + eps > minp]
            P = P2
        lp = np.log1p(sum(np.exp(-alpha * (s[i, j] - lam)) for j in P)) / alpha
        ln = np.log1p(sum(np.exp(beta * (s[i, k] - lam)) for k in N)) / beta
        out.append(lp + ln)
    return np.array(out)


def _np_supcon(e, y, tau=0.1):
    e = _unit(e)
    z = e @ e.T / tau
    out = []
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        lse = np.log(sum(np.exp(z[i, a]) for a in others))
        P = [p for p in others if y[p] == y[i]]
        out.append(0.0 if not P else -np.mean([z[i, p] - lse for p in P]))
    return np.array(out)


def _np_triplet(e, y, m, mining):
    e = _unit(e)
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    sums, counts = [], []
    for a in range(len(y)):
        P = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        N = [n for n in range(len(y)) if y[n] != y[a]]
        if mining == "hard":
            trips = [(max(P, key=lambda p: d[a, p]), min(N, key=lambda n: d[a, n]))] if P and N else []
        else:
            trips = list(itertools.product(P, N))
            if mining == "semihard":
                trips = [(p, n) for p, n in trips if d[a, p] < d[a, n] < d[a, p] + m]
        v = [max(0.0, d[a, p] - d[a, n] + m) for p, n in trips]
        v = [x for x in v if x > 0]
        sums.append(sum(v))
        counts.append(len(v))
    return np.array(sums), np.array(counts)


RNG = np.random.default_rng(0)
E2 = RNG.normal(size=(8, 4))
Y2 = np.array([0, 0, 0, 1, 1, 2, 2, 3], np.int32)


def test_against_numpy_oracles_f64():
    with jax.enable_x64(True):
        for eps in (None, 0.1):
            np.testing.assert_allclose(M.multi_similarity_loss(E2, Y2, epsilon=eps), _np_ms(E2, Y2, eps=eps),
                                       atol=1e-10)
        np.testing.assert_allclose(M.supcon_loss(E2, Y2), _np_supcon(E2, Y2), atol=1e-10)
        for mining in ("all", "semihard", "hard"):
            s, c = M.triplet_loss(E2, Y2, margin=0.3, mining=mining, return_counts=True)
            s_ref, c_ref = _np_triplet(E2, Y2, 0.3, mining)
            np.testing.assert_allclose(s, s_ref, atol=1e-10)
            np.testing.assert_array_equal(c, c_ref)
            np.testing.assert_allclose(
                M.triplet_loss(E2, Y2, margin=0.3, mining=mining), s_ref / np.maximum(c_ref, 1), atol=1e-10
            )


def test_soft_triple_against_numpy():
    with jax.enable_x64(True):
        w = RNG.normal(size=(4, 6))  # D=4, C=3, K=2
        y = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
        e = _unit(E2)
        wc = _unit(w.T).reshape(3, 2, 4)
        sim = np.einsum("bd,ckd->bck", e, wc)
        att = np.exp(sim / 0.1) / np.exp(sim / 0.1).sum(-1, keepdims=True)
        sc = (att * sim).sum(-1)
        z = 20.0 * (sc - 0.01 * np.eye(3)[y])
        ref = np.log(np.exp(z).sum(-1)) - z[np.arange(8), y]
        np.testing.assert_allclose(M.soft_triple_loss(E2, w, y, centers_per_class=2), ref, atol=1e-10)
        reg = sum(np.sqrt(2 - 2 * wc[c, 0] @ wc[c, 1]) for c in range(3)) / (3 * 2 * 1)
        np.testing.assert_allclose(M.soft_triple_center_regularizer(w, centers_per_class=2), reg, atol=1e-12)


def test_miner_matches_bruteforce():
    pos, neg = M.multi_similarity_miner(E2, Y2, epsilon=0.1)
    s = _unit(E2) @ _unit(E2).T
    for i in range(8):
        P = [j for j in range(8) if j != i and Y2[j] == Y2[i]]
        N = [k for k in range(8) if Y2[k] != Y2[i]]
        minp = min((s[i, j] for j in P), default=np.inf)
        maxn = max((s[i, k] for k in N), default=-np.inf)
        assert sorted(np.flatnonzero(pos[i])) == [j for j in P if s[i, j] - 0.1 < maxn]
        assert sorted(np.flatnonzero(neg[i])) == [k for k in N if s[i, k] + 0.1 > minp]


# ------------------------------------------------------------------ degenerate batches


def _losses_no_positive():
    """Losses that must be exactly 0 with zero gradient when no positive pair exists."""
    return {
        "ms_mined": lambda e, y: M.multi_similarity_loss(e, y, epsilon=0.1),
        "supcon": lambda e, y: M.supcon_loss(e, y),
        "triplet_all": lambda e, y: M.triplet_loss(e, y, margin=0.5),
        "triplet_hard": lambda e, y: M.triplet_loss(e, y, margin=0.5, mining="hard"),
        "triplet_soft": lambda e, y: M.triplet_loss(e, y, margin=0.5, soft=True),
    }


@functools.partial(jax.jit, static_argnums=0)
def _no_pos_eval(fns, e, y):
    vals = [fn(e, y) for fn in fns]
    grads = [jax.grad(lambda z, fn=fn: fn(z, y).sum())(e) for fn in fns]
    return vals, grads


@pytest.mark.parametrize("labels", [np.arange(6), np.zeros(6)], ids=["all_distinct", "single_class"])
def test_no_positive_pair_gives_zero(labels):
    y = jnp.asarray(labels, jnp.int32)
    e = jnp.asarray(E, jnp.float32)
    fns = _losses_no_positive()
    if labels[0] == labels[1]:
        del fns["supcon"]  # a single class has positives for SupCon (it needs no negatives)
    vals, grads = _no_pos_eval(tuple(fns.values()), e, y)
    for name, v, g in zip(fns, vals, grads):
        np.testing.assert_array_equal(np.asarray(v), 0.0, err_msg=name)
        np.testing.assert_array_equal(np.asarray(g), 0.0, err_msg=name)
    # without mining MS keeps its one-sided term (as pytorch-metric-learning): finite, positive
    v = M.multi_similarity_loss(e, y)
    assert np.all(np.isfinite(v)) and np.all(np.asarray(v) > 0)
    assert np.all(np.isfinite(jax.grad(lambda z: M.multi_similarity_loss(z, y).sum())(e)))


def test_supcon_single_class_and_all_masked():
    e = jnp.asarray(E, jnp.float32)
    # a single class: every other example is a positive; finite
    assert np.all(np.isfinite(M.supcon_loss(e, jnp.zeros(6, jnp.int32))))

    @jax.jit
    def masked(z):
        none = jnp.zeros(6, bool)
        fns = (M.multi_similarity_loss, M.supcon_loss, M.triplet_loss)
        return [fn(z, Y, where=none) for fn in fns], [
            jax.grad(lambda u, fn=fn: fn(u, Y, where=none).sum())(z) for fn in fns
        ]

    vals, grads = masked(e)
    for v, g in zip(vals, grads):
        np.testing.assert_array_equal(np.asarray(v), 0.0)
        np.testing.assert_array_equal(np.asarray(g), 0.0)


@jax.jit
def _coincident_grads(e, z0):
    y = jnp.array([0, 0, 1, 1, 2, 2])
    fns = (
        lambda z: M.triplet_loss(z, y, margin=0.5).sum(),
        lambda z: M.triplet_loss(z, y, margin=0.5, mining="hard", normalize=False).sum(),
        lambda z: M.multi_similarity_loss(z, y).sum(),
        lambda z: M.supcon_loss(z, y).sum(),
    )
    gs = [jax.grad(fn)(e) for fn in fns]
    gs.append(jax.grad(lambda z: M.supcon_loss(z, jnp.array([0, 0, 1, 1])).sum())(z0))
    return gs


def test_coincident_embeddings_have_finite_gradients():
    e = jnp.asarray(np.repeat(E[:3], 2, axis=0), jnp.float32)  # pairs of identical rows
    z0 = jnp.zeros((4, 3)).at[1].set(1.0)  # a zero embedding under normalisation
    for g in _coincident_grads(e, z0):
        assert np.all(np.isfinite(g))


# ------------------------------------------------------------------ gradients, jit, vmap, bf16


def test_gradients_f64():
    with jax.enable_x64(True):
        e = jnp.asarray(E2)
        w = jnp.asarray(RNG.normal(size=(4, 6)))
        yc = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
        protos = jnp.asarray(RNG.normal(size=(4, 4)))
        pw = jnp.asarray(RNG.uniform(size=(8, 5)))
        v = jnp.asarray(RNG.normal(size=(5, 4)))
        weights = jnp.asarray(RNG.uniform(0.5, 1.5, size=10))

        @jax.jit
        def total(z, c, p, m):
            terms = jnp.stack([
                M.multi_similarity_loss(z, Y2, beta=10.0).sum(),
                M.multi_similarity_loss(z, Y2, beta=10.0, epsilon=0.1).sum(),
                M.supcon_loss(z, Y2).sum(),
                M.triplet_loss(z, Y2, margin=0.3).sum(),
                M.triplet_loss(z, Y2, margin=0.3, mining="hard").sum(),
                M.triplet_loss(z, Y2, margin=0.3, soft=True).sum(),
                M.soft_triple_loss(z, c, yc, centers_per_class=2, la=5.0).sum(),
                M.soft_triple_center_regularizer(c, centers_per_class=2),
                M.proto_triplet_loss(z, Y2 % 4, p, margin=3.0).sum(),
                M.metrix_multi_similarity_loss(z, m, pw, beta=10.0).sum(),
            ])
            return jnp.dot(weights, terms)

        check_grads(total, (e, w, protos, v), order=1, modes=["rev"], eps=1e-6)


_ms_jit = jax.jit(lambda e, y, w: M.multi_similarity_loss(e, y, epsilon=0.1, where=w))
_sc_jit = jax.jit(lambda e, y, w: M.supcon_loss(e, y, where=w))
_tr_jit = jax.jit(lambda e, y, w: M.triplet_loss(e, y, margin=0.3, mining="hard", where=w))


def test_jit_vmap_where_consistency():
    e = jnp.asarray(E2, jnp.float32)
    y = jnp.asarray(Y2)
    w = jnp.array([True] * 6 + [False] * 2)
    for jf, ef in (
        (_ms_jit, lambda e, y, w: M.multi_similarity_loss(e, y, epsilon=0.1, where=w)),
        (_sc_jit, lambda e, y, w: M.supcon_loss(e, y, where=w)),
        (_tr_jit, lambda e, y, w: M.triplet_loss(e, y, margin=0.3, mining="hard", where=w)),
    ):
        full = ef(e, y, w)
        np.testing.assert_allclose(jf(e, y, w), full, rtol=1e-6, atol=1e-7)
        # masked rows equal the loss of the sliced batch, and are 0 themselves
        np.testing.assert_allclose(full[:6], ef(e[:6], y[:6], None), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(full[6:]), 0.0)
        # vmap over episodes
        eb = jnp.stack([e, e[::-1]])
        yb = jnp.stack([y, y[::-1]])
        wb = jnp.stack([w, w[::-1]])
        vb = jax.vmap(jf)(eb, yb, wb)
        np.testing.assert_allclose(vb[0], full, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(vb[1], full[::-1], rtol=1e-6, atol=1e-7)


def test_bf16_inputs():
    e16 = jnp.asarray(E2, jnp.bfloat16)
    e32 = e16.astype(jnp.float32)
    for fn in (
        lambda z: M.multi_similarity_loss(z, Y2),
        lambda z: M.supcon_loss(z, Y2),
        lambda z: M.triplet_loss(z, Y2, margin=0.3),
    ):
        a = fn(e16)
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, fn(e32), rtol=1e-5, atol=1e-6)


def test_extreme_embeddings_are_finite():
    e = jnp.asarray(E2 * 1e4, jnp.float32).at[0].set(-1e4)
    fns = (
        lambda z: M.multi_similarity_loss(z, Y2, beta=1e3),
        lambda z: M.supcon_loss(z, Y2, temperature=1e-3),
        lambda z: M.triplet_loss(z, Y2, margin=0.3, normalize=False),
    )
    out = jax.jit(lambda z: [(fn(z), jax.grad(lambda u, fn=fn: fn(u).sum())(z)) for fn in fns])(e)
    for v, g in out:
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(8)), st.permutations(range(4)))
def test_permutation_invariance(perm, relabel):
    perm = np.array(perm)
    y2 = np.array(relabel)[Y2]
    e = jnp.asarray(E2, jnp.float32)
    for fn in (
        lambda z, y: M.multi_similarity_loss(z, y, epsilon=0.1),
        lambda z, y: M.supcon_loss(z, y),
        lambda z, y: M.triplet_loss(z, y, margin=0.3),
    ):
        base = fn(e, Y2)
        np.testing.assert_allclose(fn(e[perm], Y2[perm]), base[perm], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fn(e, y2), base, rtol=1e-6, atol=1e-7)


def test_supcon_multiview_matches_flattened():
    x = jnp.asarray(RNG.normal(size=(3, 2, 4)), jnp.float32)
    y = jnp.array([0, 1, 0])
    mv = M.supcon_loss(x, y)
    assert mv.shape == (3, 2)
    flat = M.supcon_loss(x.reshape(6, 4), jnp.repeat(y, 2))
    np.testing.assert_allclose(mv.reshape(-1), flat, rtol=1e-6)


# ------------------------------------------------------------------ Metrix


def test_metrix_reduces_to_ms_for_hard_weights():
    with jax.enable_x64(True):
        same = (Y2[:, None] == Y2[None, :]).astype(np.float64)
        not_self = ~np.eye(8, dtype=bool)
        v = M.metrix_multi_similarity_loss(E2, E2, same, pair_where=jnp.asarray(not_self))
        np.testing.assert_allclose(v, M.multi_similarity_loss(E2, Y2), atol=1e-12)
        # soft weights: direct (non-log-space) formula
        w = RNG.uniform(size=(8, 8))
        s = _unit(E2) @ _unit(E2).T
        ref = (np.log1p((w * np.exp(-2 * (s - 0.5))).sum(1)) / 2
               + np.log1p(((1 - w) * np.exp(50 * (s - 0.5))).sum(1)) / 50)
        np.testing.assert_allclose(M.metrix_multi_similarity_loss(E2, E2, w), ref, atol=1e-10)


def test_mixup_positiveness():
    w = M.mixup_positiveness(jnp.array([0, 1, 2]), jnp.array([0, 1]), jnp.array([1, 1]), jnp.array([0.3, 0.6]))
    np.testing.assert_allclose(w, [[0.3, 0.0], [0.7, 1.0], [0.0, 0.0]], rtol=1e-6)


# ------------------------------------------------------------------ SuSana


def test_proto_triplet_and_prototypes():
    with jax.enable_x64(True):
        y = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
        protos = M.class_prototypes(E2, y, 3)
        ref_p = np.stack([E2[y == c].mean(0) for c in range(3)])
        np.testing.assert_allclose(protos, ref_p, atol=1e-12)
        d = np.sqrt(((E2[:, None] - ref_p[None]) ** 2).sum(-1) + 1e-6)
        dn = np.where(np.eye(3)[y] > 0, np.inf, d).min(1)
        ref = np.maximum(0, d[np.arange(8), y] - dn + 0.5)
        np.testing.assert_allclose(M.proto_triplet_loss(E2, y, protos), ref, atol=1e-10)
    # a query on its own prototype has a finite gradient
    g = jax.grad(lambda q: M.proto_triplet_loss(q, jnp.array([0]), jnp.array([[0.0, 0.0], [0.1, 0.0]])).sum())(
        jnp.zeros((1, 2))
    )
    assert np.all(np.isfinite(g))


def test_icnn_loss_properties():
    centers = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    y = np.repeat(np.arange(3), 5).astype(np.int32)
    tight = centers[y] + 0.01 * RNG.normal(size=(15, 2))
    vg = jax.jit(jax.value_and_grad(lambda z: M.icnn_loss(z, y)))
    assert float(vg(jnp.asarray(tight, jnp.float32))[0]) < 1e-3
    mixed = RNG.normal(size=(15, 2))
    v, g = vg(jnp.asarray(mixed, jnp.float32))
    assert float(v) > 0.1 and np.isfinite(float(v))
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) > 0


# ------------------------------------------------------------------ errors name the argument


def test_errors():
    e = jnp.asarray(E, jnp.float32)
    with pytest.raises(ValueError, match="embeddings"):
        M.multi_similarity_loss(e[0], Y)
    with pytest.raises(TypeError, match="embeddings"):
        M.supcon_loss(jnp.ones((6, 3), jnp.int32), Y)
    with pytest.raises(TypeError, match="labels"):
        M.supcon_loss(e, Y.astype(np.float32))
    with pytest.raises(ValueError, match="labels"):
        M.triplet_loss(e, Y[:4])
    with pytest.raises(ValueError, match="where"):
        M.triplet_loss(e, Y, where=jnp.ones(5, bool))
    with pytest.raises(TypeError, match="where"):
        M.triplet_loss(e, Y, where=jnp.ones(6))
    with pytest.raises(ValueError, match="mining"):
        M.triplet_loss(e, Y, mining="easy")
    with pytest.raises(ValueError, match="margin"):
        M.triplet_loss(e, Y, margin=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        M.supcon_loss(e, Y, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        M.multi_similarity_loss(e, Y, alpha=0.0)
    with pytest.raises(ValueError, match="centers_per_class"):
        M.soft_triple_loss(e, W_ST, Y, centers_per_class=4)
    with pytest.raises(ValueError, match="centers"):
        M.soft_triple_loss(e, W_ST.T, Y, centers_per_class=2)
    with pytest.raises(ValueError, match="positiveness"):
        M.metrix_multi_similarity_loss(e, e, jnp.ones((6, 5)))
    with pytest.raises(ValueError, match="prototypes"):
        M.proto_triplet_loss(e, Y, jnp.ones((1, 3)))


# ------------------------------------------------------------------ optional oracle (PML)


def test_pytorch_metric_learning_oracle():
    torch = pytest.importorskip("torch")
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses, miners

    et = torch.tensor(E2, dtype=torch.float64)
    yt = torch.tensor(Y2, dtype=torch.long)
    with jax.enable_x64(True):
        ms = float(M.multi_similarity_loss(E2, Y2).mean())
        np.testing.assert_allclose(ms, float(losses.MultiSimilarityLoss(2, 50, 0.5)(et, yt)), atol=1e-9)
        miner = miners.MultiSimilarityMiner(epsilon=0.1)
        msm = float(M.multi_similarity_loss(E2, Y2, epsilon=0.1).mean())
        np.testing.assert_allclose(msm, float(losses.MultiSimilarityLoss(2, 50, 0.5)(et, yt, miner(et, yt))), atol=1e-9)
        sc = np.asarray(M.supcon_loss(E2, Y2))
        np.testing.assert_allclose(sc[sc > 0].mean(), float(losses.SupConLoss(0.1)(et, yt)), atol=1e-9)
        s, c = M.triplet_loss(E2, Y2, margin=0.3, return_counts=True)
        np.testing.assert_allclose(float(s.sum() / c.sum()), float(losses.TripletMarginLoss(margin=0.3)(et, yt)),
                                   atol=1e-9)
    del pml


def test_nan_embedding_propagates():
    # NaN in -> NaN out: a NaN query gives NaN (not a clamped distance), the other queries are
    # unchanged; a NaN embedding makes the ICNN score NaN (it is selected, not dropped, by k-NN)
    q = np.array([[1.0, 0.0], [2.0, np.nan], [0.5, 0.5]], np.float32)
    protos = np.array([[0.0, 0.0], [3.0, 0.0]], np.float32)
    out = np.asarray(M.proto_triplet_loss(q, np.array([0, 0, 1]), protos))
    clean = np.asarray(M.proto_triplet_loss(q[[0, 2]], np.array([0, 1]), protos))
    assert np.isnan(out[1])
    np.testing.assert_array_equal(out[[0, 2]], clean)
    e = E.astype(np.float32).copy()
    e[4, 1] = np.nan
    v, g = jax.value_and_grad(lambda z: M.icnn_loss(z, Y, k=1))(e)
    assert np.isnan(v) and np.isnan(g).any()
