"""cprd_loss: NumPy float64 restatement (mine top-K by the student, order by the teacher, PL factors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.ranking_distill import cprd_loss


def _np_cprd(s, t, k, tau=1.0, valid=None):
    out = []
    for i in range(s.shape[0]):
        idx = [j for j in range(s.shape[1]) if valid is None or valid[i, j]]
        hard = sorted(idx, key=lambda j: (-s[i, j], j))[:k]          # the student's hard negatives
        order = sorted(hard, key=lambda j: -t[i, j])                  # ranked by the teacher
        u = s[i, order] / tau
        terms = [-u[a] + np.log(np.exp(u[a:]).sum()) for a in range(len(u) - 1)]
        out.append(np.mean(terms) if terms else 0.0)
    return np.array(out)


def test_float64_oracle_gradient_and_order_invariance():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    valid = np.ones((3, 7), bool)
    valid[0, 0] = valid[2, 3] = False
    with jax.enable_x64(True):

        @jax.jit
        def run(s, t):
            f = lambda a: cprd_loss(a, t, num_hard=4, temperature=0.5)  # noqa: E731
            v, g = jax.value_and_grad(lambda a: f(a).sum())(s)
            vm = cprd_loss(s, t, num_hard=4, where=jnp.asarray(valid))
            # a monotone transform of the teacher scores leaves the loss unchanged (order only)
            vt = cprd_loss(s, jnp.exp(3.0 * t), num_hard=4, temperature=0.5)
            gt = jax.grad(lambda b: cprd_loss(s, b, num_hard=4).sum())(t)
            return v, g, vm, vt, gt, f(s)

        v, g, vm, vt, gt, per = run(jnp.asarray(s), jnp.asarray(t))
    np.testing.assert_allclose(per, _np_cprd(s, t, 4, 0.5), rtol=1e-12)
    np.testing.assert_allclose(g, fd_grad(lambda a: _np_cprd(a, t, 4, 0.5).sum(), s, eps=1e-7), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(vm, _np_cprd(s, t, 4, valid=valid), rtol=1e-12)
    np.testing.assert_allclose(vt, per, rtol=1e-12)
    assert float(np.abs(gt).max()) == 0.0  # the teacher is a fixed target


def test_short_rows_masks_nan_errors():
    s = jnp.array([[0.9, 0.1, 0.5, -2.0], [1.0, jnp.nan, 0.0, 0.0], [0.3, 0.2, 0.1, 0.0]])
    t = jnp.array([[0.0, 2.0, 1.0, 5.0]] * 3)
    one_valid = jnp.array([[True, False, False, False], [True] * 4, [True] * 4])

    @jax.jit
    def run(s):
        v = cprd_loss(s, t, num_hard=3, where=jnp.array([True, True, False]))
        g = jax.grad(lambda a: cprd_loss(a, t, num_hard=3, where=jnp.array([True, False, True])).sum())(s)
        vv = jax.vmap(lambda a, b: cprd_loss(a, b, num_hard=3))(s, t)
        return v, g, cprd_loss(s, t, num_hard=3, where=one_valid), vv

    v, g, v1, vv = run(s)
    u = np.array([0.1, 0.5, 0.9])  # docstring example, teacher order [1, 2, 0]
    np.testing.assert_allclose(v[0], np.mean([-u[0] + np.log(np.exp(u).sum()), -u[1] + np.log(np.exp(u[1:]).sum())]),
                               rtol=1e-6)
    assert np.isnan(v[1]) and float(v[2]) == 0.0
    assert np.all(np.isfinite(g)) and float(np.abs(g[1]).max()) == 0.0
    assert float(v1[0]) == 0.0  # one candidate: no ordering to learn
    np.testing.assert_allclose(vv[0], v[0], rtol=1e-6)
    assert cprd_loss(s.astype(jnp.bfloat16), t, num_hard=3).dtype == jnp.float32
    with pytest.raises(ValueError, match="num_hard"):
        cprd_loss(s, t, num_hard=1)
    with pytest.raises(ValueError, match="teacher_scores"):
        cprd_loss(s, t[:, :3])
    with pytest.raises(ValueError, match="temperature"):
        cprd_loss(s, t, temperature=-1.0)
