"""AACE loss: docs/design/sam_family.md §5 checks 5-7, gradients, jit/vmap, bf16, extremes, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lossjax.losses.aace import aace_loss

_aace = jax.jit(aace_loss, static_argnames=("th", "mode", "renormalize", "axis"))


def _ce(z, y):
    return -jax.nn.log_softmax(z)[y]


@pytest.mark.parametrize(
    "t,py,aace,gnorm,ce,cenorm",
    [
        (0, 0.100000, 0.105361, 0.105409, 2.302585, 0.948683),
        (2, 0.450853, 0.599389, 0.475241, 0.796614, 0.578852),
        (5, 0.942826, 2.861649, 0.993825, 0.058874, 0.060267),
        (10, 0.999592, 7.803184, 1.053662, 4.0852e-4, 4.3053e-4),
    ],
)
def test_values_and_gradient_norms_vs_ce(t, py, aace, gnorm, ce, cenorm):
    z = jnp.zeros(10).at[0].set(float(t))
    y = jnp.array(0)
    np.testing.assert_allclose(jax.nn.softmax(z)[0], py, rtol=1e-5)
    np.testing.assert_allclose(_aace(z, y), aace, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(jax.grad(lambda q: _aace(q, y))(z)), gnorm, rtol=1e-5)
    np.testing.assert_allclose(_ce(z, 0), ce, rtol=2e-3)  # naive float32 CE oracle
    np.testing.assert_allclose(jnp.linalg.norm(jax.grad(lambda q: _ce(q, 0))(z)), cenorm, rtol=2e-3)


def test_monotone_in_confidence_and_limit():
    ts = jnp.linspace(0.0, 12.0, 25)
    zs = jnp.zeros((25, 10)).at[:, 0].set(ts)
    y = jnp.zeros(25, jnp.int32)
    val = _aace(zs, y)
    gn = jnp.linalg.norm(jax.vmap(jax.grad(lambda q: _aace(q, jnp.array(0))))(zs), axis=-1)
    assert np.all(np.diff(np.asarray(val)) > 0) and np.all(np.diff(np.asarray(gn)) > 0)
    np.testing.assert_allclose(gn[-1], np.sqrt(10 / 9), rtol=1e-3)


def test_stop_gradient_identity_th0():
    z = jnp.array([1.3, -0.2, 0.5, 2.0])
    y = jnp.array(2)
    expected = [-0.0376579905, -0.0084026335, 0.1218945043, -0.0758338804]
    np.testing.assert_allclose(jax.grad(lambda q: _aace(q, y))(z), expected, atol=1e-7)
    ref = jax.grad(lambda q: -jnp.log1p(-jax.nn.softmax(q)[2]))(z)
    np.testing.assert_allclose(ref, expected, atol=1e-7)


def test_official_parity_th_positive():
    z = jnp.array([3.0, 1.0, 0.0, -1.0])
    y = jnp.array(0)
    np.testing.assert_allclose(_aace(z, y, th=0.5), 1.52359412, rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(lambda q: _aace(q, y, th=0.5))(z), [0.74642899, -0.49655514, -0.18267243, -0.06720143], atol=1e-6
    )
    np.testing.assert_allclose(_aace(z, y, th=0.0), 1.77757649, rtol=1e-6)
    # the target of the official code: t = [0.5, 0.66524096, 0.24472847, 0.09003057] (sum 1.5);
    # gradient = (Σt) p − t
    t = jnp.array([0.5, 0.66524096, 0.24472847, 0.09003057])
    np.testing.assert_allclose(jax.grad(lambda q: _aace(q, y, th=0.5))(z), 1.5 * jax.nn.softmax(z) - t, atol=1e-6)
    # renormalize: non-target mass scaled by 1 − t_y → Σt = 1, gradient p − t'
    t2 = t.at[1:].multiply(0.5)
    np.testing.assert_allclose(jax.grad(lambda q: _aace(q, y, th=0.5, renormalize=True))(z), jax.nn.softmax(z) - t2,
                               atol=1e-6)


def test_const_and_rand_modes():
    z = jnp.array([[0.3, -1.0, 2.0, 0.1]])
    y = jnp.array([1])
    # const: uniform 1/(C−1) off-label → gradient p − t
    t = jnp.array([1 / 3, 0.0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(jax.grad(lambda q: aace_loss(q, y, mode="const").sum())(z)[0], jax.nn.softmax(z[0]) - t,
                               atol=1e-6)
    k = jax.random.key(0)
    a = aace_loss(z, y, mode="rand", key=k)
    np.testing.assert_array_equal(a, aace_loss(z, y, mode="rand", key=k))
    assert float(a[0]) != float(aace_loss(z, y, mode="rand", key=jax.random.key(1))[0])
    with pytest.raises(ValueError, match="key"):
        aace_loss(z, y, mode="rand")
    with pytest.raises(ValueError, match="mode"):
        aace_loss(z, y, mode="bad")


def test_grad_check_float64():
    with jax.enable_x64(True):
        z = jnp.array([[0.4, -1.2, 2.0], [1.0, 0.5, -0.3]], jnp.float64)
        y = jnp.array([2, 0])
        # 'const' with th = 0 has a constant target: finite differences of the loss itself apply
        check_grads(jax.jit(lambda q: aace_loss(q, y, mode="const")), (z,), order=1, modes=["rev"])
        # 'ada': the stop-gradient gradient equals the full gradient of −log(1 − p_y)
        # (docs/design/sam_family.md §2)
        g = jax.jit(jax.grad(lambda q: aace_loss(q, y).sum()))(z)
        ref = jax.grad(lambda q: -jnp.sum(jnp.log1p(-jnp.take_along_axis(jax.nn.softmax(q), y[:, None], 1))))(z)
        np.testing.assert_allclose(g, ref, rtol=1e-10)


def test_jit_vmap_bf16_extremes_masks():
    z = jnp.array([[1e4, 0.0, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]])
    y = jnp.array([0, 1, 2])
    v = _aace(z, y)
    g = jax.grad(lambda q: _aace(q, y).sum())(z)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(v[0], 1e4 - np.log(2), rtol=1e-6)  # −log(1 − p_y) in log space
    np.testing.assert_allclose(jax.vmap(aace_loss)(z, y), v, rtol=1e-6)
    vb = aace_loss(z[2:].astype(jnp.bfloat16), y[2:])
    assert vb.dtype == jnp.float32
    np.testing.assert_allclose(vb, np.log(1.5), rtol=1e-6)
    # per-example mask: masked rows give 0 with zero gradient
    w = jnp.array([True, False, True])
    vm = aace_loss(z, y, where=w)
    assert float(vm[1]) == 0.0
    gm = jax.grad(lambda q: aace_loss(q, y, where=w).sum())(z)
    assert np.all(gm[1] == 0)
    # per-class mask: masked class excluded from softmax and target
    cm = jnp.array([[True, True, False]])
    zz = jnp.array([[0.5, -0.5, 7.0]])
    np.testing.assert_allclose(aace_loss(zz, jnp.array([0]), where=cm), -jnp.log1p(-jax.nn.softmax(zz[0, :2])[0]),
                               rtol=1e-6)
    # only the label class valid: no non-target mass → 0, no NaN
    only = aace_loss(zz, jnp.array([0]), where=jnp.array([[True, False, False]]))
    assert float(only[0]) == 0.0
    # one-hot float labels
    np.testing.assert_allclose(aace_loss(z, jax.nn.one_hot(y, 3)), v, rtol=1e-6)
