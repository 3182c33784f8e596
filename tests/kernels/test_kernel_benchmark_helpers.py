"""The measuring helpers of the CPU benchmarks (softmax, gradient filter, Z-loss scaling) against hand-computed values.

The benchmarks themselves are timed runs and are not tests; these check that what they report is computed right.
"""

from __future__ import annotations

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gf():
    return _load("gradient_filter_cpu")


def test_three_pass_softmax_matches_float64():
    sm = _load("softmax_cpu")
    x = np.random.default_rng(0).normal(size=(3, 257)) * 6.0
    e = np.exp(x - x.max(-1, keepdims=True))
    want = e / e.sum(-1, keepdims=True)
    got = np.asarray(sm.three_pass(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, want, atol=3e-7, rtol=0)
    assert set(sm.CANDIDATES) == {"two_pass_extexp", "two_pass_online", "three_pass", "jax_nn_softmax"}


def test_skip_fractions_hand_case(gf):
    # 4 rows, V = 4: columns 2, 3 get logit -60 (p ~ 1e-26), columns 0, 1 logit 0. With tiles of 2 columns
    # and 2x2 blocks, the tile of columns 2-3 is skippable unless a target lies in it.
    e = np.ones((4, 1), np.float32)
    c = np.array([[0.0], [0.0], [-60.0], [-60.0]], np.float32)
    t = np.array([0, 1, 0, 1], np.int32)
    assert gf.skip_fractions(e, c, t, 2.0 ** -12, bv=2, block=2) == (0.5, 0.5)
    t_hit = np.array([0, 1, 0, 3], np.int32)  # a target in column 3: the tile is needed, one 2x2 block still small
    assert gf.skip_fractions(e, c, t_hit, 2.0 ** -12, bv=2, block=2) == (0.0, 0.25)


def test_lm_inputs_carry_the_unigram_prior(gf):
    e, c, t = gf.lm_inputs(64, 8, 512, seed=0)
    assert e.shape == (64, 9) and c.shape == (512, 9) and t.dtype == np.int32
    ranks = np.arange(1, 513)
    np.testing.assert_allclose(np.exp(c[:, -1]), (1 / ranks) / (1 / ranks).sum(), rtol=1e-5)
    np.testing.assert_array_equal(e[:, -1], 1.0)


def test_zloss_scaling_slope_of_a_linear_law():
    zs = _load("zloss_scaling")
    rows = [{"k": k, "x_median_ms": 3e-3 * k, "x_min_ms": 2e-3 * k ** 2} for k in (256, 1024, 4096)]
    s = zs.slopes(rows, "x")
    assert s["median"] == pytest.approx(1.0) and s["min"] == pytest.approx(2.0)
    assert s["median_last2"] == pytest.approx(1.0) and s["min_last2"] == pytest.approx(2.0)
