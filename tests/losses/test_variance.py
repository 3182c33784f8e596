"""varCE: NumPy float64 restatement (mean pixel CE + λ·mean within-instance variance of p_y)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.variance import variance_constrained_cross_entropy_loss as varce

RNG = np.random.default_rng(6)
Y = RNG.integers(0, 3, size=(2, 4, 5)).astype(np.int32)
INST = np.zeros((2, 4, 5), np.int32)
INST[0, :2, :3], INST[0, 2:, 2:] = 1, 3  # id 2 absent in image 0
INST[1, 1:3, 1:4] = 2


def _np_varce(x, lam, keep=None):
    ls = x - np.log(np.exp(x).sum(-1, keepdims=True))
    ce = -np.take_along_axis(ls, Y[..., None], -1)[..., 0]
    p = np.exp(-ce)
    out = []
    for b in range(2):
        k = np.ones(Y[b].shape, bool) if keep is None else keep[b]
        variances = [np.var(p[b][(INST[b] == n) & k]) for n in (1, 2, 3) if np.any((INST[b] == n) & k)]
        out.append(ce[b][k].mean() + lam * (np.mean(variances) if variances else 0.0))
    return np.array(out)


def test_float64_oracle_gradient_and_lambda_zero():
    x = RNG.normal(size=(2, 4, 5, 3))
    keep = RNG.uniform(size=Y.shape) > 0.25
    with jax.enable_x64(True):

        @jax.jit
        def run(x):
            f = lambda a, lam: varce(a, jnp.asarray(Y), jnp.asarray(INST), num_instances=3, lam=lam)  # noqa: E731
            v, g = jax.value_and_grad(lambda a: f(a, 2.0).sum())(x)
            vm = varce(x, jnp.asarray(Y), jnp.asarray(INST), num_instances=3, lam=2.0, where=jnp.asarray(keep))
            return f(x, 2.0), g, f(x, 0.0), vm

        v, g, v0, vm = run(jnp.asarray(x))
    np.testing.assert_allclose(v, _np_varce(x, 2.0), rtol=1e-12)
    np.testing.assert_allclose(g, fd_grad(lambda a: _np_varce(a, 2.0).sum(), x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(v0, _np_varce(x, 0.0), rtol=1e-12)  # λ = 0: the mean pixel CE
    np.testing.assert_allclose(vm, _np_varce(x, 2.0, keep), rtol=1e-12)


def test_uniform_instances_nan_errors():
    x = jnp.zeros((2, 4, 5, 3))
    v = varce(x, jnp.asarray(Y), jnp.asarray(INST), num_instances=3)
    np.testing.assert_allclose(v, np.log(3.0), rtol=1e-6)  # uniform prediction: no variance
    xn = x.at[0, 0, 0, 0].set(jnp.nan)
    out = jax.jit(lambda a: varce(a, jnp.asarray(Y), jnp.asarray(INST), num_instances=3,
                                  where=jnp.array([True, False])))(xn.at[1, 0, 0, 0].set(jnp.nan))
    assert np.isnan(out[0]) and float(out[1]) == 0.0
    with pytest.raises(ValueError, match="instances"):
        varce(x, jnp.asarray(Y), jnp.asarray(INST), num_instances=2)
    with pytest.raises(ValueError, match="labels"):
        varce(x, jnp.asarray(Y).at[0, 0, 0].set(5), jnp.asarray(INST), num_instances=3)
    with pytest.raises(ValueError, match="lam"):
        varce(x, jnp.asarray(Y), jnp.asarray(INST), num_instances=3, lam=-1.0)
