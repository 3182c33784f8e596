r"""Compute-optimal model/data allocation implied by a Chinchilla law ``E + A/N^α + B/D^β``.

Under the budget ``C = k·N·D`` (``k ≈ 6`` FLOPs per parameter per token), minimising
``L(N, C/(kN))`` over ``N`` gives (Hoffmann et al. 2022, eq. 4)

.. math::
    N_{opt}(C) = G \left(\frac{C}{k}\right)^{a}, \quad
    D_{opt}(C) = G^{-1} \left(\frac{C}{k}\right)^{b}, \quad
    G = \left(\frac{\alpha A}{\beta B}\right)^{1/(\alpha+\beta)}, \quad
    a = \frac{\beta}{\alpha+\beta}, \; b = \frac{\alpha}{\alpha+\beta}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.scaling.laws import chinchilla_loss

__all__ = [
    "chinchilla_allocation_exponents",
    "chinchilla_compute_optimal",
    "chinchilla_optimal_loss",
]

_FIELDS = ("e", "a", "b", "alpha", "beta")


def _constants(constants: Any) -> tuple[float, float, float, float, float]:
    if isinstance(constants, Mapping):
        missing = [k for k in _FIELDS if k not in constants]
        if missing:
            raise ValueError(f"constants is missing {missing}; need keys {_FIELDS}")
        vals = tuple(constants[k] for k in _FIELDS)
    elif all(hasattr(constants, k) for k in _FIELDS):
        vals = tuple(getattr(constants, k) for k in _FIELDS)
    else:
        raise TypeError(
            "constants must be a ChinchillaConstants, a fit result's params mapping, or any "
            f"object with fields {_FIELDS}; got {type(constants).__name__}"
        )
    e, a, b, alpha, beta = vals
    if not isinstance(alpha, jax.core.Tracer) and not (
        np.all(np.asarray(alpha) > 0) and np.all(np.asarray(beta) > 0)
    ):
        raise ValueError("constants.alpha and constants.beta must be positive")
    return vals  # type: ignore[return-value]


def chinchilla_allocation_exponents(constants: Any) -> tuple[jax.Array, jax.Array]:
    r"""Exponents ``(a, b)`` of ``N_opt ∝ C^a`` and ``D_opt ∝ C^b``: ``a = β/(α+β)``, ``b = α/(α+β)``.

    Reference: J. Hoffmann et al., arXiv:2203.15556, eq. (4).

    Args:
      constants: Chinchilla constants (``ChinchillaConstants`` or a mapping with ``e, a, b,
        alpha, beta``).

    Returns:
      ``(a, b)``, summing to 1.

    Example:
      >>> from lossjax.scaling.published import CHINCHILLA_BESIROGLU_2024
      >>> a, b = chinchilla_allocation_exponents(CHINCHILLA_BESIROGLU_2024)
      >>> round(float(a), 3), round(float(b), 3)
      (0.513, 0.487)
    """
    _, _, _, alpha, beta = _constants(constants)
    alpha, beta = jnp.asarray(alpha), jnp.asarray(beta)
    return beta / (alpha + beta), alpha / (alpha + beta)


def chinchilla_compute_optimal(
    compute: ArrayLike, constants: Any, *, flops_per_param_token: float = 6.0
) -> tuple[jax.Array, jax.Array]:
    r"""Compute-optimal parameters and tokens ``(N_opt, D_opt)`` for a budget ``C = k·N·D``.

    .. math:: N_{opt} = G\,(C/k)^{\beta/(\alpha+\beta)}, \quad D_{opt} = \frac{C/k}{N_{opt}},
              \quad G = \left(\frac{\alpha A}{\beta B}\right)^{1/(\alpha+\beta)}

    Computed in log space. ``E`` does not enter the allocation.

    Reference: J. Hoffmann et al., "Training Compute-Optimal Large Language Models",
    arXiv:2203.15556, eq. (4).

    Args:
      compute: positive training budgets in FLOPs, any shape.
      constants: Chinchilla constants (``ChinchillaConstants`` or a mapping with ``e, a, b,
        alpha, beta``, e.g. ``FitResult.params``).
      flops_per_param_token: ``k`` in ``C = k·N·D``.

    Returns:
      ``(N_opt, D_opt)`` with the shape of ``compute``.

    Example:
      >>> from lossjax.scaling.published import CHINCHILLA_BESIROGLU_2024
      >>> n, d = chinchilla_compute_optimal(5.76e23, CHINCHILLA_BESIROGLU_2024)
      >>> round(float(d / n), 1)
      18.4
    """
    _, a_, b_, alpha, beta = _constants(constants)
    c = jnp.asarray(compute)
    if not jnp.issubdtype(c.dtype, jnp.floating):
        c = c.astype(jnp.result_type(float))
    if not isinstance(c, jax.core.Tracer) and not np.all(np.asarray(c) > 0):
        raise ValueError("compute must be strictly positive")
    if not flops_per_param_token > 0:
        raise ValueError(f"flops_per_param_token must be positive, got {flops_per_param_token}")
    alpha, beta = jnp.asarray(alpha), jnp.asarray(beta)
    log_g = (jnp.log(alpha * jnp.asarray(a_)) - jnp.log(beta * jnp.asarray(b_))) / (alpha + beta)
    log_ck = jnp.log(c) - jnp.log(flops_per_param_token)
    log_n = log_g + beta / (alpha + beta) * log_ck
    return jnp.exp(log_n), jnp.exp(log_ck - log_n)


def chinchilla_optimal_loss(
    compute: ArrayLike, constants: Any, *, flops_per_param_token: float = 6.0
) -> jax.Array:
    r"""Loss on the compute-optimal frontier, ``L(N_opt(C), D_opt(C))``.

    Reference: J. Hoffmann et al., arXiv:2203.15556.

    Args:
      compute: positive budgets in FLOPs.
      constants: Chinchilla constants.
      flops_per_param_token: ``k`` in ``C = k·N·D``.

    Returns:
      The frontier loss, shape of ``compute``.

    Example:
      >>> from lossjax.scaling.published import CHINCHILLA_HOFFMANN_2022
      >>> round(float(chinchilla_optimal_loss(5.76e23, CHINCHILLA_HOFFMANN_2022)), 3)
      1.931
    """
    e, a, b, alpha, beta = _constants(constants)
    n, d = chinchilla_compute_optimal(
        compute, constants, flops_per_param_token=flops_per_param_token
    )
    return chinchilla_loss(n, d, e=e, a=a, b=b, alpha=alpha, beta=beta)
