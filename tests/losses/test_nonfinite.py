"""No silent wrong answers: NaN, ±inf, ±3e38, masked NaN rows, empty batches, label rule, and the
official-code parity gaps (normalized focal loss, APL focal, LDR normalisations).

Oracles: optax (softmax cross-entropy), float64 evaluation, torch re-statements of the authors'
released maths (skipped cleanly without torch), and hand-computed limits. The rules are those of
``docs/conventions.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lossjax.losses as L
from lossjax.losses import _core as C

NAN, INF = jnp.nan, jnp.inf


def _vg(fn, x, *args, **kw):
    return jax.value_and_grad(lambda x: jnp.sum(fn(x, *args, **kw)))(x)


# ---------------------------------------------------------------------------- NaN propagates


def test_nan_logit_propagates_like_optax():
    x = jnp.array([[0.0, NAN, 1.0]])
    y = jnp.array([0])
    v, g = _vg(L.comp_sum_loss, x, y, tau=1.0)
    ref = optax.losses.softmax_cross_entropy_with_integer_labels(x, y)
    assert np.isnan(ref[0]) and np.isnan(v)
    assert np.all(np.isnan(g))
    assert np.isnan(L.masked_logsumexp(jnp.array([0.0, NAN, 1.0])))
    # a NaN in a class masked by `where` is dropped (the only way to drop it)
    m = L.masked_logsumexp(jnp.array([0.0, NAN, 1.0]), jnp.array([True, False, True]))
    np.testing.assert_allclose(m, np.logaddexp(0.0, 1.0), rtol=1e-6)


@pytest.mark.parametrize(
    "fn",
    [
        L.generalized_cross_entropy_loss,
        L.truncated_generalized_cross_entropy_loss,
        L.softmax_focal_loss,
        L.normalized_cross_entropy_loss,
        L.aace_loss,
        L.stablemax_cross_entropy_loss,
    ],
)
def test_nan_row_is_nan_other_rows_unchanged(fn):
    x = jnp.array([[0.0, NAN, 1.0], [2.0, 1.0, 0.1]])
    y = jnp.array([0, 0])
    out = fn(x, y)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1], fn(x[1:], y[1:])[0], rtol=1e-6)


# ---------------------------------------------------------------------------- -inf = probability 0


def test_neg_inf_target_is_infinite_like_optax():
    x = jnp.array([[-INF, 0.0, 1.0]])
    y = jnp.array([0])
    ref = optax.losses.softmax_cross_entropy_with_integer_labels(x, y)
    assert ref[0] == np.inf
    assert L.comp_sum_loss(x, y)[0] == np.inf
    # GCE's limit as p_y -> 0 is 1/q
    np.testing.assert_allclose(L.generalized_cross_entropy_loss(x, y, q=0.7)[0], 1 / 0.7, rtol=1e-6)
    # the gradient is the limit: softmax - onehot = [-1, p_1, p_2]
    _, g = _vg(L.comp_sum_loss, x, y)
    p = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    np.testing.assert_allclose(g[0], [-1.0, *p], rtol=1e-6)


def test_neg_inf_non_target_equals_zero_probability():
    x = jnp.array([[2.0, -INF, 0.5]])
    y = jnp.array([0])
    ref = optax.losses.softmax_cross_entropy_with_integer_labels(x, y)
    np.testing.assert_allclose(L.comp_sum_loss(x, y), ref, rtol=1e-6)


def test_normalized_losses_take_the_limit():
    # NCE: -log p_j = inf in the normalizer -> 0; a -inf target -> 1; NGCE: finite limit 1/q
    x = jnp.array([[-INF, 0.0, 1.0], [0.0, -INF, 1.0]])
    y = jnp.array([0, 0])
    np.testing.assert_allclose(L.normalized_cross_entropy_loss(x, y), [1.0, 0.0])
    q = 0.7
    with jax.enable_x64(True):
        x64 = jnp.array([[-1e300, 0.0, 1.0], [0.0, -1e300, 1.0]], jnp.float64)
        ref = L.normalized_generalized_cross_entropy_loss(x64, y, q=q)
    np.testing.assert_allclose(L.normalized_generalized_cross_entropy_loss(x, y, q=q), ref, rtol=1e-5)
    # and masking a class with `where` removes it instead
    w = jnp.array([[True, False, True]])
    np.testing.assert_allclose(
        L.normalized_cross_entropy_loss(x[1:], y[1:], where=w),
        L.normalized_cross_entropy_loss(x[1:, jnp.array([0, 2])], y[1:]),
        rtol=1e-6,
    )


DISTILL = {
    "kd": lambda s, t, y: L.kd_loss(s, t),
    "nkd": lambda s, t, y: L.nkd_loss(s, t, y),
    "dkd": lambda s, t, y: L.dkd_loss(s, t, y),
    "pl": lambda s, t, y: L.plackett_luce_distillation_loss(s, t, y),
    "trajectory": lambda s, t, y: L.trajectory_kl_loss(s, t),
    "binary_kl": lambda s, t, y: L.binary_kl_loss(s, t),
}


@pytest.mark.parametrize("name", sorted(DISTILL))
def test_distillation_neg_inf_gradient_is_the_limit(name):
    """-inf entries (teacher, and student and teacher at the same class) give the value and the
    gradient of the finite problem with -1e4 there (exp(-1e4) is exactly 0 in float32)."""
    fn = DISTILL[name]
    s = jnp.array([[1.0, -INF, 0.5, 2.0], [0.3, 1.0, -1.0, 2.0]])
    t = jnp.array([[0.5, -INF, 1.0, 0.0], [1.0, -INF, 0.0, 0.2]])
    y = jnp.array([0, 2])
    fin = lambda a: jnp.where(jnp.isinf(a), -1e4, a)  # noqa: E731
    v, g = jax.value_and_grad(lambda s: jnp.sum(fn(s, t, y)))(s)
    v_ref, g_ref = jax.value_and_grad(lambda s: jnp.sum(fn(s, fin(t), y)))(fin(s))
    np.testing.assert_allclose(v, v_ref, rtol=1e-6)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------------- ±3e38, ±1e4


def test_huge_logits_do_not_overflow_the_margin():
    x = jnp.array([[3e38, -3e38, 0.0]])
    y = jnp.array([1])
    _, g = _vg(L.comp_sum_loss, x, y)
    _, g_ref = _vg(optax.losses.softmax_cross_entropy_with_integer_labels, x, y)
    np.testing.assert_allclose(g_ref[0], [1.0, -1.0, 0.0])
    np.testing.assert_allclose(g, g_ref, atol=1e-7)


@pytest.mark.parametrize(
    "x, y, kw",
    [
        ([[-1e4, -1.0, -1e4]], [1], dict(th=0.5)),
        ([[1e4, -1e4, -1e4, -1e4, -1e4]], [0], dict(mode="const")),
        ([[1e4, 1e4 - 1.0, -1e4, 3.0]], [2], dict(th=0.3)),
    ],
)
def test_aace_at_1e4_matches_float64(x, y, kw):
    out = L.aace_loss(jnp.array(x, jnp.float32), jnp.array(y), **kw)
    with jax.enable_x64(True):
        ref = L.aace_loss(jnp.array(x, jnp.float64), jnp.array(y), **kw)
    np.testing.assert_allclose(out, np.asarray(ref), rtol=2e-6, atol=1e-3)


# ---------------------------------------------------------------------------- masked NaN rows


def _masked_nan_grad(fn, x, masked_row):
    g = jax.grad(lambda x: jnp.sum(fn(x)))(x)
    g = np.asarray(g)
    assert np.all(g[masked_row] == 0), g[masked_row]
    assert np.all(np.isfinite(np.delete(g, masked_row, axis=0))), g


def test_dpo_masked_entry_has_zero_gradient():
    a = jnp.array([NAN, -1.0, -2.0, -3.0])
    b = jnp.full(4, -2.0)
    w = jnp.array([False, True, True, True])
    g = jax.grad(lambda a: jnp.sum(L.dpo_loss(a, b, b, b, where=w)))(a)
    assert g[0] == 0 and np.all(np.isfinite(g))
    # the unmasked entries: d/da softplus(-beta (a - b)) = -beta sigmoid(-beta (a - b))
    beta = 0.1
    ref = -beta / (1 + np.exp(beta * (np.array([-1.0, -2.0, -3.0]) + 2.0)))
    np.testing.assert_allclose(g[1:], ref, rtol=1e-6)
    g2 = jax.grad(
        lambda a: jnp.sum(L.spo_loss(a, b, b, b, jnp.zeros((4, 3)), jnp.array([0, 1, 2, 0]), where=w))
    )(a)
    assert g2[0] == 0 and np.all(np.isfinite(g2))


W_ROWS = jnp.array([False, True, True])
X_NAN = jnp.array([[NAN, 1.0, 0.0], [0.5, -1.0, 2.0], [1.0, 0.2, -0.3]])
T_NAN = jnp.array([[NAN, 0.0, 1.0], [1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: L.stablemax_cross_entropy_loss(x, jnp.array([0, 1, 2]), where=W_ROWS),
        lambda x: L.binary_kl_loss(x, T_NAN, where=W_ROWS),
        lambda x: L.binary_kl_norm_loss(x, T_NAN, where=W_ROWS),
        lambda x: L.kd_loss(x, T_NAN, where=W_ROWS),
        lambda x: L.dco_loss_from_log_prob(x[:, 0] - 4.0, n=4.0, where=W_ROWS),
        lambda x: L.proto_triplet_loss(x, jnp.array([0, 1, 0]), jnp.eye(2, 3), where=W_ROWS),
        lambda x: L.supcon_loss(x, jnp.array([0, 0, 0]), where=W_ROWS),
    ],
    ids=["stablemax", "binary_kl", "binary_kl_norm", "kd", "dco_from_log_prob", "proto_triplet", "supcon"],
)
def test_nan_in_masked_row_never_reaches_the_gradient(fn):
    _masked_nan_grad(fn, X_NAN, 0)


@pytest.mark.parametrize(
    "fn",
    [L.soft_dice_loss, L.tversky_loss, L.jaccard_metric_loss, L.generalized_dice_loss],
)
def test_segmentation_per_pixel_where_blocks_nan(fn):
    x = jnp.array([[[NAN, 1.0], [0.5, -1.0], [2.0, 0.1]]])  # [B=1, N=3, C=2] logits
    t = jnp.array([[0, 1, 0]])
    w = jnp.array([[False, True, True]])
    g = jax.grad(lambda x: jnp.sum(fn(x, t, from_logits=True, where=w)))(x)
    assert np.all(g[0, 0] == 0) and np.all(np.isfinite(g))
    # and equals dropping the pixel
    v = fn(x, t, from_logits=True, where=w)
    np.testing.assert_allclose(v, fn(x[:, 1:], t[:, 1:], from_logits=True), rtol=1e-6)


@pytest.mark.parametrize("fn", [L.sauna_jaccard_loss, L.stable_focal_l1_loss])
def test_signed_segmentation_where_blocks_nan(fn):
    p = jnp.array([[NAN, 0.5, -0.2, 0.9]])
    gt = jnp.array([[0.3, 0.8, -0.6, 1.0]])
    w = jnp.array([[False, True, True, True]])
    g = jax.grad(lambda p: jnp.sum(fn(p, gt, where=w)))(p)
    assert g[0, 0] == 0 and np.all(np.isfinite(g))


# ---------------------------------------------------------------------------- empty batches


@pytest.mark.parametrize(
    "fn",
    [
        lambda e, y: L.supcon_loss(e, y),
        lambda e, y: L.multi_similarity_loss(e, y),
        lambda e, y: L.triplet_loss(e, y),
        lambda e, y: L.triplet_loss(e, y, mining="hard"),
        lambda e, y: L.proto_triplet_loss(e, y, jnp.eye(3, 4)),
        lambda e, y: L.input_gradient_penalty(
            lambda p, x, t: jnp.sum(x * p, -1), jnp.ones(4), e, None, noise="none"
        ),
        lambda e, y: L.ce_input_gradient_penalty(lambda p, x: x @ p, jnp.ones((4, 3)), e, y, noise="none"),
    ],
    ids=["supcon", "multi_similarity", "triplet", "triplet_hard", "proto_triplet", "igp", "ce_igp"],
)
def test_empty_batch_gives_empty_result(fn):
    out = fn(jnp.zeros((0, 4)), jnp.zeros((0,), jnp.int32))
    assert out.shape == (0,)


# ---------------------------------------------------------------------------- labels


@pytest.mark.parametrize("bad", [-1, 3, -100])
def test_out_of_range_label_raises_outside_jit(bad):
    x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    with pytest.raises(ValueError, match="labels"):
        L.comp_sum_loss(x, jnp.array([0, bad]))
    # a masked row is not checked (its label may be padding)
    out = L.comp_sum_loss(x, jnp.array([0, bad]), where=jnp.array([True, False]))
    np.testing.assert_allclose(out, [L.comp_sum_loss(x[:1], jnp.array([0]))[0], 0.0])


def test_out_of_range_label_is_nan_under_jit():
    x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    f = jax.jit(lambda x, y: L.generalized_cross_entropy_loss(x, y))
    y = jnp.array([-100, 1])
    out = f(x, y)
    g = jax.grad(lambda x: jnp.sum(f(x, y)))(x)
    assert np.isnan(out[0]) and np.all(np.isnan(g[0]))
    np.testing.assert_allclose(out[1], L.generalized_cross_entropy_loss(x[1:], y[1:])[0], rtol=1e-6)
    g_ref = jax.grad(lambda x: jnp.sum(L.generalized_cross_entropy_loss(x, y[1:])))(x[1:])
    np.testing.assert_allclose(g[1], g_ref[0], rtol=1e-6)


def test_check_labels_ignore_index_and_where():
    L.check_labels(jnp.array([0, -100, 2]), 3, ignore_index=-100)
    L.check_labels(jnp.array([0, 7, 2]), 3, where=jnp.array([True, False, True]))
    with pytest.raises(ValueError, match="labels"):
        L.check_labels(jnp.array([0, -1, 2]), 3, ignore_index=-100)


def test_ignore_index_masks_like_where():
    x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    p_ign = C.prepare(x, jnp.array([0, -100]), ignore_index=-100)
    p_w = C.prepare(x, jnp.array([0, 0]), where=jnp.array([True, False]))
    np.testing.assert_array_equal(p_ign.row_mask, p_w.row_mask)
    f = lambda p: C.finalize(p, C.nll_from_lu(C.margin_lse(p)))  # noqa: E731
    np.testing.assert_allclose(f(p_ign), f(p_w))


# ---------------------------------------------------------------------------- parity with released code

torch = pytest.importorskip("torch", reason="torch re-statements of the released code")


def _torch_nfl_official(x, y, gamma):
    """Re-statement of the Active-Passive-Losses NFL maths: the focal weights (1 - p)^γ are
    detached in the numerator and in every normalizer term; log p stays differentiable."""
    x = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    logp = torch.log_softmax(x, dim=-1)
    w = (1 - logp.exp()).pow(gamma).detach()
    num = -(w * logp).gather(1, torch.tensor(np.asarray(y))[:, None])[:, 0]
    den = -(w * logp).sum(-1)
    loss = num / den
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def _torch_fl_apl(x, y, gamma):
    """APL's focal loss: (1 - p_t)^γ with p_t detached, times -log p_t."""
    x = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    logpt = torch.log_softmax(x, dim=-1).gather(1, torch.tensor(np.asarray(y))[:, None])[:, 0]
    loss = -((1 - logpt.exp().detach()) ** gamma) * logpt
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def test_nfl_official_gradient_matches_released_code():
    x = np.array([[2.0, 0.5, -1.0], [0.3, 1.2, -0.4]], np.float32)
    y = np.array([1, 0])
    v_ref, g_ref = _torch_nfl_official(x, y, 0.5)
    np.testing.assert_allclose(g_ref[0], [0.0542, -0.1207, 0.0665], atol=1e-4)  # the numbers
    v, g = _vg(L.normalized_focal_loss, jnp.asarray(x), jnp.asarray(y), gamma=0.5, detach_focal_weight=True)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(v), v_ref.sum(), rtol=1e-6)
    # the paper's plain ratio: same value, a different gradient
    v2, g2 = _vg(L.normalized_focal_loss, jnp.asarray(x), jnp.asarray(y), gamma=0.5)
    np.testing.assert_allclose(float(v2), v_ref.sum(), rtol=1e-6)
    assert np.max(np.abs(np.asarray(g2) - g_ref)) > 1e-2
    # APL with active='nfl' inherits
    _, g3 = _vg(
        L.active_passive_loss, jnp.asarray(x), jnp.asarray(y), active="nfl", passive="mae",
        beta=0.0, detach_focal_weight=True,
    )
    np.testing.assert_allclose(g3, g_ref, rtol=1e-5, atol=1e-7)


