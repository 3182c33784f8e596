"""The two-pass softmax's ``algorithm=`` naming: which algorithm each default runs, and the deprecated ``state=``.

Oracle: float64 NumPy softmax; the algorithm actually run is identified by bit patterns (the online and the
extended-exponent (mantissa, exponent) algorithms round differently on random rows).
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from lossjax.kernels import SOFTMAX_ALGORITHMS, SOFTMAX_STATES, two_pass_log_softmax, two_pass_softmax


def _np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def rows():
    return jnp.asarray(np.random.default_rng(0).normal(size=(4, 1000)) * 5.0, jnp.float32)


@pytest.mark.parametrize("fn, log", [(two_pass_softmax, False), (two_pass_log_softmax, True)])
def test_algorithms_match_float64(rows, fn, log):
    ref = _np_softmax(rows)
    ref = np.log(ref) if log else ref
    for algorithm in SOFTMAX_ALGORITHMS:
        got = np.asarray(fn(rows, algorithm=algorithm, impl="jax"), np.float64)
        tol = 2e-5 if log else 5e-7
        np.testing.assert_allclose(got, ref, atol=tol, rtol=0, err_msg=algorithm)


@pytest.mark.parametrize("fn", [two_pass_softmax, two_pass_log_softmax])
def test_default_is_online_not_extexp(rows, fn):
    online = np.asarray(fn(rows, algorithm="online", impl="jax"))
    extexp = np.asarray(fn(rows, algorithm="extexp", impl="jax"))
    default = np.asarray(fn(rows, impl="jax"))
    # precondition: the two algorithms are distinguishable on these rows
    assert not np.array_equal(online.view(np.uint32), extexp.view(np.uint32))
    np.testing.assert_array_equal(default.view(np.uint32), online.view(np.uint32))


@pytest.mark.parametrize("fn", [two_pass_softmax, two_pass_log_softmax])
@pytest.mark.parametrize("algorithm", SOFTMAX_ALGORITHMS)
def test_state_is_a_deprecated_alias(rows, fn, algorithm):
    want = np.asarray(fn(rows, algorithm=algorithm, impl="jax"))
    with pytest.warns(DeprecationWarning, match="algorithm="):
        got = np.asarray(fn(rows, state=algorithm, impl="jax"))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    with pytest.warns(DeprecationWarning):  # both given and equal: accepted
        np.asarray(fn(rows, state=algorithm, algorithm=algorithm, impl="jax"))


def test_no_warning_without_state(rows):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        two_pass_softmax(rows, algorithm="extexp", impl="jax")
        two_pass_softmax(rows, impl="jax")


def test_bad_algorithm_names_the_argument(rows):
    with pytest.raises(ValueError, match="algorithm must be one of"):
        two_pass_softmax(rows, algorithm="three_pass")
    with pytest.raises(ValueError, match="state"), pytest.warns(DeprecationWarning):
        two_pass_log_softmax(rows, state="max")
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        two_pass_softmax(rows, algorithm="online", state="extexp")
    assert SOFTMAX_STATES == SOFTMAX_ALGORITHMS == ("online", "extexp")


@pytest.mark.parametrize("algorithm", SOFTMAX_ALGORITHMS)
def test_nan_in_nan_out(algorithm):
    x = jnp.array([[0.0, jnp.nan, 1.0], [0.0, 1.0, 2.0]], jnp.float32)
    y = np.asarray(two_pass_softmax(x, algorithm=algorithm, impl="jax"))
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()
    np.testing.assert_allclose(y[1], _np_softmax(x[1]), atol=5e-7)
