"""ε-sharpness, m-sharpness, adaptive sharpness and gradient norms against closed forms.

Oracles: ½aw² in one dimension (max at ε = ρ·sign(w)); ½wᵀAw where the exact maximum over the
ball is the trust-region problem max εᵀAw + ½εᵀAε, solved in float64 numpy by bisection on
the secular equation ‖(μI − A)⁻¹Aw‖ = ρ (μ > λ_max); SAM's / ASAM's first-order perturbation
computed by hand; ASAM's scale invariance (Kwon et al. 2021 §3); CE / AACE logit gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lossjax import diagnostics as D
from lossjax.losses import aace_loss

_Q = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))[0]
LAMBDAS = np.array([6.0, 3.0, 1.0, 0.2])
A = (_Q * LAMBDAS) @ _Q.T
W = np.array([0.3, -0.5, 0.8, 0.1])


def quad(w, a):
    return 0.5 * w @ (a @ w)


def trust_region_max(a, w, rho, t=None):
    """max over ‖u‖ ≤ ρ of ½(w+Tu)ᵀA(w+Tu) − ½wᵀAw, float64 (T = diag(t) or I)."""
    t = np.ones_like(w) if t is None else np.asarray(t, np.float64)
    at = a * np.outer(t, t)  # T A T
    bt = t * (a @ w)  # T A w
    lam, vec = np.linalg.eigh(at)
    c = vec.T @ bt
    lo, hi = lam[-1] + 1e-12, lam[-1] + 1e6
    for _ in range(200):  # ‖u(μ)‖ = ‖c/(μ − λ)‖ decreases in μ
        mu = 0.5 * (lo + hi)
        lo, hi = (mu, hi) if np.linalg.norm(c / (mu - lam)) > rho else (lo, mu)
    u = vec @ (c / (mu - lam))
    return bt @ u + 0.5 * u @ at @ u


eps_sharp = jax.jit(
    lambda w, a, rho, key=None: D.epsilon_sharpness(quad, w, a, rho=rho, num_steps=40, key=key),
    static_argnames=())
eps_sharp1 = jax.jit(lambda w, a, rho: D.epsilon_sharpness(quad, w, a, rho=rho, num_steps=1))
ada_sharp = jax.jit(lambda w, a, rho: D.adaptive_sharpness(
    quad, w, a, rho=rho, eta=0.0, adaptive_mask=True, num_steps=40))


def test_one_dimensional_closed_form():
    f = lambda w, a: 0.5 * a * w[0] ** 2  # noqa: E731
    r = D.epsilon_sharpness(f, jnp.array([-2.0]), 3.0, rho=0.1, num_steps=3)
    # float32 difference of two losses ≈ 6: absolute error ~ 6·2⁻²³ per evaluation
    assert float(r.sharpness) == pytest.approx(3 * 0.1 * 2 + 0.5 * 3 * 0.01, abs=4e-6)
    assert float(r.loss) == pytest.approx(6.0)
    assert float(r.perturbation_norm) == pytest.approx(0.1, rel=1e-6)


def test_top_eigenvector_point_is_exact_after_one_step():
    w = 0.7 * _Q[:, 0]
    r = eps_sharp1(jnp.asarray(w, jnp.float32), jnp.asarray(A, jnp.float32), 0.1)
    exact = 0.1 * LAMBDAS[0] * 0.7 + 0.5 * 0.01 * LAMBDAS[0]
    np.testing.assert_allclose(r.sharpness, exact, rtol=1e-5)


def test_general_point_matches_trust_region_and_one_step_is_sams_perturbation():
    a32, w32 = jnp.asarray(A, jnp.float32), jnp.asarray(W, jnp.float32)
    for rho in (0.05, 0.5):
        exact = trust_region_max(A, W, rho)
        many = eps_sharp(w32, a32, rho)
        np.testing.assert_allclose(many.sharpness, exact, rtol=2e-4)
        one = eps_sharp1(w32, a32, rho)
        g = A @ W
        e = rho * g / np.linalg.norm(g)  # SAM's ε̂ (Foret et al. Eq. 2)
        np.testing.assert_allclose(one.sharpness, quad(W + e, A) - quad(W, A), rtol=1e-5)
        assert float(one.sharpness) <= float(many.sharpness) <= exact * (1 + 1e-5)
        # bounds: ρ‖Aw‖ + ½ρ²·(Rayleigh quotient) ≤ max ≤ ρ‖Aw‖ + ½ρ²λ_max
        assert rho * np.linalg.norm(g) < exact <= rho * np.linalg.norm(g) + 0.5 * rho**2 * LAMBDAS[0]


def test_stationary_point_needs_a_random_start():
    w0, a32 = jnp.zeros(4), jnp.asarray(A, jnp.float32)
    assert float(eps_sharp(w0, a32, 0.1).sharpness) == 0.0  # ∇L = 0: ascent from ε = 0 stays
    r = eps_sharp(w0, a32, 0.1, jax.random.key(0))
    np.testing.assert_allclose(r.sharpness, 0.5 * 0.01 * LAMBDAS[0], rtol=1e-3)  # ½ρ²λ_max
    np.testing.assert_allclose(r.perturbation_norm, 0.1, rtol=1e-5)


def test_jit_matches_eager_and_vmap_over_points():
    ws = jnp.asarray(np.stack([W, -W, 2 * W]), jnp.float32)
    a32 = jnp.asarray(A, jnp.float32)
    batched = jax.vmap(eps_sharp, in_axes=(0, None, None))(ws, a32, 0.1)
    for i in range(3):
        np.testing.assert_allclose(batched.sharpness[i], trust_region_max(A, np.asarray(ws[i], np.float64), 0.1),
                                   rtol=2e-4)
    eager = D.epsilon_sharpness(quad, ws[0], a32, rho=0.1, num_steps=40)
    np.testing.assert_allclose(eager.sharpness, batched.sharpness[0], rtol=1e-6)


def test_adaptive_sharpness_closed_forms():
    # 1-D: |ε| ≤ ρ(|w| + η)
    f = lambda w, a: 0.5 * a * w[0] ** 2  # noqa: E731
    r = D.adaptive_sharpness(f, jnp.array([2.0]), 3.0, rho=0.1, eta=0.5, adaptive_mask=True, num_steps=2)
    rp = 0.1 * 2.5
    assert float(r.sharpness) == pytest.approx(3 * rp * 2 + 0.5 * 3 * rp**2, rel=1e-6)
    # general quadratic: trust region in u = T⁻¹ε with T = |w|
    a32, w32 = jnp.asarray(A, jnp.float32), jnp.asarray(W, jnp.float32)
    np.testing.assert_allclose(ada_sharp(w32, a32, 0.2).sharpness, trust_region_max(A, W, 0.2, np.abs(W)),
                               rtol=2e-4)
    # one step = ASAM's perturbation ε = ρT²g/‖Tg‖ (A = diag(1, 10), w = (2, 0.5), η = 0)
    a2, w2 = np.diag([1.0, 10.0]), np.array([2.0, 0.5])
    g, t = a2 @ w2, np.abs(w2)
    e = 0.1 * t**2 * g / np.linalg.norm(t * g)
    r1 = D.adaptive_sharpness(quad, jnp.asarray(w2, jnp.float32), jnp.asarray(a2, jnp.float32), rho=0.1,
                              eta=0.0, adaptive_mask=True, num_steps=1)
    np.testing.assert_allclose(r1.perturbation_norm, np.linalg.norm(e), rtol=1e-5)
    np.testing.assert_allclose(r1.sharpness, quad(w2 + e, a2) - quad(w2, a2), rtol=1e-5)


def test_adaptive_sharpness_is_scale_invariant_and_epsilon_sharpness_is_not():
    x = jnp.array([1.0, -2.0, 0.5, 3.0])
    y = jnp.array([0.5, -1.0, 1.0, 2.0])

    def loss(p, batch):  # f(x) = a·b·x: (a, b) → (c·a, b/c) leaves the loss unchanged
        xb, yb = batch
        return jnp.mean((p["a"] * p["b"] * xb - yb) ** 2)

    p1 = {"a": jnp.array(0.8), "b": jnp.array(0.6)}
    p2 = {"a": jnp.array(8.0), "b": jnp.array(0.06)}
    ada = [D.adaptive_sharpness(loss, p, (x, y), rho=0.3, eta=0.0, adaptive_mask=True, num_steps=20)
           for p in (p1, p2)]
    eps = [D.epsilon_sharpness(loss, p, (x, y), rho=0.3, num_steps=20) for p in (p1, p2)]
    np.testing.assert_allclose(ada[0].loss, ada[1].loss, rtol=1e-5)
    np.testing.assert_allclose(ada[0].sharpness, ada[1].sharpness, rtol=1e-4)
    assert abs(float(eps[0].sharpness) - float(eps[1].sharpness)) > 0.5 * float(eps[0].sharpness)


def test_m_sharpness_two_point_example_and_m_equals_batch():
    c = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    f = lambda w, b: jnp.mean(0.5 * jnp.sum((w - b) ** 2, axis=-1))  # noqa: E731
    w = jnp.array([0.0, 1.0])
    m1 = jax.jit(lambda w: D.m_sharpness(f, w, c, m=1, rho=0.1, num_steps=3))(w)
    np.testing.assert_allclose(m1.sharpness, 0.1 * np.sqrt(2) + 0.005, rtol=1e-6)  # ρ‖w − c_i‖ + ½ρ²
    m2 = D.m_sharpness(f, w, c, m=2, rho=0.1, num_steps=3)
    np.testing.assert_allclose(m2.sharpness, 0.105, rtol=1e-6)  # mean loss ½‖w‖² + ½: ρ‖w‖ + ½ρ²
    full = D.epsilon_sharpness(f, w, c, rho=0.1, num_steps=3)
    np.testing.assert_allclose(m2.sharpness, full.sharpness, rtol=1e-7)
    # adaptive m-sharpness with m = B is adaptive sharpness; random starts are reproducible
    ada = D.m_sharpness(f, w + 0.5, c, m=2, rho=0.1, adaptive=True, eta=0.1, adaptive_mask=True, num_steps=3)
    ref = D.adaptive_sharpness(f, w + 0.5, c, rho=0.1, eta=0.1, adaptive_mask=True, num_steps=3)
    np.testing.assert_allclose(ada.sharpness, ref.sharpness, rtol=1e-6)
    k = jax.random.key(3)
    r1, r2 = (D.m_sharpness(f, w, c, m=1, rho=0.1, num_steps=3, key=k) for _ in range(2))
    assert float(r1.sharpness) == float(r2.sharpness)


def _logit_grad_norms(z, y):
    p = np.exp(z - z.max())
    p /= p.sum()
    e = np.eye(len(z))[y]
    g_ce = p - e
    g_aace = -p[y] * p / (1 - p[y])  # ∂(−log(1 − p_y))/∂z_j, j ≠ y
    g_aace[y] = p[y]
    return np.linalg.norm(g_ce), np.linalg.norm(g_aace)


def test_gradient_norms_ce_vs_aace():
    y = jnp.array([0])
    ce = lambda z, b: -jax.nn.log_softmax(z)[0, b[0]]  # noqa: E731  (params = the logits)
    aace = lambda z, b: aace_loss(z, b).mean()  # noqa: E731
    prev = None
    for t in (0.0, 2.0, 5.0, 10.0):
        z = np.zeros(10)
        z[0] = t
        n = D.gradient_norms({"ce": ce, "aace": aace}, jnp.asarray(z[None], jnp.float32), y)
        exp_ce, exp_aace = _logit_grad_norms(z, 0)
        # float32 p − e_y at p_y ≈ 1 − 4e-4 loses ~3 digits: rtol 1e-3 for CE
        np.testing.assert_allclose(n["ce"], exp_ce, rtol=1e-3)
        np.testing.assert_allclose(n["aace"], exp_aace, rtol=1e-5)
        if prev is not None:  # AACE's claim: ‖∇CE‖ → 0 while ‖∇AACE‖ grows
            assert n["ce"] < prev[0] and n["aace"] > prev[1]
        prev = (n["ce"], n["aace"])
    assert float(prev[1]) == pytest.approx(np.sqrt(10 / 9), rel=1e-3)


def test_gradient_norm_of_a_linear_softmax_model():
    x = jax.random.normal(jax.random.key(0), (8, 3))
    y = jnp.arange(8) % 4
    params = {"W": jax.random.normal(jax.random.key(1), (3, 4)), "b": jnp.zeros(4)}
    ce = lambda p, b: -jnp.mean(jax.nn.log_softmax(b[0] @ p["W"] + p["b"])[jnp.arange(8), b[1]])  # noqa: E731
    z = np.asarray(x, np.float64) @ np.asarray(params["W"], np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = (p - np.eye(4)[np.asarray(y)]) / 8
    expected = np.sqrt(np.sum((np.asarray(x, np.float64).T @ r) ** 2) + np.sum(r.sum(0) ** 2))
    np.testing.assert_allclose(D.gradient_norm(ce, params, (x, y)), expected, rtol=1e-5)


def test_nnx_state_and_default_mask():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    mask = D.default_adaptive_mask(state)
    assert jax.tree.leaves(mask) == [False, True]  # bias, kernel
    x = jnp.ones((4, 3))
    loss = lambda st, b: jnp.mean(nnx.merge(graphdef, st)(b) ** 2)  # noqa: E731
    as_dict = {"bias": state["bias"][...], "kernel": state["kernel"][...]}
    loss_d = lambda p, b: jnp.mean((b @ p["kernel"] + p["bias"]) ** 2)  # noqa: E731
    r1 = D.adaptive_sharpness(loss, state, x, rho=0.2, num_steps=3)
    r2 = D.adaptive_sharpness(loss_d, as_dict, x, rho=0.2, num_steps=3)
    np.testing.assert_allclose(r1.sharpness, r2.sharpness, rtol=1e-5)
    assert float(r1.sharpness) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=-0.1), "rho"),
        (dict(num_steps=0), "num_steps"),
        (dict(step_size=0.0), "step_size"),
        (dict(key=jnp.ones(2)), "key"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        D.epsilon_sharpness(quad, jnp.ones(4), jnp.eye(4), **kwargs)


def test_bad_input_adaptive_and_m():
    c = jnp.ones((6, 2))
    f = lambda w, b: jnp.mean(jnp.sum((w - b) ** 2, -1))  # noqa: E731
    with pytest.raises(ValueError, match="eta"):
        D.adaptive_sharpness(f, jnp.ones(2), c, eta=-1.0)
    with pytest.raises(ValueError, match="`m`"):
        D.m_sharpness(f, jnp.ones(2), c, m=4)
    with pytest.raises(ValueError, match="`m`"):
        D.m_sharpness(f, jnp.ones(2), c, m=0)
    with pytest.raises(ValueError, match="adaptive_mask"):
        D.adaptive_sharpness(f, jnp.ones(2), c, adaptive_mask={"x": True})
    with pytest.raises(TypeError, match="loss_fns"):
        D.gradient_norms([f], jnp.ones(2), c)


def test_nan_in_nan_out():
    w = jnp.array([jnp.nan, 0.0, 0.0, 0.0])
    r = eps_sharp(w, jnp.asarray(A, jnp.float32), 0.1)
    assert np.isnan(float(r.sharpness)) and np.isnan(float(r.loss))
    f = lambda w, a: jnp.where(w[0] > 0.05, jnp.nan, quad(w, a))  # noqa: E731  NaN only when perturbed
    r2 = D.epsilon_sharpness(f, jnp.zeros(4).at[0].set(0.01), jnp.eye(4), rho=0.1, num_steps=2)
    assert np.isnan(float(r2.sharpness))
    assert np.isnan(float(D.gradient_norm(quad, w, jnp.eye(4))))


def test_unroll_gives_the_loop_result():
    c = jnp.array([[1.0, 0.0], [-1.0, 0.5]])
    f = lambda w, b: jnp.mean(jnp.sum(w * b, -1) ** 2 + jnp.sum(w**4))  # noqa: E731
    w = jnp.array([0.3, 0.8])
    loop = D.m_sharpness(f, w, c, m=1, rho=0.2, num_steps=4, adaptive=True)
    flat = D.m_sharpness(f, w, c, m=1, rho=0.2, num_steps=4, adaptive=True, unroll=True)
    assert float(loop.sharpness) > 0
    np.testing.assert_allclose(np.asarray(loop), np.asarray(flat), rtol=1e-6)


def test_sharpness_report_on_a_quadratic():
    # ½wᵀAw with w = 0.7·(top eigenvector): every entry has a closed form
    w = jnp.asarray(0.7 * _Q[:, 0], jnp.float32)
    a32 = jnp.asarray(A, jnp.float32)
    report = D.make_sharpness_report(quad, ascent_loss_fn=lambda w, a: jnp.sum(w), rho=0.1, num_steps=2,
                                     lanczos_iters=4, num_probes=2000)
    r = report(w, a32, jax.random.key(0))
    assert all(isinstance(v, float) for v in r.values())
    np.testing.assert_allclose(r["loss"], 0.5 * 0.49 * LAMBDAS[0], rtol=1e-5)
    np.testing.assert_allclose(r["grad_norm"], 0.7 * LAMBDAS[0], rtol=1e-5)
    np.testing.assert_allclose(r["ascent_grad_norm"], 2.0, rtol=1e-6)  # ‖∇Σw‖ = √4
    np.testing.assert_allclose(r["top_eigenvalue"], LAMBDAS[0], rtol=1e-4)
    assert abs(r["trace"] - LAMBDAS.sum()) <= 4 * r["trace_stderr"]
    np.testing.assert_allclose(r["eps_sharpness"], 0.1 * LAMBDAS[0] * 0.7 + 0.005 * LAMBDAS[0], rtol=1e-4)
    assert r["adaptive_sharpness"] > 0