def test_apl_focal_detached_weight_matches_released_code():
    x = np.array([[2.0, 0.5, -1.0], [0.3, 1.2, -0.4]], np.float32)
    y = np.array([1, 0])
    v_ref, g_ref = _torch_fl_apl(x, y, 0.5)
    v, g = _vg(
        L.active_passive_loss, jnp.asarray(x), jnp.asarray(y), active="fl", passive="mae",
        beta=0.0, gamma=0.5, detach_focal_weight=True,
    )
    np.testing.assert_allclose(float(v), v_ref.sum(), rtol=1e-6)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "normalize, row",
    [("softplus_mean", [-120.0, -130.0, -140.0]), ("l1", [0.0, 0.0, 0.0])],
)
@pytest.mark.parametrize("fn", ["ldr", "aldr"])
def test_ldr_normalizations_have_finite_gradients(normalize, row, fn):
    x = jnp.array([row, [2.0, 1.0, 0.1]], jnp.float32)
    y = jnp.array([0, 0])
    f = (lambda x: L.ldr_kl_loss(x, y, normalize=normalize)) if fn == "ldr" else (
        lambda x: L.aldr_kl_loss(x, y, normalize=normalize)[0]
    )
    v, g = jax.value_and_grad(lambda x: jnp.sum(f(x)))(x)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)), g
    if normalize == "softplus_mean":  # against float64, where softplus does not underflow
        with jax.enable_x64(True):
            v64, g64 = jax.value_and_grad(lambda x: jnp.sum(f(x)))(jnp.asarray(x, jnp.float64))
        np.testing.assert_allclose(v, v64, rtol=1e-5)
        np.testing.assert_allclose(g, g64, rtol=1e-4, atol=1e-6)
