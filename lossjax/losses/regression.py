"""Regression as classification: HL-Gauss, two-hot and the C51 categorical projection.

"Stop Regressing" (Farebrother et al., ICML 2024, arXiv:2403.03950) trains value/regression
heads with cross-entropy against a *categorical target* on a fixed support of ``m`` bins and
reads the prediction out as the expectation of the bin centers:

* support ``[v_min, v_max]`` split into ``m`` equal bins of width ``ς = (v_max − v_min)/m``,
  edges ``e_i = v_min + iς`` (i = 0..m), centers ``c_i = (e_i + e_{i+1})/2``;
* targets: :func:`hl_gauss_probs` (Gaussian histogram, Imani & White 2018), :func:`two_hot_probs`,
  or :func:`categorical_projection` of a target distribution (C51, Bellemare et al. 2017);
* losses: :func:`hl_gauss_loss`, :func:`two_hot_loss` (cross-entropy with the target under
  ``stop_gradient``, through the shared stable soft-label path of ``_core``);
* readout: :func:`bins_to_value` ``ŷ = Σ_i softmax(logits)_i c_i``.

References: J. Farebrother et al., "Stop Regressing", ICML 2024, arXiv:2403.03950; E. Imani, M. White,
ICML 2018 (HL-Gauss); M. Bellemare, W. Dabney, R. Munos, ICML 2017 (C51 projection).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    compute_dtype,
    expect,
    finalize,
    log_softmax,
    prepare,
    require_floating,
    require_positive,
)
from lossjax.losses._core import log_softmax as _log_softmax

__all__ = [
    "bin_edges",
    "bin_centers",
    "hl_gauss_probs",
    "two_hot_probs",
    "categorical_projection",
    "bins_to_value",
    "hl_gauss_loss",
    "two_hot_loss",
]


# --------------------------------------------------------------------------------------------
# support
# --------------------------------------------------------------------------------------------


def _check_support(v_min: float, v_max: float, num_bins: int) -> None:
    if not isinstance(num_bins, (int, np.integer)) or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(f"`num_bins` must be a positive int, got {num_bins!r}.")
    try:
        lo, hi = float(v_min), float(v_max)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError("`v_min` and `v_max` must be python numbers (static).") from err
    if not hi > lo:
        raise ValueError(f"`v_max` must be > `v_min`, got v_min={v_min!r}, v_max={v_max!r}.")


def bin_edges(v_min: float, v_max: float, num_bins: int, dtype=jnp.float32) -> jax.Array:
    """Edges ``e_i = v_min + i·(v_max − v_min)/m``, ``i = 0..m`` (``[m + 1]``).

    Example:
      >>> bin_edges(0.0, 1.0, 4)
      Array([0.  , 0.25, 0.5 , 0.75, 1.  ], dtype=float32)
    """
    _check_support(v_min, v_max, num_bins)
    return jnp.linspace(v_min, v_max, num_bins + 1, dtype=dtype)


def bin_centers(v_min: float, v_max: float, num_bins: int, dtype=jnp.float32) -> jax.Array:
    """Centers ``c_i = v_min + (i + ½)·(v_max − v_min)/m``, ``i = 0..m−1`` (``[m]``).

    Example:
      >>> bin_centers(0.0, 1.0, 4)
      Array([0.125, 0.375, 0.625, 0.875], dtype=float32)
    """
    _check_support(v_min, v_max, num_bins)
    width = (v_max - v_min) / num_bins
    return (v_min + (jnp.arange(num_bins, dtype=dtype) + 0.5) * width).astype(dtype)


def _atoms(
    support: ArrayLike | None,
    v_min: float | None,
    v_max: float | None,
    num_bins: int | None,
    dtype,
) -> jax.Array:
    """The atom locations: an explicit increasing ``support`` or the uniform bin centers."""
    if support is not None:
        if v_min is not None or v_max is not None or num_bins is not None:
            raise ValueError("Give either `support` or (`v_min`, `v_max`, `num_bins`), not both.")
        require_floating(support, "support")
        s = jnp.asarray(support)
        if s.ndim != 1 or s.shape[0] < 1:
            raise ValueError(f"`support` must be a non-empty 1-D array, got shape {s.shape}.")
        if isinstance(support, (np.ndarray, list, tuple)) or not isinstance(s, jax.core.Tracer):
            sn = np.asarray(s)
            if sn.size > 1 and not np.all(np.diff(sn) > 0):
                raise ValueError("`support` must be strictly increasing.")
        return s.astype(dtype)
    if v_min is None or v_max is None or num_bins is None:
        raise ValueError("Give `support`, or all of `v_min`, `v_max` and `num_bins`.")
    return bin_centers(v_min, v_max, num_bins, dtype)


def _targets(y: ArrayLike, name: str = "targets") -> jax.Array:
    require_floating(y, name)
    y = jnp.asarray(y)
    return y.astype(compute_dtype(y.dtype))


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------


def hl_gauss_probs(
    targets: ArrayLike,
    *,
    v_min: float,
    v_max: float,
    num_bins: int,
    sigma: float | None = None,
    sigma_ratio: float = 0.75,
) -> jax.Array:
    r"""HL-Gauss target: ``N(y, σ²)`` integrated over each bin, renormalised to the support.

    .. math::
        p_i(y) = \frac{\Phi\bigl(\tfrac{e_{i+1}-y}{\sigma}\bigr) - \Phi\bigl(\tfrac{e_i-y}{\sigma}\bigr)}
                      {\Phi\bigl(\tfrac{v_{max}-y}{\sigma}\bigr) - \Phi\bigl(\tfrac{v_{min}-y}{\sigma}\bigr)}

    Stable form: bins entirely above ``y`` use the mirrored difference
    ``Φ(−(e_i−y)/σ) − Φ(−(e_{i+1}−y)/σ)`` (no cancellation of two values ≈ 1 in the upper tail);
    the normaliser is the sum of the bin masses (equal to the denominator above), clamped ≥ tiny.
    ``y`` is clipped to ``[v_min, v_max]`` (at an endpoint the target is a half-Gaussian, whose
    mean is biased inward). The paper recommends ``σ = 0.75 ς`` (``sigma_ratio``, ς the bin
    width); ``sigma`` overrides it.

    Args:
      targets: floating ``[...]`` scalar regression targets.
      v_min, v_max: support bounds (python numbers).
      num_bins: m.
      sigma: Gaussian standard deviation ``> 0``; default ``sigma_ratio · ς``.
      sigma_ratio: σ/ς when ``sigma`` is None.

    Returns:
      ``[..., m]`` probabilities (float32, or float64 for float64 targets).

    References:
      J. Farebrother et al., "Stop Regressing: Training Value Functions via Classification for
      Scalable Deep RL", ICML 2024, arXiv:2403.03950; E. Imani and M. White, "Improving
      Regression Performance with Distributional Losses", ICML 2018, arXiv:1806.04613.

    Example:
      >>> import jax.numpy as jnp
      >>> p = hl_gauss_probs(jnp.array(4.3), v_min=0.0, v_max=10.0, num_bins=10)
      >>> [round(v, 3) for v in p.tolist()]
      [0.0, 0.001, 0.04, 0.303, 0.48, 0.164, 0.012, 0.0, 0.0, 0.0]
    """
    _check_support(v_min, v_max, num_bins)
    width = (v_max - v_min) / num_bins
    if sigma is None:
        require_positive(sigma_ratio, "sigma_ratio")
        sigma = sigma_ratio * width
    require_positive(sigma, "sigma")
    y = jnp.clip(_targets(targets), v_min, v_max)
    edges = bin_edges(v_min, v_max, num_bins, y.dtype)
    z = (edges - y[..., None]) / sigma  # [..., m+1]
    lo, hi = z[..., :-1], z[..., 1:]
    cdf = jax.scipy.special.ndtr
    upper = lo > 0  # bin entirely above y: mirror
    mass = jnp.where(upper, cdf(-lo) - cdf(-hi), cdf(hi) - cdf(lo))
    mass = jnp.maximum(mass, 0.0)
    total = jnp.sum(mass, axis=-1, keepdims=True)
    return mass / jnp.maximum(total, jnp.finfo(y.dtype).tiny)


def two_hot_probs(
    targets: ArrayLike,
    *,
    v_min: float | None = None,
    v_max: float | None = None,
    num_bins: int | None = None,
    support: ArrayLike | None = None,
) -> jax.Array:
    r"""Two-hot target: linear interpolation of ``y`` between its two neighbouring atoms.

    With atoms ``c_0 < … < c_{m−1}`` (uniform bin centers from ``v_min, v_max, num_bins``, or an
    explicit increasing ``support``) and ``y`` clipped to ``[c_0, c_{m−1}]``, for
    ``c_i ≤ y < c_{i+1}``:

    .. math:: p_i = \frac{c_{i+1} - y}{c_{i+1} - c_i},\qquad p_{i+1} = \frac{y - c_i}{c_{i+1} - c_i},

    zeros elsewhere. The expectation ``Σ p_i c_i`` recovers ``y`` exactly inside the support.
    Value transforms ``h(y)`` (MuZero) are applied by the caller before.

    Args:
      targets: floating ``[...]``.
      v_min, v_max, num_bins: uniform support (bin centers), or
      support: explicit increasing atoms ``[m]``.

    Returns:
      ``[..., m]`` probabilities.

    Example:
      >>> import jax.numpy as jnp
      >>> two_hot_probs(jnp.array(4.3), v_min=0.0, v_max=10.0, num_bins=10).round(3)
      Array([0. , 0. , 0. , 0.2, 0.8, 0. , 0. , 0. , 0. , 0. ], dtype=float32)
    """
    y = _targets(targets)
    c = _atoms(support, v_min, v_max, num_bins, y.dtype)
    return _two_hot(y, c)


def _two_hot(y: jax.Array, c: jax.Array) -> jax.Array:
    m = c.shape[0]
    if m == 1:
        return jnp.ones_like(y)[..., None]
    y = jnp.clip(y, c[0], c[-1])
    # searchsorted(c, y, side="right") as a count of the atoms ≤ y: elementwise in y, so a
    # sharded y (Explicit mesh) needs no resharding; the support is small
    i = jnp.clip(jnp.sum(c <= y[..., None], axis=-1) - 1, 0, m - 2)
    # c[i], c[i + 1] as selects over the (replicated) support: a gather of a replicated array
    # at sharded indices has no unambiguous sharding on an Explicit mesh
    at = jnp.arange(m) == i[..., None]
    lo = jnp.sum(jnp.where(at, c, 0.0), axis=-1)
    hi = jnp.sum(jnp.where(jnp.roll(at, 1, axis=-1), c, 0.0), axis=-1)
    w_hi = (y - lo) / (hi - lo)
    w_lo = 1.0 - w_hi
    return jax.nn.one_hot(i, m, dtype=y.dtype) * w_lo[..., None] + jax.nn.one_hot(
        i + 1, m, dtype=y.dtype
    ) * w_hi[..., None]


def categorical_projection(
    atom_values: ArrayLike,
    atom_probs: ArrayLike,
    *,
    v_min: float | None = None,
    v_max: float | None = None,
    num_bins: int | None = None,
    support: ArrayLike | None = None,
) -> jax.Array:
    r"""C51 categorical projection of a distribution onto fixed atoms (Bellemare et al. 2017).

    A target distribution puts mass ``q_j`` on (arbitrary) values ``T z_j`` — e.g. the TD target
    ``r + γ z_j``. Each value is clipped to the support and two-hot split onto the atoms:

    .. math:: \Pi(q)_i = \sum_j q_j\, \mathrm{twohot}(T z_j)_i .

    Mass is conserved, and the mean is conserved when no clipping occurs.
    :func:`two_hot_probs` is the one-atom special case.

    Args:
      atom_values: floating ``[..., n]`` values ``T z_j``.
      atom_probs: floating ``[..., n]`` probabilities ``q_j`` (same shape).
      v_min, v_max, num_bins: uniform support (bin centers), or
      support: explicit increasing atoms ``[m]``.

    Returns:
      ``[..., m]`` projected probabilities.

    References:
      M. G. Bellemare, W. Dabney, R. Munos, "A Distributional Perspective on Reinforcement
      Learning", ICML 2017, arXiv:1707.06887.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.linspace(-1.0, 1.0, 5)
      >>> p = categorical_projection(0.5 + 0.9 * z, jnp.full(5, 0.2), support=z)
      >>> [round(v, 3) for v in p.tolist()]
      [0.0, 0.16, 0.22, 0.24, 0.38]
    """
    v = _targets(atom_values, "atom_values")
    require_floating(atom_probs, "atom_probs")
    q = jnp.asarray(atom_probs)
    if q.shape != v.shape:
        raise ValueError(f"`atom_probs` must have the shape of `atom_values` {v.shape}, got {q.shape}.")
    if v.ndim < 1:
        raise ValueError("`atom_values` must have an atom axis (rank ≥ 1).")
    dtype = jnp.promote_types(v.dtype, compute_dtype(q.dtype))
    c = _atoms(support, v_min, v_max, num_bins, dtype)
    th = _two_hot(v.astype(dtype), c)  # [..., n, m]
    return jnp.einsum("...n,...nm->...m", q.astype(dtype), th)


# --------------------------------------------------------------------------------------------
# readout and losses
# --------------------------------------------------------------------------------------------


def bins_to_value(
    logits: ArrayLike,
    *,
    v_min: float | None = None,
    v_max: float | None = None,
    support: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Expected-value readout ``ŷ = Σ_i softmax(logits)_i c_i``.

    ``c`` are the uniform bin centers of ``[v_min, v_max]`` (``m`` = size of the class axis) or
    an explicit ``support``. Computed from a masked log-softmax (no overflow for large logits).

    Args:
      logits: floating ``[..., m]`` (class axis ``axis``).
      v_min, v_max: uniform support bounds, or
      support: explicit atoms ``[m]``.
      axis: class axis.

    Returns:
      ``[...]`` predicted values.

    Example:
      >>> import jax.numpy as jnp
      >>> p = two_hot_probs(jnp.array(4.3), v_min=0.0, v_max=10.0, num_bins=10)
      >>> round(float(bins_to_value(jnp.log(p), v_min=0.0, v_max=10.0)), 5)
      4.3
    """
    require_floating(logits, "logits")
    x = jnp.asarray(logits)
    if x.ndim < 1:
        raise ValueError("`logits` must have a bin axis; got a scalar.")
    x = jnp.moveaxis(x, axis, -1)
    x = x.astype(compute_dtype(x.dtype))
    m = x.shape[-1]
    if support is None:
        c = _atoms(None, v_min, v_max, m, x.dtype)
    else:
        c = _atoms(support, v_min, v_max, None, x.dtype)
        if c.shape[0] != m:
            raise ValueError(f"`support` has {c.shape[0]} atoms but `logits` has {m} bins.")
    # the shared log-softmax: NaN propagates, −inf is probability 0, +inf takes the mass
    p = jnp.exp(_log_softmax(Prepared(x, jnp.zeros(x.shape[:-1], jnp.int32), False, None, None, m, x.dtype)))
    return jnp.sum(p * c, axis=-1)


