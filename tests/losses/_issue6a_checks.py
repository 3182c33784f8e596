"""Shared property checks for the distillation / retrieval / preference / sequence tests.

``battery(fn, args)`` runs, on one tiny input set, the generic checks of the quality bar:
jit == eager, vmap over a stacked copy == stacked eager, bf16 input == float32 of the rounded
input (and a float32 result), finite values and gradients. Gradient checks against finite
differences run under x64 with :func:`jax.test_util.check_grads`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads


def _is_float(a) -> bool:
    return isinstance(a, (np.ndarray, jax.Array)) and jnp.issubdtype(a.dtype, jnp.floating)


def battery(fn, args, *, masked=None, diff_argnums=(0,), rtol=1e-5, atol=1e-6, bf16=True):
    """Generic checks with three compiled programs and one eager call.

    ``fn(*args)`` returns per-row values whose leading axis is the leading axis of every
    differentiated argument. ``args`` should already contain the scenario rows (ordinary,
    extreme, ``-inf``); ``masked`` (bool per row) marks rows that must give exactly 0 with a zero
    gradient. Checks: eager == jit, finite values and gradients, vmap over a stacked copy == the
    eager value, bf16 input == float32 of the rounded input with a float32 result.
    """
    args = tuple(jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
    eager = np.asarray(fn(*args))
    assert eager.dtype == np.float32, eager.dtype
    assert np.all(np.isfinite(eager)), eager

    def value_and_grads(*a):
        return fn(*a), jax.grad(lambda *b: jnp.sum(fn(*b)), argnums=diff_argnums)(*a)

    vg = jax.jit(value_and_grads)
    val, grads = vg(*args)
    np.testing.assert_allclose(np.asarray(val), eager, rtol=rtol, atol=atol)
    for g in grads:
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), g
        if masked is not None:
            assert np.all(g[np.asarray(masked)] == 0.0), g
    if masked is not None:
        assert np.all(eager[np.asarray(masked)] == 0.0), eager
    # vmap over a stacked copy of every array argument
    stacked = tuple(jnp.stack([a, a]) if isinstance(a, jax.Array) else a for a in args)
    axes = tuple(0 if isinstance(a, jax.Array) else None for a in args)
    vm = np.asarray(jax.jit(jax.vmap(fn, in_axes=axes))(*stacked))
    np.testing.assert_allclose(vm, np.stack([eager, eager]), rtol=rtol, atol=atol)
    # bf16 input gives the float32 result of the rounded input
    if bf16:
        b_args = tuple(a.astype(jnp.bfloat16) if _is_float(a) else a for a in args)
        r_args = tuple(a.astype(jnp.float32) if _is_float(a) else a for a in b_args)
        out_b = np.asarray(jax.jit(fn)(*b_args))
        assert out_b.dtype == np.float32, out_b.dtype
        np.testing.assert_allclose(out_b, np.asarray(vg(*r_args)[0]), rtol=1e-5, atol=1e-6)
    return eager


def grad_check_x64(fn, args, *, argnums=(0,), atol=1e-6, rtol=1e-6):
    """Finite-difference gradient check in float64 (order 1, reverse mode)."""
    with jax.enable_x64(True):
        a64 = [jnp.asarray(np.asarray(a, np.float64)) if _is_float(jnp.asarray(a)) else a for a in args]
        for i in argnums:
            def f(x, i=i):
                b = list(a64)
                b[i] = x
                return jnp.sum(fn(*b))

            check_grads(f, (a64[i],), order=1, modes=("rev",), atol=atol, rtol=rtol)


def finite_value_and_grad(fn, args, argnum=0):
    """Value and gradient of ``sum(fn)`` are finite."""
    args = tuple(jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
    val, g = jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=argnum))(*args)
    assert np.isfinite(float(val)), val
    assert np.all(np.isfinite(np.asarray(g))), g
    return float(val), np.asarray(g)


def all_masked_zero(fn, args, argnum=0):
    """``fn`` with an all-False mask (already bound in ``fn``) gives 0 and a zero gradient."""
    val, g = finite_value_and_grad(fn, args, argnum)
    assert val == 0.0, val
    assert np.all(g == 0.0), g


_JIT_CACHE: dict = {}


def J(fn, *args, **kw):
    """Call ``fn(*args, **kw)`` through a cached ``jax.jit``.

    Hashable keywords, and positional callables / ``None``, are static; arrays are dynamic.
    Eager op-by-op dispatch compiles every primitive separately and costs several times more
    CPU than one compiled program, so the tests call the losses through this.
    """
    static = {k: v for k, v in kw.items() if not isinstance(v, (np.ndarray, jax.Array))}
    dyn = {k: v for k, v in kw.items() if k not in static}
    spos = tuple((i, a) for i, a in enumerate(args) if a is None or callable(a))
    dpos = [a for a in args if not (a is None or callable(a))]
    key = (fn, tuple(sorted(static.items())), spos, len(args), bool(jax.config.jax_enable_x64))
    f = _JIT_CACHE.get(key)
    if f is None:
        n = len(args)
        fixed = dict(spos)

        def call(*d, **k):
            it = iter(d)
            full = [fixed[i] if i in fixed else next(it) for i in range(n)]
            return fn(*full, **static, **k)

        f = _JIT_CACHE[key] = jax.jit(call)
    return f(*dpos, **dyn)
