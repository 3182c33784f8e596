"""Tests of lossjax.losses.segmentation: closed-form values, float64
NumPy oracles of MONAI's formulas, optax's dice_loss on logits, and metric properties."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from lossjax.losses import segmentation as S

X3 = np.array([0.2, 0.6, 0.9])
Y3 = np.array([0.1, 0.8, 0.5])


def _col(v):  # [N] -> [B=1, N, C=1]
    return np.asarray(v, np.float64)[None, :, None]


def test_closed_form_values_f64():
    with jax.enable_x64(True):
        np.testing.assert_allclose(S.jaccard_metric_loss(_col(X3), _col(Y3), smooth=0.0), [0.3684210526], atol=1e-10)
        np.testing.assert_allclose(S.dice_semimetric_loss(_col(X3), _col(Y3), smooth=0.0), [0.2258064516], atol=1e-10)
        # product soft Jaccard / Dice = Tversky (1,1) / (.5,.5) on the same data
        np.testing.assert_allclose(
            S.tversky_loss(_col(X3), _col(Y3), alpha=1.0, beta=1.0, smooth_nr=0, smooth_dr=0), [0.5581395349],
            atol=1e-10)
        np.testing.assert_allclose(S.soft_dice_loss(_col(X3), _col(Y3), smooth_nr=0, smooth_dr=0), [0.3870967742],
                                   atol=1e-10)
        np.testing.assert_allclose(
            S.tversky_loss(_col([0.2, 0.7, 1.0]), _col([0, 1, 0.5]), alpha=0.3, beta=0.7, smooth_nr=0, smooth_dr=0),
            [0.2592592593], atol=1e-10)
        # two-class JDTLoss form with logits = log([x, 1-x]), labels [y, 1-y], smooth 0
        logits = np.log(np.stack([X3, 1 - X3], -1))[None]
        soft = np.stack([Y3, 1 - Y3], -1)[None]
        np.testing.assert_allclose(
            S.jaccard_metric_loss(logits, soft, smooth=0.0, from_logits=True, aggregate="dataset"), 0.3786549708,
            atol=1e-10)
        # SAUNA stable focal L1
        np.testing.assert_allclose(
            S.stable_focal_l1_loss(np.array([[0.5, -0.5, 0.9, -0.2]]), np.array([[0.8, 0.3, 1.0, -0.6]])), [0.33],
            atol=1e-12)


RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(2, 4, 4, 3))
LABELS = RNG.integers(0, 3, size=(2, 4, 4)).astype(np.int32)
LABELS[1] = np.where(LABELS[1] == 2, 0, LABELS[1])  # class 2 absent from image 1
SOFT = np.asarray(jax.nn.softmax(RNG.normal(size=(2, 4, 4, 3)) * 2, -1))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_stats(x, t, axes=(1, 2)):
    return (x * t).sum(axes), x.sum(axes), t.sum(axes)


def test_dice_tversky_gdl_against_monai_formulas_f64():
    with jax.enable_x64(True):
        x = _softmax(LOGITS)
        t = np.eye(3)[LABELS]
        tp, sx, sy = _np_stats(x, t)
        dice = (1 - (2 * tp + 1e-5) / (sx + sy + 1e-5)).mean(-1)
        np.testing.assert_allclose(S.soft_dice_loss(LOGITS, LABELS, from_logits=True), dice, atol=1e-12)
        tv = (1 - (tp + 1e-5) / (tp + 0.3 * (sx - tp) + 0.7 * (sy - tp) + 1e-5)).mean(-1)
        np.testing.assert_allclose(S.tversky_loss(x, LABELS, alpha=0.3, beta=0.7), tv, atol=1e-12)
        # MONAI GeneralizedDiceLoss(w_type="square"): absent-class weight = max finite weight
        with np.errstate(divide="ignore"):
            w = 1.0 / sy**2
        inf = ~np.isfinite(w)
        w[inf] = 0
        w = w + inf * w.max(-1, keepdims=True)
        gdl = 1 - (2 * (w * tp).sum(-1) + 1e-5) / ((w * (sx + sy)).sum(-1) + 1e-5)
        np.testing.assert_allclose(S.generalized_dice_loss(x, LABELS), gdl, atol=1e-12)
        # dataset aggregation and background exclusion
        tpd, sxd, syd = _np_stats(x, t, (0, 1, 2))
        np.testing.assert_allclose(
            S.soft_dice_loss(x, LABELS, aggregate="dataset", include_background=False),
            (1 - (2 * tpd + 1e-5) / (sxd + syd + 1e-5))[1:].mean(), atol=1e-12)
        # optax.losses.dice_loss (logits path, jit-able) as oracle; optax smooth=1
        np.testing.assert_allclose(
            S.tversky_loss(LOGITS, LABELS, smooth_nr=1.0, smooth_dr=1.0, from_logits=True),
            optax.losses.dice_loss(LOGITS, t), atol=1e-10)


def test_jml_matches_min_max_form_and_modes():
    with jax.enable_x64(True):
        x = _softmax(LOGITS)
        t = np.eye(3)[LABELS]
        jml = 1 - (np.minimum(x, t).sum((1, 2)) + 1.0) / (np.maximum(x, t).sum((1, 2)) + 1.0)
        present = t.max((1, 2)) > 0.01
        ref = (jml * present).sum(-1) / present.sum(-1)
        np.testing.assert_allclose(S.jaccard_metric_loss(x, LABELS), ref, atol=1e-12)
        np.testing.assert_allclose(S.jaccard_metric_loss(x, LABELS, classes="all"), jml.mean(-1), atol=1e-12)
        # soft labels default to all classes; log loss and gamma
        js = 1 - (np.minimum(x, SOFT).sum((1, 2)) + 1.0) / (np.maximum(x, SOFT).sum((1, 2)) + 1.0)
        np.testing.assert_allclose(S.jaccard_metric_loss(x, SOFT), js.mean(-1), atol=1e-12)
        np.testing.assert_allclose(S.jaccard_metric_loss(x, SOFT, gamma=2.0), (js**2).mean(-1), atol=1e-12)
        np.testing.assert_allclose(S.jaccard_metric_loss(x, SOFT, log_loss=True), (-np.log(1 - js)).mean(-1),
                                   atol=1e-12)
        # hard binary labels: JML equals the product soft Jaccard
        np.testing.assert_allclose(
            S.jaccard_metric_loss(x, LABELS, classes="all", smooth=0.0),
            S.tversky_loss(x, LABELS, alpha=1.0, beta=1.0, smooth_nr=0.0, smooth_dr=0.0), atol=1e-12)
        # SAUNA: on non-negative inputs equals JML with smooth 0 (single class)
        a, b = RNG.uniform(size=(2, 7)), RNG.uniform(size=(2, 7))
        np.testing.assert_allclose(S.sauna_jaccard_loss(a, b, smooth=0.0),
                                   S.jaccard_metric_loss(a[..., None], b[..., None], smooth=0.0), atol=1e-12)


vec = hnp.arrays(np.float64, 6, elements=st.floats(0, 1))


@settings(max_examples=25, deadline=None)
@given(vec, vec, vec)
def test_jml_is_a_metric(a, b, c):
    def d(u, v):
        return float(S.jaccard_metric_loss(_col(u), _col(v), smooth=1e-9)[0])

    with jax.enable_x64(True):
        assert d(a, a) == pytest.approx(0.0, abs=1e-12)
        assert d(a, b) == pytest.approx(d(b, a), abs=1e-12)
        assert d(a, c) <= d(a, b) + d(b, c) + 1e-9


def test_sauna_signed_properties():
    g = RNG.uniform(-1, 1, size=(2, 3, 3))
    np.testing.assert_allclose(S.sauna_jaccard_loss(g, g), 0.0, atol=1e-6)
    np.testing.assert_allclose(S.sauna_jaccard_loss(-g, g), 1.0, atol=1e-6)
    np.testing.assert_allclose(S.sauna_jaccard_loss(-g, g, aggregate="dataset"), 1.0, atol=1e-6)
    # from_logits = tanh
    np.testing.assert_allclose(S.sauna_jaccard_loss(np.arctanh(g * 0.99), g * 0.99, from_logits=True), 0.0, atol=1e-5)


def test_sauna_jaccard_matches_the_released_loss_types_in_float64_torch():
    """The released SoftJaccardLoss (Oulu-IMEDS/SAUNA) restated: iou = (Σ|x+y| − Σ|x−y|)/(Σ|x+y| + Σ|x−y|)
    on the positive and negative parts of tanh(z) and the signed target, summed over the batch;
    loss_type 1 adds the two Jaccard losses, loss_type 2 joins the parts."""
    import torch

    z = RNG.normal(0, 1.5, size=(3, 4, 4))
    g = np.clip(RNG.normal(-0.3, 0.6, size=(3, 4, 4)), -1, 1)

    def released(zt, loss_type):
        p, gt = torch.tanh(zt), torch.tensor(g)

        def iou(x, y):
            s, d = torch.sum(torch.abs(x + y)), torch.sum(torch.abs(x - y))
            return (s - d) / (s + d), s - d, s + d

        fi, f_i, f_u = iou(torch.relu(p), torch.relu(gt))
        bi, b_i, b_u = iou(torch.relu(-p), torch.relu(-gt))
        return (1 - fi) + (1 - bi) if loss_type == 1 else 1 - (f_i + b_i) / (f_u + b_u)

    for combine, loss_type in (("separate", 1), ("joint", 2)):
        zt = torch.tensor(z, requires_grad=True)
        want = released(zt, loss_type)
        (g_want,) = torch.autograd.grad(want, (zt,))
        with jax.enable_x64(True):
            got, grad = jax.value_and_grad(lambda u, c=combine: S.sauna_jaccard_loss(
                u, g, smooth=0.0, aggregate="dataset", combine=c, from_logits=True))(z)
        np.testing.assert_allclose(got, want.item(), rtol=1e-12)
        np.testing.assert_allclose(grad, g_want.numpy(), rtol=1e-9, atol=1e-14)
    # separate: each part in [0, 1]; perfect 0, fully inverted 2; empty parts cost 0 here
    gg = RNG.uniform(-1, 1, size=(2, 5))
    np.testing.assert_allclose(S.sauna_jaccard_loss(gg, gg, combine="separate"), 0.0, atol=1e-6)
    np.testing.assert_allclose(S.sauna_jaccard_loss(-gg, gg, combine="separate"), 2.0, atol=1e-6)
    pos = np.abs(gg)
    np.testing.assert_allclose(S.sauna_jaccard_loss(pos, pos, combine="separate"), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="combine"):
        S.sauna_jaccard_loss(gg, gg, combine="sum")


def test_stable_focal_l1_detach_and_weights():
    p = jnp.array([[0.5, -0.5, 0.9, -0.2]])
    g = jnp.array([[0.8, 0.3, 1.0, -0.6]])
    np.testing.assert_allclose(S.stable_focal_l1_loss(p, g, detach_weight=True), [0.33], rtol=1e-6)
    # pos_weight multiplies pixels with g > 0: (0.18 + 0.8 + 0.02)*2 + 0.32 = 2.32 -> /4
    np.testing.assert_allclose(S.stable_focal_l1_loss(p, g, pos_weight=2.0), [0.58], rtol=1e-6)
    ga = jax.grad(lambda z: S.stable_focal_l1_loss(z, g).sum())(p)
    gd = jax.grad(lambda z: S.stable_focal_l1_loss(z, g, detach_weight=True).sum())(p)
    # pixel 0: same sign, d = p-g = -0.3; attached: d/dp 2|d|^2 = 4d; detached: w·sign(d) = 2|d|·sign
    np.testing.assert_allclose([ga[0, 0], gd[0, 0]], [4 * -0.3 / 4, 2 * 0.3 * -1 / 4], rtol=1e-5)
    # wrong-sign pixel: plain L1 gradient
    np.testing.assert_allclose(ga[0, 1], -1 / 4, rtol=1e-6)
    # at p = g the gradient is finite (β < 1 too)
    gz = jax.grad(lambda z: S.stable_focal_l1_loss(z, g, beta=0.5).sum())(g)
    assert np.all(np.isfinite(gz))


def _np_pool(x, k, op):
    # [H, W] stride-1 'same' pooling ignoring out-of-bounds
    h, w = x.shape
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            win = x[max(0, i - k[0] // 2):i + k[0] // 2 + 1, max(0, j - k[1] // 2):j + k[1] // 2 + 1]
            out[i, j] = op(win)
    return out


def _np_skel(x, iters=3):
    erode = lambda z: np.minimum(_np_pool(z, (3, 1), np.min), _np_pool(z, (1, 3), np.min))  # noqa: E731
    dilate = lambda z: _np_pool(z, (3, 3), np.max)  # noqa: E731
    skel = np.maximum(x - dilate(erode(x)), 0)
    for _ in range(iters):
        x = erode(x)
        delta = np.maximum(x - dilate(erode(x)), 0)
        skel = skel + np.maximum(delta - skel * delta, 0)
    return skel


def test_cl_dice_against_numpy():
    with jax.enable_x64(True):
        x = _softmax(LOGITS * 3)
        t = np.eye(3)[LABELS]
        sk = S.soft_skeleton(x)
        for b in range(2):
            for c in range(3):
                np.testing.assert_allclose(sk[b, :, :, c], _np_skel(x[b, :, :, c]), atol=1e-12)
        skx = np.stack([[_np_skel(x[b, :, :, c]) for c in range(3)] for b in range(2)]).transpose(0, 2, 3, 1)
        skt = np.stack([[_np_skel(t[b, :, :, c]) for c in range(3)] for b in range(2)]).transpose(0, 2, 3, 1)
        ax = (1, 2, 3)
        xf, tf, sxf, stf = x[..., 1:], t[..., 1:], skx[..., 1:], skt[..., 1:]
        tprec = ((sxf * tf).sum(ax) + 1) / (sxf.sum(ax) + 1)
        tsens = ((stf * xf).sum(ax) + 1) / (stf.sum(ax) + 1)
        cl = 1 - 2 * tprec * tsens / (tprec + tsens)
        dice = 1 - (2 * (xf * tf).sum(ax) + 1) / (xf.sum(ax) + tf.sum(ax) + 1)
        np.testing.assert_allclose(S.cl_dice_loss(x, LABELS, alpha=0.3), 0.7 * dice + 0.3 * cl, atol=1e-12)


_ALL = {
    "jml": lambda x, t, w: S.jaccard_metric_loss(x, t, where=w, from_logits=True),
    "dml": lambda x, t, w: S.dice_semimetric_loss(x, t, where=w, from_logits=True),
    "dice": lambda x, t, w: S.soft_dice_loss(x, t, where=w, from_logits=True),
    "tversky": lambda x, t, w: S.tversky_loss(x, t, alpha=0.3, beta=0.7, where=w, from_logits=True),
    "gdl": lambda x, t, w: S.generalized_dice_loss(x, t, where=w, from_logits=True),
    "cldice": lambda x, t, w: S.cl_dice_loss(x, t, where=w, from_logits=True),
}


@jax.jit
def _all_losses(x, t, w):
    return {k: f(x, t, w) for k, f in _ALL.items()}


def test_jit_where_empty_masks_bf16_and_grads():
    x = jnp.asarray(LOGITS, jnp.float32)
    t = jnp.asarray(LABELS)
    w = jnp.ones(t.shape, bool).at[1].set(False)  # image 1 entirely ignored
    out = _all_losses(x, t, w)
    eager = {k: f(x, t, w) for k, f in _ALL.items() if k in ("jml", "dice")}
    for k, v in eager.items():
        np.testing.assert_allclose(out[k], v, rtol=1e-6)
    for k, v in out.items():
        assert v.shape == (2,) and np.all(np.isfinite(v)), k
    # empty image: no NaN; JML gives 0 (no active class); gradients finite and 0 for that image
    assert float(out["jml"][1]) == 0.0
    g = jax.jit(jax.grad(lambda z: sum(v.sum() for v in _all_losses(z, t, w).values())))(x)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g[1]), 0.0)
    # the kept image's loss does not depend on the other image
    solo = _all_losses(x[:1].repeat(2, 0), t[:1].repeat(2, 0), jnp.ones((2, 4, 4), bool))
    for k in out:
        np.testing.assert_allclose(out[k][0], solo[k][0], rtol=1e-6, err_msg=k)
    # vmap over an extra leading axis equals the per-slice value
    vm = jax.vmap(_all_losses)(x[:, None], t[:, None], w[:, None])
    for k in out:
        np.testing.assert_allclose(vm[k][:, 0], out[k], rtol=1e-6, err_msg=k)
    # bf16 logits give a float32 result equal to the float32 computation of the rounded input
    xb = x.astype(jnp.bfloat16)
    ob = S.jaccard_metric_loss(xb, t, from_logits=True)
    assert ob.dtype == jnp.float32
    np.testing.assert_allclose(ob, S.jaccard_metric_loss(xb.astype(jnp.float32), t, from_logits=True), rtol=1e-6)


def test_identical_masks_give_zero_and_grad_check():
    t = jnp.asarray(LABELS)
    x = jax.nn.one_hot(t, 3)
    np.testing.assert_allclose(S.jaccard_metric_loss(x, t, smooth=0.0), 0.0, atol=1e-7)
    np.testing.assert_allclose(S.soft_dice_loss(x, t), 0.0, atol=1e-7)
    np.testing.assert_allclose(S.cl_dice_loss(x, t), 0.0, atol=1e-7)
    # an empty class everywhere (smooth > 0) gives 0, not NaN
    np.testing.assert_allclose(S.soft_dice_loss(jnp.zeros((1, 3, 1)), jnp.zeros((1, 3), jnp.int32)), 0.0)
    with jax.enable_x64(True):
        xs = jnp.asarray(LOGITS[:1])
        soft = jnp.asarray(SOFT[:1])
        check_grads(jax.jit(lambda z: S.jaccard_metric_loss(z, soft, from_logits=True).sum()
                            + S.generalized_dice_loss(z, soft, from_logits=True).sum()
                            + S.cl_dice_loss(z, soft, from_logits=True).sum()
                            + S.tversky_loss(z, soft, alpha=0.3, beta=0.7, from_logits=True).sum()),
                    (xs,), order=1, modes=["rev"], eps=1e-6)


def test_errors():
    x = jnp.zeros((2, 4, 4, 3))
    t = jnp.zeros((2, 4, 4), jnp.int32)
    with pytest.raises(ValueError, match="targets"):
        S.soft_dice_loss(x, t[:, :3])
    with pytest.raises(ValueError, match="targets"):
        S.jaccard_metric_loss(x, jnp.zeros((2, 4, 4, 2)))
    with pytest.raises(TypeError, match="probs"):
        S.tversky_loss(x.astype(jnp.int32), t)
    with pytest.raises(ValueError, match="where"):
        S.soft_dice_loss(x, t, where=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match="aggregate"):
        S.jaccard_metric_loss(x, t, aggregate="batch")
    with pytest.raises(ValueError, match="classes"):
        S.jaccard_metric_loss(x, t, classes="some")
    with pytest.raises(ValueError, match="gamma"):
        S.jaccard_metric_loss(x, t, gamma=0.5)
    with pytest.raises(ValueError, match="weight_type"):
        S.generalized_dice_loss(x, t, weight_type="log")
    with pytest.raises(ValueError, match="probs"):
        S.cl_dice_loss(jnp.zeros((2, 4, 3)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="target"):
        S.sauna_jaccard_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="alpha"):
        S.stable_focal_l1_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=0.0)


def test_monai_oracle():
    torch = pytest.importorskip("torch")
    monai_losses = pytest.importorskip("monai.losses")
    xt = torch.tensor(LOGITS.transpose(0, 3, 1, 2))
    tt = torch.tensor(np.eye(3)[LABELS].transpose(0, 3, 1, 2))
    with jax.enable_x64(True):
        np.testing.assert_allclose(
            float(monai_losses.DiceLoss(softmax=True)(xt, tt)),
            float(S.soft_dice_loss(LOGITS, LABELS, from_logits=True).mean()), atol=1e-9)
        np.testing.assert_allclose(
            float(monai_losses.TverskyLoss(softmax=True, alpha=0.3, beta=0.7)(xt, tt)),
            float(S.tversky_loss(LOGITS, LABELS, alpha=0.3, beta=0.7, from_logits=True).mean()), atol=1e-9)
        np.testing.assert_allclose(
            float(monai_losses.GeneralizedDiceLoss(softmax=True)(xt, tt)),
            float(S.generalized_dice_loss(LOGITS, LABELS, from_logits=True).mean()), atol=1e-9)
