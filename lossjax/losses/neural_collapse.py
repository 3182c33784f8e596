"""Neural-collapse diagnostics NC1–NC4 (Papyan, Han & Donoho, PNAS 2020). Metrics, not losses.

Given penultimate features ``h_i`` with labels ``y_i`` and (optionally) the last-layer classifier
``W [C, d]``, ``b [C]``: class means ``μ_c``, global mean ``μ_G`` (the mean of the class means,
as in the paper's balanced setting), centred means ``M = [μ_c − μ_G]_c``.

* NC1 ``Tr(Σ_W Σ_B^†)/C`` — within-class variability relative to between-class spread;
* NC2 — class means form a simplex equiangular tight frame (equinorm, equiangular, and the
  matrix form ``‖MᵀM/‖MᵀM‖_F − (I − 11ᵀ/C)/√(C−1)‖_F``);
* NC3 ``‖Wᵀ/‖W‖_F − M/‖M‖_F‖_F²`` — self-duality of classifier and means;
* NC4 — fraction of samples whose classifier decision differs from the nearest class mean.

Every quantity goes to 0 under neural collapse. Everything is computed in float32 (float64 for
float64 features). Classes with no sample (after ``where``) are left out of every statistic.
Reference: V. Papyan, X. Y. Han, D. Donoho, "Prevalence of neural collapse during the terminal phase of
deep learning training", PNAS 2020.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import bool_mask, compute_dtype, require_floating, require_integer, require_rank

__all__ = ["NeuralCollapseMetrics", "neural_collapse"]

_HI = jax.lax.Precision.HIGHEST


class NeuralCollapseMetrics(NamedTuple):
    """Neural-collapse diagnostics (all scalars; 0 under exact collapse).

    Attributes:
      nc1: ``Tr(Σ_W Σ_B^†)/C``.
      nc2_equinorm: ``std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖``.
      nc2_equiangular: ``std_{c≠c'} cos(μ_c − μ_G, μ_c' − μ_G)``.
      nc2_max_angle: ``mean_{c≠c'} |cos + 1/(C−1)|``.
      nc2_etf: ``‖MᵀM/‖MᵀM‖_F − (I − 11ᵀ/C)/√(C−1)‖_F``.
      nc3: ``‖Wᵀ/‖W‖_F − M/‖M‖_F‖_F²`` (NaN when no classifier is given).
      nc4: fraction of samples with ``argmax(Wh + b) ≠ argmin_c ‖h − μ_c‖`` (NaN without W).
    """

    nc1: jax.Array
    nc2_equinorm: jax.Array
    nc2_equiangular: jax.Array
    nc2_max_angle: jax.Array
    nc2_etf: jax.Array
    nc3: jax.Array
    nc4: jax.Array


def neural_collapse(
    features: ArrayLike,
    labels: ArrayLike,
    weights: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    num_classes: int,
    where: ArrayLike | None = None,
) -> NeuralCollapseMetrics:
    r"""NC1–NC4 diagnostics of Papyan, Han & Donoho (PNAS 2020).

    .. math::
        \Sigma_W = \tfrac1N\sum_{i}(h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top,\quad
        \Sigma_B = \tfrac1C\sum_c(\mu_c-\mu_G)(\mu_c-\mu_G)^\top,\quad
        \mathrm{NC1} = \tfrac1C\operatorname{Tr}(\Sigma_W\Sigma_B^\dagger),

    .. math::
        \mathrm{NC2}_{etf} = \Bigl\lVert \frac{M^\top M}{\lVert M^\top M\rVert_F}
           - \frac{I - \mathbf{1}\mathbf{1}^\top/C}{\sqrt{C-1}}\Bigr\rVert_F,\qquad
        \mathrm{NC3} = \Bigl\lVert \frac{W^\top}{\lVert W\rVert_F} - \frac{M}{\lVert M\rVert_F}\Bigr\rVert_F^2,

    NC4 = mean ``[argmax_c (W h + b)_c ≠ argmin_c ‖h − μ_c‖]``. ``Σ_B^†`` is the Moore–Penrose
    pseudo-inverse (``Σ_B`` has rank ≤ C − 1). ``μ_G`` is the mean of the class means (equal to
    the sample mean for balanced classes). The pseudo-inverse uses a relative cutoff, so NC1 is
    meaningful only in a precision where ``Σ_B``'s non-zero eigenvalues are resolved; use float64
    features for near-collapsed models.

    Not differentiable by design (``argmax``, ``pinv``); jit-able with a static ``num_classes``.

    Args:
      features: floating ``[N, d]`` penultimate features.
      labels: integer ``[N]`` in ``[0, C)``.
      weights: optional classifier ``[C, d]`` (a Flax ``Dense`` kernel is ``[d, C]``: pass
        ``kernel.T``).
      bias: optional ``[C]``.
      num_classes: C ≥ 2 (static).
      where: optional bool sample mask ``[N]``.

    Returns:
      :class:`NeuralCollapseMetrics`.

    References:
      V. Papyan, X. Y. Han, D. L. Donoho, "Prevalence of neural collapse during the terminal
      phase of deep learning training", PNAS 117(40), 2020, arXiv:2008.08186.

    Example:
      >>> import jax.numpy as jnp
      >>> mu = jnp.eye(3) - 1 / 3                     # a simplex ETF of 3 classes in R^3
      >>> h = jnp.repeat(mu, 2, axis=0)               # two noise-free samples per class
      >>> nc = neural_collapse(h, jnp.array([0, 0, 1, 1, 2, 2]), mu, num_classes=3)
      >>> [round(float(v), 5) for v in nc]
      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int ≥ 2, got {num_classes!r}.")
    require_floating(features, "features")
    h = jnp.asarray(features)
    require_rank(h, 2, "features")
    dtype = compute_dtype(h.dtype)
    h = h.astype(dtype)
    n, d = h.shape
    y = jnp.asarray(labels)
    require_integer(y, "labels")
    if y.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},), got {y.shape}.")
    valid = bool_mask(where, (n,))
    c_ = num_classes
    y = jnp.clip(y, 0, c_ - 1)
    wt = valid.astype(dtype)

    counts = jax.ops.segment_sum(wt, y, num_segments=c_)
    present = counts > 0
    n_cls = jnp.maximum(jnp.sum(present), 1).astype(dtype)
    mu = jax.ops.segment_sum(h * wt[:, None], y, num_segments=c_) / jnp.maximum(counts, 1.0)[:, None]
    mu_g = jnp.sum(jnp.where(present[:, None], mu, 0.0), axis=0) / n_cls
    m = jnp.where(present[:, None], mu - mu_g, 0.0)  # [C, d] rows μ_c − μ_G

    # NC1
    dev = (h - mu[y]) * wt[:, None]
    sigma_w = jnp.matmul(dev.T, dev, precision=_HI) / jnp.maximum(jnp.sum(wt), 1.0)
    sigma_b = jnp.matmul(m.T, m, precision=_HI) / n_cls
    nc1 = jnp.trace(jnp.matmul(sigma_w, jnp.linalg.pinv(sigma_b, hermitian=True), precision=_HI)) / n_cls

    # NC2
    norms = jnp.linalg.norm(m, axis=-1)
    mean_norm = jnp.sum(jnp.where(present, norms, 0.0)) / n_cls
    var_norm = jnp.sum(jnp.where(present, (norms - mean_norm) ** 2, 0.0)) / n_cls
    nc2_equinorm = jnp.sqrt(var_norm) / jnp.maximum(mean_norm, jnp.finfo(dtype).tiny)
    unit = m / jnp.maximum(norms, jnp.finfo(dtype).tiny)[:, None]
    cos = jnp.matmul(unit, unit.T, precision=_HI)
    off = present[:, None] & present[None, :] & ~jnp.eye(c_, dtype=bool)
    n_off = jnp.maximum(jnp.sum(off), 1).astype(dtype)
    mean_cos = jnp.sum(jnp.where(off, cos, 0.0)) / n_off
    nc2_equiangular = jnp.sqrt(jnp.sum(jnp.where(off, (cos - mean_cos) ** 2, 0.0)) / n_off)
    nc2_max_angle = jnp.sum(jnp.where(off, jnp.abs(cos + 1.0 / (n_cls - 1.0)), 0.0)) / n_off
    g = jnp.matmul(m, m.T, precision=_HI)  # MᵀM in the paper's d×C convention
    g = g / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(dtype).tiny)
    pp = (present[:, None] & present[None, :]).astype(dtype)
    etf = (jnp.eye(c_, dtype=dtype) - pp / n_cls) * pp / jnp.sqrt(jnp.maximum(n_cls - 1.0, 1.0))
    nc2_etf = jnp.linalg.norm(g - etf)

    nan = jnp.array(jnp.nan, dtype)
    if weights is None:
        nc3 = nc4 = nan
    else:
        require_floating(weights, "weights")
        w = jnp.asarray(weights)
        if w.shape != (c_, d):
            raise ValueError(f"`weights` must have shape ({c_}, {d}) = [C, d], got {w.shape}.")
        w = w.astype(dtype)
        wp = jnp.where(present[:, None], w, 0.0)
        wn = wp / jnp.maximum(jnp.linalg.norm(wp), jnp.finfo(dtype).tiny)
        mn = m / jnp.maximum(jnp.linalg.norm(m), jnp.finfo(dtype).tiny)
        nc3 = jnp.sum((wn - mn) ** 2)
        scores = jnp.matmul(h, w.T, precision=_HI)
        if bias is not None:
            require_floating(bias, "bias")
            b = jnp.asarray(bias)
            if b.shape != (c_,):
                raise ValueError(f"`bias` must have shape ({c_},), got {b.shape}.")
            scores = scores + b.astype(dtype)
        scores = jnp.where(present[None, :], scores, -jnp.inf)
        d2 = jnp.sum((h[:, None, :] - mu[None, :, :]) ** 2, axis=-1)
        d2 = jnp.where(present[None, :], d2, jnp.inf)
        mismatch = (jnp.argmax(scores, axis=-1) != jnp.argmin(d2, axis=-1)).astype(dtype)
        nc4 = jnp.sum(mismatch * wt) / jnp.maximum(jnp.sum(wt), 1.0)
    return NeuralCollapseMetrics(nc1, nc2_equinorm, nc2_equiangular, nc2_max_angle, nc2_etf, nc3, nc4)
