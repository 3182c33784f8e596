r"""Sharpness of a training loss: SAM's ε-sharpness, m-sharpness, ASAM's adaptive sharpness,
and gradient norms.

Same calling convention as :mod:`lossjax.diagnostics.hessian`: ``loss_fn(params, batch) ->``
scalar, ``params`` any pytree of float arrays; every function is pure, jit-able and works under
``jax.vmap``.

The inner maximisation :math:`\max_{\|T^{-1}ε\|_2 ≤ ρ} L(w + ε)` is solved approximately by
``num_steps`` steps of normalised, projected gradient ascent in the coordinates
:math:`u = T^{-1}ε` (``T = I`` for SAM):

.. math::
    u_0 = 0,\qquad
    u_{t+1} = Π_{\|u\| ≤ ρ}\Big(u_t + α\,\frac{g_t}{\|g_t\|}\Big),\qquad
    g_t = ∇_u L(w + Tu)\big|_{u_t} = T\,∇L(w + Tu_t),

with step ``α = ρ`` by default, so the first step is exactly SAM's / ASAM's first-order
perturbation :math:`ε̂ = ρ\,T^2∇L / \|T∇L\|` (Foret et al. 2021, Eq. 2; Kwon et al. 2021).
The reported maximum is the largest loss over all iterates (each one is feasible), so the
estimate is a **lower bound** on the true sharpness that can only grow with ``num_steps``.
At a stationary point the gradient vanishes and ascent from ``u_0 = 0`` cannot move: pass a
``key`` to start from a random point of the sphere ``‖u‖ = ρ`` instead.

References: Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021 (arXiv 2010.01412), §2 (ε-sharpness, Eq. 1–2) and §4.1
(m-sharpness); Kwon, Kim, Park & Choi, "ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks", ICML 2021 (arXiv 2102.11600), §3 (adaptive
sharpness, its scale invariance) and §4 (element-wise ``T_w = |w| + η``); Ratchatorn & Tanaka,
ICIP 2024 (arXiv 2406.14329) for the ‖∇CE‖ vs ‖∇AACE‖ argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lossjax.diagnostics import _common as C
from lossjax.losses._core import require_nonnegative, require_positive
from lossjax.sharpness import _tree

__all__ = [
    "SharpnessResult",
    "epsilon_sharpness",
    "adaptive_sharpness",
    "m_sharpness",
    "gradient_norm",
    "gradient_norms",
    "default_adaptive_mask",
]

MaskLike = Any  # bool | pytree of bools | Callable[[params], pytree of bools]


class SharpnessResult(NamedTuple):
    """Result of the sharpness functions (means over groups for :func:`m_sharpness`).

    Attributes:
      sharpness: ``max_loss − loss`` (≥ 0; NaN if any evaluated loss is NaN).
      loss: ``L(w)``.
      max_loss: the largest ``L(w + ε)`` found in the ball.
      perturbation_norm: ``‖ε‖`` (parameter space) of the maximiser found.
    """

    sharpness: jax.Array
    loss: jax.Array
    max_loss: jax.Array
    perturbation_norm: jax.Array


def default_adaptive_mask(params: Any) -> Any:
    """ASAM's rule: ``T = |w| + η`` for every leaf except biases (``T = 1``).

    The same mask as :func:`lossjax.sharpness.asam_default_mask` (the official ASAM code scales
    parameters whose name contains ``"weight"`` and not biases), so that the measured adaptive
    sharpness and the ASAM optimizer agree on which leaves are adaptive; linen dicts
    (``.../bias``) and NNX states (``.../bias/value``) are both handled.

    Example:
        >>> import jax.numpy as jnp
        >>> default_adaptive_mask({'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}})
        {'Dense_0': {'bias': False, 'kernel': True}}
    """
    from lossjax.sharpness.sam import asam_default_mask

    return asam_default_mask(params)


def _resolve_mask(mask: MaskLike, params: Any) -> Any:
    if callable(mask):
        mask = mask(params)
    if isinstance(mask, bool):
        return jax.tree.map(lambda _: mask, params)
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ValueError(
            "`adaptive_mask` must be a bool, a pytree of bools with the tree structure of "
            f"`params`, or a callable params -> such a pytree; got {jax.tree.structure(mask)} "
            f"for params {jax.tree.structure(params)}."
        )
    return mask


def _scale_tree(params: Any, eta: Any, mask: MaskLike) -> Any:
    """``T = |w| + η`` on masked leaves, 1 elsewhere (compute dtype)."""
    mask = _resolve_mask(mask, params)

    def one(w: jax.Array, m: Any) -> jax.Array:
        wc = jnp.asarray(w).astype(C.compute_dtype(jnp.result_type(w)))
        t = jnp.abs(wc) + jnp.asarray(eta, wc.dtype)
        return jnp.where(jnp.asarray(m), t, jnp.ones_like(wc))

    return jax.tree.map(one, params, mask)


def _validate(rho: Any, num_steps: int, step_size: Any, key: Any) -> None:
    require_nonnegative(rho, "rho")
    C.require_count(num_steps, "num_steps")
    if step_size is not None:
        require_positive(step_size, "step_size")
    if key is not None:
        C.require_key(key)


def _max_in_ball(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    *,
    rho: Any,
    num_steps: int,
    step_size: Any,
    key: Any,
    scale: Any,
    unroll: bool = False,
) -> SharpnessResult:
    """Projected normalised ascent on ``u ↦ L(w + T u)`` over ``‖u‖ ≤ ρ``."""
    wc = jax.tree.map(lambda w: jnp.asarray(w).astype(C.compute_dtype(jnp.result_type(w))), params)
    dt = jnp.result_type(*jax.tree.leaves(wc))
    rho_c = jnp.asarray(rho, dt)
    alpha = rho_c if step_size is None else jnp.asarray(step_size, dt)

    def eps_of(u: Any) -> Any:
        return u if scale is None else jax.tree.map(lambda t, x: t * x, scale, u)

    def loss_at(u: Any) -> jax.Array:
        w = jax.tree.map(lambda p, c, e: (c + e).astype(jnp.result_type(p)), params, wc, eps_of(u))
        return loss_fn(w, batch)

    vag = jax.value_and_grad(loss_at)

    def project(u: Any) -> Any:
        n = _tree.norm(u)
        s = jnp.where(n > rho_c, rho_c / jnp.where(n > 0, n, 1), 1)
        return jax.tree.map(lambda x: x * s.astype(x.dtype), u)

    if key is None:
        u0 = jax.tree.map(jnp.zeros_like, wc)
    else:
        leaves, treedef = jax.tree.flatten(wc)
        keys = jax.random.split(key, len(leaves))
        z = [jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves)]
        zn = _tree.norm(z)
        u0 = jax.tree.unflatten(treedef, [x * (rho_c / zn).astype(x.dtype) for x in z])

    loss0 = jnp.asarray(loss_fn(params, batch))

    def step(_: Any, c: tuple) -> tuple:
        u, best, best_u = c
        val, g = vag(u)
        take = val > best
        best_u = jax.tree.map(lambda a, b: jnp.where(take, a, b), u, best_u)
        best = jnp.maximum(best, val)
        gn = _tree.norm(g)
        s = alpha / jnp.where(gn > 0, gn, 1)
        u = project(jax.tree.map(lambda x, y: x + (s * (gn > 0)).astype(x.dtype) * y, u, g))
        return u, best, best_u

    zeros = jax.tree.map(jnp.zeros_like, wc)
    carry = (u0, loss0, zeros)
    if unroll:
        for i in range(num_steps):
            carry = step(i, carry)
    else:
        carry = jax.lax.fori_loop(0, num_steps, step, carry)
    u, best, best_u = carry
    val = loss_at(u)
    take = val > best
    best_u = jax.tree.map(lambda a, b: jnp.where(take, a, b), u, best_u)
    best = jnp.maximum(best, val)
    return SharpnessResult(best - loss0, loss0, best, _tree.norm(eps_of(best_u)))


def epsilon_sharpness(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    *,
    rho: float = 0.05,
    num_steps: int = 10,
    step_size: float | None = None,
    key: jax.Array | None = None,
    unroll: bool = False,
) -> SharpnessResult:
    r"""SAM's ε-sharpness :math:`\max_{\|ε\|_2 ≤ ρ} L(w + ε) − L(w)` (Foret et al. 2021, §2).

    Approximated by ``num_steps`` projected, normalised gradient-ascent steps (module
    docstring); ``num_steps = 1`` evaluates SAM's first-order perturbation
    :math:`ε̂ = ρ∇L/\|∇L\|` (Eq. 2). For :math:`L = ½wᵀAw` the exact value is a trust-region
    problem; when ``w`` is a top eigenvector of ``A`` it is :math:`ρλ_{max}\|w\| + ½ρ^2λ_{max}`
    and one step attains it.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts.
      rho: radius ρ ≥ 0 (the SAM paper's default 0.05).
      num_steps: ascent steps (python int ≥ 1); costs ``num_steps`` gradients + 2 losses.
      step_size: ascent step length ``α`` in the ``‖·‖`` of the ball (default ``ρ``).
      key: optional PRNG key: start from a random point of the sphere instead of ``ε = 0``.
      unroll: straight-line ascent steps instead of a ``lax.fori_loop`` (same result; use it
        for conv nets on XLA:CPU, see :mod:`lossjax.diagnostics`).

    Returns:
      :class:`SharpnessResult`.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)       # A = diag(1, 10), w on axis 2
        >>> r = epsilon_sharpness(f, jnp.array([0.0, 1.0]), jnp.array([1.0, 10.0]), rho=0.1)
        >>> round(float(r.sharpness), 5)                     # 0.1·10·1 + ½·0.01·10
        1.05
    """
    _validate(rho, num_steps, step_size, key)
    C.check_problem(loss_fn, params, batch)
    return _max_in_ball(loss_fn, params, batch, rho=rho, num_steps=num_steps,
                        step_size=step_size, key=key, scale=None, unroll=unroll)


def adaptive_sharpness(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    *,
    rho: float = 0.5,
    eta: float = 0.01,
    adaptive_mask: MaskLike = default_adaptive_mask,
    num_steps: int = 10,
    step_size: float | None = None,
    key: jax.Array | None = None,
    unroll: bool = False,
) -> SharpnessResult:
    r"""ASAM's adaptive sharpness :math:`\max_{\|T_w^{-1}ε\|_2 ≤ ρ} L(w + ε) − L(w)`.

    With the element-wise normalisation operator :math:`T_w = \mathrm{diag}(|w| + η)` on the
    leaves selected by ``adaptive_mask`` (default: all but biases, as the official ASAM code)
    and ``T = 1`` elsewhere (Kwon et al. 2021, §3–4). With ``η = 0`` and every leaf adaptive
    the value is invariant under rescalings of the weights that leave the loss unchanged
    (e.g. ``(a, b) → (c·a, b/c)`` in a product ``a·b``), which ε-sharpness is not. The ascent
    runs in ``u = T^{-1}ε`` (module docstring); one step gives ASAM's perturbation
    :math:`ε = ρT^2∇L/\|T∇L\|`.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts.
      rho: radius ρ ≥ 0 (official CIFAR-10 recipe 0.5, CIFAR-100 1.0).
      eta: η ≥ 0 (official default 0.01).
      adaptive_mask: bool / pytree of bools / callable ``params -> pytree``.
      num_steps: ascent steps (python int ≥ 1).
      step_size: ascent step in ``u`` coordinates (default ``ρ``).
      key: optional PRNG key for a random start on the sphere.
      unroll: as in :func:`epsilon_sharpness`.

    Returns:
      :class:`SharpnessResult` (``perturbation_norm`` is ``‖ε‖ = ‖Tu‖``).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * b * w[0] ** 2             # ½·a·w², T = |w| = 2
        >>> r = adaptive_sharpness(f, jnp.array([2.0]), 3.0, rho=0.1, eta=0.0,
        ...                        adaptive_mask=True)
        >>> round(float(r.sharpness), 5)                     # a·ρ'|w| + ½aρ'², ρ' = 0.2
        1.26
    """
    _validate(rho, num_steps, step_size, key)
    require_nonnegative(eta, "eta")
    C.check_problem(loss_fn, params, batch)
    scale = _scale_tree(params, eta, adaptive_mask)
    return _max_in_ball(loss_fn, params, batch, rho=rho, num_steps=num_steps,
                        step_size=step_size, key=key, scale=scale, unroll=unroll)


def m_sharpness(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    *,
    m: int,
    rho: float = 0.05,
    num_steps: int = 10,
    step_size: float | None = None,
    key: jax.Array | None = None,
    unroll: bool = False,
    adaptive: bool = False,
    eta: float = 0.01,
    adaptive_mask: MaskLike = default_adaptive_mask,
) -> SharpnessResult:
    r"""m-sharpness: the mean over disjoint ``m``-example groups of each group's sharpness.

    .. math::
        \frac{m}{B}\sum_{j=1}^{B/m}\ \Big[\max_{\|ε_j\| ≤ ρ} L_{G_j}(w + ε_j) − L_{G_j}(w)\Big]

    (Foret et al. 2021, §4.1), where the batch is cut along its leading axis into consecutive
    groups :math:`G_j` of ``m`` examples and ``loss_fn`` on a group is its mean loss. Each group
    has its own perturbation, as in SAM trained with ``m`` examples per accelerator; ``m = B``
    is :func:`epsilon_sharpness`. ``adaptive=True`` uses ASAM's ball (:func:`adaptive_sharpness`).
    Groups are evaluated with ``jax.vmap`` (memory ``× B/m`` of one group, FLOPs of the batch).

    Args:
      loss_fn: ``(params, batch) -> scalar`` mean loss; called on groups of ``m`` examples.
      params: pytree of float arrays.
      batch: pytree of arrays sharing a leading batch axis ``B`` divisible by ``m``.
      m: group size (python int ≥ 1).
      rho, num_steps, step_size: as in :func:`epsilon_sharpness`.
      key: optional PRNG key (split into one key per group) for random starts.
      unroll: as in :func:`epsilon_sharpness`.
      adaptive, eta, adaptive_mask: ASAM's ball instead of the Euclidean one.

    Returns:
      :class:`SharpnessResult` whose fields are means over the groups.

    Example:
        >>> import jax.numpy as jnp
        >>> c = jnp.array([[1.0, 0.0], [-1.0, 0.0]])        # per-example ½‖w − c_i‖²
        >>> f = lambda w, b: jnp.mean(0.5 * jnp.sum((w - b) ** 2, axis=-1))
        >>> w = jnp.array([0.0, 1.0])
        >>> round(float(m_sharpness(f, w, c, m=1, rho=0.1).sharpness), 6)   # 0.1·√2 + 0.005
        0.146421
        >>> round(float(m_sharpness(f, w, c, m=2, rho=0.1).sharpness), 6)   # 0.1·1 + 0.005
        0.105
    """
    _validate(rho, num_steps, step_size, key)
    C.require_count(m, "m")
    if adaptive:
        require_nonnegative(eta, "eta")
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("`batch` has no arrays.")
    b = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
    if b is None or any(jnp.ndim(x) == 0 or jnp.shape(x)[0] != b for x in leaves):
        raise ValueError("Every leaf of `batch` must have the same leading batch axis.")
    if b % m:
        raise ValueError(f"`m`={m} must divide the batch size {b}.")
    g = b // m
    grouped = jax.tree.map(lambda x: jnp.reshape(x, (g, m) + jnp.shape(x)[1:]), batch)
    C.check_problem(loss_fn, params, jax.tree.map(lambda x: x[0], grouped))
    scale = _scale_tree(params, eta, adaptive_mask) if adaptive else None
    keys = None if key is None else jax.random.split(key, g)

    def one(group: Any, k: Any) -> SharpnessResult:
        return _max_in_ball(loss_fn, params, group, rho=rho, num_steps=num_steps,
                            step_size=step_size, key=k, scale=scale, unroll=unroll)

    res = jax.vmap(one)(grouped, keys)
    return SharpnessResult(*(jnp.mean(x) for x in res))


def gradient_norm(loss_fn: C.LossFn, params: Any, batch: Any) -> jax.Array:
    r"""The global L2 norm :math:`\|∇_w L(w; \text{batch})\|_2` over all leaves of ``params``.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts.

    Returns:
      Scalar norm in float32 (float64 for float64 params).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)       # ∇ = (3, 4)
        >>> float(gradient_norm(f, jnp.ones(2), jnp.array([3.0, 4.0])))
        5.0
    """
    C.check_problem(loss_fn, params, batch)
    g = jax.grad(loss_fn)(params, batch)
    return _tree.norm(jax.tree.map(lambda x: x.astype(C.compute_dtype(x.dtype)), g))


def gradient_norms(
    loss_fns: Mapping[str, C.LossFn], params: Any, batch: Any
) -> dict[str, jax.Array]:
    r"""Gradient norms of several losses at the same point, e.g. training vs ascent loss.

    AACE-SAM's argument (Ratchatorn & Tanaka 2024, §2–3): near convergence
    :math:`\|∇ \mathrm{CE}\| → 0`, so SAM's normalised perturbation direction is driven by a
    vanishing gradient, while :math:`\|∇ \mathrm{AACE}\|` stays of order one. Logging both per
    epoch tests the claim.

    Args:
      loss_fns: ``{name: (params, batch) -> scalar}``.
      params: pytree of float arrays.
      batch: anything the losses accept.

    Returns:
      ``{name: ‖∇ loss‖}``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from lossjax.losses import aace_loss
        >>> def logits(w, b): return b[0] @ w
        >>> ce = lambda w, b: -jax.nn.log_softmax(logits(w, b))[jnp.arange(1), b[1]].mean()
        >>> aace = lambda w, b: aace_loss(logits(w, b), b[1]).mean()
        >>> w = jnp.array([[5.0, 0.0, 0.0]]); b = (jnp.ones((1, 1)), jnp.array([0]))
        >>> n = gradient_norms({"ce": ce, "aace": aace}, w, b)
        >>> round(float(n["ce"]), 4), round(float(n["aace"]), 4)   # (1 − p_y)√1.5, p_y√1.5
        (0.0163, 1.2085)
    """
    if not isinstance(loss_fns, Mapping) or not loss_fns:
        raise TypeError("`loss_fns` must be a non-empty mapping name -> loss_fn(params, batch).")
    return {name: gradient_norm(fn, params, batch) for name, fn in loss_fns.items()}
