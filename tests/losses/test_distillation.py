"""Tests of lossjax.losses.distillation (frozen values: docs/design/test_vectors.md §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _issue6a_checks import J, battery, finite_value_and_grad, grad_check_x64
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lossjax.losses.distillation import (
    binary_kl_loss,
    binary_kl_norm_loss,
    dkd_loss,
    kd_loss,
    nkd_loss,
    plackett_luce_distillation_loss,
    uskd_loss,
)

# fixture F3 (docs/design/test_vectors.md §2)
ZS = np.array([2.0, 1.0, 0.0, -1.0])
ZT = np.array([1.0, 3.0, 0.0, 0.0])
# shared tiny batch
RNG = np.random.default_rng(0)
XS = (RNG.normal(size=(3, 5)) * 2).astype(np.float32)
XT = (RNG.normal(size=(3, 5)) * 2).astype(np.float32)
XW = (RNG.normal(size=(3, 5))).astype(np.float32)
Y = np.array([0, 3, 1], np.int32)


# ------------------------------------------------------------------ float64 numpy oracles


def _lsm(x, axis=-1):
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


def np_kd(zs, zt, T):
    lq, lp = _lsm(zt / T), _lsm(zs / T)
    return T**2 * (np.exp(lq) * (lq - lp)).sum(-1)


def np_nkd(zs, zt, y, T, gamma):
    n, c = zs.shape
    ls, t = _lsm(zs), np.exp(_lsm(zt))
    rows = np.arange(n)
    out = -t[rows, y] * ls[rows, y]
    mask = np.ones_like(zs, bool)
    mask[rows, y] = False
    s_n = _lsm(zs[mask].reshape(n, -1) / T)
    t_n = np.exp(_lsm(zt[mask].reshape(n, -1) / T))
    return out - gamma * T**2 * (t_n * s_n).sum(-1)


def np_dkd(zs, zt, y, T, alpha, beta):
    """The reference formulation (−1000 target offset), float64."""
    n, c = zs.shape
    gt = np.zeros_like(zs)
    gt[np.arange(n), y] = 1
    ps, pt = np.exp(_lsm(zs / T)), np.exp(_lsm(zt / T))
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum(1)
    lt2 = _lsm(zt / T - 1000 * gt)
    ls2 = _lsm(zs / T - 1000 * gt)
    nckd = (np.exp(lt2) * (lt2 - ls2)).sum(1)
    return T**2 * (alpha * tckd + beta * nckd)


def np_uskd(zs, w, labels, alpha, beta, mu, rank_mode="reference"):
    """Float64 restatement of the released USKD forward (hard or probability labels)."""
    n, c = zs.shape
    if labels.ndim > 1:
        lab = np.argsort(-labels, axis=1, kind="stable")[:, :2]
        val = np.take_along_axis(labels, lab, 1)
    else:
        lab = labels[:, None]
        val = np.ones((n, 1))
    ls = _lsm(zs)
    s_t = np.exp(np.take_along_axis(ls, lab, 1))
    p_t = s_t**2
    p_t = p_t + val - p_t.mean(0, keepdims=True)
    p_t[val == 0] = 0
    ls_t = np.take_along_axis(ls, lab, 1)
    l_t = -(p_t * ls_t).sum(1)
    if labels.ndim > 1:
        target = labels * 0.9 + 0.1 / c
    else:
        target = np.full((n, c), 0.1 / c)
        target[np.arange(n), labels] += 0.9
    lw = _lsm(w)
    l_weak = -(mu * target * lw).sum(1)
    wp = np.exp(lw)
    w_t = np.take_along_axis(wp, lab, 1).sum(1, keepdims=True)
    if rank_mode == "reference":
        score = wp / (1 - w_t + 1e-6) + ls / (1 - ls_t.sum(1, keepdims=True) + 1e-6)
    elif rank_mode == "probs":
        sp = np.exp(ls)
        score = wp / (1 - w_t + 1e-6) + sp / (1 - s_t.sum(1, keepdims=True) + 1e-6)
    else:
        score = wp / (1 - w_t + 1e-6)
    order = np.argsort(-score, axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")
    z = 1.0 / (rank + 1)
    mask = np.ones_like(zs, bool)
    for k in range(lab.shape[1]):
        mask[np.arange(n), lab[:, k]] = False
    ns = _lsm(zs[mask].reshape(n, -1))
    nz = z[mask].reshape(n, -1)
    nz = nz / nz.sum(1, keepdims=True)
    l_non = -(nz * ns).sum(1)
    return alpha * l_t + beta * l_non + l_weak


def np_pld(zs, zt, y, tau=1.0, uniform=False, top_k=None):
    out = []
    for s, t, yy in zip(zs, zt, y):
        c = len(s)
        rest = [j for j in np.argsort(-t, kind="stable") if j != yy]
        perm = [yy] + rest
        a = np.ones(c) if uniform else np.exp(_lsm(t / tau))[perm]
        sp = s[perm]
        kk = c if top_k is None else min(top_k, c)
        tot = 0.0
        for k in range(kk):
            m = sp[k:].max()
            tot += a[k] * (m + np.log(np.exp(sp[k:] - m).sum()) - sp[k])
        out.append(tot)
    return np.array(out)


def np_binary_kl_norm(zs, zt, T):
    q = 1 / (1 + np.exp(-(zs - zt) / T))
    return T**2 * (0.5 * np.log(0.5 / q) + 0.5 * np.log(0.5 / (1 - q))).sum(-1)


def np_binary_kl(zs, zt, T):
    a, b = 1 / (1 + np.exp(-zt / T)), 1 / (1 + np.exp(-zs / T))
    return T**2 * (a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))).sum(-1)


# ------------------------------------------- frozen values (docs/design/test_vectors.md §3)


def test_frozen_values_float64():
    with jax.enable_x64(True):
        zs, zt, y = jnp.asarray(ZS), jnp.asarray(ZT), jnp.array(0)
        np.testing.assert_allclose(J(kd_loss, zs, zt, temperature=4.0), 0.7401927889, rtol=1e-9)
        np.testing.assert_allclose(
            optax.losses.kl_divergence(jax.nn.log_softmax(zs / 4), jax.nn.softmax(zt / 4)) * 16,
            0.7401927889, rtol=1e-9)
        np.testing.assert_allclose(J(nkd_loss, zs, zt, y, temperature=1.0, gamma=1.5), 0.8634031451,
                                   rtol=1e-9)
        np.testing.assert_allclose(J(dkd_loss, zs, zt, y, temperature=4.0, alpha=1.0, beta=8.0),
                                   3.2927232109, rtol=1e-9)
        s2 = jnp.array([[2.0, 1, 0, -1], [0.5, 0.2, 1.5, -0.3]])
        w2 = jnp.array([[1.0, 0, 0.5, -0.5], [0, 0.3, 1, 0.8]])
        np.testing.assert_allclose(jnp.mean(J(uskd_loss, s2, w2, jnp.array([0, 2]))), 0.6281322709,
                                   rtol=1e-9)
        a, b = jnp.array([1.0, 2, 0.5, -1]), jnp.array([0.3, 2.5, 1, -2])
        np.testing.assert_allclose(J(plackett_luce_distillation_loss, a, b, y), 0.3359920690,
                                   rtol=1e-9)
        np.testing.assert_allclose(J(plackett_luce_distillation_loss, a, b, y, weighting="uniform"),
                                   1.9379064727, rtol=1e-9)
        # first position alone: alpha_y * CE = softmax(zt)_y * 1.4951818981
        np.testing.assert_allclose(J(plackett_luce_distillation_loss, a, b, y, top_k=1),
                                   jax.nn.softmax(b)[0] * 1.4951818981, rtol=1e-9)


def test_frozen_values_float32():
    zs, zt = jnp.asarray(ZS, jnp.float32), jnp.asarray(ZT, jnp.float32)
    np.testing.assert_allclose(J(kd_loss, zs, zt), 0.7401927889, rtol=2e-6)
    np.testing.assert_allclose(J(nkd_loss, zs, zt, jnp.array(0)), 0.8634031451, rtol=2e-6)
    np.testing.assert_allclose(J(dkd_loss, zs, zt, jnp.array(0)), 3.2927232109, rtol=1e-5)


# ------------------------------------------------------------------ oracles on a random batch


def test_numpy_oracles_float64():
    x64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    zs, zt, w = x64(XS), x64(XT), x64(XW)
    with jax.enable_x64(True):
        for T in (1.0, 4.0):
            np.testing.assert_allclose(J(kd_loss, zs, zt, temperature=np.asarray(T)), np_kd(zs, zt, T), rtol=1e-12)
        for T, g in ((1.0, 1.5), (3.0, 3.5)):
            np.testing.assert_allclose(J(nkd_loss, zs, zt, Y, temperature=np.asarray(T), gamma=np.asarray(g)),
                                       np_nkd(zs, zt, Y, T, g), rtol=1e-12)
        for T, a, b in ((4.0, 1.0, 8.0), (1.0, 1.0, 0.5)):
            np.testing.assert_allclose(J(dkd_loss, zs, zt, Y, temperature=np.asarray(T), alpha=np.asarray(a),
                                         beta=np.asarray(b)),
                                       np_dkd(zs, zt, Y, T, a, b), rtol=1e-10)
        for mode in ("reference", "probs", "weak_probs"):
            np.testing.assert_allclose(J(uskd_loss, zs, w, Y, rank_mode=mode),
                                       np_uskd(zs, w, Y, 1.0, 0.1, 0.005, mode), rtol=1e-12)
        soft = np.zeros((3, 5))
        soft[[0, 1, 2], [0, 3, 1]] = 0.7
        soft[[0, 1, 2], [2, 4, 0]] = 0.3
        soft[2] = [0.0, 1.0, 0, 0, 0]  # a one-hot row: second label value is 0
        np.testing.assert_allclose(J(uskd_loss, zs, w, soft, alpha=0.1, beta=0.1, mu=0.1),
                                   np_uskd(zs, w, soft, 0.1, 0.1, 0.1), rtol=1e-12)
        for kw in ({}, {"uniform": True}, {"top_k": 2}, {"tau": 2.0}):
            ours = J(plackett_luce_distillation_loss,
                zs, zt, Y, weighting="uniform" if kw.get("uniform") else "teacher",
                top_k=kw.get("top_k"), alpha_temperature=kw.get("tau", 1.0))
            np.testing.assert_allclose(ours, np_pld(zs, zt, Y, **kw), rtol=1e-12)
        np.testing.assert_allclose(J(binary_kl_norm_loss, zs, zt, temperature=2.0),
                                   np_binary_kl_norm(zs, zt, 2.0), rtol=1e-10)
        np.testing.assert_allclose(J(binary_kl_loss, zs, zt, temperature=2.0),
                                   np_binary_kl(zs, zt, 2.0), rtol=1e-10)


def test_rax_listmle_oracle():
    rax = pytest.importorskip("rax")
    zs, zt = jnp.asarray(XS), jnp.asarray(XT)
    ours = J(plackett_luce_distillation_loss, zs, zt, Y, weighting="uniform")
    lab = zt.at[jnp.arange(3), Y].set(zt.max(-1) + 1.0)
    ref = jnp.stack([rax.listmle_loss(zs[i], lab[i]) for i in range(3)])
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_torch_kd_oracle():
    torch = pytest.importorskip("torch")
    T = 4.0
    ls = torch.log_softmax(torch.tensor(XS, dtype=torch.float64) / T, -1)
    pt = torch.softmax(torch.tensor(XT, dtype=torch.float64) / T, -1)
    ref = torch.nn.functional.kl_div(ls, pt, reduction="none").sum(-1).numpy() * T**2
    np.testing.assert_allclose(J(kd_loss, XS, XT, temperature=T), ref, rtol=1e-5)


# ------------------------------------------------------------------ properties


def test_kd_properties():
    # teacher == student -> 0; shift invariance per row
    np.testing.assert_array_equal(J(kd_loss, XS, XS), 0.0)
    np.testing.assert_allclose(J(kd_loss, XS + 7.0, XT - 3.0), J(kd_loss, XS, XT), rtol=1e-5)
    # gradient at T = 1 is softmax(zs) - softmax(zt)
    g = jax.grad(lambda z: J(kd_loss, z, XT, temperature=1.0).sum())(jnp.asarray(XS))
    np.testing.assert_allclose(g, jax.nn.softmax(XS) - jax.nn.softmax(XT), atol=1e-6)
    # teacher is stop-gradient
    gt = jax.grad(lambda t: J(kd_loss, XS, t).sum())(jnp.asarray(XT))
    np.testing.assert_array_equal(gt, 0.0)
    # T -> inf: T^2 KL -> (1/2K) sum (d - mean d)^2 (Hinton's logit matching)
    with jax.enable_x64(True):
        zs, zt = np.float64(XS), np.float64(XT)
        d = zs - zt
        lim = ((d - d.mean(-1, keepdims=True)) ** 2).sum(-1) / (2 * zs.shape[-1])
        np.testing.assert_allclose(J(kd_loss, zs, zt, temperature=np.asarray(1e4)), lim, rtol=1e-3)
        err3 = np.abs(np.asarray(J(kd_loss, zs, zt, temperature=np.asarray(1e3))) - lim)
        err2 = np.abs(np.asarray(J(kd_loss, zs, zt, temperature=np.asarray(1e2))) - lim)
        assert np.all(err3 < err2)


def test_kd_masks_equal_slicing():
    where = np.ones((3, 5), bool)
    where[:, 2] = False
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(J(kd_loss, XS, XT, where=where), J(kd_loss, XS[:, keep], XT[:, keep]),
                               rtol=1e-6)
    # -inf in both student and teacher behaves like the mask
    xs, xt = XS.copy(), XT.copy()
    xs[:, 2] = xt[:, 2] = -np.inf
    np.testing.assert_allclose(J(kd_loss, xs, xt), J(kd_loss, XS[:, keep], XT[:, keep]), rtol=1e-6)
    finite_value_and_grad(lambda z: J(kd_loss, z, xt), (xs,))
    # rows masked
    rows = np.array([True, False, True])
    out = J(kd_loss, XS, XT, where=rows)
    np.testing.assert_allclose(out, np.where(rows, J(kd_loss, XS, XT), 0.0), rtol=1e-6)
    # student -inf where the teacher has mass: infinite (the mathematics), not NaN
    xs2 = XS.copy()
    xs2[0, 0] = -np.inf
    assert np.isinf(np.asarray(J(kd_loss, xs2, XT))[0])


def test_nkd_properties():
    # zs == zt: target part + gamma T^2 H(t_hat)
    T, g = 2.0, 1.5
    out = np.asarray(J(nkd_loss, XS, XS, Y, temperature=T, gamma=g), np.float64)
    assert np.all(out > 0)
    np.testing.assert_allclose(out, np_nkd(np.float64(XS), np.float64(XS), Y, T, g), rtol=1e-5)
    # K = 2: non-target term vanishes
    x2, t2, y2 = XS[:, :2], XT[:, :2], np.array([0, 1, 0])
    ls = jax.nn.log_softmax(x2)
    ty = jax.nn.softmax(t2)[np.arange(3), y2]
    np.testing.assert_allclose(J(nkd_loss, x2, t2, y2, gamma=5.0), -ty * ls[np.arange(3), y2], rtol=1e-6)
    # probability labels -> argmax
    soft = np.asarray(jax.nn.one_hot(Y, 5)) * 0.8 + 0.04
    np.testing.assert_allclose(J(nkd_loss, XS, XT, soft.astype(np.float32)), J(nkd_loss, XS, XT, Y))


def test_dkd_decomposition_identity():
    """KD = TCKD + (1 - p_t[y]) NCKD at the same temperature (paper's identity)."""
    with jax.enable_x64(True):
        zs, zt = np.float64(XS), np.float64(XT)
        for T in (1.0, 3.0):
            T = np.asarray(T)
            kd = J(kd_loss, zs, zt, temperature=T)
            tckd = J(dkd_loss, zs, zt, Y, temperature=T, alpha=np.asarray(1.0), beta=np.asarray(0.0))
            nckd = J(dkd_loss, zs, zt, Y, temperature=T, alpha=np.asarray(0.0), beta=np.asarray(1.0))
            pty = jax.nn.softmax(zt / T)[np.arange(3), Y]
            np.testing.assert_allclose(kd, tckd + (1 - pty) * nckd, rtol=1e-12)


def test_uskd_batch_semantics():
    # B = 1: p_hat = 1 exactly -> L_t = -log s_y
    one = J(uskd_loss, XS[:1], XW[:1], Y[:1], alpha=1.0, beta=0.0, mu=0.0)
    np.testing.assert_allclose(one, -jax.nn.log_softmax(XS[:1])[0, Y[0]], rtol=1e-6)
    # masked rows are excluded from the batch mean: equals the sliced batch
    rows = np.array([True, False, True])
    out = J(uskd_loss, XS, XW, Y, where=rows)
    ref = J(uskd_loss, XS[rows], XW[rows], Y[rows])
    np.testing.assert_allclose(np.asarray(out)[rows], ref, rtol=1e-6)
    assert np.asarray(out)[1] == 0.0
    # stop-gradient of the soft target: with beta = mu = 0 the gradient is -p_hat (onehot - s)
    g = jax.grad(lambda z: J(uskd_loss, z, XW, Y, beta=0.0, mu=0.0).sum())(jnp.asarray(XS))
    s = np.asarray(jax.nn.softmax(XS), np.float64)
    sy = s[np.arange(3), Y]
    p_hat = sy**2 + 1 - (sy**2).mean()
    ref = -p_hat[:, None] * (np.eye(5)[Y] - s)
    np.testing.assert_allclose(g, ref, atol=1e-6)
    # the rank modes are genuinely different for some input
    a = J(uskd_loss, XS, XW, Y, rank_mode="reference")
    b = J(uskd_loss, XS, XW, Y, rank_mode="weak_probs")
    assert not np.allclose(a, b)


def test_uskd_axis_name_matches_full_batch():
    full = J(uskd_loss, XS, XW, Y)
    sharded = jax.vmap(lambda s, w, y: J(uskd_loss, s, w, y, axis_name="d"), axis_name="d")(
        XS[:, None], XW[:, None], Y[:, None])
    np.testing.assert_allclose(sharded[:, 0], full, rtol=1e-6)


def test_binary_kl_norm_properties():
    T = 2.0
    # minimised iff equal; not shift-invariant
    np.testing.assert_array_equal(J(binary_kl_norm_loss, XS, XS), 0.0)
    assert not np.allclose(J(binary_kl_norm_loss, XS + 1.0, XT), J(binary_kl_norm_loss, XS, XT))
    # gradient (T/2) tanh((zs - zt)/(2T))
    g = jax.grad(lambda z: J(binary_kl_norm_loss, z, XT, temperature=T).sum())(jnp.asarray(XS))
    np.testing.assert_allclose(g, T / 2 * np.tanh((XS - XT) / (2 * T)), atol=1e-6)
    # huge differences: finite, gradient saturates at T/2 (no clamp-induced zero gradient)
    big = XS * 1e4
    v, g = finite_value_and_grad(lambda z: J(binary_kl_norm_loss, z, XT, temperature=T), (big,))
    np.testing.assert_allclose(np.abs(g), T / 2, rtol=1e-6)
    np.testing.assert_array_equal(J(binary_kl_loss, XS, XS), 0.0)


def test_pld_properties():
    base = J(plackett_luce_distillation_loss, XS, XT, Y)
    np.testing.assert_allclose(J(plackett_luce_distillation_loss, XS + 5.0, XT, Y), base, rtol=1e-5)
    # invariant to a monotone transform of the teacher only through alpha: uniform weighting
    u = J(plackett_luce_distillation_loss, XS, XT, Y, weighting="uniform")
    np.testing.assert_allclose(J(plackett_luce_distillation_loss, XS, 3 * XT + 1, Y, weighting="uniform"),
                               u, rtol=1e-6)
    # per-class mask equals slicing (label not masked)
    where = np.ones((3, 5), bool)
    where[:, 2] = False
    keep = [0, 1, 3, 4]
    y_keep = np.array([0, 2, 1])  # Y = [0, 3, 1] re-indexed
    np.testing.assert_allclose(J(plackett_luce_distillation_loss, XS, XT, Y, where=where),
                               J(plackett_luce_distillation_loss, XS[:, keep], XT[:, keep], y_keep),
                               rtol=1e-6)
    finite_value_and_grad(lambda z: J(plackett_luce_distillation_loss, z, XT, Y, where=where), (XS,))


# ------------------------------------------------------------------ generic battery


CASES = {
    "kd": lambda s, t, y, w: kd_loss(s, t, where=w),
    "nkd": lambda s, t, y, w: nkd_loss(s, t, y, temperature=2.0, where=w),
    "dkd": lambda s, t, y, w: dkd_loss(s, t, y, where=w),
    "uskd": lambda s, t, y, w: uskd_loss(s, t, y, where=w),
    "uskd_a0": lambda s, t, y, w: uskd_loss(s, t, y, alpha=0.0, where=w),
    "bkl_norm": lambda s, t, y, w: binary_kl_norm_loss(s, t, where=w),
    "bkl": lambda s, t, y, w: binary_kl_loss(s, t, where=w),
    "pld": lambda s, t, y, w: plackett_luce_distillation_loss(s, t, y, where=w),
}


def _scenario_batch():
    """Ordinary rows, ±1e4 rows, rows of -inf except the label, and fully masked rows."""
    ext_s = np.array([[1e4, -1e4, 0.0, 3.0, -2.0]] * 3, np.float32)
    ext_t = np.array([[-1e4, 1e4, 1.0, 0.0, 2.0]] * 3, np.float32)
    only_s = np.full((3, 5), -np.inf, np.float32)
    only_s[np.arange(3), Y] = 1.0
    only_t = only_s.copy()
    only_t[np.arange(3), Y] = 2.0
    s = np.concatenate([XS, ext_s, only_s, XS])
    t = np.concatenate([XT, ext_t, only_t, XT])
    y = np.tile(Y, 4)
    where = np.ones((12, 5), bool)
    where[9:] = False
    return s, t, y, where, np.arange(12) >= 9


@pytest.mark.parametrize("name", [n for n in CASES if n != "uskd_a0"])
def test_battery(name):
    s, t, y, where, masked = _scenario_batch()
    battery(CASES[name], (s, t, y, where), masked=masked, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["kd", "nkd", "dkd", "uskd_a0", "bkl_norm", "bkl", "pld"])
def test_gradients_float64(name):
    fn = CASES[name]
    grad_check_x64(jax.jit(lambda s, t, y: fn(s, t, y, None)), (XS, XT, Y))


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (2, 4), elements=st.floats(-1e4, 1e4, width=32)),
       hnp.arrays(np.float32, (2, 4), elements=st.floats(-1e4, 1e4, width=32)))
