"""Naive-loss-minimisation (NLM) diagnostic: how much of the gradient only rescales the weights.

Once a classifier fits its training set, the cross-entropy keeps falling by scaling the logits
up; for a (positively) homogeneous network this direction is the parameter vector itself, so the
gradient turns anti-parallel to the weights (``cos(g, θ) → −1``, a descent step ``−g`` grows
``θ``). Measuring ``cos(g, θ)`` per tensor tells a run that is still learning features from one
that only inflates its logits on the way to Softmax Collapse.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["nlm_cosine"]


def _cos(g: jax.Array, p: jax.Array) -> jax.Array:
    dtype = jnp.promote_types(jnp.result_type(g, p), jnp.float32)
    g, p = jnp.ravel(g).astype(dtype), jnp.ravel(p).astype(dtype)
    num = jnp.vdot(g, p)
    den2 = jnp.vdot(g, g) * jnp.vdot(p, p)
    ok = den2 > 0
    return jnp.where(ok, num / jnp.sqrt(jnp.where(ok, den2, 1.0)), jnp.where(jnp.isnan(den2), jnp.nan, 0.0))


def nlm_cosine(grads: Any, params: Any, *, per_tensor: bool = True) -> Any:
    r"""Cosine between the gradient and the parameters: the NLM-direction diagnostic.

    .. math:: c(g, \theta) = \frac{\langle g, \theta\rangle}{\lVert g\rVert\,\lVert\theta\rVert}

    per tensor (a pytree of scalars, ``per_tensor=True``) or over the whole flattened parameter
    vector (one scalar). ``c ≈ −1`` means the descent direction ``−g`` is (almost) the NLM
    direction, i.e. the update only scales the weights — the regime that precedes Softmax
    Collapse (Prieto et al. 2025, Sec. 4, naive loss minimisation; the ⊥Grad optimizer
    :func:`lossjax.sharpness.orthograd` removes exactly this component). A zero gradient or
    zero tensor gives 0; NaN gives NaN.

    Reference: L. Prieto, M. Barsbey, P. A. M. Mediano, T. Birdal, "Grokking at the Edge of
    Numerical Stability", ICLR 2025, arXiv:2501.04697.

    Args:
      grads: pytree of gradient arrays.
      params: pytree of parameter arrays with the same structure.
      per_tensor: one cosine per leaf (default) or one global cosine.

    Returns:
      A pytree of scalars (like ``params``) or a scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> p = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([1.0])}
      >>> g = {"w": jnp.array([-2.0, -4.0]), "b": jnp.array([0.0])}
      >>> {k: float(v) for k, v in sorted(nlm_cosine(g, p).items())}
      {'b': 0.0, 'w': -1.0}
    """
    gl, gdef = jax.tree_util.tree_flatten(grads)
    pl, pdef = jax.tree_util.tree_flatten(params)
    if gdef != pdef:
        raise ValueError(f"`grads` and `params` must have the same tree structure, got {gdef} and {pdef}.")
    for g, p in zip(gl, pl, strict=True):
        if jnp.shape(g) != jnp.shape(p):
            raise ValueError(f"`grads` leaf of shape {jnp.shape(g)} does not match `params` leaf {jnp.shape(p)}.")
        for a, n in ((g, "grads"), (p, "params")):
            if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
                raise TypeError(f"`{n}` leaves must be floating, got {jnp.result_type(a)}.")
    if per_tensor:
        return jax.tree_util.tree_unflatten(gdef, [_cos(g, p) for g, p in zip(gl, pl, strict=True)])
    if not gl:
        return jnp.zeros((), jnp.float32)
    return _cos(jnp.concatenate([jnp.ravel(g) for g in gl]), jnp.concatenate([jnp.ravel(p) for p in pl]))
