"""Private pytree helpers shared by the sharpness-aware transformations.

Everything here computes in at least float32 (float64 when a leaf is float64) and returns
scalars as float32 so that optimizer states keep a fixed dtype.
"""

from __future__ import annotations

import math
import os
import sys
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
    wanted (the replicated-parameter trap, ``docs/design/sam_family.md`` §4).
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


def require_radius(value: Any, name: str = "rho") -> None:
    """``value`` must be finite and ``>= 0`` (schedules and traced values are not checked)."""
    if callable(value):
        return
    try:
        v = float(value)
    except Exception:  # noqa: BLE001  traced values and non-scalars are not checked here
        return
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value!r}.")


def check_like_params(tree: Any, params: Any, name: str, what: str) -> None:
    """Raise a clear error unless ``tree`` has the structure and leaf shapes of ``params``.

    ``what`` is ``"grad_fn"`` (the tree is ``grad_fn``'s output) or ``"updates"``. Catches a
    loss function or ``jax.value_and_grad(loss)`` passed where a gradient is expected.
    """
    ts, ps = jax.tree.structure(tree), jax.tree.structure(params)
    source = "`grad_fn(p)` returned" if what == "grad_fn" else "`updates` is"
    fix = (
        "`grad_fn` must return the gradient pytree of the training loss, e.g. "
        "`grad_fn=jax.grad(loss)`; for `jax.value_and_grad(loss)` pass "
        "`grad_fn=lambda p: jax.value_and_grad(loss)(p)[1]`"
        if what == "grad_fn"
        else "`updates` must be the gradient pytree at `params` (e.g. `jax.grad(loss)(params)`)"
    )
    if ts != ps:
        hint = ""
        if isinstance(tree, tuple) and len(tree) == 2 and jax.tree.structure(tree[1]) == ps:
            hint = " a (value, grads) pair, as `jax.value_and_grad` gives;"
        elif ts.num_leaves == 1 and jnp.ndim(jax.tree.leaves(tree)[0]) == 0:
            hint = " a scalar, as a loss function gives;"
        raise TypeError(
            f"lossjax.{name}: {source}{hint or ' a tree'} with structure {ts}, not the structure "
            f"of `params` {ps}. {fix}."
        )
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(params)):
        if jnp.shape(a) != jnp.shape(b):
            raise TypeError(
                f"lossjax.{name}: {source} a leaf of shape {jnp.shape(a)} where `params` has "
                f"{jnp.shape(b)}. {fix}."
            )


# --- chain-order checks ------------------------------------------------------------------------
# optax.chain / optax.named_chain call their members in a Python loop; while a member's update
# runs, the chain's frame knows how many members already ran (``len(new_state)``) and how many
# there are. Reading it at trace time costs nothing at run time and catches the wrong orders
# that otherwise train silently in the wrong direction.

_COMBINING = os.path.join("optax", "transforms", "_combining.py")
_ACCUMULATION = os.path.join("optax", "transforms", "_accumulation.py")


def _enclosing_optax() -> list[tuple[str, int, int]]:
    """``(kind, index, size)`` of each optax chain / MultiSteps frame on the call stack."""
    found: list[tuple[str, int, int]] = []
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith(_COMBINING) and code.co_name == "update_fn":
            loc = frame.f_locals
            done = loc.get("new_state")
            members = loc.get("update_fns", loc.get("transforms"))
            if isinstance(done, (list, dict)) and members is not None:
                found.append(("chain", len(done), len(members)))
        elif code.co_filename.endswith(_ACCUMULATION) and code.co_name in ("_do_update", "_skip_update"):
            found.append(("multisteps", 0, 0))
        frame = frame.f_back
    return found


def require_position(name: str, where: str) -> None:
    """Refuse a sharpness transform at the wrong place of an ``optax.chain`` (or in MultiSteps).

    ``where='first'``: two-pass SAM transforms (they need the raw gradient). ``'last'``: complete
    optimizers and transforms that read the final update (msam, MESA).
    """
    for kind, index, size in _enclosing_optax():
        if kind == "multisteps" and where == "first":
            raise ValueError(
                f"lossjax.{name} inside optax.MultiSteps: the SAM step would see only the last "
                "micro-batch's `grad_fn`, once every k steps. Compute the SAM gradient per "
                "micro-batch (lossjax.sharpness.grouped_sam_gradient or a chain whose first "
                f"member is lossjax.{name}) and wrap only the base optimizer in MultiSteps."
            )
        if kind != "chain":
            continue
        if where == "first" and index != 0:
            raise ValueError(
                f"lossjax.{name} must be the FIRST transformation of its optax.chain (here it is "
                f"number {index + 1} of {size}). It takes the raw gradient at `params` and returns "
                "the sharpness-aware gradient that weight decay, clipping and the optimizer must "
                "see; with anything before it the step is wrong (after optax.sgd it trains by "
                "gradient ascent; after optax.add_decayed_weights the decay only tilts the "
                f"perturbation and is lost). Write optax.chain(lossjax.{name}(...), "
                "optax.add_decayed_weights(wd), optax.sgd(lr, momentum=0.9))."
            )
        if where == "last" and index != size - 1:
            what = (
                "a complete optimizer (its output is the parameter update)"
                if name == "msam"
                else "a transform that reads the new parameters as `params + updates`, which needs "
                "the final update"
            )
            raise ValueError(
                f"lossjax.{name} must be the LAST transformation of its optax.chain (here it is "
                f"number {index + 1} of {size}): it is {what}. "
                + (
                    "Put gradient transforms (clipping) before it and nothing after it, e.g. "
                    "optax.chain(optax.clip_by_global_norm(1.0), lossjax.msam(learning_rate=0.1))."
                    if name == "msam"
                    else "Write optax.chain(optax.sgd(lr, momentum=0.9), lossjax.mesa(...)), or "
                    "pass after_update=False to average the incoming `params` at any position."
                )
            )
