"""DC-PDD score: NumPy restatement (first occurrences, Laplace-smoothed reference, cap a)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lossjax.losses.detection_score import dc_pdd_score, reference_log_frequencies


def _np_score(lp, ids, ref, a, valid=None):
    out = []
    for i in range(lp.shape[0]):
        seen, alphas = set(), []
        for t in range(lp.shape[1]):
            if valid is not None and not valid[i, t]:
                continue
            if ids[i, t] in seen:
                continue
            seen.add(ids[i, t])
            alphas.append(min(np.exp(lp[i, t]) * -ref[ids[i, t]], a))
        out.append(np.mean(alphas) if alphas else 0.0)
    return np.array(out)


def test_float64_oracle_and_gradient():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 50, size=6)
    ref = np.log((counts + 1.0) / (counts.sum() + 6.0))
    lp = np.log(rng.uniform(0.05, 1.0, size=(3, 8)))
    ids = rng.integers(0, 6, size=(3, 8))
    valid = rng.uniform(size=(3, 8)) > 0.2
    with jax.enable_x64(True):

        @jax.jit
        def run(lp):
            r = reference_log_frequencies(jnp.asarray(counts).astype(jnp.float64))
            f = lambda x: dc_pdd_score(x, jnp.asarray(ids), r, upper_bound=0.6)  # noqa: E731
            v, g = jax.value_and_grad(lambda x: f(x).sum())(lp)
            return r, f(lp), g, dc_pdd_score(lp, jnp.asarray(ids), r, upper_bound=0.6, where=jnp.asarray(valid))

        r, v, g, vm = run(jnp.asarray(lp))
    np.testing.assert_allclose(r, ref, rtol=1e-12)
    np.testing.assert_allclose(v, _np_score(lp, ids, ref, 0.6), rtol=1e-12)
    np.testing.assert_allclose(vm, _np_score(lp, ids, ref, 0.6, valid), rtol=1e-12)
    # gradient: p_t·(−log p_ref) / |FOS| on uncapped first occurrences, 0 elsewhere
    want = np.zeros_like(lp)
    for i in range(3):
        seen, n = set(), len(set(ids[i]))
        for t in range(8):
            if ids[i, t] not in seen:
                seen.add(ids[i, t])
                a = np.exp(lp[i, t]) * -ref[ids[i, t]]
                want[i, t] = a / n if a < 0.6 else 0.0
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)


def test_masks_nan_errors():
    lp = jnp.log(jnp.array([[0.5, 0.9, 0.2], [0.5, 0.5, 0.5]]))
    ids = jnp.array([[2, 2, 0], [1, 1, 1]])
    ref = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    v = jax.jit(lambda x: dc_pdd_score(x, ids, ref, upper_bound=1.0, where=jnp.array([True, False])))(lp)
    np.testing.assert_allclose(v, [(0.5 * -np.log(0.2) + 0.2 * -np.log(0.5)) / 2, 0.0], rtol=1e-6)
    # a NaN at a repeated (unscored) position still propagates; a masked one does not
    lpn = lp.at[0, 1].set(jnp.nan)
    assert np.isnan(dc_pdd_score(lpn, ids, ref, upper_bound=1.0)[0])
    ok = dc_pdd_score(lpn, ids, ref, upper_bound=1.0, where=jnp.array([[True, False, True], [True] * 3]))
    np.testing.assert_allclose(ok[0], v[0], rtol=1e-6)
    # the cap: a = 0.1 clips both alphas
    np.testing.assert_allclose(dc_pdd_score(lp, ids, ref, upper_bound=0.1)[0], 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="token_ids"):
        dc_pdd_score(lp, ids.at[0, 0].set(3), ref, upper_bound=1.0)
    with pytest.raises(TypeError, match="token_ids"):
        dc_pdd_score(lp, lp, ref, upper_bound=1.0)
    with pytest.raises(ValueError, match="upper_bound"):
        dc_pdd_score(lp, ids, ref, upper_bound=0.0)
    with pytest.raises(ValueError, match="counts"):
        reference_log_frequencies(jnp.ones((2, 2)))
