"""⊥Grad: gradients orthogonal to the parameters (Prieto et al., 2025, arXiv 2501.04697)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lossjax.losses import _core
from lossjax.sharpness import _tree as T

__all__ = ["orthograd"]


def orthograd(*, rescale: bool = True, eps: float = 1e-30) -> optax.GradientTransformationExtraArgs:
    r"""⊥Grad (OrthoGrad): remove from each tensor's gradient its component along the tensor.

    Per parameter tensor θ (flattened) with gradient g:

    .. math::
        g_⊥ = g − \frac{θ·g}{θ·θ + ε}\,θ,\qquad
        g_⊥ ← g_⊥\,\frac{\|g\|}{\|g_⊥\| + ε}\ \ (\texttt{rescale=True})

    as in the released optimizer wrapper of "Grokking at the Edge of Numerical Stability"
    (Prieto et al., 2025), which prevents naive loss minimisation (scaling the logits up along
    θ) and delays Softmax Collapse. Put it *before* the base optimizer:
    ``optax.chain(orthograd(), optax.adamw(1e-3))``. ``θ = 0`` leaves ``g`` unchanged.
    Computed in float32, returned in the dtype of ``updates``.

    Args:
      rescale: restore the original per-tensor norm ``‖g‖`` (the released code's behaviour).
      eps: added to ``θ·θ`` and to ``‖g_⊥‖`` (1e-30 in the released code).

    Example:
        >>> import jax.numpy as jnp
        >>> tx = orthograd()
        >>> theta, g = jnp.array([3.0, 4.0]), jnp.array([1.0, 2.0])
        >>> [round(float(v), 6) for v in tx.update(g, tx.init(theta), theta)[0]]
        [-1.788854, 1.341641]
        >>> [round(float(v), 6) for v in orthograd(rescale=False).update(g, None, theta)[0]]
        [-0.32, 0.24]
    """
    _core.require_nonnegative(eps, "eps")

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def leaf(g: jax.Array, w: jax.Array) -> jax.Array:
        dt = T.cdtype(g)
        gf, wf = g.astype(dt).reshape(-1), w.astype(dt).reshape(-1)
        e = jnp.asarray(eps, dt)
        proj = T.safe_div(jnp.dot(wf, gf), jnp.dot(wf, wf) + e)
        gp = gf - proj * wf
        if rescale:
            gp = gp * T.safe_div(jnp.linalg.norm(gf), jnp.linalg.norm(gp) + e)
        return gp.reshape(g.shape).astype(g.dtype)

    def update_fn(updates: Any, state: Any, params: Any = None, **extra: Any) -> tuple[Any, Any]:
        del extra
        T.require_params(params, "orthograd")
        return jax.tree.map(leaf, updates, params), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
