"""Tests of the robust scaling-law fitter (Huber on log-loss, vmapped L-BFGS, bootstrap).

Oracle: synthetic data generated in float64 NumPy from known constants (parameter recovery).
Small grids keep compile + run time low; each (law, grid size, n) compiles once per module.
"""

import numpy as np
import pytest

from lossjax import scaling as S
from lossjax.scaling import published as P

X1 = np.geomspace(1e3, 1e7, 16)
PLC_TRUE = {"l_inf": 1.5, "x0": 2e3, "alpha": 0.3}
PLC_GRID = {"log_l_inf": [-1.0, 0.5], "log_amplitude": [0.0, 3.0], "alpha": [0.2, 0.8]}


def _plc(x, l_inf, x0, alpha):
    return l_inf + (x0 / x) ** alpha


@pytest.fixture(scope="module")
def plc_noisy():
    rng = np.random.default_rng(3)
    y = _plc(X1, **PLC_TRUE) * np.exp(0.01 * rng.normal(size=X1.shape))
    fit = S.fit_scaling_law("power_law_plus_constant", X1, y, init_grid=PLC_GRID)
    bs = S.bootstrap_scaling_law(
        "power_law_plus_constant", X1, y, num_resamples=64, fit=fit, seed=1
    )
    return y, fit, bs


def test_recovery_noise_free_power_law_plus_constant():
    y = _plc(X1, **PLC_TRUE)
    fit = S.fit_scaling_law("power_law_plus_constant", X1, y, init_grid=PLC_GRID)
    for k, v in PLC_TRUE.items():
        np.testing.assert_allclose(fit.params[k], v, rtol=1e-7, err_msg=k)
    assert fit.objective < 1e-20
    assert fit.num_starts == 8 and fit.iterations > 0
    # the fitted params are the keyword arguments of the matching law function
    np.testing.assert_allclose(
        np.asarray(fit.predict(X1)), np.asarray(S.power_law_plus_constant(X1, **fit.params)),
        rtol=1e-6,
    )


def test_recovery_with_one_percent_noise_is_inside_bootstrap_interval(plc_noisy):
    _, fit, bs = plc_noisy
    for k, v in PLC_TRUE.items():
        lo, hi = bs.interval(k)
        assert lo <= v <= hi, (k, lo, v, hi)
        assert lo <= fit.params[k] <= hi
    # the interval is informative, not vacuous
    lo, hi = bs.interval("alpha")
    assert hi - lo < 0.2
    assert bs.samples["alpha"].shape == (64,)


def test_recovery_noise_free_chinchilla():
    n = np.geomspace(1e7, 1e10, 8)
    d = np.geomspace(1e9, 1e12, 6)
    nn, dd = (a.ravel() for a in np.meshgrid(n, d))
    grid = {"log_e": [-1.0, 0.0, 1.0], "log_a": [0.0, 10.0], "log_b": [0.0, 10.0],
            "alpha": [0.5], "beta": [0.5]}
    true = P.CHINCHILLA_HOFFMANN_2022._asdict()
    rep = S.check_parameter_recovery("chinchilla", true, (nn, dd), init_grid=grid, rtol=1e-6)
    assert rep.passed, rep.rel_error
    # the allocation derived from the fitted law reproduces the published one
    a_fit, _ = S.chinchilla_allocation_exponents(rep.fitted_params)
    assert abs(float(a_fit) - 0.28 / 0.62) < 1e-6


def test_recovery_noise_free_lr_annealing():
    sched = S.warmup_stable_decay_schedule(1e-3, 400, decay_steps=120)
    lrs = np.array([float(sched(t)) for t in range(400)])
    s1, s2 = (np.asarray(a) for a in S.lr_annealing_areas(lrs, decay=0.99))
    idx = np.arange(9, 400, 10)
    true = {"l0": 2.0, "a": 0.5, "alpha": 0.5, "c": 30.0}
    rep = S.check_parameter_recovery("lr_annealing", true, (s1[idx], s2[idx]), rtol=1e-5)
    assert rep.passed, (rep.fitted_params, rep.rel_error)


