"""Tests of the scaling-law forms, published constants, compute allocation and LR-schedule areas.

Oracles: float64 NumPy evaluations of the equations, hand-computed values, brute-force
minimisation along iso-FLOP lines, and the papers' published numbers (Kaplan et al. 2020,
Henighan et al. 2020, Hoffmann et al. 2022, Besiroglu et al. 2024; see docs/design/experiments.md §3).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from lossjax import scaling as S
from lossjax.scaling import published as P

RNG = np.random.default_rng(0)
N = np.geomspace(1e6, 1e11, 7)
D = np.geomspace(1e8, 1e13, 7)


# ----------------------------------------------------------------------------- functional forms


def test_power_law_plus_constant_matches_numpy():
    row = P.HENIGHAN_2020["Image 8x8"]
    got = S.power_law_plus_constant(N, l_inf=row.l_inf_n, x0=row.n0, alpha=row.alpha_n)
    want = row.l_inf_n + (N / row.n0) ** (-row.alpha_n)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_kaplan_single_variable_forms():
    k = P.KAPLAN_2020
    np.testing.assert_allclose(
        np.asarray(S.kaplan_loss_n(N)), (k.n_c / N) ** k.alpha_n, rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(S.kaplan_loss_d(D)), (k.d_c / D) ** k.alpha_d, rtol=1e-6
    )


def test_kaplan_joint_form_and_limit():
    k = P.KAPLAN_2020_JOINT
    want = ((k.n_c / N) ** (k.alpha_n / k.alpha_d) + k.d_c / D) ** k.alpha_d
    got = S.kaplan_loss_nd(N, D)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    # D -> infinity reduces to the parameter-limited law with the same N_c, alpha_N
    with jax.enable_x64(True):
        inf = S.kaplan_loss_nd(N, 1e300)
        lim = S.kaplan_loss_n(N, n_c=k.n_c, alpha_n=k.alpha_n)
        np.testing.assert_allclose(np.asarray(inf), np.asarray(lim), rtol=1e-12)


@pytest.mark.parametrize("c", [P.CHINCHILLA_HOFFMANN_2022, P.CHINCHILLA_BESIROGLU_2024])
def test_chinchilla_loss_matches_numpy(c):
    want = c.e + c.a / N**c.alpha + c.b / D**c.beta
    got = S.chinchilla_loss(N, D, **c._asdict())
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_chinchilla_loss_broadcasts_grad_and_jit():
    c = P.CHINCHILLA_HOFFMANN_2022
    grid = S.chinchilla_loss(N[:, None], D[None, :], **c._asdict())
    assert grid.shape == (7, 7)
    f = jax.jit(lambda a, al: S.chinchilla_loss(1e9, 1e11, e=1.69, a=a, b=410.7, alpha=al, beta=0.28))
    assert np.isfinite(float(f(406.4, 0.34)))
    with jax.enable_x64(True):
        check_grads(
            lambda e, a, al: S.chinchilla_loss(1e9, 1e11, e=e, a=a, b=410.7, alpha=al, beta=0.28),
            (jnp.float64(1.69), jnp.float64(406.4), jnp.float64(0.34)), order=1, modes=["rev"],
        )


def test_nmt_bivariate_form_and_optimal_split():
    kw = dict(beta=0.4, p_enc=0.25, p_dec=0.45, l_inf=0.9, n_enc_ref=1e8, n_dec_ref=1e8)
    ne, nd = 3e8, 5e7
    want = 0.4 * (1e8 / ne) ** 0.25 * (1e8 / nd) ** 0.45 + 0.9
    np.testing.assert_allclose(float(S.nmt_bivariate_loss(ne, nd, **kw)), want, rtol=1e-6)
    # at fixed total the loss is minimised at n_enc / n_dec = p_enc / p_dec (Ghorbani et al. Eq. 2;
    # derivation in docs/design/experiments.md §3)
    total = 1e9
    frac = np.linspace(0.01, 0.99, 9801)
    with jax.enable_x64(True):
        loss = np.asarray(S.nmt_bivariate_loss(frac * total, (1 - frac) * total, **kw))
    best = frac[np.argmin(loss)]
    assert abs(best - 0.25 / (0.25 + 0.45)) < 2e-4


def test_lr_annealing_loss_matches_numpy():
    s1 = np.array([1.0, 10.0, 100.0])
    s2 = np.array([0.0, 0.3, 2.0])
    got = S.lr_annealing_loss(s1, s2, l0=2.5, a=0.7, alpha=0.4, c=0.05)
    np.testing.assert_allclose(np.asarray(got), 2.5 + 0.7 * s1**-0.4 - 0.05 * s2, rtol=1e-6)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: S.power_law_plus_constant(np.array([1.0, 0.0]), l_inf=1.0, x0=1.0, alpha=0.5), "x"),
        (lambda: S.kaplan_loss_n(-1.0), "x"),
        (lambda: S.chinchilla_loss(1e9, -1.0, **P.CHINCHILLA_HOFFMANN_2022._asdict()), "d"),
        (lambda: S.chinchilla_loss(0.0, 1e9, **P.CHINCHILLA_HOFFMANN_2022._asdict()), "n"),
        (lambda: S.nmt_bivariate_loss(1e8, 1e8, beta=-1.0, p_enc=0.3, p_dec=0.3, l_inf=1.0), "beta"),
        (lambda: S.lr_annealing_loss(0.0, 0.0, l0=1.0, a=1.0, alpha=1.0, c=1.0), "s1"),
        (lambda: S.kaplan_loss_nd(np.nan, 1e9), "n"),
    ],
)
def test_forms_reject_non_positive_sizes(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ----------------------------------------------------------------------------- published numbers


def test_published_constants_are_recorded_side_by_side():
    h, hu, b = P.CHINCHILLA_HOFFMANN_2022, P.CHINCHILLA_HOFFMANN_2022_UNROUNDED, P.CHINCHILLA_BESIROGLU_2024
    assert (h.e, h.a, h.b, h.alpha, h.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    assert (b.e, b.a, b.b, b.alpha, b.beta) == (1.8172, 482.01, 2085.43, 0.3478, 0.3658)
    # unrounded values round to the body-text ones
    assert round(hu.e, 2) == 1.69 and round(hu.alpha, 2) == 0.34 and round(hu.beta, 2) == 0.28
    assert abs(hu.a - 406.4) < 0.5 and abs(hu.b - 410.7) < 0.5
    assert len(P.HENIGHAN_2020) == 12
    assert P.HENIGHAN_2020["Language"].opt_exponent == 0.73 == P.KAPLAN_2020.n_opt_exponent


# ----------------------------------------------------------------------------- allocation


def test_allocation_exponents_match_papers():
    a, b = S.chinchilla_allocation_exponents(P.CHINCHILLA_HOFFMANN_2022_UNROUNDED)
    assert round(float(a), 2) == 0.46 and round(float(b), 2) == 0.54  # Hoffmann et al. §3.3, Approach 3
    a, b = S.chinchilla_allocation_exponents(P.CHINCHILLA_BESIROGLU_2024)
    assert round(float(a), 2) == 0.51 and round(float(b), 2) == 0.49  # Besiroglu: a ≈ 0.51
    assert math.isclose(float(a + b), 1.0, rel_tol=1e-6)


def test_besiroglu_gives_about_twenty_tokens_per_parameter():
    # Besiroglu et al. 2024 (abstract): the corrected fit is consistent with ~20 tokens per parameter
    with jax.enable_x64(True):
        n, d = S.chinchilla_compute_optimal(P.CHINCHILLA_GOPHER_COMPUTE, P.CHINCHILLA_BESIROGLU_2024)
        n, d = float(n), float(d)
    assert 15.0 < float(d / n) < 25.0
    assert 5e10 < float(n) < 1e11  # tens of billions of parameters at Chinchilla's budget
    np.testing.assert_allclose(6.0 * float(n) * float(d), P.CHINCHILLA_GOPHER_COMPUTE, rtol=1e-12)


@pytest.mark.parametrize(
    "consts", [P.CHINCHILLA_HOFFMANN_2022, P.CHINCHILLA_HOFFMANN_2022_UNROUNDED, P.CHINCHILLA_BESIROGLU_2024]
)
@pytest.mark.parametrize("compute", [1e20, 5.76e23, 1e26])
def test_compute_optimal_is_the_iso_flop_minimum(consts, compute):
    # brute force along the iso-FLOP line D = C/(6N), float64 NumPy
    c = consts
    logn = np.linspace(np.log(1e6), np.log(1e14), 400001)
    n = np.exp(logn)
    d = compute / (6.0 * n)
    loss = c.e + c.a / n**c.alpha + c.b / d**c.beta
    n_star = n[np.argmin(loss)]
    with jax.enable_x64(True):
        n_opt, d_opt = S.chinchilla_compute_optimal(compute, c)
        l_opt = S.chinchilla_optimal_loss(compute, c)
    np.testing.assert_allclose(float(n_opt), n_star, rtol=1e-4)
    np.testing.assert_allclose(float(d_opt), compute / (6 * float(n_opt)), rtol=1e-12)
    np.testing.assert_allclose(float(l_opt), loss.min(), rtol=1e-10)


def test_allocation_accepts_mappings_and_rejects_bad_input():
    d = P.CHINCHILLA_HOFFMANN_2022._asdict()
    n1, _ = S.chinchilla_compute_optimal(1e21, d)
    n2, _ = S.chinchilla_compute_optimal(1e21, P.CHINCHILLA_HOFFMANN_2022)
    assert float(n1) == float(n2)
    with pytest.raises(ValueError, match="compute"):
        S.chinchilla_compute_optimal(-1.0, d)
    with pytest.raises(ValueError, match="missing"):
        S.chinchilla_compute_optimal(1e21, {"e": 1.0})
    with pytest.raises(TypeError, match="constants"):
        S.chinchilla_compute_optimal(1e21, 3.0)
    with pytest.raises(ValueError, match="alpha"):
        S.chinchilla_compute_optimal(1e21, dict(d, alpha=0.0))


# ----------------------------------------------------------------------------- LR-schedule areas


def _areas_loop(lrs, lam, warmup=0):
    """Independent float64 loop of Tissue et al.'s definitions."""
    s1 = s2 = m = 0.0
    prev = lrs[0]
    out1, out2 = [], []
    for i, eta in enumerate(lrs):
        drop = 0.0 if i < warmup else prev - eta
        m = lam * m + drop
        s1 += eta
        s2 += m
        prev = eta
        out1.append(s1)
        out2.append(s2)
    return np.array(out1), np.array(out2)


