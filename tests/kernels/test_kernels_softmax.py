"""docs/design/kernels.md §5 check 9: two-pass softmax (both states, pure JAX and Pallas interpret) on
edge-case rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lossjax.kernels import (
    extexp,
    extexp_merge,
    extexp_row_reduce,
    online_softmax_merge,
    online_softmax_row_reduce,
    two_pass_log_softmax,
    two_pass_softmax,
)

LENGTHS = (1, 127, 128, 1000, 4099)
# extexp without FMA is exact only for |x| < ~2.2e4 (docs/design/kernels.md §3)
LARGE_OFFSET_ROWS = ("off1e5", "offm1e5")


def _rows(length: int, rng) -> dict[str, np.ndarray]:
    r = {
        "randn5": rng.standard_normal(length) * 5,
        "off1e3": 1e3 + rng.standard_normal(length) * 5,
        "off2e4": 2e4 + rng.standard_normal(length) * 5,
        "off1e5": 1e5 + rng.standard_normal(length) * 5,
        "offm1e5": -1e5 + rng.standard_normal(length) * 5,
        "spread1e-30": rng.standard_normal(length) * 1e-30,
        "all_neginf": np.full(length, -np.inf),
    }
    x = np.zeros(length)
    x[length // 2] = 1e30
    r["onehot1e30"] = x
    r["pm3e38"] = np.where(rng.random(length) < 0.5, 3e38, -3e38)
    x = rng.standard_normal(length)
    x[rng.random(length) < 0.5] = -np.inf
    r["half_neginf"] = x
    x = np.full(length, -np.inf)
    x[0] = 2.0
    r["one_finite"] = x
    x = rng.standard_normal(length)
    x[length // 3] = np.inf
    r["pos_inf"] = x
    return {k: v.astype(np.float32) for k, v in r.items()}


def _ref64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        m = x.max(axis=1, keepdims=True)
        e = np.exp(x - m)
        return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def edge_rows():
    rng = np.random.default_rng(0)
    out = {}
    for length in LENGTHS:
        rows = _rows(length, rng)
        out[length] = (list(rows), np.stack(list(rows.values())))
    return out


@pytest.mark.parametrize("impl", ["jax", "pallas"])
@pytest.mark.parametrize("state", ["online", "extexp"])
def test_softmax_edge_rows(edge_rows, state, impl):
    # Pallas interpret mode compiles slowly: the tail cases 1 (single column), 127 (< block) and
    # 4099 (clamped last tile) cover its code paths; the pure-JAX path runs every length.
    lengths = LENGTHS if impl == "jax" else (1, 127, 4099)
    fn = jax.jit(lambda x: two_pass_softmax(x, algorithm=state, impl=impl, block_rows=4, block_cols=256))
    for length in lengths:
        names, x = edge_rows[length]
        y = np.asarray(fn(jnp.asarray(x)))
        y_nn = np.asarray(jax.nn.softmax(jnp.asarray(x), axis=-1))
        ref = _ref64(x)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(y_nn), err_msg=f"NaN mask, length {length}")
        for i, name in enumerate(names):
            if state == "extexp" and impl == "jax" and name in LARGE_OFFSET_ROWS:
                continue
            fin = ~np.isnan(ref[i])
            if fin.any():
                err = np.max(np.abs(y[i][fin] - ref[i][fin]))
                assert err <= 5e-7, (length, name, err)
        assert np.isnan(y[names.index("all_neginf")]).all()
        assert np.isnan(y[names.index("pos_inf")]).all()


@pytest.mark.parametrize("impl", ["jax", "pallas"])
@pytest.mark.parametrize("state", ["online", "extexp"])
def test_log_softmax(state, impl):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 1000)).astype(np.float32) * 5
    x[1, ::3] = -np.inf
    x[2] += 1e3
    x[3, 0] = 1e30
    got = np.asarray(jax.jit(lambda x: two_pass_log_softmax(x, algorithm=state, impl=impl, block_rows=2,
                                                              block_cols=256))(jnp.asarray(x)))
    xd = x.astype(np.float64)
    m = xd.max(1, keepdims=True)
    ref = xd - m - np.log(np.exp(xd - m).sum(1, keepdims=True))
    fin = np.isfinite(ref)
    assert np.array_equal(np.isneginf(got), np.isneginf(ref))
    assert np.max(np.abs(got[fin] - ref[fin]) / np.maximum(1.0, np.abs(ref[fin]))) <= 2e-6


def test_bf16_axis_and_grad():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 50, 4)) * 3, jnp.bfloat16)
    y = two_pass_softmax(x, axis=1, impl="pallas", block_rows=2, block_cols=16)
    assert y.dtype == jnp.bfloat16 and y.shape == x.shape
    ref = jax.nn.softmax(x.astype(jnp.float32), axis=1)
    assert float(jnp.max(jnp.abs(y.astype(jnp.float32) - ref))) <= 4e-3
    xf = jnp.asarray(rng.standard_normal((4, 37)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 37)), jnp.float32)
    for fn, ref_fn in ((two_pass_softmax, jax.nn.softmax), (two_pass_log_softmax, jax.nn.log_softmax)):
        g = jax.grad(lambda x, fn=fn: jnp.sum(w * fn(x, impl="jax")))(xf)
        g_ref = jax.grad(lambda x, ref_fn=ref_fn: jnp.sum(w * ref_fn(x)))(xf)
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5, atol=1e-6)


def test_states_merge_consistently():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((5, 300)) * 10, jnp.float32)
    lse = jax.nn.logsumexp(x, axis=1)
    # online: two halves merged == whole row
    m1, s1 = online_softmax_row_reduce(x[:, :100])
    m2, s2 = online_softmax_row_reduce(x[:, 100:])
    m, s = online_softmax_merge(m1, s1, m2, s2)
    np.testing.assert_allclose(np.asarray(m + jnp.log(s)), np.asarray(lse), rtol=1e-6)
    # extexp: e^x = m 2^n elementwise, and merging gives lse = log m + n ln 2
    mm, nn = extexp(x)
    np.testing.assert_allclose(np.asarray(mm * 2.0 ** nn), np.exp(np.asarray(x, np.float64)), rtol=1e-6)
    parts = [extexp_row_reduce(mm[:, a:b], nn[:, a:b]) for a, b in ((0, 10), (10, 200), (200, 300))]
    acc = (jnp.zeros(5), jnp.full(5, -jnp.inf))  # the empty accumulator merges as the identity
    for part in parts:
        acc = extexp_merge(*acc, *part)
    np.testing.assert_allclose(np.asarray(jnp.log(acc[0]) + acc[1] * np.log(2.0)), np.asarray(lse), rtol=1e-6)
    m0, n0 = extexp(jnp.asarray([-jnp.inf]))
    assert float(m0[0]) == 0.0 and float(n0[0]) == -np.inf


def test_softmax_validation():
    x = jnp.ones((2, 8))
    with pytest.raises(ValueError, match="block_cols"):
        two_pass_softmax(x, block_cols=48)
    with pytest.raises(ValueError, match="block_rows"):
        two_pass_softmax(x, block_rows=3)
    with pytest.raises(ValueError, match="algorithm"):
        two_pass_softmax(x, algorithm="max")
    with pytest.raises(ValueError, match="impl"):
        two_pass_log_softmax(x, impl="cuda")
    with pytest.raises(ValueError, match="axis"):
        two_pass_softmax(x, axis=2)
    with pytest.raises(TypeError, match="x must be"):
        two_pass_softmax(jnp.ones((2, 8), jnp.int32))
