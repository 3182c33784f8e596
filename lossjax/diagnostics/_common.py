"""Private helpers of :mod:`lossjax.diagnostics`: argument checks and the flattened HVP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__: list[str] = []

LossFn = Callable[[Any, Any], jax.Array]


def require_count(value: Any, name: str, minimum: int = 1) -> int:
    """A python ``int >= minimum`` (bools refused); the error names the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a python int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def require_key(key: Any, name: str = "key") -> None:
    """``key`` must be a PRNG key (typed ``jax.random.key`` or a raw uint32 ``PRNGKey``)."""
    if key is None:
        raise TypeError(f"`{name}` must be a jax.random key, got None.")
    dtype = jnp.result_type(key)
    if not (jnp.issubdtype(dtype, jax.dtypes.prng_key) or dtype == jnp.uint32):
        raise TypeError(f"`{name}` must be a jax.random key, got an array of dtype {dtype}.")


def check_problem(loss_fn: Any, params: Any, batch: Any) -> None:
    """``loss_fn(params, batch)`` must be a scalar float and ``params`` a tree of float arrays."""
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable as loss_fn(params, batch), got {type(loss_fn)}.")
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("`params` has no array leaves.")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`params` must contain only floating-point leaves (split integer state such as "
                f"step counters off first), got a leaf of dtype {dtype}."
            )
    out = jax.eval_shape(loss_fn, params, batch)
    if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            "`loss_fn(params, batch)` must return a scalar float (e.g. the batch-mean loss), "
            f"got {out}."
        )


def compute_dtype(dtype: Any) -> Any:
    """float32 for half/single precision, float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


class FlatProblem(NamedTuple):
    """``params`` flattened to one vector and the Hessian-vector product on that vector."""

    flat: jax.Array  # params as one vector, compute dtype
    unravel: Callable[[jax.Array], Any]  # vector (compute dtype) -> pytree like params
    hvp: Callable[[jax.Array], jax.Array]  # v -> H v (compute dtype)
    size: int


def flat_problem(loss_fn: LossFn, params: Any, batch: Any) -> FlatProblem:
    """The Hessian of ``w ↦ loss_fn(w, batch)`` as a linear map on flat vectors.

    ``H v`` is forward-over-reverse, ``jax.jvp(jax.grad(f), (w,), (v,))`` (Pearlmutter 1994):
    one HVP costs about two gradient evaluations and never forms ``H``.
    """
    flat, unravel_raw = ravel_pytree(params)
    dt = compute_dtype(flat.dtype)

    def unravel(v: jax.Array) -> Any:
        return unravel_raw(v.astype(flat.dtype))

    grad_f = jax.grad(lambda p: loss_fn(p, batch))

    def hvp(v: jax.Array) -> jax.Array:
        tangent = jax.jvp(grad_f, (params,), (unravel(v),))[1]
        return ravel_pytree(tangent)[0].astype(dt)

    return FlatProblem(flat.astype(dt), unravel, hvp, int(flat.size))


def safe_normalize(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(v/‖v‖, ‖v‖)`` with ``v`` returned unchanged when ``‖v‖ = 0`` (no NaN from 0/0)."""
    n = jnp.linalg.norm(v)
    ok = n > 0
    return jnp.where(ok, v / jnp.where(ok, n, 1), v), n


def bounded_while(
    cond: Callable[[Any], jax.Array], body: Callable[[Any], Any], init: Any, max_iters: int, unroll: bool
) -> Any:
    """``lax.while_loop(cond, body, init)`` or, with ``unroll``, ``max_iters`` guarded copies of
    ``body`` (a copy whose ``cond`` is False keeps the carry): identical results. ``cond`` must
    become False after at most ``max_iters`` iterations."""
    if not unroll:
        return jax.lax.while_loop(cond, body, init)
    carry = init
    for _ in range(max_iters):
        active = cond(carry)
        new = body(carry)
        carry = jax.tree.map(lambda n, o, a=active: jnp.where(a, n, o), new, carry)
    return carry
