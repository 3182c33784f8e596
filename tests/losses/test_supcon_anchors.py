"""Tests of lossjax.losses.supcon_anchors (ESupCon) against a float64 NumPy loop oracle, the
cosine-classifier cross-entropy limit, gradients, masks and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses import supcon_prototype_loss


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ref(e, y, w, tau=0.1, normalize=True):
    e = np.asarray(e, np.float64)
    w = np.asarray(w, np.float64)
    if normalize:
        e, w = _unit(e), _unit(w)
    n = len(e)
    out = np.zeros(n)
    for i in range(n):
        cand = [e[i] @ e[a] / tau for a in range(n) if a != i] + [e[i] @ wk / tau for wk in w]
        lse = np.log(np.sum(np.exp(cand)))
        pos = [e[i] @ e[p] / tau - lse for p in range(n) if p != i and y[p] == y[i]]
        pos.append(e[i] @ w[y[i]] / tau - lse)
        out[i] = -np.mean(pos)
    return out


RNG = np.random.default_rng(0)
E = RNG.normal(size=(6, 3))
Y = np.array([0, 1, 0, 2, 1, 0])
W = RNG.normal(size=(3, 3))


def test_against_numpy_oracle_and_grads_f64():
    with jax.enable_x64(True):
        for tau, norm in ((0.1, True), (0.5, False)):
            e = E if norm else 0.3 * E
            np.testing.assert_allclose(supcon_prototype_loss(e, Y, W, temperature=tau, normalize=norm),
                                       _ref(e, Y, W, tau, norm), rtol=1e-10)
        ge, gw = jax.jit(jax.grad(lambda e, w: supcon_prototype_loss(e, Y, w, temperature=0.5).sum(), (0, 1)))(E, W)
        np.testing.assert_allclose(ge, fd_grad(lambda e: _ref(e, Y, W, 0.5).sum(), E), atol=1e-7)
        np.testing.assert_allclose(gw, fd_grad(lambda w: _ref(E, Y, w, 0.5).sum(), W), atol=1e-7)


def test_cosine_classifier_limit_and_mask_equals_dropping():
    with jax.enable_x64(True):
        # one sample: the cross-entropy of softmax(z·w_k/τ) on unit vectors
        z = _unit(E[:1]) @ _unit(W).T / 0.2
        ce = -(z[0, Y[0]] - np.log(np.exp(z[0]).sum()))
        np.testing.assert_allclose(supcon_prototype_loss(E[:1], Y[:1], W, temperature=0.2), [ce], rtol=1e-12)
        # masking rows = dropping them (the masked rows give 0)
        w = np.array([True, True, False, True, False, True])
        got = supcon_prototype_loss(E, Y, W, where=w)
        np.testing.assert_allclose(got[w], _ref(E[w], Y[w], W), rtol=1e-10)
        assert np.all(np.asarray(got)[~w] == 0)


def test_nan_masked_nan_and_bad_labels():
    e = E.astype(np.float32)
    e[2, 1] = np.nan
    f = jax.jit(jax.value_and_grad(lambda e, y, w: supcon_prototype_loss(e, y, W.astype(np.float32), where=w).sum()))
    w = np.ones(6, bool)
    w[2] = False
    v, g = f(e, Y, w)
    np.testing.assert_allclose(v, _ref(E[w], Y[w], W).sum(), rtol=1e-5)
    assert np.all(np.isfinite(g)) and np.all(g[2] == 0)
    v, _ = f(e, Y, np.ones(6, bool))  # an unmasked NaN propagates
    assert np.isnan(float(v))
    v0, g0 = f(E.astype(np.float32), Y, np.zeros(6, bool))
    assert float(v0) == 0.0 and np.all(g0 == 0)
    # out-of-range label: ValueError outside jit, NaN for that example under jit
    bad = Y.copy()
    bad[1] = 3
    with pytest.raises(ValueError, match="labels"):
        supcon_prototype_loss(E, bad, W)
    out = jax.jit(lambda y: supcon_prototype_loss(E.astype(np.float32), y, W.astype(np.float32)))(bad)
    assert np.isnan(out[1]) and np.all(np.isfinite(np.delete(np.asarray(out), 1)))


def test_bad_input():
    with pytest.raises(ValueError, match="prototypes"):
        supcon_prototype_loss(E, Y, W[:, :2])
    with pytest.raises(ValueError, match="labels"):
        supcon_prototype_loss(E, Y[:5], W)
    with pytest.raises(ValueError, match="temperature"):
        supcon_prototype_loss(E, Y, W, temperature=0.0)
    with pytest.raises(ValueError, match="where"):
        supcon_prototype_loss(E, Y, W, where=np.ones(5, bool))
    with pytest.raises(TypeError, match="labels"):
        supcon_prototype_loss(E, Y.astype(np.float32), W)
    with pytest.raises(ValueError, match="embeddings"):
        supcon_prototype_loss(E[None], Y, W)
    assert jnp.asarray(supcon_prototype_loss(E, Y, W)).shape == (6,)
