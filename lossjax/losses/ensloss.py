"""EnsLoss: stochastic calibrated loss ensembles (Ben Dai, ICML 2025).

Binary classification with margins ``z_i = ỹ_i f(x_i)``, ``ỹ = 2y − 1``. Instead of fixing a
surrogate loss φ, every step draws random loss *derivatives* ``g_i = φ'(z_i)`` that are
consistent with some convex, classification-calibrated φ (Bartlett, Jordan & McAuliffe 2006: a
convex φ is calibrated iff ``φ'(0) < 0``), and trains on the surrogate
``mean_i stop_gradient(g_i)·z_i``, whose gradient is ``mean_i g_i ∇z_i``. Only the gradient of
the returned value is meaningful; its value is not a loss to monitor.

Reference: B. Dai, "EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in
Classification", ICML 2025.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import replicate_on_explicit_mesh, require_floating, require_range

__all__ = ["ensloss_derivatives", "ensloss_surrogate"]

_SHIFT = 1e-6


def _inverse_boxcox(v: jax.Array, lam: float) -> jax.Array:
    if lam == 0.0:
        return jnp.exp(v)
    base = 1.0 + lam * v
    base = jnp.where(base > 0, base, 0.0)
    return base ** (1.0 / lam)


def _explicit_spec(x: jax.Array) -> jax.sharding.PartitionSpec | None:
    """The sharding spec of ``x`` on an Explicit mesh, or None (no mesh, or an Auto mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not mesh.explicit_axes:
        return None
    return jax.typeof(x).sharding.spec


def _check(logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None):
    require_floating(logits, "logits")
    f = jnp.asarray(logits)
    dtype = jnp.promote_types(f.dtype, jnp.float32)
    f = f.astype(dtype)
    y = jnp.asarray(labels)
    if y.shape != f.shape:
        raise ValueError(f"`labels` must have the shape of `logits` {f.shape}, got {y.shape}.")
    if not (jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == jnp.bool_):
        raise TypeError(f"`labels` must be integer (0/1) or bool, got {y.dtype}.")
    if where is None:
        mask = jnp.ones_like(f, dtype=bool)  # keeps f's sharding
    else:
        mask = jnp.asarray(where)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {mask.dtype}.")
        if mask.shape != f.shape:
            raise ValueError(f"`where` must have the shape of `logits` {f.shape}, got {mask.shape}.")
    sign = jnp.where(y.astype(jnp.int32) > 0, 1.0, -1.0).astype(dtype)
    return f, sign, mask, dtype


def ensloss_derivatives(
    logits: ArrayLike,
    labels: ArrayLike,
    key: jax.Array,
    *,
    boxcox_lambda: float = 0.0,
    clip: float = -1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""The random loss derivatives ``g_i`` that :func:`ensloss_surrogate` uses (no gradient).

    Sampling, per call (= per SGD step), over the ``n`` unmasked items:

    1. ``v ~ N(0, 1)^n``; ``g = −BoxCox⁻¹_λ(v)`` (``λ = 0``: ``g = −exp(v)``, a negative
       log-normal; ``λ ≠ 0``: ``−max(1 + λv, 0)^{1/λ}``); then ``g ← max(g, clip)``.
    2. Sort-matching for convexity: the sorted ``g`` (ascending) go to the items sorted by
       margin ``z`` (ascending), so the most negative derivative meets the smallest margin and
       ``φ'`` is non-decreasing.
    3. Tail: for ``z_i > 1``, ``g_i ← g_i / z_i`` (derivative decaying like ``1/z``).
    4. ``g ← g − 1e-6`` so every derivative is strictly negative (calibration at 0).

    Masked items are excluded before sorting (the ``n`` valid items receive the sorted sample of
    ``n`` draws) and get ``g = 0``.

    Args:
      logits: floating scores ``f(x)`` of any shape ``[...]`` (one item per element).
      labels: ``{0, 1}`` integer or bool labels of the same shape.
      key: a ``jax.random`` key; **required** — the loss is random by construction.
      boxcox_lambda: Box-Cox parameter ``λ`` (reference default 0).
      clip: lower bound for the sampled derivatives (reference: ``−1``), ``< 0``.
      where: optional bool mask of the shape of ``logits``.

    Returns:
      ``g`` of the shape of ``logits`` (float32, or float64 for float64 input).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> g = ensloss_derivatives(jnp.array([2.0, -1.0, 0.3]), jnp.array([1, 0, 1]),
      ...                         jax.random.PRNGKey(0))
      >>> bool(jnp.all(g < 0)) and bool(jnp.all(g >= -1.0 - 1e-6))
      True
    """
    require_range(clip, "clip", high=0.0, high_inclusive=False)
    if not isinstance(boxcox_lambda, (int, float)):
        raise TypeError(f"`boxcox_lambda` must be a python number, got {type(boxcox_lambda)}.")
    f, sign, mask, dtype = _check(logits, labels, where)
    shape = f.shape
    # the derivatives are sort-matched over the whole batch: on an Explicit mesh the margins are
    # gathered, and the result is given back with the input's sharding
    spec = _explicit_spec(f)
    z = replicate_on_explicit_mesh(jax.lax.stop_gradient(f * sign)).reshape(-1)
    m = replicate_on_explicit_mesh(mask).reshape(-1)
    v = jax.random.normal(key, z.shape, dtype)
    g = -_inverse_boxcox(v, float(boxcox_lambda))
    g = jnp.maximum(g, clip)
    g = jnp.where(m, g, jnp.inf)  # masked draws sort last and are never assigned to valid items
    g_sorted = jnp.sort(g)
    z_key = jnp.where(m, z, jnp.inf)  # masked items take the last ranks
    order = jnp.argsort(z_key, stable=True)
    ranks = jnp.argsort(order, stable=True)
    g_item = g_sorted[ranks]
    pos = z > 1.0
    g_item = jnp.where(pos, g_item / jnp.where(pos, z, 1.0), g_item)
    g_item = g_item - _SHIFT
    g_item = jnp.where(m, g_item, 0.0).reshape(shape)
    if spec is not None:
        g_item = jax.sharding.reshard(g_item, spec)
    return jax.lax.stop_gradient(g_item)


def ensloss_surrogate(
    logits: ArrayLike,
    labels: ArrayLike,
    key: jax.Array,
    *,
    boxcox_lambda: float = 0.0,
    clip: float = -1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""EnsLoss surrogate ``mean_i sg(g_i)·z_i`` with random calibrated loss derivatives.

    .. math::
        \mathcal{L} = \frac1n \sum_{i\,\text{valid}} \operatorname{sg}(g_i)\,z_i,\qquad
        z_i = \tilde y_i f(x_i),\quad
        \frac{\partial \mathcal{L}}{\partial f(x_i)} = \frac{g_i\,\tilde y_i}{n},

    where ``g`` is drawn by :func:`ensloss_derivatives` (negative log-normal derivatives,
    clipped at ``clip``, sort-matched to the margins so the implied loss is convex, ``1/z`` tail
    for ``z > 1``, shifted by ``−1e-6`` so that ``φ'(0) < 0``). **Only the gradient is
    meaningful**; a new ``key`` each step draws a new loss from the ensemble, the same ``key``
    gives the same output. Binary only (the method does not cover multi-class).

    The reference code's commented alternative draws ``g ~ −Exponential(1)``; not offered.

    Args:
      logits: floating scores ``f(x)`` of any shape ``[...]``.
      labels: ``{0, 1}`` integer or bool labels of the same shape.
      key: a ``jax.random`` key (**required**).
      boxcox_lambda: Box-Cox parameter ``λ`` (default 0: log-normal).
      clip: lower bound of the sampled derivatives (default ``−1``).
      where: optional bool mask of the shape of ``logits``; masked items are excluded before
        sorting and from ``n``. An all-masked batch gives 0 with zero gradient.

    Returns:
      A scalar.

    References:
      B. Dai, "EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in
      Classification", ICML 2025, arXiv:2409.00908.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f, y = jnp.array([2.0, -1.0, 0.3]), jnp.array([1, 0, 1])
      >>> grad = jax.grad(ensloss_surrogate)(f, y, jax.random.PRNGKey(0))
      >>> bool(jnp.all(grad * jnp.array([1.0, -1.0, 1.0]) < 0))  # pushes every margin up
      True
    """
    g = ensloss_derivatives(
        logits, labels, key, boxcox_lambda=boxcox_lambda, clip=clip, where=where
    )
    f, sign, mask, dtype = _check(logits, labels, where)
    z = jnp.where(mask, f * sign, 0.0)
    n = jnp.maximum(jnp.sum(mask), 1).astype(dtype)
    return jnp.sum(g * z) / n
