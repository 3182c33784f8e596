"""SAM / ASAM / AACE-SAM: acceptance checks 1-4, 8-10, 13 of docs/design/sam_family.md §5."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lossjax.losses.aace import aace_loss
from lossjax.sharpness import aace_sam, asam, find_sam_state, sam, sam_gradient

A = jnp.array([1.0, 10.0])


def quad(w):
    return 0.5 * jnp.sum(A * w**2)


gquad = jax.grad(quad)


def one_step(tx, w, f=quad):
    g = jax.grad(f)
    state = tx.init(w)
    u, state = tx.update(g(w), state, w, grad_fn=g)
    return optax.apply_updates(w, u), state


# --- 1. closed form --------------------------------------------------------------------------


def test_sam_closed_form_quadratic():
    w1, state = one_step(optax.chain(sam(0.1), optax.sgd(0.01)), jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(w1, [0.9899004963, 0.8900496281], atol=1e-6)
    st = find_sam_state(state)
    np.testing.assert_allclose(st.ascent_norm, 10.04987562, rtol=1e-6)
    np.testing.assert_allclose(st.perturbation_norm, 0.1, rtol=1e-6)
    assert int(st.count) == 1
    out = sam_gradient(gquad(jnp.ones(2)), jnp.ones(2), gquad, rho=0.1)
    np.testing.assert_allclose(out.grads, [1.0099503719, 10.9950371902], atol=1e-6)


# --- 2. ASAM closed form ---------------------------------------------------------------------


def test_asam_closed_form():
    w = jnp.array([2.0, 0.5])
    out = sam_gradient(gquad(w), w, lambda p: p - w, rho=0.1, adaptive=True, eta=0.0)  # returns ε
    np.testing.assert_allclose(out.grads, [0.1695996608, 0.0264999470], atol=1e-7)
    tx = asam(0.1, eta=0.0, adaptive_mask=True)
    g, _ = tx.update(gquad(w), tx.init(w), w, grad_fn=lambda p: p - w)
    np.testing.assert_allclose(g, [0.1695996608, 0.0264999470], atol=1e-7)
    # ‖T⁻¹ ε‖ = ρ
    np.testing.assert_allclose(jnp.linalg.norm(g / jnp.abs(w)), 0.1, rtol=1e-6)
    # w = (1, 1): ASAM ≡ SAM
    w = jnp.ones(2)
    ga, _ = tx.update(gquad(w), tx.init(w), w, grad_fn=gquad)
    gs, _ = sam(0.1).update(gquad(w), sam(0.1).init(w), w, grad_fn=gquad)
    np.testing.assert_allclose(ga, gs, rtol=1e-6)


def test_asam_default_mask_leaves_bias_unscaled():
    params = {"kernel": jnp.array([2.0]), "bias": jnp.array([3.0])}
    g = {"kernel": jnp.array([1.0]), "bias": jnp.array([1.0])}
    out = sam_gradient(g, params, lambda p: jax.tree.map(lambda a, b: a - b, p, params), rho=1.0,
                       adaptive=True, eta=0.0, adaptive_mask=lambda p: {"kernel": True, "bias": False})
    # T = (2, 1): Tg = (2, 1), ε = T²g/‖Tg‖ = (4, 1)/√5
    got = [out.grads["kernel"][0], out.grads["bias"][0]]
    np.testing.assert_allclose(got, np.array([4.0, 1.0]) / np.sqrt(5), rtol=1e-6)
    tx = asam(1.0, eta=0.0)
    g2, _ = tx.update(g, tx.init(params), params, grad_fn=lambda p: jax.tree.map(lambda a, b: a - b, p, params))
    np.testing.assert_allclose(g2["kernel"], out.grads["kernel"], rtol=1e-6)


# --- 3. ρ = 0 ⇒ base optimizer bit for bit -----------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [lambda: optax.sgd(0.05), lambda: optax.sgd(0.05, momentum=0.9), lambda: optax.adamw(1e-2, weight_decay=1e-3)],
    ids=["sgd", "momentum", "adamw"],
)
@pytest.mark.parametrize("which", ["sam", "asam", "aace_sam"])
def test_rho_zero_is_base_optimizer(base, which):
    make = {"sam": sam, "asam": asam, "aace_sam": aace_sam}[which]
    f = lambda w: jnp.sum(jnp.sin(w) * w**2) + quad(w)  # noqa: E731
    g = jax.grad(f)
    tx1, tx2 = optax.chain(make(0.0), base()), base()

    @jax.jit
    def run(w):
        def body(carry, _):
            w1, s1, w2, s2 = carry
            u1, s1 = tx1.update(g(w1), s1, w1, grad_fn=g)
            u2, s2 = tx2.update(g(w2), s2, w2)
            return (optax.apply_updates(w1, u1), s1, optax.apply_updates(w2, u2), s2), None

        (w1, _, w2, _), _ = jax.lax.scan(body, (w, tx1.init(w), w, tx2.init(w)), None, length=10)
        return w1, w2

    w1, w2 = run(jnp.array([0.7, -1.3]))
    np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))


# --- 4. zero gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("adaptive", [True, False])
def test_zero_gradient_is_finite(normalize, adaptive):
    params = {"a": jnp.zeros((2, 3)), "b": jnp.ones(3)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = sam(0.05, normalize=normalize, adaptive=adaptive)
    out, state = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: zeros)
    for leaf in jax.tree.leaves(out) + [state.ascent_norm, state.perturbation_norm]:
        assert np.all(np.isfinite(leaf))
        assert np.all(np.asarray(leaf) == 0)
    # also a zero ascent gradient but a non-zero training gradient: w_adv = w, g = grad_fn(w)
    out, _ = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: jax.tree.map(lambda x: x + 1.0, p))
    np.testing.assert_array_equal(out["b"], 2.0 * np.ones(3))


# --- 8. AACE-SAM one step on the linear-softmax example ----------------------------------------

X8 = jnp.array([[1.0, 2.0]])
Y8 = jnp.array([0])


def _ce8(W):
    return optax.softmax_cross_entropy_with_integer_labels(X8 @ W, Y8).mean()


def _aace8(W):
    return aace_loss(X8 @ W, Y8).mean()


def test_aace_sam_linear_softmax_step():
    W = jnp.zeros((2, 3))
    g_a = jax.grad(_aace8)(W)
    np.testing.assert_allclose(g_a, [[1 / 3, -1 / 6, -1 / 6], [2 / 3, -1 / 3, -1 / 3]], atol=1e-7)
    w_adv = W - 0.2 * g_a
    np.testing.assert_allclose(jax.nn.softmax(X8 @ w_adv)[0], [0.23269654, 0.38365173, 0.38365173], atol=1e-7)
    tx = optax.chain(aace_sam(0.2), optax.sgd(0.1))
    u, state = tx.update(g_a, tx.init(W), W, grad_fn=jax.grad(_ce8))
    W1 = optax.apply_updates(W, u)
    np.testing.assert_allclose(
        W1, [[0.07673035, -0.03836517, -0.03836517], [0.15346069, -0.07673035, -0.07673035]], atol=1e-7
    )
    np.testing.assert_allclose(state[0].ascent_norm, 0.91287093, rtol=1e-6)
    np.testing.assert_allclose(state[0].perturbation_norm, 0.18257419, rtol=1e-6)
    _, state = optax.chain(aace_sam(0.2, normalize=True), optax.sgd(0.1)).update(
        g_a, tx.init(W), W, grad_fn=jax.grad(_ce8)
    )
    np.testing.assert_allclose(state[0].perturbation_norm, 0.2, rtol=1e-6)


def test_rho_schedule_and_descent_direction():
    sched = optax.linear_schedule(0.1, 0.0, 2)
    tx = sam(sched)
    w = jnp.ones(2)
    s = tx.init(w)
    for expected in (0.1, 0.05, 0.0):
        _, s = tx.update(gquad(w), s, w, grad_fn=gquad)
        np.testing.assert_allclose(s.perturbation_norm, expected, atol=1e-7)
    # descent: grad_fn receives w − ε
    seen = sam_gradient(gquad(w), w, lambda p: p, rho=0.1, direction="descent").grads
    np.testing.assert_allclose(seen, w - 0.1 * gquad(w) / jnp.linalg.norm(gquad(w)), atol=1e-7)


# --- 9. parity with optax.contrib.sam ------------------------------------------------------------


def parabola(w):
    return jnp.sum((w - jnp.array([1.0, -2.0, 3.0])) ** 2 * jnp.array([1.0, 3.0, 0.5]))


_kx = jax.random.normal(jax.random.key(0), (16, 3))
_ky = jnp.sin(_kx @ jnp.array([1.0, -1.0, 0.5]))
MLP0 = {
    "w1": jax.random.normal(jax.random.key(1), (3, 8)) * 0.5,
    "b1": jnp.zeros(8),
    "w2": jax.random.normal(jax.random.key(2), (8,)) * 0.5,
}


def mlp_loss(p):
    h = jnp.tanh(_kx @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] - _ky) ** 2)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _parity_runs(f, rho, aace, w0):
    g = jax.grad(f)
    opt = lambda: optax.sgd(0.01, momentum=0.9)  # noqa: E731
    if aace:
        ours = optax.chain(aace_sam(rho), opt())
        theirs = optax.contrib.sam(opt(), optax.sgd(rho), opaque_mode=True)
        sign = -1.0
    else:
        ours = optax.chain(sam(rho), opt())
        theirs = optax.contrib.sam(opt(), optax.chain(optax.contrib.normalize(), optax.sgd(rho)), opaque_mode=True)
        sign = 1.0

    def body(carry, _):
        w1, s1, w2, s2 = carry
        u1, s1 = ours.update(g(w1), s1, w1, grad_fn=g)
        u2, s2 = theirs.update(jax.tree.map(lambda x: sign * x, g(w2)), s2, w2, grad_fn=lambda p, _: g(p))
        w1, w2 = optax.apply_updates(w1, u1), optax.apply_updates(w2, u2)
        return (w1, s1, w2, s2), (w1, w2)

    _, (t1, t2) = jax.lax.scan(body, (w0, ours.init(w0), w0, theirs.init(w0)), None, length=100)
    return t1, t2


@pytest.mark.parametrize("aace", [False, True], ids=["sam", "aace"])
@pytest.mark.parametrize("problem", ["parabola", "mlp"])
def test_parity_with_optax_contrib_sam_opaque(problem, aace):
    f, w0 = (parabola, jnp.zeros(3)) if problem == "parabola" else (mlp_loss, MLP0)
    with jax.default_matmul_precision("highest"):  # GPUs default to TF32 matmuls
        t1, t2 = _parity_runs(f, 0.05, aace, w0)
    for a, b in zip(jax.tree.leaves(t1), jax.tree.leaves(t2)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # the trajectories actually move
    assert float(jnp.abs(jax.tree.leaves(t1)[0][-1] - jax.tree.leaves(t1)[0][0]).max()) > 1e-2


def test_parity_with_optax_contrib_sam_transparent():
    g = jax.grad(parabola)
    ours = optax.chain(sam(0.05), optax.sgd(0.01))
    theirs = optax.contrib.sam(optax.sgd(0.01), optax.chain(optax.contrib.normalize(), optax.sgd(0.05)))

    @jax.jit
    def run(w0):
        def ours_body(c, _):
            w, s = c
            u, s = ours.update(g(w), s, w, grad_fn=g)
            w = optax.apply_updates(w, u)
            return (w, s), w

        def theirs_body(c, _):
            w, s = c
            u, s = theirs.update(g(w), s, w)
            w = optax.apply_updates(w, u)
            return (w, s), w

        _, a = jax.lax.scan(ours_body, (w0, ours.init(w0)), None, length=20)
        _, b = jax.lax.scan(theirs_body, (w0, theirs.init(w0)), None, length=40)
        return a, b

    a, b = run(jnp.zeros(3))
    np.testing.assert_allclose(a, b[1::2], rtol=1e-6, atol=1e-7)


# --- 10. flat-minimum landscape ------------------------------------------------------------------


def landscape(w):
    x, y = w[0], w[1]
    return -jnp.exp(-((x - 2.0) ** 2) - y**2) - jnp.exp(-(x**2 + 100.0 * y**2))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _descend(rho, steps, w0):
    g = jax.grad(landscape)
    tx = optax.sgd(0.01) if rho is None else optax.chain(sam(rho), optax.sgd(0.01))

    def body(c, _):
        w, s = c
        u, s = tx.update(g(w), s, w, grad_fn=g)
        return (optax.apply_updates(w, u), s), None

    (w, _), _ = jax.lax.scan(body, (w0, tx.init(w0)), None, length=steps)
    return w


def test_flat_minimum_behaviour():
    w0 = jnp.array([-0.4, -0.4])
    w_sgd = _descend(None, 8000, w0)
    w_sam = _descend(0.1, 4000, w0)
    np.testing.assert_allclose(w_sgd, [0.0425, 0.0], atol=5e-3)
    np.testing.assert_allclose(w_sam, [1.9592, 0.0017], atol=5e-3)
    assert float(w_sam[0]) > 1.9 and float(w_sgd[0]) < 0.1


# --- 13. jit hygiene, extras, errors ----------------------------------------------------------


def test_compiles_once_and_ignores_unrelated_extras():
    traces = []
    tx = optax.chain(sam(0.05), optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))

    @jax.jit
    def step(w, s, x):
        traces.append(1)
        loss = lambda p: jnp.mean((x @ p) ** 2)  # noqa: E731
        u, s = tx.update(jax.grad(loss)(w), s, w, grad_fn=jax.grad(loss), unrelated=3.0)
        return optax.apply_updates(w, u), s

    w = jnp.ones(3)
    s = tx.init(w)
    for i in range(5):
        w, s = step(w, s, jnp.full((4, 3), float(i + 1)))
    assert len(traces) == 1
    assert int(find_sam_state(s).count) == 5


@pytest.mark.parametrize("make", [sam, asam, aace_sam])
def test_missing_grad_fn_is_an_error(make):
    tx = optax.chain(make(0.1), optax.sgd(0.1))
    w = jnp.ones(2)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(w, tx.init(w), w)
    with pytest.raises(ValueError, match="params"):
        make(0.1).update(w, make(0.1).init(w), None, grad_fn=gquad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rho"):
        sam(-0.1)
    with pytest.raises(ValueError, match="direction"):
        sam(0.1, direction="up")
    with pytest.raises(ValueError, match="eta"):
        asam(0.1, eta=-1.0)
    with pytest.raises(ValueError, match="mask"):
        sam_gradient({"a": jnp.ones(1)}, {"a": jnp.ones(1)}, lambda p: p, perturb_mask={"b": True})


def test_perturb_mask_sam_on():
    params = {"bn": jnp.array([1.0, 2.0]), "dense": jnp.array([3.0])}
    g = {"bn": jnp.array([3.0, 4.0]), "dense": jnp.array([100.0])}
    ident = lambda p: jax.tree.map(lambda a, b: a - b, p, params)  # noqa: E731  returns ε
    out = sam_gradient(g, params, ident, rho=0.5, perturb_mask={"bn": True, "dense": False})
    np.testing.assert_allclose(out.grads["bn"], [0.3, 0.4], atol=1e-7)  # norm over bn only
    assert float(out.grads["dense"][0]) == 0.0
    full = sam_gradient(g, params, ident, rho=0.5, perturb_mask=True)
    ref = sam_gradient(g, params, ident, rho=0.5)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)


def test_bf16_params_compute_in_f32():
    w = jnp.array([1.0, 1.0], jnp.bfloat16)
    g = lambda p: (A * p.astype(jnp.float32)).astype(jnp.bfloat16)  # noqa: E731
    tx = optax.chain(sam(0.1), optax.sgd(0.01))
    u, s = tx.update(g(w), tx.init(w), w, grad_fn=g)
    assert u.dtype == jnp.bfloat16
    assert s[0].ascent_norm.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(optax.apply_updates(w, u), np.float32), [0.9899, 0.89], atol=1e-2)
