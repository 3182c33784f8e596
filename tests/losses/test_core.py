"""Tests of the shared log-space primitives in ``lossjax.losses._core``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from lossjax.losses import _core as C

TV_X = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]], np.float32)
TV_Y = np.array([0, 1], np.int32)
TV_CE = np.array([0.4170300163, 4.0956743294])
TV_U = np.array([0.5174480604, 59.0798391035])


def _ce(logits, labels, where=None):
    return C.py_loss(C.nll_from_lu, logits, labels, where=where)


_ce_jit = jax.jit(_ce)


def _np_margin_lse(x, y):
    x = np.asarray(x, np.float64)
    d = np.delete(x, y) - x[y]
    if d.size == 0:
        return -np.inf
    m = d.max()
    return m + np.log(np.exp(d - m).sum())


def test_standard_vectors_integer_and_soft():
    p = C.prepare(TV_X, TV_Y)
    np.testing.assert_allclose(np.exp(C.margin_lse(p)), TV_U, rtol=1e-6)
    np.testing.assert_allclose(_ce(TV_X, TV_Y), TV_CE, rtol=1e-6)
    np.testing.assert_allclose(_ce(TV_X, jax.nn.one_hot(TV_Y, 3)), TV_CE, rtol=1e-6)
    np.testing.assert_allclose(
        _ce(TV_X, TV_Y), optax.softmax_cross_entropy_with_integer_labels(TV_X, TV_Y), rtol=1e-6
    )


def test_soft_labels_are_the_expectation():
    t = np.array([[0.2, 0.5, 0.3], [0.0, 0.9, 0.1]], np.float32)
    ref = optax.softmax_cross_entropy(TV_X, t)  # CE is linear in t
    np.testing.assert_allclose(_ce(TV_X, t), ref, rtol=1e-6)


def test_float64_inputs_compute_in_float64():
    with jax.enable_x64(True):
        out = _ce(np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]], np.float64), TV_Y)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, TV_CE, rtol=1e-9)


def test_bf16_input_returns_float32_of_rounded_input():
    xb = jnp.asarray(TV_X, jnp.bfloat16)
    out = _ce(xb, TV_Y)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, _ce(xb.astype(jnp.float32), TV_Y), rtol=1e-6)


def test_leave_one_out_matches_float64():
    x = np.random.default_rng(0).normal(size=(6, 9)).astype(np.float32) * 30
    x[0, 3] = -np.inf
    got = C._leave_one_out_lse(jnp.asarray(x))
    for i in range(x.shape[0]):
        for k in range(x.shape[1]):
            rest = np.delete(x[i].astype(np.float64), k)
            rest = rest[np.isfinite(rest)]
            ref = np.log(np.exp(rest - rest.max()).sum()) + rest.max()
            np.testing.assert_allclose(got[i, k], ref, rtol=2e-6, atol=1e-6)


def test_margin_exact_where_naive_rounds_to_zero():
    # naive 1 - softmax(x)[y] is exactly 0 in float32 at [30, 0]; the ℓu form is exact.
    p = C.prepare(jnp.array([30.0, 0.0]), jnp.array(0))
    one_minus = C.one_minus_py_from_lu(C.margin_lse(p))
    np.testing.assert_allclose(one_minus, 9.3576229e-14, rtol=1e-6)
    assert float(1.0 - jax.nn.softmax(jnp.array([30.0, 0.0]))[0]) == 0.0


@pytest.mark.parametrize(
    "x, y",
    [
        ([1e4, -1e4, 0.0], 0),
        ([1e4, -1e4, 0.0], 1),
        ([-jnp.inf, 3.0, -jnp.inf], 1),
        ([5.0], 0),
    ],
)
def test_extreme_logits_finite_values_and_gradients(x, y):
    x = jnp.asarray([x], jnp.float32)
    y = jnp.asarray([y])
    val, g = jax.value_and_grad(lambda z: _ce(z, y).sum())(x)
    assert np.isfinite(val)
    assert np.all(np.isfinite(g))
    gs = jax.grad(lambda z: _ce(z, jax.nn.one_hot(y, x.shape[-1])).sum())(x)
    assert np.all(np.isfinite(gs))
    np.testing.assert_allclose(gs, g, atol=1e-6)


def test_wrong_label_at_1e4_gives_the_margin():
    out = _ce(jnp.array([[1e4, -1e4, 0.0]]), jnp.array([1]))
    np.testing.assert_allclose(out, [2e4], rtol=1e-6)


def test_per_class_where_removes_classes_from_normaliser():
    w = np.array([[True, True, False], [True, True, True]])
    out = _ce(TV_X, TV_Y, where=jnp.asarray(w))
    np.testing.assert_allclose(
        out, optax.softmax_cross_entropy_with_integer_labels(TV_X, TV_Y, where=jnp.asarray(w)),
        rtol=1e-6,
    )
    # masking the label's own class drops the row
    w2 = np.array([[False, True, True], [True, True, True]])
    out2 = _ce(TV_X, TV_Y, where=jnp.asarray(w2))
    assert out2[0] == 0.0 and out2[1] == pytest.approx(TV_CE[1], rel=1e-6)


def test_all_masked_gives_zero_and_zero_gradient():
    for w in (jnp.zeros((2,), bool), jnp.zeros((2, 3), bool)):
        val, g = jax.value_and_grad(lambda z, w=w: C.reduce_loss(_ce(z, TV_Y, where=w), "mean"))(
            jnp.asarray(TV_X)
        )
        assert float(val) == 0.0
        np.testing.assert_array_equal(g, 0.0)


def test_masked_row_with_inf_does_not_leak_nan():
    x = jnp.array([[jnp.nan, 0.0, 1.0], [0.5, -1.0, 3.0]])
    w = jnp.array([False, True])
    val, g = jax.value_and_grad(lambda z: _ce(z, TV_Y, where=w).sum())(x)
    np.testing.assert_allclose(val, TV_CE[1], rtol=1e-6)
    assert np.all(np.isfinite(g[1]))


def test_jit_and_vmap_agree_with_eager():
    eager = _ce(TV_X, TV_Y)
    np.testing.assert_allclose(_ce_jit(TV_X, TV_Y), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(_ce)(TV_X, TV_Y), eager, rtol=1e-6)


def test_axis_argument():
    out = _ce(TV_X.T, TV_Y) if False else C.py_loss(C.nll_from_lu, TV_X.T, TV_Y, axis=0)
    np.testing.assert_allclose(out, TV_CE, rtol=1e-6)


def test_gradient_matches_float64_finite_differences():
    with jax.enable_x64(True):
        x = jnp.asarray(TV_X, jnp.float64)
        check_grads(lambda z: _ce(z, TV_Y), (x,), order=2, modes=["rev"])
        t = jnp.asarray([[0.2, 0.5, 0.3], [0.0, 0.9, 0.1]], jnp.float64)
        check_grads(lambda z: _ce(z, t), (x,), order=1, modes=["rev"])


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float32, (4,), elements=st.floats(-1e4, 1e4, width=32)),
    st.integers(0, 3),
)
def test_margin_lse_matches_float64_reference(x, y):
    got = _margin_jit(jnp.asarray(x)[None], jnp.asarray([y]))[0]
    ref = _np_margin_lse(x, y)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, abs(ref)))


_margin_jit = jax.jit(lambda x, y: C.margin_lse(C.prepare(x, y)))


def test_reduce_loss():
    loss = jnp.array([1.0, 2.0, 6.0])
    assert float(C.reduce_loss(loss, "sum")) == 9.0
    assert float(C.reduce_loss(loss, "mean")) == 3.0
    assert float(C.reduce_loss(loss, "mean", where=jnp.array([True, False, True]))) == 3.5
    np.testing.assert_array_equal(C.reduce_loss(loss, "none", where=jnp.array([1, 0, 1]) > 0), [1, 0, 6])
    with pytest.raises(ValueError, match="reduction"):
        C.reduce_loss(loss, "avg")


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="`logits`"):
        C.prepare(jnp.array([1, 2]), jnp.array(0))
    with pytest.raises(ValueError, match="`labels`"):
        C.prepare(TV_X, jnp.array([[0], [1]]))
    with pytest.raises(ValueError, match="`labels`"):
        C.prepare(TV_X, jnp.ones((2, 4)))
    with pytest.raises(TypeError, match="`labels`"):
        C.prepare(TV_X, jnp.array([True, False]))
    with pytest.raises(ValueError, match="`where`"):
        C.prepare(TV_X, TV_Y, where=jnp.ones((3,), bool))
    with pytest.raises(TypeError, match="`where`"):
        C.prepare(TV_X, TV_Y, where=jnp.ones((2,)))
    with pytest.raises(ValueError, match="`axis`"):
        C.prepare(TV_X, TV_Y, axis=2)
    with pytest.raises(TypeError, match="`labels`"):
        C.prepare(TV_X, TV_Y, allow_int=False)
    with pytest.raises(ValueError, match="`q`"):
        C.require_positive(0.0, "q")
    with pytest.raises(ValueError, match="`mode`"):
        C.require_option("x", ("a", "b"), "mode")
    with pytest.raises(ValueError, match="`p`"):
        C.require_range(1.5, "p", 0.0, 1.0)
    with pytest.raises(ValueError, match="`x`"):
        C.require_rank(jnp.ones((2,)), 2, "x")


def test_check_labels():
    C.check_labels(jnp.array([0, 2]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        C.check_labels(jnp.array([0, 3]), 3)
    with pytest.raises(ValueError, match="outside jit"):
        jax.jit(lambda y: C.check_labels(y, 3))(jnp.array([0]))