def _categorical_ce(logits, probs, axis, where):
    """Cross-entropy of ``logits`` against target ``probs [..., m]`` (last axis) via ``_core``."""
    probs = jax.lax.stop_gradient(jnp.moveaxis(probs, -1, axis))
    p = prepare(logits, probs, axis=axis, where=where, allow_int=False)
    return finalize(p, expect(p, -log_softmax(p)))


def _check_batch(logits: ArrayLike, targets: jax.Array, axis: int) -> None:
    require_floating(logits, "logits")
    shape = jnp.shape(logits)
    if len(shape) < 1:
        raise ValueError("`logits` must have a bin axis; got a scalar.")
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"`axis`={axis} is out of range for `logits` of rank {len(shape)}.")
    batch = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    if targets.shape != batch:
        raise ValueError(
            f"`targets` must have shape {batch} (the shape of `logits` {shape} without the bin "
            f"axis), got {targets.shape}."
        )


def hl_gauss_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    v_min: float,
    v_max: float,
    sigma: float | None = None,
    sigma_ratio: float = 0.75,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""HL-Gauss cross-entropy ``−Σ_i p_i(y) log softmax(logits)_i`` per example.

    ``p(y)`` is :func:`hl_gauss_probs` on ``m`` = size of the bin axis equal bins of
    ``[v_min, v_max]`` (held constant: ``stop_gradient``). Read predictions out with
    :func:`bins_to_value`. The minimum over logits is the entropy of ``p(y)``, not 0.

    Args:
      logits: floating ``[..., m]``.
      targets: floating ``[...]`` regression targets (clipped to the support).
      v_min, v_max: support bounds.
      sigma: Gaussian std; default ``sigma_ratio · ς`` (paper: σ/ς = 0.75).
      sigma_ratio: σ/ς when ``sigma`` is None.
      axis: bin axis of ``logits``.
      where: optional bool mask, per example ``[...]`` or per bin.

    Returns:
      Per-example losses ``[...]``.

    References:
      J. Farebrother et al., "Stop Regressing", ICML 2024, arXiv:2403.03950.

    Example:
      >>> import jax.numpy as jnp
      >>> logits = jnp.zeros((2, 10))
      >>> hl_gauss_loss(logits, jnp.array([4.3, 9.0]), v_min=0.0, v_max=10.0).round(4)
      Array([2.3026, 2.3026], dtype=float32)
    """
    y = _targets(targets)
    _check_batch(logits, y, axis)
    m = jnp.shape(logits)[axis]
    probs = hl_gauss_probs(y, v_min=v_min, v_max=v_max, num_bins=m, sigma=sigma, sigma_ratio=sigma_ratio)
    return _categorical_ce(logits, probs.astype(compute_dtype(jnp.result_type(logits))), axis, where)


def two_hot_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    v_min: float | None = None,
    v_max: float | None = None,
    support: ArrayLike | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Two-hot cross-entropy ``−Σ_i p_i(y) log softmax(logits)_i`` per example.

    ``p(y)`` is :func:`two_hot_probs` on the uniform bin centers of ``[v_min, v_max]`` (``m`` =
    size of the bin axis) or on an explicit ``support``.

    Args:
      logits: floating ``[..., m]``.
      targets: floating ``[...]``.
      v_min, v_max: uniform support bounds, or
      support: explicit increasing atoms ``[m]``.
      axis: bin axis of ``logits``.
      where: optional bool mask, per example ``[...]`` or per bin.

    Returns:
      Per-example losses ``[...]``.

    References:
      J. Farebrother et al., "Stop Regressing", ICML 2024, arXiv:2403.03950; J. Schrittwieser
      et al., "Mastering Atari, Go, Chess and Shogi by Planning with a Learned Model" (MuZero),
      Nature 2020, arXiv:1911.08265.

    Example:
      >>> import jax.numpy as jnp
      >>> p = two_hot_probs(jnp.array([4.3]), v_min=0.0, v_max=10.0, num_bins=10)
      >>> two_hot_loss(jnp.log(p + 1e-30), jnp.array([4.3]), v_min=0.0, v_max=10.0).round(4)
      Array([0.5004], dtype=float32)
    """
    y = _targets(targets)
    _check_batch(logits, y, axis)
    m = jnp.shape(logits)[axis]
    if support is None:
        probs = two_hot_probs(y, v_min=v_min, v_max=v_max, num_bins=m)
    else:
        probs = two_hot_probs(y, support=support)
        if probs.shape[-1] != m:
            raise ValueError(f"`support` has {probs.shape[-1]} atoms but `logits` has {m} bins.")
    return _categorical_ce(logits, probs.astype(compute_dtype(jnp.result_type(logits))), axis, where)
