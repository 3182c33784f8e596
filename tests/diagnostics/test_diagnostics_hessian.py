"""Hessian eigenvalues (power iteration, Lanczos) and trace (Hutchinson) against exact spectra.

Oracles: quadratics ½wᵀAw with a spectrum chosen by construction (A = Q diag(λ) Qᵀ), and a
linear softmax model whose Hessian is built densely by ``jax.hessian`` in float64 (and checked
against the closed form (diag p − ppᵀ) ⊗ xxᵀ).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from lossjax import diagnostics as D

# ------------------------------------------------------------------------------------------
# quadratic ½ wᵀ A w on a two-leaf pytree (6 parameters), A = Q diag(λ) Qᵀ
# ------------------------------------------------------------------------------------------

LAMBDAS = np.array([10.0, 4.0, 2.0, 1.0, 0.5, -3.0])
_Q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]


def _matrix(lams):
    return (_Q * np.asarray(lams)) @ _Q.T


def _quad(w, a):
    flat = jnp.concatenate([w["u"].ravel(), w["v"].ravel()])
    return 0.5 * flat @ (a @ flat)


def _tree(x):
    x = jnp.asarray(x, jnp.float32)
    return {"u": x[:2], "v": x[2:].reshape(2, 2)}


W0 = _tree(np.linspace(-1, 1, 6))
A0 = jnp.asarray(_matrix(LAMBDAS), jnp.float32)

power = jax.jit(lambda w, a, key, tol: D.hessian_top_eigenvalue(_quad, w, a, key, num_iters=200, tol=tol))
lanczos3 = jax.jit(lambda w, a, key: D.hessian_lanczos(_quad, w, a, key, k=3, num_iters=6, tol=1e-5))
trace400 = jax.jit(lambda w, a, key: D.hessian_trace(_quad, w, a, key, num_probes=400, probe_batch_size=100))


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0], np.float64)


def test_hvp_is_matrix_vector_product():
    v = _tree(np.arange(6.0))
    hv = D.hessian_vector_product(_quad, W0, A0, v)
    np.testing.assert_allclose(_flat(hv), _matrix(LAMBDAS) @ np.arange(6.0), rtol=1e-5, atol=1e-5)


def test_power_iteration_top_eigenpair():
    r = power(W0, A0, jax.random.key(0), 1e-6)
    assert bool(r.converged) and 1 < int(r.num_iterations) < 200
    np.testing.assert_allclose(r.eigenvalue, 10.0, rtol=1e-5)
    v = _flat(r.eigenvector)
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    assert abs(v @ _Q[:, 0]) > 0.999  # aligned with the top eigenvector
    # the residual certifies the estimate: |λ − 10| ≤ ‖Hv − λv‖ and it matches a direct recomputation
    hv = _matrix(LAMBDAS) @ v
    np.testing.assert_allclose(r.residual, np.linalg.norm(hv - float(r.eigenvalue) * v), atol=1e-4)
    assert abs(float(r.eigenvalue) - 10.0) <= float(r.residual) + 1e-5


def test_power_iteration_tol_zero_runs_all_iterations_and_vmaps_over_keys():
    keys = jax.random.split(jax.random.key(1), 3)
    r = jax.vmap(lambda k: power(W0, A0, k, 0.0))(keys)
    np.testing.assert_array_equal(r.num_iterations, [200, 200, 200])
    np.testing.assert_allclose(r.eigenvalue, [10.0] * 3, rtol=1e-5)
    assert r.eigenvector["v"].shape == (3, 2, 2)


def test_power_iteration_returns_largest_magnitude_lanczos_largest_algebraic():
    a = jnp.asarray(_matrix([4.0, 2.0, 1.0, 0.5, 0.1, -9.0]), jnp.float32)
    r = power(W0, a, jax.random.key(2), 1e-6)
    np.testing.assert_allclose(r.eigenvalue, -9.0, rtol=1e-4)
    lz = lanczos3(W0, a, jax.random.key(2))
    np.testing.assert_allclose(lz.eigenvalues, [4.0, 2.0, 1.0], rtol=1e-4)


def test_lanczos_top3_exact_spectrum_and_ritz_vectors():
    r = lanczos3(W0, A0, jax.random.key(3))
    np.testing.assert_allclose(r.eigenvalues, LAMBDAS[:3], rtol=1e-5)
    assert bool(r.converged) and int(r.num_iterations) <= 6
    a = _matrix(LAMBDAS)
    ys = np.stack([_flat(jax.tree.map(lambda x, i=i: x[i], r.eigenvectors)) for i in range(3)])
    np.testing.assert_allclose(ys @ ys.T, np.eye(3), atol=1e-4)
    for i in range(3):
        np.testing.assert_allclose(a @ ys[i], LAMBDAS[i] * ys[i], atol=1e-3)
    assert np.all(np.asarray(r.residuals) <= 1e-5 * LAMBDAS[:3] + 1e-6)


def test_lanczos_finds_repeated_eigenvalues_by_restarting():
    a = jnp.asarray(_matrix([5.0, 5.0, 5.0, 1.0, 1.0, 0.5]), jnp.float32)
    r = lanczos3(W0, a, jax.random.key(4))
    np.testing.assert_allclose(r.eigenvalues, [5.0, 5.0, 5.0], rtol=1e-4)


def test_lanczos_stops_early_on_tolerance():
    # a well-separated top eigenvalue converges long before the 6-step Krylov space is full
    a = jnp.asarray(_matrix([100.0, 1.0, 0.9, 0.8, 0.7, 0.6]), jnp.float32)
    r = jax.jit(lambda w, a, k: D.hessian_lanczos(_quad, w, a, k, k=1, num_iters=6, tol=1e-2))(
        W0, a, jax.random.key(5))
    assert bool(r.converged) and int(r.num_iterations) < 6
    np.testing.assert_allclose(r.eigenvalues[0], 100.0, rtol=1e-3)


def test_hutchinson_exact_for_diagonal_hessian():
    a = jnp.diag(jnp.array([1.0, 2.0, 3.0, -4.0, 5.0, 6.0]))
    t = trace400(W0, a, jax.random.key(6))
    np.testing.assert_allclose(t.samples, 13.0, rtol=1e-6)
    assert float(t.trace) == pytest.approx(13.0) and float(t.stderr) == pytest.approx(0.0, abs=1e-5)


def test_hutchinson_unbiased_with_the_theoretical_standard_error():
    a = _matrix(LAMBDAS)
    sigma = np.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)))  # per-probe std of zᵀAz
    t = trace400(W0, jnp.asarray(a, jnp.float32), jax.random.key(7))
    assert abs(float(t.trace) - LAMBDAS.sum()) <= 4 * sigma / np.sqrt(400)
    assert 0.8 < float(t.stderr) / (sigma / np.sqrt(400)) < 1.2
    np.testing.assert_allclose(t.stderr, np.std(np.asarray(t.samples), ddof=1) / 20, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# linear softmax model, dense float64 Hessian oracle
# ------------------------------------------------------------------------------------------

D_IN, NC, B = 4, 3, 16


def _ce(params, batch):
    x, y = batch
    z = x @ params["W"] + params["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))


def _data(seed):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (B, D_IN))
    y = jnp.arange(B) % NC
    params = {"W": 0.5 * jax.random.normal(kw, (D_IN, NC)), "b": jnp.array([0.1, -0.2, 0.3])}
    return params, (x, y)


def _dense_hessian64(params, batch):
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        b64 = (jnp.asarray(np.asarray(batch[0]), jnp.float64), jnp.asarray(batch[1]))
        flat, unravel = ravel_pytree(p64)
        h = jax.hessian(lambda f: _ce(unravel(f), b64))(flat)
        return np.asarray(h)


@pytest.fixture(scope="module")
def softmax_problem():
    params, batch = _data(0)
    h = _dense_hessian64(params, batch)
    return params, batch, h, np.linalg.eigvalsh(h)[::-1]


def test_dense_oracle_matches_closed_form(softmax_problem):
    params, (x, y), h, _ = softmax_problem
    x = np.asarray(x, np.float64)
    z = x @ np.asarray(params["W"], np.float64) + np.asarray(params["b"], np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    xa = np.concatenate([x, np.ones((B, 1))], 1)  # bias = weight on a constant feature
    hk = sum(np.kron(np.outer(xa[i], xa[i]), np.diag(p[i]) - np.outer(p[i], p[i])) for i in range(B)) / B
    # ravel order: "W" (row-major d×C) then "b" (C) = rows 0..d-1 then the constant feature row
    np.testing.assert_allclose(h, hk, atol=1e-12)


softmax_power = jax.jit(lambda p, b, k: D.hessian_top_eigenvalue(_ce, p, b, k, num_iters=300, tol=1e-6))
softmax_lanczos = jax.jit(lambda p, b, k: D.hessian_lanczos(_ce, p, b, k, k=3, num_iters=15, tol=1e-6))
softmax_trace = jax.jit(lambda p, b, k: D.hessian_trace(_ce, p, b, k, num_probes=256, probe_batch_size=64))


def test_softmax_model_top_eigenvalues_and_trace(softmax_problem):
    params, batch, h, evals = softmax_problem
    key = jax.random.key(8)
    np.testing.assert_allclose(softmax_power(params, batch, key).eigenvalue, evals[0], rtol=2e-3)
    lz = softmax_lanczos(params, batch, key)
    np.testing.assert_allclose(lz.eigenvalues, evals[:3], rtol=1e-4, atol=1e-6)
    t = softmax_trace(params, batch, key)
    assert abs(float(t.trace) - np.trace(h)) <= 4 * float(t.stderr) + 1e-6


def test_softmax_model_vmap_over_stacked_params():
    pa, batch = _data(0)
    pb, _ = _data(1)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), pa, pb)
    out = jax.vmap(softmax_lanczos, in_axes=(0, None, None))(stacked, batch, jax.random.key(9))
    for i, p in enumerate((pa, pb)):
        top = np.linalg.eigvalsh(_dense_hessian64(p, batch))[::-1][:3]
        np.testing.assert_allclose(out.eigenvalues[i], top, rtol=1e-4, atol=1e-6)


def test_flax_linen_and_nnx_params(softmax_problem):
    params, (x, y), _, evals = softmax_problem
    key = jax.random.key(10)

    def ce_logits(z):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))

    dense = nn.Dense(NC)
    linen_params = {"params": {"kernel": params["W"], "bias": params["b"]}}
    r = D.hessian_lanczos(lambda p, b: ce_logits(dense.apply(p, b)), linen_params, x, key,
                          k=2, num_iters=15, tol=1e-6)
    np.testing.assert_allclose(r.eigenvalues, evals[:2], rtol=1e-4)
    assert r.eigenvectors["params"]["kernel"].shape == (2, D_IN, NC)

    model = nnx.Linear(D_IN, NC, rngs=nnx.Rngs(0))
    model.kernel[...] = params["W"]
    model.bias[...] = params["b"]
    graphdef, state = nnx.split(model)

    def nnx_loss(st, b):
        return ce_logits(nnx.merge(graphdef, st)(b))

    r2 = D.hessian_lanczos(nnx_loss, state, x, key, k=2, num_iters=15, tol=1e-6)
    np.testing.assert_allclose(r2.eigenvalues, evals[:2], rtol=1e-4)
    t = D.hessian_trace(nnx_loss, state, x, key, num_probes=4)
    assert np.isfinite(float(t.trace))


# ------------------------------------------------------------------------------------------
# bad input, NaN propagation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: D.hessian_top_eigenvalue(_quad, W0, A0, k, num_iters=0), "num_iters"),
        (lambda k: D.hessian_top_eigenvalue(_quad, W0, A0, k, tol=-1.0), "tol"),
        (lambda k: D.hessian_lanczos(_quad, W0, A0, k, k=0), "`k`"),
        (lambda k: D.hessian_lanczos(_quad, W0, A0, k, k=4, num_iters=3), "`k`"),
        (lambda k: D.hessian_lanczos(_quad, W0, A0, k, k=7, num_iters=10), "`k`"),
        (lambda k: D.hessian_trace(_quad, W0, A0, k, num_probes=0), "num_probes"),
        (lambda k: D.hessian_trace(_quad, W0, A0, k, probe_batch_size=0), "probe_batch_size"),
        (lambda k: D.hessian_trace(_quad, W0, A0, None), "key"),
        (lambda k: D.hessian_trace(lambda w, a: w["u"] * 2, W0, A0, k), "loss_fn"),
        (lambda k: D.hessian_trace(_quad, {"u": jnp.arange(2), "v": W0["v"]}, A0, k), "params"),
        (lambda k: D.hessian_vector_product(_quad, W0, A0, {"u": jnp.ones(2)}), "vector"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(jax.random.key(0))


def test_nan_in_nan_out():
    w = _tree([np.nan, 0, 0, 0, 0, 0])
    a = A0.at[0, 0].set(jnp.nan)
    key = jax.random.key(11)
    assert np.isnan(float(power(w, a, key, 1e-3).eigenvalue))
    lz = lanczos3(w, a, key)
    assert np.all(np.isnan(np.asarray(lz.eigenvalues))) and not bool(lz.converged)
    assert np.isnan(float(trace400(w, a, key).trace))


def test_unroll_gives_the_loop_results():
    key = jax.random.key(12)
    for fn, kw in (
        (D.hessian_top_eigenvalue, dict(num_iters=30, tol=1e-4)),
        (D.hessian_lanczos, dict(k=2, num_iters=6, tol=1e-4)),
        (D.hessian_trace, dict(num_probes=6, probe_batch_size=4)),
    ):
        loop = jax.jit(lambda w, a, fn=fn, kw=kw: fn(_quad, w, a, key, **kw))(W0, A0)
        flat = jax.jit(lambda w, a, fn=fn, kw=kw: fn(_quad, w, a, key, unroll=True, **kw))(W0, A0)
        for x, y in zip(jax.tree.leaves(loop), jax.tree.leaves(flat)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=fn.__name__)
    assert int(loop.samples.shape[0]) == 6
