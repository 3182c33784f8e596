"""Private pytree helpers shared by the sharpness-aware transformations.

Everything here computes in at least float32 (float64 when a leaf is float64) and returns
scalars as float32 so that optimizer states keep a fixed dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []

MaskLike = Any  # None | bool | pytree of bools (python or arrays) | Callable[[params], pytree]


def cdtype(x: Any) -> Any:
    """The compute dtype of a leaf: float32 for half/single, float64 for float64."""
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def to_compute(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x).astype(cdtype(x)), tree)


def cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.result_type(y)), tree, like)


def resolve_mask(mask: MaskLike, params: Any, default: bool = True) -> Any:
    """A pytree (structure of ``params``) of mask leaves: python bools or bool arrays."""
    if mask is None:
        mask = default
    if callable(mask):
        mask = mask(params)
    if isinstance(mask, (bool, np.bool_)):
        value = bool(mask)
        return jax.tree.map(lambda _: value, params)
    try:
        jax.tree.map(lambda _p, _m: None, params, mask)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "A mask must be a bool, a pytree of bools with the structure of `params`, or a "
            f"callable params -> such a pytree; got a tree that does not match: {err}"
        ) from None
    return mask


def apply_mask(mask_leaf: Any, x: jax.Array, fill: Any = 0.0) -> jax.Array:
    """``x`` where the mask is True, ``fill`` elsewhere (python bools are resolved statically)."""
    if isinstance(mask_leaf, (bool, np.bool_)):
        return x if mask_leaf else jnp.full_like(x, fill)
    return jnp.where(jnp.asarray(mask_leaf), x, jnp.asarray(fill, x.dtype))


def sumsq(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return sum(jnp.sum(jnp.square(x.astype(cdtype(x)))) for x in leaves)


def norm(tree: Any) -> jax.Array:
    """Global L2 norm over all leaves (compute dtype)."""
    return jnp.sqrt(sumsq(tree))


def vdot(a: Any, b: Any) -> jax.Array:
    """Global inner product ``Σ_leaves Σ a·b`` (compute dtype)."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum(x * y), a, b))
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return sum(leaves)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` with 0 where ``den == 0`` (no NaN, no inf)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), jnp.zeros_like(num))


def scale_tree(s: Any, tree: Any) -> Any:
    return jax.tree.map(lambda x: s.astype(x.dtype) * x if hasattr(s, "astype") else s * x, tree)


def add_scaled(a: Any, s: Any, b: Any) -> Any:
    """``a + s·b`` leaf-wise."""
    return jax.tree.map(lambda x, y: x + jnp.asarray(s, x.dtype) * y, a, b)


def pmean_tree(tree: Any, axis_name: str | None) -> Any:
    if axis_name is None:
        return tree
    return jax.lax.pmean(tree, axis_name)


def _axes(axis_name: Any) -> tuple[Any, ...]:
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def is_varying(x: Any, axis_name: Any) -> bool:
    """Whether ``x`` is varying over ``axis_name`` inside ``jax.shard_map`` (False under vmap)."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)  # jax <= 0.9
    if vma is None:
        mat = getattr(aval, "mat", None)  # jax 0.10: manual-axis type
        vma = getattr(mat, "varying", None)
    if vma is None:
        return False
    return all(a in vma for a in _axes(axis_name))


def match_varying(tree: Any, like: Any, axis_name: Any) -> Any:
    """Mark the leaves of ``tree`` varying over ``axis_name`` when the leaves of ``like`` are.

    Under ``shard_map`` the gradient w.r.t. an *unvarying* input is summed over the mesh; the
    point handed to ``grad_fn`` must therefore be varying whenever the per-replica gradient is
    wanted (the replicated-parameter trap, spec experiments_and_style.md §6.2).
    """
    if axis_name is None or not any(is_varying(x, axis_name) for x in jax.tree.leaves(like)):
        return tree
    return jax.tree.map(
        lambda x: x if is_varying(x, axis_name) else jax.lax.pcast(x, axis_name, to="varying"), tree
    )


def f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def schedule_value(value: Any, count: jax.Array) -> Any:
    """A float, or ``value(count)`` when ``value`` is a schedule."""
    return value(count) if callable(value) else value


def find_state(opt_state: Any, state_type: Any, name: str) -> Any:
    """Depth-first search for the (unique) instance of ``state_type`` inside a chain state.

    Looks through tuples/lists (``optax.chain``), dicts, NamedTuples (``inject_hyperparams``'
    ``inner_state``, ``masked``'s ``inner_state``) and ``MultiTransformState``.
    """
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, state_type):
            found.append(node)
            return
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, (tuple, list)):
            for v in node:
                walk(v)
        elif hasattr(node, "__dict__") and not isinstance(node, (jax.Array, np.ndarray)):
            for v in vars(node).values():
                walk(v)

    walk(opt_state)
    tname = (
        " / ".join(t.__name__ for t in state_type) if isinstance(state_type, tuple) else state_type.__name__
    )
    if not found:
        raise ValueError(
            f"No {tname} found in `opt_state`: build the optimizer with "
            f"lossjax.{name}(...) (e.g. optax.chain(lossjax.{name}(...), optax.sgd(...)))."
        )
    if len(found) > 1:
        raise ValueError(
            f"`opt_state` holds {len(found)} {tname} instances; pass the one you "
            "mean directly."
        )
    return found[0]


def require_grad_fn(grad_fn: Callable | None, name: str) -> None:
    if grad_fn is None:
        raise ValueError(
            f"lossjax.{name}: `update` needs the keyword argument `grad_fn` (a closure "
            "params -> gradient of the training loss on the SAME batch), e.g. "
            "`tx.update(ascent_grads, opt_state, params, grad_fn=grad_fn)`. Without it a SAM "
            "step cannot be taken (refusing to fall back silently to a plain gradient step)."
        )
    if not callable(grad_fn):
        raise TypeError(f"lossjax.{name}: `grad_fn` must be callable, got {type(grad_fn)}.")


def require_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(f"lossjax.{name}: `update` needs `params` (the current parameters).")
