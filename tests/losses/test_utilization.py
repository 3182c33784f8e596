"""Metrix utilization and the NLM-direction cosine: NumPy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.nlm_direction import nlm_cosine
from lossjax.losses.utilization import embedding_utilization


def _np_util(q, x, normalize=True, squared=False):
    if normalize:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.array([[np.sum((a - b) ** 2) for b in x] for a in q]).min(1)
    return np.mean(d if squared else np.sqrt(d))


def test_utilization_oracle_gradient_masks():
    rng = np.random.default_rng(8)
    q, x = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    mq, mx = np.array([1, 1, 0, 1], bool), np.array([1, 0, 1, 1, 1, 0], bool)
    with jax.enable_x64(True):

        @jax.jit
        def run(q, x):
            v, g = jax.value_and_grad(embedding_utilization)(q, x)
            return (v, g, embedding_utilization(q, x, normalize=False, squared=True),
                    embedding_utilization(q, x, where_query=jnp.asarray(mq), where_train=jnp.asarray(mx)))

        v, g, vsq, vm = run(jnp.asarray(q), jnp.asarray(x))
    np.testing.assert_allclose(v, _np_util(q, x), rtol=1e-12)
    np.testing.assert_allclose(g, fd_grad(lambda a: _np_util(a, x), q), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(vsq, _np_util(q, x, False, True), rtol=1e-12)
    np.testing.assert_allclose(vm, _np_util(q[mq], x[mx]), rtol=1e-12)
    assert float(embedding_utilization(x, x)) == 0.0  # queries equal to training points
    qn = jnp.asarray(q, jnp.float32).at[0, 0].set(jnp.nan)
    assert np.isnan(embedding_utilization(qn, x))
    np.testing.assert_allclose(embedding_utilization(qn, x, where_query=jnp.array([False, True, True, True])),
                               _np_util(q[1:], x), rtol=1e-5)
    with pytest.raises(ValueError, match="train_embeddings"):
        embedding_utilization(q, x[:, :2])


def test_nlm_cosine_values_and_errors():
    rng = np.random.default_rng(9)
    p = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    g = {"w": rng.normal(size=(3, 2)), "b": -2.5 * p["b"]}
    out = jax.jit(nlm_cosine)(g, p)
    w = p["w"].ravel() @ g["w"].ravel() / (np.linalg.norm(p["w"]) * np.linalg.norm(g["w"]))
    np.testing.assert_allclose(out["w"], w, rtol=1e-5)
    np.testing.assert_allclose(out["b"], -1.0, rtol=1e-6)  # pure NLM direction
    gl = np.concatenate([g["b"], g["w"].ravel()])
    pl = np.concatenate([p["b"], p["w"].ravel()])
    np.testing.assert_allclose(nlm_cosine(g, p, per_tensor=False), gl @ pl / np.linalg.norm(gl) / np.linalg.norm(pl),
                               rtol=1e-5)
    # after ⊥Grad's projection the cosine is 0
    gw = g["w"] - (g["w"].ravel() @ p["w"].ravel()) / (p["w"].ravel() @ p["w"].ravel()) * p["w"]
    assert abs(float(nlm_cosine({"w": gw}, {"w": p["w"]})["w"])) < 1e-6
    assert float(nlm_cosine({"w": np.zeros(2)}, {"w": np.ones(2)})["w"]) == 0.0
    assert np.isnan(nlm_cosine({"w": np.array([np.nan, 1.0])}, {"w": np.ones(2)})["w"])
    with pytest.raises(ValueError, match="tree structure"):
        nlm_cosine({"w": np.ones(2)}, {"v": np.ones(2)})
    with pytest.raises(ValueError, match="params"):
        nlm_cosine({"w": np.ones(2)}, {"w": np.ones(3)})