def test_stability_hypothesis(s, t):
    y = np.array([0, 3], np.int32)
    for fn in (_KD, _NKD, _DKD, _PLD):
        out = np.asarray(fn(s, t, y))
        assert np.all(np.isfinite(out)) and np.all(out >= -1e-3), out
        g = np.asarray(_GRADS[fn](s, t, y))
        assert np.all(np.isfinite(g))


_KD = jax.jit(lambda s, t, y: J(kd_loss, s, t))
_NKD = jax.jit(lambda s, t, y: J(nkd_loss, s, t, y))
_DKD = jax.jit(lambda s, t, y: J(dkd_loss, s, t, y))
_PLD = jax.jit(lambda s, t, y: J(plackett_luce_distillation_loss, s, t, y))


_GRADS = {fn: jax.jit(jax.grad(lambda z, t, y, fn=fn: fn(z, t, y).sum())) for fn in (_KD, _NKD, _DKD, _PLD)}


# ------------------------------------------------------------------ errors


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(XS, XT, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        kd_loss(XS, XT[:, :4])
    with pytest.raises(TypeError, match="teacher_logits"):
        kd_loss(XS, Y)
    with pytest.raises(TypeError, match="student_logits"):
        kd_loss(Y, XT)
    with pytest.raises(ValueError, match="where"):
        kd_loss(XS, XT, where=np.ones(4, bool))
    with pytest.raises(ValueError, match="labels"):
        nkd_loss(XS, XT, Y[:2])
    with pytest.raises(ValueError, match="gamma"):
        nkd_loss(XS, XT, Y, gamma=-1.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        dkd_loss(XS, XT[:2], Y)
    with pytest.raises(TypeError, match="labels"):
        dkd_loss(XS, XT, XT)
    with pytest.raises(ValueError, match="rank_mode"):
        uskd_loss(XS, XW, Y, rank_mode="paper")
    with pytest.raises(ValueError, match="weak_logits"):
        uskd_loss(XS, XW[:, :3], Y)
    with pytest.raises(ValueError, match="top_k"):
        plackett_luce_distillation_loss(XS, XT, Y, top_k=0)
    with pytest.raises(ValueError, match="weighting"):
        plackett_luce_distillation_loss(XS, XT, Y, weighting="x")
    with pytest.raises(ValueError, match="temperature"):
        binary_kl_norm_loss(XS, XT, temperature=-1.0)


def test_pld_neg_inf_student_logit_is_probability_zero():
    # only `where` removes a class: a -inf student logit keeps its place in the teacher's order;
    # its term is +inf while a larger logit follows (gradient: the logit at -1e4, float64), and
    # log(#-inf left) = 0 in the last place
    zt = np.array([[0.3, 2.5, 1.0, -2.0], [0.3, 2.5, 1.0, -2.0]], np.float32)
    zs = np.array([[1.0, -np.inf, 0.5, -1.0], [1.0, 0.5, 0.2, -np.inf]], np.float32)
    y = np.array([0, 0])
    f = lambda z: plackett_luce_distillation_loss(z, zt, y)  # noqa: E731
    # one compiled program per dtype (eager op-by-op dispatch of the sort-based loss is slow)
    row_grads = jax.jit(lambda z: (f(z), jax.jacrev(f)(z)))
    v, jac = (np.asarray(a) for a in row_grads(zs))
    with jax.enable_x64(True):
        z64 = np.where(np.isinf(zs), -1e4, zs).astype(np.float64)
        (_, v64), g64 = jax.jit(jax.value_and_grad(lambda z: (jnp.sum(f(z)), f(z)), has_aux=True))(z64)
        v64, g64 = np.asarray(v64), np.asarray(g64)
    assert v[0] == np.inf
    np.testing.assert_allclose(v[1], v64[1], rtol=1e-6)
    np.testing.assert_allclose(jac[1, 1], g64[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jac[0, 0], g64[0], rtol=1e-5, atol=1e-7)
