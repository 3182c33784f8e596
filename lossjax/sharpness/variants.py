"""Members of the SAM family built on the same core: GSAM, Friendly-SAM, LookSAM, Momentum-SAM.

Calling convention of the two-pass variants = :func:`lossjax.sharpness.sam`::

    updates, opt_state = tx.update(grads_at_params, opt_state, params, grad_fn=grad_fn)

SAM-ON (Mueller et al., NeurIPS 2023) is ``sam(..., perturb_mask=mask)`` / ``asam(...,
perturb_mask=mask)`` with a mask selecting the normalisation-layer parameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lossjax.losses import _core
from lossjax.sharpness import _tree as T
from lossjax.sharpness.sam import SAMState, sam_gradient

__all__ = [
    "gsam",
    "gsam_rho_schedule",
    "friendly_sam",
    "FriendlySAMState",
    "looksam",
    "LookSAMState",
    "msam",
    "msam_params",
    "MSAMState",
    "find_sam_state",
]


class FriendlySAMState(NamedTuple):
    """State of :func:`friendly_sam`.

    Attributes:
      count: int32 SAM steps taken.
      ascent_norm: float32 ``‖g − σ m‖`` of the last step.
      perturbation_norm: float32 ``‖ε‖`` of the last step.
      momentum: EMA ``m`` of the ascent gradients (float32 pytree like params).
    """

    count: jax.Array
    ascent_norm: jax.Array
    perturbation_norm: jax.Array
    momentum: Any


class LookSAMState(NamedTuple):
    """State of :func:`looksam`.

    Attributes:
      count: int32 steps taken (a real SAM step when ``count % k == 0``).
      ascent_norm: float32 ``‖g‖`` of the last step.
      perturbation_norm: float32 ``‖ε‖`` of the last real SAM step (0 on reuse steps).
      direction: unit pytree ``ĝ_v`` (float32), the part of the last SAM gradient orthogonal to
        the clean gradient.
    """

    count: jax.Array
    ascent_norm: jax.Array
    perturbation_norm: jax.Array
    direction: Any


class MSAMState(NamedTuple):
    """State of :func:`msam`.

    Attributes:
      count: int32 steps taken (the argument of a learning-rate schedule).
      momentum: the SGD momentum buffer ``v`` (pytree like params).
      rho: radius ρ (read by :func:`msam_params`); float32, float64 for float64 parameters.
    """

    count: jax.Array
    momentum: Any
    rho: jax.Array


def find_sam_state(opt_state: Any) -> Any:
    """The :class:`SAMState` (or a variant's state) inside a chain state, for logging.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from lossjax.sharpness import sam
        >>> s = optax.chain(sam(0.05), optax.sgd(0.1)).init(jnp.zeros(2))
        >>> find_sam_state(s).count
        Array(0, dtype=int32)
    """
    return T.find_state(opt_state, (SAMState, FriendlySAMState, LookSAMState), "sam")


def _zeros_state() -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32)


# --------------------------------------------------------------------------------------------
# GSAM
# --------------------------------------------------------------------------------------------


def gsam_rho_schedule(
    learning_rate: optax.Schedule, *, rho_max: float, rho_min: float, lr_max: float, lr_min: float
) -> optax.Schedule:
    r"""GSAM's radius that follows the learning rate (Zhuang et al., ICLR 2022):

    .. math:: ρ_t = ρ_{min} + (ρ_{max} − ρ_{min})\,\frac{lr_t − lr_{min}}{lr_{max} − lr_{min}}

    Returns a schedule ``count -> ρ`` for :func:`gsam`'s ``rho`` (``ρ_max`` if
    ``lr_max == lr_min``), in the dtype of the learning rate (at least float32; a float64
    schedule under ``jax_enable_x64`` gives a float64 ρ).

    Example:
        >>> import optax
        >>> s = gsam_rho_schedule(optax.linear_schedule(1.0, 0.0, 10), rho_max=0.6, rho_min=0.1,
        ...                       lr_max=1.0, lr_min=0.0)
        >>> round(float(s(5)), 4)
        0.35
    """
    T.require_radius(rho_max, "rho_max")
    T.require_radius(rho_min, "rho_min")

    def schedule(count: jax.Array) -> jax.Array:
        lr = jnp.asarray(learning_rate(count))
        lr = lr.astype(jnp.promote_types(lr.dtype, jnp.float32))  # float64 stays float64
        if lr_max == lr_min:
            return jnp.asarray(rho_max, lr.dtype)
        return rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)

    return schedule


def gsam(
    rho: optax.ScalarOrSchedule = 0.05,
    *,
    alpha: float = 0.6,
    adaptive: bool = False,
    eta: float = 0.0,
    adaptive_mask: T.MaskLike = None,
    perturb_mask: T.MaskLike = None,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
    sync_ascent: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Surrogate-gap guided SAM (Zhuang et al., ICLR 2022, arXiv 2203.08065).

    .. math::
        g_{adv} = ∇L(w + ρ_t g/\|g\|),\quad \hat g_{adv} = g_{adv}/\|g_{adv}\|,\quad
        g_⊥ = g − ⟨g, \hat g_{adv}⟩ \hat g_{adv},\quad g_{GSAM} = g_{adv} − α\, g_⊥

    ``g = updates`` is the clean gradient at ``w`` (so the ascent loss must be the training
    loss). Inner products are global over the pytree. ``α = 0`` and a constant ρ give SAM.
    Use :func:`gsam_rho_schedule` for the paper's LR-coupled radius. Default ``α = 0.6`` is the
    big_vision ViT config; with ``axis_name`` the decomposition uses the ``pmean``-ed clean and
    SAM gradients (perturbation per replica). ``adaptive=True`` perturbs by
    ``ε = ρ T²g/‖Tg‖`` with ``T = |w| + eta``; the default ``eta = 0`` is the official
    juntang-zhuang/GSAM code (``|w|``, no offset). ``alpha`` is keyword-only. Same ordering
    rule and calling convention as :func:`lossjax.sharpness.sam` (first in the chain).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2)
        >>> w = jnp.array([1.0, 1.0]); tx = gsam(0.1, alpha=0.5)
        >>> g, _ = tx.update(jax.grad(f)(w), tx.init(w), w, grad_fn=jax.grad(f))
        >>> [round(float(v), 5) for v in g]
        [0.96957, 10.99875]
    """
    T.require_radius(rho, "rho")
    T.require_radius(alpha, "alpha")
    T.require_radius(eta, "eta")

    def init_fn(params: Any) -> SAMState:
        del params
        return SAMState(*_zeros_state())

    def update_fn(
        updates: Any, state: SAMState, params: Any = None, *, grad_fn: Callable | None = None, **extra: Any
    ) -> tuple[Any, SAMState]:
        del extra
        T.require_grad_fn(grad_fn, "gsam")
        T.require_params(params, "gsam")
        T.require_position("gsam", "first")
        out = sam_gradient(
            updates, params, grad_fn, rho=T.schedule_value(rho, state.count), adaptive=adaptive, eta=eta,
            adaptive_mask=adaptive_mask, perturb_mask=perturb_mask, norm_eps=norm_eps,
            axis_name=axis_name, sync_ascent=sync_ascent, name="gsam",
        )
        g = T.pmean_tree(T.to_compute(updates), axis_name)
        ga = T.to_compute(out.grads)
        na = T.norm(ga)
        u = jax.tree.map(lambda x: T.safe_div(x, na + norm_eps), ga)
        proj = T.vdot(g, u)
        g_perp = jax.tree.map(lambda gi, ui: gi - proj * ui, g, u)
        res = jax.tree.map(lambda a, p: a - jnp.asarray(alpha, a.dtype) * p, ga, g_perp)
        st = SAMState(optax.safe_int32_increment(state.count), out.ascent_norm, out.perturbation_norm)
        return T.cast_like(res, updates), st

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Friendly-SAM
# --------------------------------------------------------------------------------------------


