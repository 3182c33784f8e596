"""Poincaré-ball primitives and the hyperbolic multinomial logistic regression (Ganea et al., 2018).

Closed-form building blocks of hyperbolic losses on the Poincaré ball
``𝔻_c = {x : c‖x‖² < 1}`` of curvature ``−c`` (``c > 0``):

* :func:`poincare_expmap0` — the exponential map at the origin (Euclidean features → ball);
* :func:`poincare_distance` — the geodesic distance;
* :func:`hyperbolic_mlr_logits` — the logits of the hyperbolic MLR (gyroplanes through ``p_k``
  with normals ``a_k``);
* :func:`hyperbolic_cross_entropy_loss` — cross-entropy on those logits.

The one-class losses of Hyp-OC (Hyp-PC, Hyp-CE) built on these primitives are in
:mod:`lossjax.losses.hyperbolic_one_class`.

Points on or outside the ball are outside the model's domain: the distance and the logits there are
NaN (never silently clipped). :func:`poincare_expmap0` maps any vector strictly inside the
ball (its radius is capped at ``(1 − 10⁻⁵)/√c``, a numerical guard).

Reference: O.-E. Ganea, G. Bécigneul, T. Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018
(§2: Möbius addition, Eq. 4 distance, Lemma 2 exponential map; §3.1: hyperbolic MLR, Eq. 25).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    compute_dtype,
    expect,
    finalize,
    margin_lse,
    nll_from_lu,
    prepare,
    require_floating,
    require_positive,
)

__all__ = [
    "poincare_expmap0",
    "poincare_distance",
    "hyperbolic_mlr_logits",
    "hyperbolic_cross_entropy_loss",
]


def _vec(x: ArrayLike, name: str) -> jax.Array:
    require_floating(x, name)
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"`{name}` must have a feature axis (rank ≥ 1), got a scalar.")
    return x


def _safe_norm(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(‖v‖, v ≠ 0)`` over the last axis with a zero (not NaN) gradient at ``v = 0``; NaN propagates."""
    sq = jnp.sum(v * v, axis=-1)
    nz = sq != 0
    return jnp.where(nz, jnp.sqrt(jnp.where(nz, sq, 1.0)), 0.0), nz


_BALL_EPS = 1e-5


def poincare_expmap0(v: ArrayLike, *, c: float = 1.0, clip_r: float | None = None) -> jax.Array:
    r"""Exponential map at the origin of the Poincaré ball (Ganea et al., 2018, Lemma 2).

    .. math::
        \exp_0^c(v) = \tanh(\sqrt c\,\|v\|)\,\frac{v}{\sqrt c\,\|v\|}

    over the last axis, with the radius capped at ``(1 − 10⁻⁵)/√c`` so large features stay
    strictly inside the ball; ``exp₀(0) = 0``. The norm is formed overflow-free (scaled by
    ``max |v_i|``), so ``±3e38`` or ``±inf`` features map to their limit direction.

    ``clip_r`` applies the Euclidean feature clipping of Guo et al. ("Clipped Hyperbolic
    Classifiers Are Super-Hyperbolic Classifiers", CVPR 2022, Sec. 4) first:
    ``v ← min(1, r/‖v‖)·v``, which keeps points away from the boundary where the gradient of the
    hyperbolic layers vanishes (Hyp-OC uses ``r = 2``).

    Args:
      v: floating ``[..., d]`` Euclidean (tangent) vectors.
      c: curvature magnitude ``c > 0``.
      clip_r: optional Euclidean norm bound ``r > 0`` (no clipping when ``None``).

    Returns:
      ``[..., d]`` points of the ball, in the compute dtype (float32, or float64).

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(u), 5) for u in poincare_expmap0(jnp.array([0.3, 0.4]))]
      [0.27727, 0.36969]
    """
    require_positive(c, "c")
    if clip_r is not None:
        require_positive(clip_r, "clip_r")
    v = _vec(v, "v")
    v = v.astype(compute_dtype(v.dtype))
    sc = math.sqrt(c)
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(v), axis=-1, keepdims=True))
    big = jnp.isinf(m)
    m_ok = jnp.where(big | (m == 0) | jnp.isnan(m), 1.0, m)
    # v/m, pre-scaled by 2⁻⁶⁴ for huge m (XLA divides via the reciprocal, which would flush to 0)
    pre = jnp.where(m_ok > 2.0**64, 2.0**-64, 1.0).astype(v.dtype)
    u = jnp.where(big, jnp.where(jnp.isinf(v), jnp.sign(v), 0.0), (v * pre) / (m_ok * pre))
    un, nz = _safe_norm(u)
    n = jnp.where(big[..., 0], jnp.inf, m_ok[..., 0] * un)  # ‖v‖
    if clip_r is not None:
        n = jnp.minimum(n, clip_r)  # the direction u/‖u‖ is kept below
    r = jnp.minimum(jnp.tanh(sc * n), 1.0 - _BALL_EPS)
    # exp0(v) = u · r/(√c ‖u‖); the ratio tanh(√c n)/(√c n) → 1 as v → 0 (identity Jacobian)
    scale = jnp.where(nz, r / (sc * jnp.where(nz, un, 1.0)), m_ok[..., 0])
    return u * scale[..., None]


