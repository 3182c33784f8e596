"""SAM, ASAM and AACE-SAM as chainable optax transformations (one ``update`` = one SAM step).

Contract shared by every two-pass transform of :mod:`lossjax.sharpness`::

    updates, opt_state = tx.update(ascent_grads, opt_state, params, grad_fn=grad_fn)

* ``ascent_grads`` (the ``updates`` argument): the gradient at ``params`` of the *ascent loss*
  on the current batch -- the training loss (CE) for SAM/ASAM, the AACE loss for AACE-SAM.
* ``grad_fn(p) -> grads``: the gradient at ``p`` of the *training loss* on the **same batch**
  (with BatchNorm statistics discarded, see :func:`lossjax.sharpness.flax_sam_grads`).
* the transform returns ``grad_fn(params ± ε)`` -- the SAM gradient -- which the rest of the
  chain (weight decay, clipping, the base optimizer) sees as its input gradient at ``params``.

References: Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021 (arXiv 2010.01412), Alg. 1; Kwon et al., "ASAM", ICML 2021
(arXiv 2102.11600); Ratchatorn & Tanaka, "Adaptive Adversarial Cross-Entropy Loss for
Sharpness-Aware Minimization", ICIP 2024 (arXiv 2406.14329).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lossjax.sharpness import _tree as T

__all__ = [
    "SAMState",
    "SAMOutput",
    "sam_gradient",
    "sam",
    "asam",
    "aace_sam",
    "asam_default_mask",
]

_DIRECTIONS = ("ascent", "descent")


class SAMState(NamedTuple):
    """State of :func:`sam`, :func:`asam` and :func:`aace_sam`.

    Attributes:
      count: int32 number of SAM steps taken (the argument of a ``rho`` schedule).
      ascent_norm: float32 ``‖T ⊙ d‖`` of the last step over the perturbed leaves (``d`` = the
        incoming ascent gradient, ``T`` = ASAM's ``|w| + η`` or 1); equals ``‖d‖`` for plain
        SAM and AACE-SAM (AACE-R's logged ``grad_norm``). Averaged over ``axis_name`` if set.
      perturbation_norm: float32 ``‖w_adv − w‖`` of the last step: the perturbation actually
        applied, after ``w + ε`` is rounded to the parameter dtype (equals ``‖ε‖`` up to float32
        rounding for float32 parameters; AACE-R's logged perturbation). With bf16 parameters it
        can be far below ρ (steps under half a bf16 ulp of ``w`` are rounded away).
    """

    count: jax.Array
    ascent_norm: jax.Array
    perturbation_norm: jax.Array


class SAMOutput(NamedTuple):
    """Result of :func:`sam_gradient`: the SAM gradient and the two logged norms."""

    grads: Any
    ascent_norm: jax.Array
    perturbation_norm: jax.Array


def asam_default_mask(params: Any) -> Any:
    """Official ASAM's choice of adaptive leaves, mapped to pytrees.

    ASAM-R applies ``T_w = |w| + η`` to parameters whose PyTorch name contains ``"weight"``
    (conv/linear kernels, embeddings and normalisation scales) and ``T = 1`` to biases. For a
    pytree this returns ``False`` for leaves whose last path key contains ``"bias"`` and
    ``True`` for every other leaf (Flax ``kernel``, ``scale``, ``embedding``, ...). A trailing
    ``value`` key (an ``nnx.State`` straight from ``nnx.split``: ``.../bias/value``) is skipped, so
    linen dicts and NNX states get the same mask.

    Example:
        >>> import jax.numpy as jnp
        >>> asam_default_mask({'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}})
        {'Dense_0': {'bias': False, 'kernel': True}}
    """

    def leaf(path: Any, _: Any) -> bool:
        names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path]
        if names and names[-1] == "value":
            names = names[:-1]
        return not names or "bias" not in names[-1].lower()

    return jax.tree_util.tree_map_with_path(leaf, params)


def _validate(rho: Any, normalize: bool, direction: str, eta: Any, norm_eps: Any) -> None:
    from lossjax.losses import _core

    T.require_radius(rho, "rho")
    _core.require_option(direction, _DIRECTIONS, "direction")
    T.require_radius(eta, "eta")
    T.require_radius(norm_eps, "norm_eps")
    if not isinstance(normalize, (bool, jnp.bool_)):
        raise TypeError(f"`normalize` must be a bool, got {normalize!r}.")


def sam_gradient(
    updates: Any,
    params: Any,
    grad_fn: Callable[[Any], Any],
    *,
    rho: Any = 0.05,
    normalize: bool = True,
    direction: str = "ascent",
    adaptive: bool = False,
    eta: float = 0.0,
    adaptive_mask: T.MaskLike = None,
    perturb_mask: T.MaskLike = None,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
    sync_ascent: bool = False,
    name: str = "sam_gradient",
) -> SAMOutput:
    r"""One SAM gradient, functionally (the body of :func:`sam`, without optimizer state).

    .. math::
        T = \mathrm{diag}(|w| + η) \text{ (adaptive leaves) or } 1,\quad
        n = \|T ⊙ d\|,\quad s = ρ / (n + ε_n) \text{ if normalize else } ρ,\\
        ε = s\, T^2 ⊙ d,\quad w_{adv} = w ± ε,\quad g_{SAM} = \texttt{grad\_fn}(w_{adv}).

    ``d = updates`` is the ascent gradient at ``params``; ``+`` for ``direction='ascent'``
    (SAM/ASAM), ``−`` for ``'descent'`` (AACE-SAM: step *down* the AACE loss). Leaves where
    ``perturb_mask`` is False get ``ε = 0`` and are left out of ``n`` (SAM-ON). Norms and ``ε``
    are computed in float32 (float64 for float64 leaves); ``w_adv`` is cast back to each leaf's
    dtype and ``perturbation_norm`` is the norm of the perturbation actually applied,
    ``‖w_adv − w‖`` after that cast (with bf16 parameters it can be far below ρ: a step smaller
    than half a bf16 ulp of ``w`` is rounded away). A zero gradient gives ``ε = 0`` (never NaN;
    optax PR #1743).

    With ``axis_name`` (inside ``jax.shard_map``/``jax.vmap`` with that axis name) ``d`` is the
    *local* gradient and the perturbation is per replica/group (m-sharpness, Foret et al. §4.1)
    unless ``sync_ascent=True`` (then ``d`` is ``pmean``-ed first: global SAM); the returned
    gradient and norms are ``pmean``-ed.

    Args:
      updates: ascent gradient at ``params`` (pytree).
      params: current parameters.
      grad_fn: ``params -> grads`` of the training loss on the same batch.
      rho: radius ρ (a float or a traced scalar; schedules are resolved by the transforms).
      normalize: divide by ``n`` (SAM/ASAM) or not (AACE-R's default ``use_grad_norm=False``).
      direction: ``'ascent'`` or ``'descent'``.
      adaptive: use ``T = |w| + eta`` on the leaves selected by ``adaptive_mask``.
      eta: ASAM's η (0: davda54/sam's and the official GSAM code's ``|w|``).
      adaptive_mask: bool / pytree of bools / callable ``params -> pytree``; default all leaves.
      perturb_mask: leaves to perturb (same forms); default all leaves.
      norm_eps: added to ``n`` in the denominator.
      axis_name: mapped axis name for per-replica perturbations, or None.
      sync_ascent: ``pmean`` the ascent gradient over ``axis_name`` before perturbing.
      name: the public name used in error messages.

    Returns:
      :class:`SAMOutput` ``(grads, ascent_norm, perturbation_norm)``; ``grads`` has the dtypes
      of ``updates``.

    Raises:
      TypeError: ``updates`` or ``grad_fn(p)`` is not a pytree shaped like ``params`` (e.g. a
        loss function or ``jax.value_and_grad(loss)`` passed as ``grad_fn``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2)
        >>> w = jnp.array([1.0, 1.0])
        >>> out = sam_gradient(jax.grad(f)(w), w, jax.grad(f), rho=0.1)
        >>> [round(float(v), 6) for v in out.grads]
        [1.00995, 10.995037]
    """
    _validate(rho, normalize, direction, eta, norm_eps)
    T.check_like_params(updates, params, name, "updates")
    if axis_name is not None and any(T.is_varying(w, axis_name) for w in jax.tree.leaves(params)):
        raise ValueError(
            f"lossjax.{name}(axis_name={axis_name!r}): `params` vary over {axis_name!r} inside "
            "shard_map (e.g. FSDP shards), so the norms and ε would be those of this device's "
            "slice only. Pass the replicated parameters (per_replica() is for the ascent "
            "gradient only); for FSDP-sharded parameters gather them first and call "
            "sam_gradient without axis_name (see lossjax.sharpness.per_replica)."
        )
    d = T.to_compute(updates)
    if axis_name is not None and sync_ascent:
        d = T.pmean_tree(d, axis_name)
    pmask = T.resolve_mask(perturb_mask, params, True)
    if adaptive:
        amask = T.resolve_mask(adaptive_mask, params, True)
        scale = jax.tree.map(
            lambda w, m, g: T.apply_mask(m, jnp.abs(w.astype(g.dtype)) + jnp.asarray(eta, g.dtype), 1.0),
            params,
            amask,
            d,
        )
    else:
        scale = None
    td = d if scale is None else jax.tree.map(lambda s, g: s * g, scale, d)
    td = jax.tree.map(lambda m, x: T.apply_mask(m, x), pmask, td)
    n = T.norm(td)
    rho_c = jnp.asarray(rho, n.dtype)
    if normalize:
        den = n + jnp.asarray(norm_eps, n.dtype)
        s = T.safe_div(rho_c, den)
    else:
        s = rho_c
    eps = td if scale is None else jax.tree.map(lambda a, x: a * x, scale, td)
    eps = jax.tree.map(lambda x: s.astype(x.dtype) * x, eps)
    sign = 1.0 if direction == "ascent" else -1.0
    w_adv = jax.tree.map(
        lambda w, e: (w.astype(e.dtype) + jnp.asarray(sign, e.dtype) * e).astype(w.dtype), params, eps
    )
    w_adv = T.match_varying(w_adv, updates, axis_name)  # keep grad_fn per replica under shard_map
    g_adv = grad_fn(w_adv)
    T.check_like_params(g_adv, params, name, "grad_fn")
    g_adv = T.pmean_tree(g_adv, axis_name)
    # the perturbation actually applied (after rounding w + ε to the parameter dtype)
    applied = jax.tree.map(lambda a, w, e: a.astype(e.dtype) - w.astype(e.dtype), w_adv, params, eps)
    pnorm = T.norm(applied)
    n, pnorm = T.f32(n), T.f32(pnorm)
    if axis_name is not None:
        n, pnorm = jax.lax.pmean((n, pnorm), axis_name)
    return SAMOutput(T.cast_like(g_adv, updates), n, pnorm)


def _sam_transform(
    name: str,
    rho: Any,
    *,
    normalize: bool,
    direction: str,
    adaptive: bool,
    eta: Any,
    adaptive_mask: T.MaskLike,
    perturb_mask: T.MaskLike,
    norm_eps: Any,
    axis_name: str | None,
    sync_ascent: bool,
) -> optax.GradientTransformationExtraArgs:
    _validate(rho, normalize, direction, eta, norm_eps)

    def init_fn(params: Any) -> SAMState:
        del params
        return SAMState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32))

    def update_fn(
        updates: Any, state: SAMState, params: Any = None, *, grad_fn: Callable | None = None, **extra: Any
    ) -> tuple[Any, SAMState]:
        del extra
        T.require_grad_fn(grad_fn, name)
        T.require_params(params, name)
        T.require_position(name, "first")
        rho_t = T.schedule_value(rho, state.count)
        out = sam_gradient(
            updates,
            params,
            grad_fn,
            rho=rho_t,
            normalize=normalize,
            direction=direction,
            adaptive=adaptive,
            eta=eta,
            adaptive_mask=adaptive_mask,
            perturb_mask=perturb_mask,
            norm_eps=norm_eps,
            axis_name=axis_name,
            sync_ascent=sync_ascent,
            name=name,
        )
        new_state = SAMState(optax.safe_int32_increment(state.count), out.ascent_norm, out.perturbation_norm)
        return out.grads, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sam(
    rho: optax.ScalarOrSchedule = 0.05,
    *,
    normalize: bool = True,
    direction: str = "ascent",
    adaptive: bool = False,
    eta: float = 0.0,
    adaptive_mask: T.MaskLike = None,
    perturb_mask: T.MaskLike = None,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
    sync_ascent: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) as a chainable transformation.

    .. math::
        ε = ρ\, \frac{T^2 g}{\|T g\| + ε_n},\qquad g_{SAM} = ∇L(w + ε)

    with ``g = updates`` (the gradient at ``w``) and ``T = 1`` (SAM) or ``|w| + η`` on the
    ``adaptive_mask`` leaves (``adaptive=True``; see :func:`asam`). The transform calls
    ``grad_fn(w + ε)`` once and returns the SAM gradient; put the base optimizer after it.
    Two forward/backward passes per step in total (yours for ``updates`` + ``grad_fn``).

    Ordering rule: the SAM transform comes **first** in the chain and the optimizer last. A
    transformation before it, ``optax.MultiSteps`` around it, or a ``grad_fn`` that does not
    return a gradient pytree shaped like ``params`` raise an error at the first ``update``.

    Weight decay placed after SAM (``optax.add_decayed_weights``) is evaluated at ``w`` and not
    part of ε (PyTorch ``SGD(weight_decay=...)`` semantics of the davda54/ASAM/AACE codes); to
    reproduce google-research/sam put ``0.5·wd·‖w‖²`` into both losses instead. Clipping after
    SAM clips the SAM gradient. Never wrap the chain in ``optax.MultiSteps``: accumulate SAM
    gradients per micro-batch instead (:func:`lossjax.sharpness.grouped_sam_gradient`).

    Args:
      rho: radius ρ, or a schedule ``count -> ρ`` (count = SAM steps taken). 0.05 is the
        paper's default (CIFAR-10; 0.1 for CIFAR-100).
      normalize: divide by ``‖T g‖`` (True for SAM); False gives ``ε = ρ T² g``.
      direction: ``'ascent'`` (``w + ε``) or ``'descent'`` (``w − ε``, AACE-SAM).
      adaptive: ASAM-style ``T = |w| + eta`` on ``adaptive_mask`` leaves; with the defaults
        (all leaves, ``eta=0``) this is davda54/sam's ``adaptive=True`` (``T = |w|``, biases
        included). For the official SamsungLabs/ASAM rule use :func:`asam`.
      eta: ASAM's η (default 0, as davda54/sam; SamsungLabs/ASAM's class default is 0.01).
      adaptive_mask: which leaves are adaptive: bool, pytree of bools, or callable.
      perturb_mask: which leaves are perturbed (SAM-ON, Mueller et al. 2023: only the
        normalisation layers); the norm is taken over those leaves only.
      norm_eps: added to the norm (1e-12 as davda54/sam; zero gradients give ε = 0).
      axis_name: inside ``jax.shard_map``/``jax.vmap`` over the batch: perturb per replica with
        the *local* ascent gradient (m-sharpness) and ``pmean`` the SAM gradient. Mind the
        replicated-parameter trap: compute ``updates`` w.r.t.
        :func:`lossjax.sharpness.per_replica(params, axis_name)`.
      sync_ascent: ``pmean`` the ascent gradient before perturbing (global SAM).

    Returns:
      ``optax.GradientTransformationExtraArgs``; ``update(updates, state, params, *, grad_fn)``.
      The state is a :class:`SAMState`.

    Training step (two passes on the same batch)::

        tx = optax.chain(lossjax.sam(0.05), optax.add_decayed_weights(5e-4),
                         optax.sgd(0.1, momentum=0.9))

        @jax.jit
        def train_step(params, opt_state, x, y):
            loss = lambda p: ce(apply(p, x), y).mean()
            grads = jax.grad(loss)(params)                      # pass 1
            updates, opt_state = tx.update(grads, opt_state, params,
                                           grad_fn=jax.grad(loss))  # pass 2 inside
            return optax.apply_updates(params, updates), opt_state

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> f = lambda w: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2)
        >>> tx = optax.chain(sam(0.1), optax.sgd(0.01))
        >>> w = jnp.array([1.0, 1.0]); state = tx.init(w)
        >>> u, state = tx.update(jax.grad(f)(w), state, w, grad_fn=jax.grad(f))
        >>> [round(float(v), 6) for v in optax.apply_updates(w, u)]
        [0.9899, 0.89005]
    """
    return _sam_transform(
        "sam",
        rho,
        normalize=normalize,
        direction=direction,
        adaptive=adaptive,
        eta=eta,
        adaptive_mask=adaptive_mask,
        perturb_mask=perturb_mask,
        norm_eps=norm_eps,
        axis_name=axis_name,
        sync_ascent=sync_ascent,
    )


def asam(
    rho: optax.ScalarOrSchedule = 0.5,
    *,
    eta: float = 0.01,
    adaptive_mask: T.MaskLike = asam_default_mask,
    normalize: bool = True,
    perturb_mask: T.MaskLike = None,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
    sync_ascent: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive SAM (Kwon et al., ICML 2021), the official SamsungLabs/ASAM formula.

    .. math::
        T_w = \mathrm{diag}(|w| + η),\qquad ε = ρ\,\frac{T_w^2 g}{\|T_w g\| + ε_n}
        \quad(\text{so } \|T_w^{-1} ε\| = ρ),\qquad g_{ASAM} = ∇L(w + ε)

    ``T_w`` applies to kernels/embeddings/normalisation scales (:func:`asam_default_mask`,
    the official "name contains weight" rule); biases use ``T = 1``. Defaults ``ρ = 0.5``
    (official CIFAR-10 recipe; CIFAR-100 uses 1.0) and ``η = 0.01``. davda54/sam's
    "adaptive" variant is ``asam(rho, eta=0.0, adaptive_mask=True)`` (ρ ≈ 2.0 in its README).
    big_vision's ``adaptive_perturbation`` (``ε = ρ|w|⊙g/‖g‖``) is a different formula and is
    not provided. Same calling convention as :func:`sam`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> f = lambda w: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2)
        >>> w = jnp.array([2.0, 0.5])
        >>> g = asam(0.1, eta=0.0, adaptive_mask=True).update(
        ...     jax.grad(f)(w), asam(0.1).init(w), w, grad_fn=jax.grad(f))[0]
        >>> [round(float(v), 5) for v in g]    # ∇f(w + ε), ε = (0.16960, 0.02650)
        [2.1696, 5.265]
    """
    return _sam_transform(
        "asam",
        rho,
        normalize=normalize,
        direction="ascent",
        adaptive=True,
        eta=eta,
        adaptive_mask=adaptive_mask,
        perturb_mask=perturb_mask,
        norm_eps=norm_eps,
        axis_name=axis_name,
        sync_ascent=sync_ascent,
    )


def aace_sam(
    rho: optax.ScalarOrSchedule = 0.2,
    *,
    normalize: bool = False,
    adaptive: bool = False,
    eta: float = 0.0,
    adaptive_mask: T.MaskLike = None,
    perturb_mask: T.MaskLike = None,
    norm_eps: float = 1e-12,
    axis_name: str | None = None,
    sync_ascent: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""AACE-SAM (Ratchatorn & Tanaka, ICIP 2024): perturb by *descending* the AACE loss.

    .. math::
        g_A = ∇_w \overline{L_{AACE}}(w),\quad ε = ρ\, g_A \;(\text{normalize=False, the
        official default}),\quad g = ∇_w \overline{L_{CE}}(w − ε)

    The incoming ``updates`` must be ``g_A``, the gradient of the batch-mean
    :func:`lossjax.losses.aace_loss`; ``grad_fn`` returns the CE gradient. Because
    ``‖∇AACE‖`` grows as the model converges, the un-normalized ``‖ε‖ = ρ‖g_A‖`` grows too
    (the paper's point); both norms are logged in the :class:`SAMState`. ``normalize=True``
    gives ``ε = ρ g_A/‖g_A‖`` (AACE-R ``use_grad_norm=True``); ``adaptive=True, eta=0.0``
    with the default all-leaves mask reproduces AACE-R's ``adaptive=True`` (``ε = ρ w²⊙g_A``).
    Never clip ``g_A`` before this transform: it changes ``‖ε‖``.

    Official recipe (T-Ratchatorn/AACE ``train.py``)::

        tx = optax.chain(lossjax.aace_sam(0.2), optax.add_decayed_weights(5e-4),
                         optax.sgd(schedule, momentum=0.9))
        g_a = jax.grad(lambda p: lossjax.losses.aace_loss(apply(p, x), y).mean())(params)
        updates, opt_state = tx.update(g_a, opt_state, params,
                                       grad_fn=jax.grad(lambda p: ce(apply(p, x), y).mean()))

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from lossjax.losses.aace import aace_loss
        >>> x = jnp.array([[1.0, 2.0]]); y = jnp.array([0]); W = jnp.zeros((2, 3))
        >>> ce = lambda W: -jax.nn.log_softmax(x @ W)[0, 0]
        >>> g_a = jax.grad(lambda W: aace_loss(x @ W, y).mean())(W)
        >>> tx = optax.chain(aace_sam(0.2), optax.sgd(0.1))
        >>> u, s = tx.update(g_a, tx.init(W), W, grad_fn=jax.grad(ce))
        >>> round(float(s[0].ascent_norm), 6), round(float(s[0].perturbation_norm), 6)
        (0.912871, 0.182574)
    """
    return _sam_transform(
        "aace_sam",
        rho,
        normalize=normalize,
        direction="descent",
        adaptive=adaptive,
        eta=eta,
        adaptive_mask=adaptive_mask,
        perturb_mask=perturb_mask,
        norm_eps=norm_eps,
        axis_name=axis_name,
        sync_ascent=sync_ascent,
    )