def test_recovery_noise_free_kaplan_nd_and_nmt():
    n = np.geomspace(1e6, 1e9, 6)
    d = np.geomspace(1e8, 1e11, 5)
    nn, dd = (a.ravel() for a in np.meshgrid(n, d))
    true_k = {k: getattr(P.KAPLAN_2020_JOINT, k) for k in ("n_c", "d_c", "alpha_n", "alpha_d")}
    rep = S.check_parameter_recovery(
        "kaplan_nd", true_k, (nn, dd), rtol=1e-4,
        init_grid={"log_n_c": [28.0, 35.0], "log_d_c": [25.0, 33.0], "alpha_n": [0.1],
                   "alpha_d": [0.1]},
    )
    assert rep.passed, (rep.fitted_params, rep.rel_error)
    law = S.nmt_bivariate_law(1e8, 1e8)
    true_g = {"beta": 0.4, "p_enc": 0.25, "p_dec": 0.45, "l_inf": 0.9}
    ne, nd = (a.ravel() for a in np.meshgrid(np.geomspace(3e7, 2e9, 6), np.geomspace(3e7, 2e9, 5)))
    rep = S.check_parameter_recovery(
        law, true_g, (ne, nd), rtol=1e-5,
        init_grid={"log_l_inf": [-1.0, 0.5], "log_beta": [-2.0, 0.0], "p_enc": [0.3],
                   "p_dec": [0.3]},
    )
    assert rep.passed, (rep.fitted_params, rep.rel_error)


def test_recovery_check_reports_failure():
    # 5% noise cannot be recovered to 1e-6: the check must say so (same shapes as above, so no
    # new compilation)
    kw = dict(init_grid=PLC_GRID, noise=0.05, rtol=1e-6, seed=0)
    rep = S.check_parameter_recovery("power_law_plus_constant", PLC_TRUE, X1, **kw)
    assert not rep.passed and max(rep.rel_error.values()) > 1e-6
    with pytest.raises(AssertionError, match="recovery failed"):
        S.check_parameter_recovery(
            "power_law_plus_constant", PLC_TRUE, X1, raise_on_failure=True, **kw
        )


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(x=np.array([1.0, -2.0, 3.0, 4.0]), loss=np.ones(4)), ValueError, "positive"),
        (dict(x=np.array([1.0, 2.0, 3.0, 4.0]), loss=np.ones(3)), ValueError, "mismatched"),
        (dict(x=np.array([1.0, 2.0]), loss=np.ones(2)), ValueError, "too few points"),
        (dict(x=np.array([1.0, 2.0, 3.0, 4.0]), loss=np.array([1.0, 0.0, 1.0, 1.0])), ValueError, "loss"),
        (dict(x=np.ones((4, 2)), loss=np.ones(4)), ValueError, r"x must have shape"),
        (dict(x=np.arange(1.0, 5.0), loss=np.ones(4), init_grid={"alpha": [1.0]}), ValueError, "init_grid"),
        (dict(x=np.arange(1.0, 5.0), loss=np.ones(4), delta=0.0), ValueError, "delta"),
        (dict(x=np.arange(1.0, 5.0), loss=np.ones(4), weights=np.ones(3)), ValueError, "weights"),
        (dict(x=np.array(["a", "b", "c", "d"]), loss=np.ones(4)), TypeError, "x"),
    ],
)
def test_fit_rejects_bad_input(kwargs, exc, match):
    x = kwargs.pop("x")
    loss = kwargs.pop("loss")
    with pytest.raises(exc, match=match):
        S.fit_scaling_law("power_law_plus_constant", x, loss, **kwargs)


def test_two_input_laws_validate_columns():
    with pytest.raises(ValueError, match="mismatched"):
        S.fit_scaling_law("chinchilla", (np.ones(6), np.ones(5)), np.ones(6))
    with pytest.raises(ValueError, match="'d' must be strictly positive"):
        S.fit_scaling_law("chinchilla", (np.ones(6), np.zeros(6)), np.ones(6))
    with pytest.raises(ValueError, match="unknown name"):
        S.fit_scaling_law("chinchila", (np.ones(6), np.ones(6)), np.ones(6))
    # S2 = 0 is allowed for the annealing law, S1 = 0 is not
    with pytest.raises(ValueError, match="'s1'"):
        S.fit_scaling_law("lr_annealing", (np.zeros(6), np.zeros(6)), np.ones(6))


def test_bootstrap_rejects_bad_settings(plc_noisy):
    y, fit, _ = plc_noisy
    with pytest.raises(ValueError, match="num_resamples"):
        S.bootstrap_scaling_law("power_law_plus_constant", X1, y, num_resamples=1, fit=fit)
    with pytest.raises(ValueError, match="confidence"):
        S.bootstrap_scaling_law("power_law_plus_constant", X1, y, confidence=1.5, fit=fit)
    with pytest.raises(ValueError, match="fit is for law"):
        S.bootstrap_scaling_law("power_law", X1, y, fit=fit)