def poincare_distance(x: ArrayLike, y: ArrayLike, *, c: float = 1.0) -> jax.Array:
    r"""Geodesic distance on the Poincaré ball (Ganea et al., 2018, Eq. 4).

    .. math::
        d_c(x, y) = \frac{2}{\sqrt c}\,\operatorname{artanh}\big(\sqrt c\,\|(-x)\oplus_c y\|\big)
                  = \frac{2}{\sqrt c}\,\operatorname{arsinh}
                    \frac{\sqrt c\,\|x - y\|}{\sqrt{(1 - c\|x\|^2)(1 - c\|y\|^2)}}

    computed with the second (equivalent) form: no cancellation near the boundary and a finite
    (zero) gradient at ``x = y``. ``c → 0`` gives ``2‖x − y‖``. A point on or outside the ball
    gives NaN.

    Args:
      x, y: floating ``[..., d]`` points of the ball (broadcast against each other).
      c: curvature magnitude ``c > 0``.

    Returns:
      ``[...]`` distances.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(poincare_distance(jnp.array([0.5, 0.0]), jnp.array([0.0, 0.0]))), 5)
      1.09861
    """
    require_positive(c, "c")
    x = _vec(x, "x")
    y = _vec(y, "y")
    dtype = compute_dtype(jnp.promote_types(x.dtype, y.dtype))
    x, y = x.astype(dtype), y.astype(dtype)
    sc = math.sqrt(c)
    diff, _ = _safe_norm(x - y)
    den = (1.0 - c * jnp.sum(x * x, -1)) * (1.0 - c * jnp.sum(y * y, -1))
    inside = den > 0
    arg = sc * diff / jnp.sqrt(jnp.where(inside, den, 1.0))
    d = (2.0 / sc) * jnp.arcsinh(arg)
    return jnp.where(inside | jnp.isnan(den), d, jnp.nan).astype(dtype)


def _mobius_add(x: jax.Array, y: jax.Array, c: float) -> tuple[jax.Array, jax.Array]:
    """``x ⊕_c y`` (Ganea et al., 2018, Eq. 3) and its squared norm over the last axis."""
    xy = jnp.sum(x * y, -1, keepdims=True)
    x2 = jnp.sum(x * x, -1, keepdims=True)
    y2 = jnp.sum(y * y, -1, keepdims=True)
    num = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
    den = 1.0 + 2.0 * c * xy + c * c * x2 * y2
    z = num / den
    return z, jnp.sum(z * z, -1)


