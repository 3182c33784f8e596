"""symmetric_consistency_loss (RMT): float64 NumPy restatement, gradient, masks, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

import lossjax.losses as L
from lossjax.losses.consistency import symmetric_consistency_loss


def _np_sce(zs, zt, T=1.0):
    ls = zs / T - np.log(np.exp(zs / T).sum(-1, keepdims=True))
    lt = zt / T - np.log(np.exp(zt / T).sum(-1, keepdims=True))
    p, q = np.exp(ls), np.exp(lt)
    return -0.5 * ((q * ls).sum(-1) + (p * lt).sum(-1))


def test_float64_oracle_gradient_and_symmetry():
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(3, 5)) * 2, rng.normal(size=(3, 5))
    with jax.enable_x64(True):

        @jax.jit
        def run(a, b):
            f = lambda x, T: symmetric_consistency_loss(x, b, temperature=T)  # noqa: E731
            v1, g1 = jax.value_and_grad(lambda x: f(x, 1.0).sum())(a)
            v2, g2 = jax.value_and_grad(lambda x: f(x, 2.5).sum())(a)
            gt = jax.grad(lambda t: symmetric_consistency_loss(a, t).sum())(b)
            gt2 = jax.grad(lambda t: symmetric_consistency_loss(a, t, stop_gradient_teacher=False).sum())(b)
            return f(a, 1.0), symmetric_consistency_loss(b, a), g1, g2, v2, gt, gt2

        v, swapped, g1, g2, v2, gt, gt2 = run(jnp.asarray(zs), jnp.asarray(zt))
    np.testing.assert_allclose(v, _np_sce(zs, zt), rtol=1e-12)
    np.testing.assert_allclose(swapped, v, rtol=1e-12)  # symmetric in (p, q)
    np.testing.assert_allclose(v2, _np_sce(zs, zt, 2.5).sum(), rtol=1e-12)
    np.testing.assert_allclose(g1, fd_grad(lambda x: _np_sce(x, zt).sum(), zs), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g2, fd_grad(lambda x: _np_sce(x, zt, 2.5).sum(), zs), rtol=1e-6, atol=1e-8)
    # the closed-form gradient of the docstring (T = 1)
    lp = zs - np.log(np.exp(zs).sum(-1, keepdims=True))
    lq = zt - np.log(np.exp(zt).sum(-1, keepdims=True))
    p, q = np.exp(lp), np.exp(lq)
    np.testing.assert_allclose(g1, 0.5 * ((p - q) - p * (lq - (p * lq).sum(-1, keepdims=True))), atol=1e-12)
    assert float(np.abs(gt).max()) == 0.0 and float(np.abs(gt2).max()) > 0.0  # teacher under stop_gradient


def test_not_wang_sce_lower_bound_masks_nonfinite_errors():
    zs = jnp.array([[2.0, 0.0, -1.0, 0.5], [0.0, jnp.nan, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [jnp.inf, 0.0, 0.0, 0.0]])
    zt = jnp.array([[1.0, 1.0, 0.0, 0.0]] * 4)
    cm = jnp.ones((4, 4), bool).at[0, 3].set(False)

    @jax.jit
    def run(x):
        v = symmetric_consistency_loss(x, zt, where=jnp.array([True, True, False, True]))
        g = jax.grad(lambda a: symmetric_consistency_loss(a, zt, where=jnp.array([True, False, True, False])).sum())(x)
        vc = symmetric_consistency_loss(x, zt, where=cm)
        vm = jax.vmap(symmetric_consistency_loss)(x, zt)
        return v, g, vc, vm, symmetric_consistency_loss(x, x), symmetric_consistency_loss(x.astype(jnp.bfloat16), zt)

    v, g, vc, vm, self_v, vbf = run(zs)
    z0, t0 = np.asarray(zs[0]), np.asarray(zt[0])
    np.testing.assert_allclose(v[0], _np_sce(z0, t0), rtol=1e-6)
    np.testing.assert_allclose(vm, v.at[2].set(vm[2]), rtol=1e-6)  # vmap = batched
    assert np.isnan(v[1]) and float(v[2]) == 0.0  # NaN in → NaN out; masked row → 0
    assert v[3] == np.inf  # +inf student logit: one-hot student vs a non-degenerate teacher
    assert np.all(np.isfinite(g)) and float(np.abs(g[1]).max()) == 0.0  # masked NaN row: no gradient
    np.testing.assert_allclose(vc[0], _np_sce(z0[:3], t0[:3]), rtol=1e-6)  # per-class mask: both sides
    p0 = np.exp(z0 - np.log(np.exp(z0).sum()))
    np.testing.assert_allclose(self_v[0], -(p0 * np.log(p0)).sum(), rtol=1e-6)  # p = q: the entropy
    assert vbf.dtype == jnp.float32
    # Wang et al.'s SCE with the teacher probabilities as labels is a different quantity
    q0 = jax.nn.softmax(zt[:1])
    wang = L.symmetric_cross_entropy_loss(zs[:1], q0, alpha=0.5, beta=0.5)
    assert abs(float(v[0]) - float(wang[0])) > 1e-2
    assert float(v[0]) >= 0.5 * (-(p0 * np.log(p0)).sum() - float(jnp.sum(q0 * jnp.log(q0))))  # ≥ ½[H(p)+H(q)]
    with pytest.raises(TypeError, match="teacher_logits"):
        symmetric_consistency_loss(zs, jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="temperature"):
        symmetric_consistency_loss(zs, zt, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        symmetric_consistency_loss(zs, zt[:, :3])