def test_areas_constant_schedule():
    s1, s2 = S.lr_annealing_areas(np.full(50, 3e-3), decay=0.999)
    np.testing.assert_allclose(np.asarray(s1), 3e-3 * np.arange(1, 51), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(s2), np.zeros(50))


def test_areas_wsd_schedule_hand_computed():
    sched = S.warmup_stable_decay_schedule(1.0, 10, decay_steps=4)
    lrs = np.array([float(sched(t)) for t in range(10)])
    np.testing.assert_allclose(lrs, [1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    lam = 0.999
    with jax.enable_x64(True):
        s1, s2 = S.lr_annealing_areas(jnp.asarray(lrs, jnp.float64), decay=lam)
    assert float(s1[-1]) == 8.5  # 7 + 0.75 + 0.5 + 0.25
    # m = 0.25, 0.25(1+λ), 0.25(1+λ+λ²) after the three drops
    want = [0.0] * 7 + [0.25, 0.25 * (2 + lam), 0.25 * (3 + 2 * lam + lam**2)]
    np.testing.assert_allclose(np.asarray(s2), want, rtol=1e-14)


def test_areas_cosine_schedule():
    T = 200
    lrs = np.asarray(optax.cosine_decay_schedule(1e-2, T)(jnp.arange(T)), np.float64)
    with jax.enable_x64(True):
        # λ = 0: S2(s) = η_1 − η_s exactly (the plain drop in LR)
        _, s2_0 = S.lr_annealing_areas(jnp.asarray(lrs), decay=0.0)
        np.testing.assert_allclose(np.asarray(s2_0), lrs[0] - lrs, atol=1e-15)
        # S1 = Σ 0.5 η0 (1 + cos(π t / T)) and S2 against the loop definition
        s1, s2 = S.lr_annealing_areas(jnp.asarray(lrs), decay=0.99)
    hand_s1 = np.cumsum(0.5 * 1e-2 * (1 + np.cos(np.pi * np.arange(T) / T)))
    np.testing.assert_allclose(np.asarray(s1), hand_s1, rtol=1e-6)
    ref1, ref2 = _areas_loop(lrs, 0.99)
    np.testing.assert_allclose(np.asarray(s2), ref2, rtol=1e-12)
    assert np.all(np.diff(np.asarray(s2)) >= 0)


def test_areas_warmup_excluded_from_s2():
    lrs = np.concatenate([np.linspace(0.1, 1.0, 10), np.ones(5), np.linspace(0.8, 0.0, 5)])
    with jax.enable_x64(True):
        s1, s2 = S.lr_annealing_areas(jnp.asarray(lrs), decay=0.9, warmup_steps=10)
        _, s2_raw = S.lr_annealing_areas(jnp.asarray(lrs), decay=0.9)
    ref1, ref2 = _areas_loop(lrs, 0.9, warmup=10)
    np.testing.assert_allclose(np.asarray(s1), ref1, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s2), ref2, rtol=1e-12, atol=1e-15)
    assert np.all(np.asarray(s2)[:15] == 0.0)
    assert float(s2_raw[9]) < 0.0  # without the exclusion warmup enters with a negative sign


def test_areas_and_schedule_reject_bad_input():
    with pytest.raises(ValueError, match="learning_rates"):
        S.lr_annealing_areas(np.ones((2, 2)))
    with pytest.raises(ValueError, match="learning_rates"):
        S.lr_annealing_areas(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="decay"):
        S.lr_annealing_areas(np.ones(3), decay=1.0)
    with pytest.raises(ValueError, match="decay_steps"):
        S.warmup_stable_decay_schedule(1.0, 10, decay_steps=11)
    with pytest.raises(ValueError, match="total_steps"):
        S.warmup_stable_decay_schedule(1.0, 0, decay_steps=0)


def test_wsd_warmup_phase():
    sched = S.warmup_stable_decay_schedule(1.0, 20, decay_steps=5, warmup_steps=4, init_value=0.2)
    got = [float(sched(t)) for t in (0, 2, 4, 10, 15, 20, 25)]
    np.testing.assert_allclose(got, [0.2, 0.6, 1.0, 1.0, 1.0, 0.0, 0.0], atol=1e-7)