def hyperbolic_mlr_logits(
    x: ArrayLike,
    offsets: ArrayLike,
    normals: ArrayLike,
    *,
    c: float = 1.0,
) -> jax.Array:
    r"""Logits of the hyperbolic multinomial logistic regression (Ganea et al., 2018, Eq. 25).

    For class ``k`` with offset ``p_k ∈ 𝔻_c`` and normal ``a_k`` (``λ_p = 2/(1 − c‖p‖²)``,
    ``z_k = (−p_k) ⊕_c x``):

    .. math::
        \zeta_k(x) = \frac{\lambda_{p_k}\|a_k\|}{\sqrt c}\,
            \operatorname{arsinh}\frac{2\sqrt c\,\langle z_k, a_k\rangle}
                                      {(1 - c\|z_k\|^2)\,\|a_k\|},

    the signed distance of ``x`` to the gyroplane ``H̃_{a_k, p_k}`` times ``λ_{p_k}‖a_k‖``
    (Theorem 5); ``softmax(ζ)`` is the class posterior. ``c → 0`` gives the Euclidean MLR
    ``4⟨x − p_k, a_k⟩``. ``a_k = 0`` gives ``ζ_k = 0``.

    Args:
      x: floating ``[..., d]`` points of the ball (e.g. :func:`poincare_expmap0` of features).
      offsets: floating ``[K, d]`` gyroplane offsets ``p_k`` in the ball.
      normals: floating ``[K, d]`` normals ``a_k`` (tangent vectors at ``p_k``).
      c: curvature magnitude ``c > 0``.

    Returns:
      ``[..., K]`` logits (NaN for a point or offset outside the ball).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.3, 0.1]])
      >>> p = jnp.zeros((2, 2))
      >>> a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> [round(float(u), 5) for u in hyperbolic_mlr_logits(x, p, a)[0]]
      [1.25029, 0.44087]
    """
    require_positive(c, "c")
    x = _vec(x, "x")
    p = _vec(offsets, "offsets")
    a = _vec(normals, "normals")
    if p.ndim != 2 or a.shape != p.shape:
        raise ValueError(f"`offsets` and `normals` must both have shape [K, d], got {p.shape} and {a.shape}.")
    if p.shape[1] != x.shape[-1]:
        raise ValueError(f"`offsets` feature size {p.shape[1]} does not match `x` ({x.shape[-1]}).")
    dtype = compute_dtype(jnp.result_type(x, p, a))
    x, p, a = x.astype(dtype), p.astype(dtype), a.astype(dtype)
    sc = math.sqrt(c)
    z, z2 = _mobius_add(-p, x[..., None, :], c)  # [..., K, d]
    an, anz = _safe_norm(a)  # [K]
    lam = 2.0 / (1.0 - c * jnp.sum(p * p, -1))  # [K]
    inner = jnp.sum(z * a, -1)  # [..., K]
    den = (1.0 - c * z2) * jnp.where(anz, an, 1.0)
    inside = (den > 0) & (lam > 0)
    arg = 2.0 * sc * inner / jnp.where(inside, den, 1.0)
    logit = lam * an / sc * jnp.arcsinh(arg)
    logit = jnp.where(anz, logit, 0.0)
    nan_in = jnp.isnan(den) | jnp.isnan(lam)
    return jnp.where(inside | nan_in, logit, jnp.nan)


def hyperbolic_cross_entropy_loss(
    x: ArrayLike,
    labels: ArrayLike,
    offsets: ArrayLike,
    normals: ArrayLike,
    *,
    c: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Cross-entropy of the hyperbolic MLR (Ganea et al., 2018, §3.1).

    .. math::
        \ell(x, y) = -\log\operatorname{softmax}_y\big(\zeta(x)\big)

    with ``ζ`` from :func:`hyperbolic_mlr_logits`. Integer labels ``[...]`` or probability
    vectors ``[..., K]``; per-example output; the package's label rules (an out-of-range integer
    label raises eagerly and gives NaN under ``jit``).

    Args:
      x: floating ``[..., d]`` points of the ball.
      labels: integer ``[...]`` or floating ``[..., K]``.
      offsets, normals: floating ``[K, d]`` (see :func:`hyperbolic_mlr_logits`).
      c: curvature magnitude ``c > 0``.
      where: optional bool mask ``[...]`` (per example) or ``[..., K]`` (per class).

    Returns:
      ``[...]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.3, 0.1]])
      >>> p = jnp.zeros((2, 2))
      >>> a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> hyperbolic_cross_entropy_loss(x, jnp.array([0]), p, a).round(5)
      Array([0.36819], dtype=float32)
    """
    xa = _vec(x, "x")
    if where is not None:
        # masked rows are replaced before any arithmetic, so a NaN there reaches no gradient
        w = jnp.asarray(where)
        if w.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {w.dtype}.")
        row = w if w.shape == xa.shape[:-1] else jnp.any(w, axis=-1) if w.ndim == xa.ndim else None
        if row is None or row.shape != xa.shape[:-1]:
            raise ValueError(f"`where` must have shape {xa.shape[:-1]} or {xa.shape[:-1]} + (K,), got {w.shape}.")
        xa = jnp.where(row[..., None], xa, jnp.zeros((), xa.dtype))
    logits = hyperbolic_mlr_logits(xa, offsets, normals, c=c)
    p = prepare(logits, labels, axis=-1, where=where)
    return finalize(p, expect(p, nll_from_lu(margin_lse(p))))