def friendly_sam(
    rho: optax.ScalarOrSchedule = 0.05,
    *,
    sigma: float = 1.0,
    lmbda: float = 0.9,
    adaptive: bool = False,
    eta: float = 0.0,
    adaptive_mask: T.MaskLike = None,
    perturb_mask: T.MaskLike = None,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Friendly SAM (Li et al., CVPR 2024, arXiv 2403.12350): perturb along the gradient noise.

    .. math::
        d_t = g_t − σ m_{t−1},\quad ε = ρ\, d_t/\|d_t\|,\quad m_t = λ m_{t−1} + (1 − λ) g_t

    ``m`` estimates the full-batch gradient; at the first step ``m`` is set to ``g`` and
    ``d = g`` (a plain SAM step), as in the official nblt/F-SAM code. ``σ = 0`` gives SAM.
    Defaults: class default ``λ = 0.9`` (the CIFAR ``run.sh`` uses 0.6), ``σ = 1``; recipe
    ResNet-18 CIFAR-100 ``ρ = 0.2``. ``adaptive`` follows davda54's ``|w|`` form (``eta=0``).
    With ``axis_name`` the momentum tracks the ``pmean``-ed gradient, the perturbation the local
    one.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2)
        >>> w = jnp.array([1.0, 1.0]); tx = friendly_sam(0.1)
        >>> g, s = tx.update(jax.grad(f)(w), tx.init(w), w, grad_fn=jax.grad(f))
        >>> [round(float(v), 6) for v in g]   # first step = SAM
        [1.00995, 10.995037]
    """
    T.require_radius(rho, "rho")
    T.require_radius(sigma, "sigma")
    _core.require_range(lmbda, "lmbda", 0.0, 1.0)

    def init_fn(params: Any) -> FriendlySAMState:
        m = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=T.cdtype(p)), params)
        return FriendlySAMState(*_zeros_state(), m)

    def update_fn(
        updates: Any, state: FriendlySAMState, params: Any = None, *, grad_fn: Callable | None = None, **extra: Any
    ) -> tuple[Any, FriendlySAMState]:
        del extra
        T.require_grad_fn(grad_fn, "friendly_sam")
        T.require_params(params, "friendly_sam")
        T.require_position("friendly_sam", "first")
        T.check_like_params(updates, params, "friendly_sam", "updates")
        g = T.to_compute(updates)
        g_sync = T.pmean_tree(g, axis_name)
        first = state.count == 0
        d = jax.tree.map(lambda gi, mi: jnp.where(first, gi, gi - jnp.asarray(sigma, gi.dtype) * mi), g, state.momentum)
        m_new = jax.tree.map(
            lambda gi, mi: jnp.where(
                first, gi, jnp.asarray(lmbda, gi.dtype) * mi + jnp.asarray(1 - lmbda, gi.dtype) * gi
            ),
            g_sync,
            state.momentum,
        )
        out = sam_gradient(
            d, params, grad_fn, rho=T.schedule_value(rho, state.count), adaptive=adaptive, eta=eta,
            adaptive_mask=adaptive_mask, perturb_mask=perturb_mask, norm_eps=norm_eps, axis_name=axis_name,
            name="friendly_sam",
        )
        st = FriendlySAMState(
            optax.safe_int32_increment(state.count), out.ascent_norm, out.perturbation_norm,
            T.cast_like(m_new, state.momentum),
        )
        return T.cast_like(out.grads, updates), st

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# LookSAM
# --------------------------------------------------------------------------------------------


def looksam(
    rho: optax.ScalarOrSchedule = 0.05,
    *,
    k: int = 5,
    alpha: float = 0.7,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LookSAM (Liu et al., CVPR 2022, arXiv 2203.02714): a real SAM step every ``k`` steps.

    On steps with ``count % k == 0``: ``g_adv = ∇L(w + ρ g/‖g‖)`` is returned and the unit
    direction of its part orthogonal to ``g`` is stored,
    ``g_v = g_adv − (⟨g_adv, g⟩/‖g‖²) g``, ``ĝ_v = g_v/‖g_v‖``. Other steps return
    ``g + α‖g‖ĝ_v`` without calling ``grad_fn`` (``lax.cond``: ~``1 + 1/k`` passes per step).
    ``k = 1`` is SAM. No official code exists; ``k = 5, α = 0.7`` follow re-implementations.
    Inner products are global over the pytree.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2)
        >>> w = jnp.array([1.0, 1.0]); tx = looksam(0.1, k=2)
        >>> g, s = tx.update(jax.grad(f)(w), tx.init(w), w, grad_fn=jax.grad(f))
        >>> [round(float(v), 6) for v in g]   # step 0 is a SAM step
        [1.00995, 10.995037]
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}.")
    T.require_radius(rho, "rho")
    T.require_radius(alpha, "alpha")

    def init_fn(params: Any) -> LookSAMState:
        v = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=T.cdtype(p)), params)
        return LookSAMState(*_zeros_state(), v)

    def update_fn(
        updates: Any, state: LookSAMState, params: Any = None, *, grad_fn: Callable | None = None, **extra: Any
    ) -> tuple[Any, LookSAMState]:
        del extra
        T.require_grad_fn(grad_fn, "looksam")
        T.require_params(params, "looksam")
        T.require_position("looksam", "first")
        T.check_like_params(updates, params, "looksam", "updates")
        g_local = T.to_compute(updates)
        g = T.pmean_tree(g_local, axis_name)
        gn = T.norm(g)
        rho_t = T.schedule_value(rho, state.count)

        def sam_step(_: Any) -> tuple[Any, Any, jax.Array, jax.Array]:
            out = sam_gradient(
                g_local, params, grad_fn, rho=rho_t, norm_eps=norm_eps, axis_name=axis_name, name="looksam"
            )
            ga = T.to_compute(out.grads)
            c = T.safe_div(T.vdot(ga, g), jnp.square(gn))
            gv = jax.tree.map(lambda a, b: a - c * b, ga, g)
            nv = T.norm(gv)
            gv_hat = jax.tree.map(lambda x: T.safe_div(x, nv + norm_eps), gv)
            return ga, gv_hat, out.ascent_norm, out.perturbation_norm

        def reuse_step(_: Any) -> tuple[Any, Any, jax.Array, jax.Array]:
            res = jax.tree.map(lambda gi, vi: gi + jnp.asarray(alpha, gi.dtype) * gn * vi, g, state.direction)
            return res, state.direction, T.f32(gn), jnp.zeros([], jnp.float32)

        res, direction, an, pn = jax.lax.cond(state.count % k == 0, sam_step, reuse_step, None)
        st = LookSAMState(optax.safe_int32_increment(state.count), T.f32(an), T.f32(pn), direction)
        return T.cast_like(res, updates), st

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Momentum-SAM
# --------------------------------------------------------------------------------------------


def _msam_perturbed(params: Any, momentum: Any, rho: Any, norm_eps: float) -> Any:
    n = T.norm(momentum)
    s = T.safe_div(jnp.asarray(rho, n.dtype), n + norm_eps)
    return jax.tree.map(
        lambda w, v: (w.astype(T.cdtype(w)) - s.astype(T.cdtype(w)) * v.astype(T.cdtype(w))).astype(w.dtype),
        params,
        momentum,
    )


def msam(
    *args: Any,
    learning_rate: optax.ScalarOrSchedule | None = None,
    rho: float = 0.3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    norm_eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    r"""Momentum-SAM (Becker et al., arXiv 2401.12033): SGD-momentum with the gradient taken at
    a point shifted along the momentum -- one pass per step, no ``grad_fn``.

    .. math::
        \tilde w = w − ρ\, v/(\|v\| + ε_n),\quad d = ∇L(\tilde w) + λ_{wd} \tilde w,\quad
        v ← μ v + d,\quad w ← w − η\, v

    This is a complete optimizer (like ``optax.sgd``), with canonical un-shifted parameters.
    All arguments are keyword-only (``msam(0.05)`` is refused: for :func:`lossjax.sam` and the
    other SAM transforms the first positional argument is ρ, here it would be the learning
    rate). Because its output is the parameter update it must be the **last** member of a
    chain (gradient transforms such as clipping may come before it), and it refuses a
    ``grad_fn`` extra argument (it takes no second pass: the gradient it gets must be taken at
    :func:`msam_params`). Train step::

        tx = lossjax.sharpness.msam(learning_rate=0.1, rho=3.0, momentum=0.9, weight_decay=5e-4)
        grads = jax.grad(loss)(msam_params(opt_state, params))   # gradient at w̃
        updates, opt_state = tx.update(grads, opt_state, params)

    The official code stores ``w̃`` as the live weights and applies weight decay at ``w̃``
    (reproduced here); evaluate the model at ``params`` (its ``move_back_from_momentumAscent``).
    README recipe: ρ = 3 (vs 0.2 for SAM). ``rho = 0`` is ``optax.sgd(lr, momentum)`` exactly.
    ρ and the momentum buffer are float64 for float64 parameters.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w: 0.5 * jnp.sum(w ** 2)
        >>> tx = msam(learning_rate=0.1, rho=0.0); w = jnp.array([1.0, -2.0]); s = tx.init(w)
        >>> u, s = tx.update(jax.grad(f)(msam_params(s, w)), s, w)
        >>> [float(v) for v in u]
        [-0.10000000149011612, 0.20000000298023224]
    """
    if args:
        raise TypeError(
            f"lossjax.msam takes keyword arguments only, got positional {args!r}: write "
            "msam(learning_rate=..., rho=..., momentum=...). (The first positional argument of "
            "lossjax.sam/asam/gsam/looksam is rho, not a learning rate.)"
        )
    if learning_rate is None:
        raise TypeError("lossjax.msam needs `learning_rate=` (it is a complete optimizer, like optax.sgd).")
    if not callable(learning_rate):
        T.require_radius(learning_rate, "learning_rate")
    T.require_radius(rho, "rho")
    _core.require_range(momentum, "momentum", 0.0, 1.0)
    T.require_radius(weight_decay, "weight_decay")

    def init_fn(params: Any) -> MSAMState:
        v = jax.tree.map(lambda p: jnp.zeros_like(p), params)
        dts = [T.cdtype(p) for p in jax.tree.leaves(params)] or [jnp.float32]
        rho_dt = functools.reduce(jnp.promote_types, dts)  # float64 if any leaf is float64
        return MSAMState(jnp.zeros([], jnp.int32), v, jnp.asarray(rho, rho_dt))

    def update_fn(updates: Any, state: MSAMState, params: Any = None, **extra: Any) -> tuple[Any, MSAMState]:
        T.require_position("msam", "last")
        if extra.get("grad_fn") is not None:
            raise ValueError(
                "lossjax.msam got a `grad_fn`, which it would ignore: Momentum-SAM takes one pass, "
                "the gradient at msam_params(opt_state, params) passed as `updates`. Do not chain "
                "it with lossjax.sam & co. and drop `grad_fn=`."
            )
        del extra
        if params is not None:
            T.check_like_params(updates, params, "msam", "updates")
        if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
            T.require_params(params, "msam")
            w_t = _msam_perturbed(params, state.momentum, state.rho, norm_eps)
            wd = weight_decay
            updates = jax.tree.map(lambda g, w: g + jnp.asarray(wd, g.dtype) * w.astype(g.dtype), updates, w_t)
        v = jax.tree.map(
            lambda g, t: (g + jnp.asarray(momentum, g.dtype) * t.astype(g.dtype)).astype(t.dtype),
            updates,
            state.momentum,
        )
        lr = T.schedule_value(learning_rate, state.count)
        out = jax.tree.map(lambda t, g: (jnp.asarray(-lr, t.dtype) * t).astype(g.dtype), v, updates)
        return out, MSAMState(optax.safe_int32_increment(state.count), v, jnp.asarray(rho, state.rho.dtype))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# the public signature is keyword-only (``*args`` only exists to refuse positionals loudly);
# optax.inject_hyperparams binds arguments against this signature
msam.__signature__ = inspect.signature(msam).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(msam).parameters.values() if p.kind is not p.VAR_POSITIONAL]
)


def msam_params(opt_state: Any, params: Any, *, norm_eps: float = 1e-12) -> Any:
    """The point ``w̃ = w − ρ v/(‖v‖ + ε_n)`` at which :func:`msam` wants the gradient.

    ``opt_state`` is the :class:`MSAMState` or any chain state containing it; ρ is read from
    the state. At the first step ``v = 0`` and ``w̃ = w``.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"w": jnp.ones(2)}
      >>> tx = msam(learning_rate=0.1)
      >>> [float(v) for v in msam_params(tx.init(params), params)["w"]]   # zero momentum: w̃ = w
      [1.0, 1.0]
    """
    st = T.find_state(opt_state, MSAMState, "msam")
    return _msam_perturbed(params, st.momentum, st.rho, norm_eps)
