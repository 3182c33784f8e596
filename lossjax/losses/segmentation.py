"""Set-overlap segmentation losses for hard and soft (probability or signed) labels.

Inputs are channels-last probability maps ``probs [B, *spatial, C]`` (``axis`` is the class axis;
``from_logits=True`` applies a softmax, or a sigmoid when ``C = 1``) and targets that are either
integer class maps ``[B, *spatial]`` (one-hot internally; with ``C = 1`` the integer map is the
binary foreground mask) or soft maps of the shape of ``probs``. ``where`` is a per-pixel keep
mask ``[B, *spatial]`` (ignored pixels contribute to no sum).

Aggregation: ``aggregate="image"`` (default) forms the ratios per image and class and returns one
value per image ``[B]`` (MONAI ``batch=False``); ``aggregate="dataset"`` sums the statistics over
the whole batch first and returns a scalar (JDTLoss ``mIoUD``, MONAI ``batch=True``).

Losses:

* :func:`jaccard_metric_loss`, :func:`dice_semimetric_loss` — Wang, Ning & Blaschko, NeurIPS 2023
  / MICCAI 2023 (L1 cardinalities; metrics on soft labels);
* :func:`sauna_jaccard_loss`, :func:`stable_focal_l1_loss` — SAUNA, Dang et al., WACV 2025
  (signed soft labels in ``[−1, 1]``);
* :func:`soft_dice_loss`, :func:`tversky_loss`, :func:`generalized_dice_loss` (Sudre et al. 2017);
* :func:`cl_dice_loss` (+ :func:`soft_skeleton`) — Shit et al., CVPR 2021.

Nothing here is exponential; sums are accumulated in float32 (float64 for float64 input).
References: each function's docstring; frozen values and the MONAI oracles in
``docs/design/test_vectors.md`` §3.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    compute_dtype,
    require_floating,
    require_nonnegative,
    require_option,
    require_positive,
    require_range,
)

__all__ = [
    "jaccard_metric_loss",
    "dice_semimetric_loss",
    "sauna_jaccard_loss",
    "stable_focal_l1_loss",
    "soft_dice_loss",
    "tversky_loss",
    "generalized_dice_loss",
    "soft_skeleton",
    "cl_dice_loss",
]

_AGGREGATES = ("image", "dataset")


# --------------------------------------------------------------------------------------------
# canonicalisation
# --------------------------------------------------------------------------------------------


class _Seg(NamedTuple):
    x: jax.Array  # [B, *spatial, C] probabilities (masked pixels set to 0)
    t: jax.Array  # [B, *spatial, C] targets (masked pixels set to 0)
    m: jax.Array  # [B, *spatial, 1] bool keep mask
    soft: bool
    dtype: jnp.dtype


def _prepare_seg(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    axis: int,
    where: ArrayLike | None,
    from_logits: bool,
) -> _Seg:
    require_floating(probs, "probs")
    x = jnp.asarray(probs)
    if x.ndim < 2:
        raise ValueError(f"`probs` must have a batch and a class axis (rank ≥ 2), got shape {x.shape}.")
    if not -x.ndim <= axis < x.ndim or axis % x.ndim == 0:
        raise ValueError(f"`axis`={axis} must name a non-batch axis of `probs` (rank {x.ndim}).")
    dtype = compute_dtype(x.dtype)
    x = jnp.moveaxis(x, axis, -1).astype(dtype)
    c = x.shape[-1]
    batch_shape = x.shape[:-1]
    if where is not None:
        wm = jnp.asarray(where)
        if wm.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {wm.dtype}.")
        if wm.shape != batch_shape:
            raise ValueError(f"`where` must have shape {batch_shape} (one flag per pixel), got {wm.shape}.")
        # double where: a masked pixel never reaches softmax/sigmoid, so a NaN there cannot
        # reach the gradient.
        x = jnp.where(wm[..., None], x, jnp.zeros((), dtype))
    if from_logits:
        x = jax.nn.sigmoid(x) if c == 1 else jax.nn.softmax(x, axis=-1)
    t = jnp.asarray(targets)
    if jnp.issubdtype(t.dtype, jnp.integer):
        if t.shape != batch_shape:
            raise ValueError(
                f"Integer `targets` must have shape {batch_shape} (`probs` {jnp.shape(probs)} "
                f"without the class axis), got {t.shape}."
            )
        if c == 1:
            t = (t > 0).astype(dtype)[..., None]
        else:
            t = jax.nn.one_hot(t, c, dtype=dtype)
        soft = False
    elif jnp.issubdtype(t.dtype, jnp.floating):
        if t.shape != jnp.shape(probs):
            raise ValueError(
                f"Soft `targets` must have the shape of `probs` {jnp.shape(probs)}, got {t.shape}."
            )
        t = jnp.moveaxis(t, axis, -1).astype(dtype)
        if where is not None:
            t = jnp.where(jnp.asarray(where)[..., None], t, jnp.zeros((), dtype))
        soft = True
    else:
        raise TypeError(f"`targets` must be integer or floating, got {t.dtype}.")
    if where is None:
        m = jnp.ones(batch_shape + (1,), bool)
    else:
        m = jnp.asarray(where)
        if m.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {m.dtype}.")
        if m.shape != batch_shape:
            raise ValueError(f"`where` must have shape {batch_shape} (one flag per pixel), got {m.shape}.")
        m = m[..., None]
    x = jnp.where(m, x, 0.0)
    t = jnp.where(m, t, 0.0)
    return _Seg(x, t, m, soft, dtype)


def _sum_axes(ndim: int, aggregate: str) -> tuple[int, ...]:
    """Axes summed before the ratio: spatial (image) or batch + spatial (dataset); class kept."""
    start = 0 if aggregate == "dataset" else 1
    return tuple(range(start, ndim - 1))


def _class_mean(loss: jax.Array, active: jax.Array) -> jax.Array:
    """Mean over the active classes (last axis); 0 with zero gradient when none is active."""
    n = jnp.sum(active, axis=-1)
    return jnp.where(n > 0, jnp.sum(jnp.where(active, loss, 0.0), axis=-1) / jnp.maximum(n, 1), 0.0)


def _class_select(c: int, include_background: bool) -> jax.Array:
    keep = jnp.ones((c,), bool)
    if not include_background and c > 1:
        keep = keep.at[0].set(False)
    return keep


def _out(loss: jax.Array, s: _Seg) -> jax.Array:
    return loss.astype(s.dtype)


# --------------------------------------------------------------------------------------------
# Jaccard metric loss (and its Dice semimetric special case)
# --------------------------------------------------------------------------------------------


def jaccard_metric_loss(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    smooth: float = 1.0,
    gamma: float = 1.0,
    log_loss: bool = False,
    aggregate: str = "image",
    classes: str | None = None,
    threshold: float = 0.01,
    from_logits: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Jaccard metric loss (JML) with L1 cardinalities (Wang, Ning & Blaschko, NeurIPS 2023).

    Per class (sums over the aggregation set, ``‖·‖`` the L1 norm):

    .. math::
        TP = \tfrac12(\lVert x\rVert + \lVert y\rVert - \lVert x-y\rVert),\quad
        FP = \lVert x\rVert - TP,\quad FN = \lVert y\rVert - TP,\qquad
        \ell_c = \Bigl(1 - \frac{TP + s}{TP + \alpha FP + \beta FN + s}\Bigr)^{\gamma}

    (``−log`` of the ratio with ``log_loss=True``). For ``x, y ≥ 0`` and α=β=1, ``s=0`` this is
    the weighted-Jaccard distance ``1 − Σmin(x,y)/Σmax(x,y)``, a metric on ``[0,1]ⁿ`` that is
    0 iff ``x = y`` — also for soft labels, unlike the product soft Jaccard
    ``1 − Σxy/(Σx+Σy−Σxy)`` (equal for binary ``y``). α=β=½ is the Dice semimetric loss.
    The loss is the mean of ``ℓ_c`` over the active classes: ``classes="present"`` keeps classes
    whose target maximum over the aggregation set exceeds ``threshold``; ``"all"`` keeps all
    (default as in JDTLoss: "present" for integer targets, "all" for soft targets). No active
    class gives 0. Not exponential: ``|x−y|`` has subgradient 0 at ``x = y``.

    Defaults: ``smooth=1`` (the released configs; the JDTLoss class default is 1e-3).
    JDTLoss's default aggregation is over the dataset (``aggregate="dataset"`` here).

    Args:
      probs: floating ``[B, *spatial, C]`` probabilities (or logits with ``from_logits``).
      targets: integer ``[B, *spatial]`` or floating soft labels of the shape of ``probs``.
      alpha, beta: FP / FN weights ``≥ 0``.
      smooth: s ``≥ 0`` (with s=0 an empty class gives 0/0 — keep ``classes="present"``).
      gamma: focal exponent ``≥ 1``.
      log_loss: use ``−log(ratio)``.
      aggregate: ``"image"`` (returns ``[B]``) or ``"dataset"`` (returns a scalar).
      classes: ``"present"``, ``"all"`` or None (see above).
      threshold: presence threshold on the target maximum.
      from_logits: apply softmax (sigmoid for C=1) to ``probs``.
      axis: class axis of ``probs``.
      where: optional bool keep mask ``[B, *spatial]``.

    Returns:
      ``[B]`` per image, or a scalar for ``aggregate="dataset"``.

    References:
      Z. Wang, X. Ning, M. B. Blaschko, "Jaccard Metric Losses: Optimizing the Jaccard Index
      with Soft Labels", NeurIPS 2023, arXiv:2302.05666; Z. Wang, T. Popordanoska, J. Bertels,
      R. Lemmens, M. B. Blaschko, "Dice Semimetric Losses", MICCAI 2023, arXiv:2303.16296.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[0.2], [0.6], [0.9]]])   # [B=1, N=3, C=1]
      >>> y = jnp.array([[[0.1], [0.8], [0.5]]])
      >>> jaccard_metric_loss(x, y, smooth=0.0).round(6)   # 1 - 1.2/1.9
      Array([0.368421], dtype=float32)
    """
    require_nonnegative(alpha, "alpha")
    require_nonnegative(beta, "beta")
    require_nonnegative(smooth, "smooth")
    require_range(gamma, "gamma", low=1.0)
    require_nonnegative(threshold, "threshold")
    require_option(aggregate, _AGGREGATES, "aggregate")
    if classes is not None:
        require_option(classes, ("present", "all"), "classes")
    s = _prepare_seg(probs, targets, axis=axis, where=where, from_logits=from_logits)
    if classes is None:
        classes = "all" if s.soft else "present"
    ax = _sum_axes(s.x.ndim, aggregate)
    cx = jnp.sum(jnp.abs(s.x), axis=ax)
    cy = jnp.sum(jnp.abs(s.t), axis=ax)
    cd = jnp.sum(jnp.abs(s.x - s.t), axis=ax)
    tp = (cx + cy - cd) / 2
    fp = cx - tp
    fn = cy - tp
    den = tp + alpha * fp + beta * fn + smooth
    ok = den != 0  # den >= 0; NaN propagates
    ratio = jnp.where(ok, (tp + smooth) / jnp.where(ok, den, 1.0), 1.0)
    if log_loss:
        loss = -jnp.log(jnp.maximum(ratio, jnp.finfo(s.dtype).tiny))
    else:
        loss = 1.0 - ratio
    if gamma != 1.0:
        loss = jnp.power(jnp.maximum(loss, 0.0), gamma)
    if classes == "present":
        active = jnp.max(s.t, axis=ax) > threshold
    else:
        active = jnp.ones(loss.shape, bool)
    return _out(_class_mean(loss, active), s)


def dice_semimetric_loss(
    probs: ArrayLike, targets: ArrayLike, **kwargs
) -> jax.Array:
    r"""Dice semimetric loss ``1 − 2Σmin(x,y)/(Σx+Σy)`` = :func:`jaccard_metric_loss` with α=β=½.

    All keyword arguments of :func:`jaccard_metric_loss` except ``alpha``/``beta`` are accepted.

    References:
      Z. Wang et al., "Dice Semimetric Losses: Optimizing the Dice Score with Soft Labels",
      MICCAI 2023, arXiv:2303.16296.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[0.2], [0.6], [0.9]]])
      >>> y = jnp.array([[[0.1], [0.8], [0.5]]])
      >>> dice_semimetric_loss(x, y, smooth=0.0).round(6)   # 1 - 2.4/3.1
      Array([0.225806], dtype=float32)
    """
    for k in ("alpha", "beta"):
        if k in kwargs:
            raise TypeError(f"dice_semimetric_loss fixes `{k}`=0.5; use jaccard_metric_loss instead.")
    return jaccard_metric_loss(probs, targets, alpha=0.5, beta=0.5, **kwargs)


# --------------------------------------------------------------------------------------------
# SAUNA: signed soft labels
# --------------------------------------------------------------------------------------------


def _signed_pair(pred: ArrayLike, target: ArrayLike, where: ArrayLike | None, from_logits: bool):
    require_floating(pred, "pred")
    require_floating(target, "target")
    p = jnp.asarray(pred)
    g = jnp.asarray(target)
    if p.ndim < 1:
        raise ValueError("`pred` must have a batch axis (rank ≥ 1).")
    if g.shape != p.shape:
        raise ValueError(f"`target` must have the shape of `pred` {p.shape}, got {g.shape}.")
    dtype = compute_dtype(jnp.promote_types(p.dtype, g.dtype))
    p = p.astype(dtype)
    g = g.astype(dtype)
    if where is None:
        m = jnp.ones(p.shape, bool)
    else:
        m = jnp.asarray(where)
        if m.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {m.dtype}.")
        if m.shape != p.shape:
            raise ValueError(f"`where` must have the shape of `pred` {p.shape}, got {m.shape}.")
        # double where: masked entries are replaced before any arithmetic (NaN-safe gradient).
        p = jnp.where(m, p, jnp.zeros((), dtype))
        g = jnp.where(m, g, jnp.zeros((), dtype))
    if from_logits:
        p = jnp.tanh(p)
    return p, g, m, dtype


def sauna_jaccard_loss(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    smooth: float = 1e-8,
    aggregate: str = "image",
    combine: str = "joint",
    from_logits: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""SAUNA soft Jaccard loss for signed soft labels in ``[−1, 1]`` (Dang et al., WACV 2025).

    With ``u⁺ = relu(u)``, ``u⁻ = relu(−u)``:

    .. math::
        L = 1 - \frac{\sum \min(x^+,y^+) + \sum \min(x^-,y^-) + s}
                     {\sum \max(x^+,y^+) + \sum \max(x^-,y^-) + s},

    i.e. the weighted-Jaccard metric applied jointly to the positive and negative parts
    (``combine="joint"``, the released code's ``loss_type=2``). ``L(g, g) = 0`` and ``L(−g, g) = 1``;
    for non-negative inputs it is :func:`jaccard_metric_loss` with ``s = 0``. The reference sums over
    the whole batch (``aggregate="dataset"``).

    ``combine="separate"`` (the released ``loss_type=1``, its default for the Jaccard alone) adds a
    foreground and a background Jaccard loss, each in ``[0, 1]``:

    .. math::
        L = \Big(1 - \frac{\sum \min(x^+,y^+) + s}{\sum \max(x^+,y^+) + s}\Big)
          + \Big(1 - \frac{\sum \min(x^-,y^-) + s}{\sum \max(x^-,y^-) + s}\Big)

    (the released code puts ``s`` in the denominators only, so a part empty in both prediction and
    target costs 1 there and 0 here).

    Args:
      pred: floating ``[B, ...]`` predictions in ``[−1, 1]`` (``tanh`` of logits, or pass logits
        with ``from_logits=True``).
      target: floating ``[B, ...]`` signed soft labels.
      smooth: s ``≥ 0``.
      aggregate: ``"image"`` (``[B]``) or ``"dataset"`` (scalar).
      combine: ``"joint"`` or ``"separate"`` (see above).
      from_logits: apply ``tanh`` to ``pred``.
      where: optional bool keep mask of the shape of ``pred``.

    Returns:
      ``[B]`` or a scalar.

    References:
      V. N. Dang, H. H. Nguyen, A. Tiulpin, "SAUNA: Image-Level Regression for Uncertainty-Aware
      Retinal Image Segmentation", WACV 2025 (repository Oulu-IMEDS/SAUNA).

    Example:
      >>> import jax.numpy as jnp
      >>> g = jnp.array([[0.5, -0.3, 1.0]])
      >>> sauna_jaccard_loss(g, g), sauna_jaccard_loss(-g, g)
      (Array([0.], dtype=float32), Array([1.], dtype=float32))
    """
    require_nonnegative(smooth, "smooth")
    require_option(aggregate, _AGGREGATES, "aggregate")
    require_option(combine, ("joint", "separate"), "combine")
    p, g, m, dtype = _signed_pair(pred, target, where, from_logits)
    ax = tuple(range(0 if aggregate == "dataset" else 1, p.ndim))
    pp, pn = jax.nn.relu(p), jax.nn.relu(-p)
    gp, gn = jax.nn.relu(g), jax.nn.relu(-g)

    def total(v: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(m, v, 0.0), axis=ax) + smooth

    def one_minus_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
        ok = den != 0  # den >= 0; NaN propagates
        return jnp.where(ok, 1.0 - num / jnp.where(ok, den, 1.0), 0.0)

    if combine == "separate":
        loss = (one_minus_ratio(total(jnp.minimum(pp, gp)), total(jnp.maximum(pp, gp)))
                + one_minus_ratio(total(jnp.minimum(pn, gn)), total(jnp.maximum(pn, gn))))
    else:
        loss = one_minus_ratio(total(jnp.minimum(pp, gp) + jnp.minimum(pn, gn)),
                               total(jnp.maximum(pp, gp) + jnp.maximum(pn, gn)))
    return loss.astype(dtype)


def stable_focal_l1_loss(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    alpha: float = 2.0,
    beta: float = 1.0,
    pos_weight: float = 1.0,
    detach_weight: bool = False,
    from_logits: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Stable Focal-L1 loss per image (SAUNA, Dang et al., WACV 2025).

    Per pixel, with ``p`` in ``[−1, 1]`` and signed target ``g``:

    .. math::
        w = \begin{cases}\alpha\,|p-g|^\beta & \operatorname{sign}(p)\operatorname{sign}(g) > 0\\
                         1 & \text{otherwise}\end{cases},\quad
        w \leftarrow w \cdot \text{pos\_weight} \text{ where } g > 0,\qquad
        L = \operatorname{mean}\,|p-g|\,w .

    Pixels with the wrong sign keep the plain L1 gradient (weight 1, hence "stable"); correctly
    signed pixels are down-weighted as they approach the target (focal). The weight jumps at a
    sign change (no NaN). With ``detach_weight`` the weight is a constant (reference
    ``loss_type=0``); by default it is differentiated (``loss_type=1``, the released config),
    computed as ``α|p−g|^{1+β}`` so the gradient is finite at ``p = g``.

    Args:
      pred: floating ``[B, ...]`` in ``[−1, 1]`` (or logits with ``from_logits=True``: tanh).
      target: floating ``[B, ...]`` in ``[−1, 1]``.
      alpha: α ``> 0``. beta: β ``≥ 0``. pos_weight: ``> 0``.
      detach_weight: treat ``w`` as a constant.
      from_logits: apply ``tanh`` to ``pred``.
      where: optional bool keep mask of the shape of ``pred``.

    Returns:
      ``[B]``: the mean over each image's kept pixels (0 when none is kept).

    References:
      V. N. Dang, H. H. Nguyen, A. Tiulpin, "SAUNA", WACV 2025 (repository Oulu-IMEDS/SAUNA).

    Example:
      >>> import jax.numpy as jnp
      >>> p = jnp.array([[0.5, -0.5, 0.9, -0.2]])
      >>> g = jnp.array([[0.8, 0.3, 1.0, -0.6]])
      >>> stable_focal_l1_loss(p, g).round(6)
      Array([0.33], dtype=float32)
    """
    require_positive(alpha, "alpha")
    require_nonnegative(beta, "beta")
    require_positive(pos_weight, "pos_weight")
    p, g, m, dtype = _signed_pair(pred, target, where, from_logits)
    d = jnp.abs(p - g)
    same = jnp.sign(p) * jnp.sign(g) > 0
    if detach_weight:
        focal = d * jax.lax.stop_gradient(alpha * jnp.power(d, beta))
    else:
        focal = alpha * jnp.power(d, 1.0 + beta)
    px = jnp.where(same, focal, d)
    px = jnp.where(g > 0, px * pos_weight, px)
    ax = tuple(range(1, p.ndim))
    n = jnp.sum(m, axis=ax)
    tot = jnp.sum(jnp.where(m, px, 0.0), axis=ax)
    return jnp.where(n > 0, tot / jnp.maximum(n, 1), 0.0).astype(dtype)


# --------------------------------------------------------------------------------------------
# Dice, Tversky, generalized Dice
# --------------------------------------------------------------------------------------------


def _product_stats(s: _Seg, aggregate: str):
    ax = _sum_axes(s.x.ndim, aggregate)
    tp = jnp.sum(s.x * s.t, axis=ax)
    sx = jnp.sum(s.x, axis=ax)
    sy = jnp.sum(s.t, axis=ax)
    return tp, sx, sy


def _ratio_loss(num: jax.Array, den: jax.Array) -> jax.Array:
    ok = den != 0
    return jnp.where(ok, 1.0 - num / jnp.where(ok, den, 1.0), 0.0)


def tversky_loss(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    include_background: bool = True,
    aggregate: str = "image",
    from_logits: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Tversky loss, mean over classes (Salehi, Erdogmus, Gholipour 2017).

    .. math::
        TP = \sum xy,\; FP = \sum x(1-y),\; FN = \sum (1-x)y,\qquad
        \ell_c = 1 - \frac{TP + s_{nr}}{TP + \alpha FP + \beta FN + s_{dr}}

    (α weights false positives, β false negatives; α=β=½ is Dice, α=β=1 the product soft
    Jaccard). Matches MONAI ``TverskyLoss`` (per image and class, then mean).
    ``optax.losses.dice_loss`` (which has the same α/β form) is not called: with
    ``apply_softmax=False`` — the probability input used here — it validates array values with a
    Python ``if`` and cannot be jitted (optax ``losses/_segmentation.py``), and it has no ``where``.

    Args:
      probs: floating ``[B, *spatial, C]`` (or logits with ``from_logits``).
      targets: integer ``[B, *spatial]`` or soft ``[B, *spatial, C]``.
      alpha, beta: ``≥ 0``.
      smooth_nr, smooth_dr: numerator / denominator smoothing ``≥ 0``.
      include_background: keep class 0 (ignored when C = 1).
      aggregate: ``"image"`` (``[B]``) or ``"dataset"`` (scalar).
      from_logits: softmax (sigmoid for C=1) first.
      axis: class axis.
      where: optional bool keep mask ``[B, *spatial]``.

    Returns:
      ``[B]`` or a scalar.

    References:
      S. S. M. Salehi, D. Erdogmus, A. Gholipour, "Tversky loss function for image segmentation
      using 3D fully convolutional deep networks", MLMI 2017, arXiv:1706.05721.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[0.2], [0.7], [1.0]]])
      >>> y = jnp.array([[[0.0], [1.0], [0.5]]])
      >>> tversky_loss(x, y, alpha=0.3, beta=0.7, smooth_nr=0.0, smooth_dr=0.0).round(6)
      Array([0.259259], dtype=float32)
    """
    require_nonnegative(alpha, "alpha")
    require_nonnegative(beta, "beta")
    require_nonnegative(smooth_nr, "smooth_nr")
    require_nonnegative(smooth_dr, "smooth_dr")
    require_option(aggregate, _AGGREGATES, "aggregate")
    s = _prepare_seg(probs, targets, axis=axis, where=where, from_logits=from_logits)
    tp, sx, sy = _product_stats(s, aggregate)
    loss = _ratio_loss(tp + smooth_nr, tp + alpha * (sx - tp) + beta * (sy - tp) + smooth_dr)
    keep = jnp.broadcast_to(_class_select(loss.shape[-1], include_background), loss.shape)
    return _out(_class_mean(loss, keep), s)


def soft_dice_loss(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    include_background: bool = True,
    aggregate: str = "image",
    from_logits: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft Dice loss, mean over classes (Milletari et al. 2016; MONAI ``DiceLoss``).

    .. math:: \ell_c = 1 - \frac{2\sum xy + s_{nr}}{\sum x + \sum y + s_{dr}}

    per image and class (``aggregate="image"``) or over the batch (``"dataset"``), then the mean
    over classes. An empty class with ``s_nr = s_dr`` gives 0. See :func:`tversky_loss` for why
    ``optax.losses.dice_loss`` is not called (it is used as a test oracle on logits).

    Args:
      probs: floating ``[B, *spatial, C]`` (or logits with ``from_logits``).
      targets: integer ``[B, *spatial]`` or soft ``[B, *spatial, C]``.
      smooth_nr, smooth_dr: smoothing ``≥ 0`` (MONAI defaults 1e-5).
      include_background: keep class 0 (ignored when C = 1).
      aggregate: ``"image"`` (``[B]``) or ``"dataset"`` (scalar).
      from_logits: softmax (sigmoid for C=1) first.
      axis: class axis.
      where: optional bool keep mask ``[B, *spatial]``.

    Returns:
      ``[B]`` or a scalar.

    References:
      F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net", 3DV 2016, arXiv:1606.04797.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[0.2], [0.6], [0.9]]])
      >>> y = jnp.array([[[0.0], [1.0], [1.0]]])
      >>> soft_dice_loss(x, y, smooth_nr=0.0, smooth_dr=0.0).round(6)   # 1 - 3.0/3.7
      Array([0.189189], dtype=float32)
    """
    require_nonnegative(smooth_nr, "smooth_nr")
    require_nonnegative(smooth_dr, "smooth_dr")
    require_option(aggregate, _AGGREGATES, "aggregate")
    s = _prepare_seg(probs, targets, axis=axis, where=where, from_logits=from_logits)
    tp, sx, sy = _product_stats(s, aggregate)
    loss = _ratio_loss(2.0 * tp + smooth_nr, sx + sy + smooth_dr)
    keep = jnp.broadcast_to(_class_select(loss.shape[-1], include_background), loss.shape)
    return _out(_class_mean(loss, keep), s)


def generalized_dice_loss(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    weight_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    include_background: bool = True,
    aggregate: str = "image",
    from_logits: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Generalized Dice loss (Sudre et al. 2017), per image.

    .. math::
        \mathrm{GDL} = 1 - \frac{2\sum_c w_c \sum_i x_{ic} y_{ic} + s_{nr}}
                               {\sum_c w_c \sum_i (x_{ic} + y_{ic}) + s_{dr}},\qquad
        w_c = 1/\bigl(\textstyle\sum_i y_{ic}\bigr)^2

    (``weight_type="simple"``: ``1/Σy``; ``"uniform"``: 1). Weights of classes absent from an
    image (infinite) are replaced by that image's largest finite weight, as in MONAI
    ``GeneralizedDiceLoss``; an image with no target mass gets all weights 0 and loss
    ``1 − s_nr/s_dr``. The weights are constants (no gradient). ``optax``'s
    ``multiclass_generalized_dice_loss`` is a different quantity (batch-level weights outside
    the ratio, per optax's ``losses/_segmentation.py``), so it is not used.

    Args:
      probs: floating ``[B, *spatial, C]`` (or logits with ``from_logits``).
      targets: integer ``[B, *spatial]`` or soft ``[B, *spatial, C]``.
      weight_type: ``"square"``, ``"simple"`` or ``"uniform"``.
      smooth_nr, smooth_dr: smoothing ``≥ 0``.
      include_background: keep class 0 (ignored when C = 1).
      aggregate: ``"image"`` (``[B]``) or ``"dataset"`` (scalar; weights from batch totals).
      from_logits: softmax (sigmoid for C=1) first.
      axis: class axis.
      where: optional bool keep mask ``[B, *spatial]``.

    Returns:
      ``[B]`` or a scalar.

    References:
      C. H. Sudre, W. Li, T. Vercauteren, S. Ourselin, M. J. Cardoso, "Generalised Dice overlap
      as a deep learning loss function for highly unbalanced segmentations", DLMIA 2017,
      arXiv:1707.03237.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]])   # [B=1, N=3, C=2]
      >>> generalized_dice_loss(x, jnp.array([[0, 1, 0]])).round(4)
      Array([0.2713], dtype=float32)
    """
    require_option(weight_type, ("square", "simple", "uniform"), "weight_type")
    require_nonnegative(smooth_nr, "smooth_nr")
    require_nonnegative(smooth_dr, "smooth_dr")
    require_option(aggregate, _AGGREGATES, "aggregate")
    s = _prepare_seg(probs, targets, axis=axis, where=where, from_logits=from_logits)
    tp, sx, sy = _product_stats(s, aggregate)
    keep = jnp.broadcast_to(_class_select(tp.shape[-1], include_background), tp.shape)
    g = jax.lax.stop_gradient(sy)
    if weight_type == "uniform":
        w = jnp.ones_like(g)
    else:
        pw = 2.0 if weight_type == "square" else 1.0
        finite = g > 0
        w = jnp.where(finite, 1.0 / jnp.power(jnp.where(finite, g, 1.0), pw), 0.0)
        w = jnp.where(keep, w, 0.0)
        wmax = jnp.max(w, axis=-1, keepdims=True)
        w = jnp.where(finite, w, wmax)
    w = jnp.where(keep, w, 0.0)
    num = 2.0 * jnp.sum(w * tp, axis=-1) + smooth_nr
    den = jnp.sum(w * (sx + sy), axis=-1) + smooth_dr
    return _out(_ratio_loss(num, den), s)


# --------------------------------------------------------------------------------------------
# clDice
# --------------------------------------------------------------------------------------------


def _pool(x: jax.Array, window: tuple[int, ...], op: str) -> jax.Array:
    """Stride-1 'same' max (``op='max'``) or min pooling over the spatial axes of ``[B, *S, C]``."""
    dims = (1,) + window + (1,)
    pads = [(0, 0)] + [((w - 1) // 2, (w - 1) // 2) for w in window] + [(0, 0)]
    if op == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, (1,) * x.ndim, pads)
    return jax.lax.reduce_window(x, jnp.inf, jax.lax.min, dims, (1,) * x.ndim, pads)


def _soft_erode(x: jax.Array) -> jax.Array:
    nsp = x.ndim - 2
    outs = []
    for i in range(nsp):
        win = tuple(3 if j == i else 1 for j in range(nsp))
        outs.append(_pool(x, win, "min"))
    out = outs[0]
    for o in outs[1:]:
        out = jnp.minimum(out, o)
    return out


def _soft_dilate(x: jax.Array) -> jax.Array:
    return _pool(x, (3,) * (x.ndim - 2), "max")


def soft_skeleton(x: ArrayLike, *, iters: int = 3) -> jax.Array:
    r"""Differentiable soft skeleton by iterated min/max pooling (Shit et al., CVPR 2021).

    ``open(x) = dilate(erode(x))``; ``skel = relu(x − open(x))``; then ``iters`` times:
    ``x ← erode(x)``, ``δ = relu(x − open(x))``, ``skel ← skel + relu(δ − skel·δ)``. Erosion is
    the minimum of axis-aligned 3-point min-pools, dilation a 3ⁿ max-pool (borders padded so they
    do not count), as in the authors' code and MONAI.

    Args:
      x: floating ``[B, *spatial, C]`` with 2 or 3 spatial axes, values in ``[0, 1]``.
      iters: number of erosion iterations ``≥ 0`` (paper/MONAI: 3).

    Returns:
      ``[B, *spatial, C]``.

    Example:
      >>> import jax.numpy as jnp
      >>> img = jnp.zeros((1, 5, 5, 1)).at[0, 1:4, :, 0].set(1.0)   # a 3-pixel-thick bar
      >>> soft_skeleton(img)[0, :, 2, 0]
      Array([0., 0., 1., 0., 0.], dtype=float32)
    """
    require_floating(x, "x")
    x = jnp.asarray(x)
    if x.ndim not in (4, 5):
        raise ValueError(f"`x` must be [B, *spatial, C] with 2 or 3 spatial axes, got shape {x.shape}.")
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"`iters` must be a non-negative int, got {iters!r}.")
    x = x.astype(compute_dtype(x.dtype))
    skel = jax.nn.relu(x - _soft_dilate(_soft_erode(x)))
    for _ in range(iters):
        x = _soft_erode(x)
        delta = jax.nn.relu(x - _soft_dilate(_soft_erode(x)))
        skel = skel + jax.nn.relu(delta - skel * delta)
    return skel


def cl_dice_loss(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    alpha: float = 0.5,
    iters: int = 3,
    smooth: float = 1.0,
    include_background: bool = False,
    aggregate: str = "image",
    from_logits: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft-Dice + clDice loss (Shit et al., CVPR 2021), pooled over the kept classes.

    With soft skeletons ``S(·)`` (:func:`soft_skeleton`) and sums over pixels and kept classes:

    .. math::
        T_{prec} = \frac{\sum S(x)\,y + s}{\sum S(x) + s},\quad
        T_{sens} = \frac{\sum S(y)\,x + s}{\sum S(y) + s},\quad
        \mathrm{clDice} = \frac{2 T_{prec} T_{sens}}{T_{prec} + T_{sens}},

    .. math::
        L = (1-\alpha)\Bigl(1 - \frac{2\sum xy + s}{\sum x + \sum y + s}\Bigr)
            + \alpha\,(1 - \mathrm{clDice}),

    as MONAI ``SoftDiceclDiceLoss`` (which drops the background channel and pools over the
    batch, i.e. ``aggregate="dataset"``). ``alpha=1`` gives MONAI ``SoftclDiceLoss``.

    Args:
      probs: floating ``[B, *spatial, C]`` (2 or 3 spatial axes; or logits with ``from_logits``).
      targets: integer ``[B, *spatial]`` or soft ``[B, *spatial, C]``.
      alpha: weight of the clDice term in ``[0, 1]``.
      iters: skeleton iterations.
      smooth: s ``> 0``.
      include_background: keep class 0 (MONAI drops it; ignored when C = 1).
      aggregate: ``"image"`` (``[B]``) or ``"dataset"`` (scalar).
      from_logits: softmax (sigmoid for C=1) first.
      axis: class axis.
      where: optional bool keep mask ``[B, *spatial]`` (ignored pixels are set to 0 in both
        maps before the skeletons and are excluded from every sum).

    Returns:
      ``[B]`` or a scalar.

    References:
      S. Shit et al., "clDice — a Novel Topology-Preserving Loss Function for Tubular Structure
      Segmentation", CVPR 2021, arXiv:2003.07311.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = jnp.zeros((1, 6, 6), jnp.int32).at[0, 2:4, :].set(1)
      >>> x = jax.nn.one_hot(y, 2)
      >>> cl_dice_loss(x, y).round(6)
      Array([0.], dtype=float32)
    """
    require_range(alpha, "alpha", 0.0, 1.0)
    require_positive(smooth, "smooth")
    require_option(aggregate, _AGGREGATES, "aggregate")
    xs = jnp.asarray(probs)
    if xs.ndim not in (4, 5):
        raise ValueError(
            f"`probs` must be [B, *spatial, C] with 2 or 3 spatial axes, got shape {xs.shape}."
        )
    s = _prepare_seg(probs, targets, axis=axis, where=where, from_logits=from_logits)
    keep = _class_select(s.x.shape[-1], include_background)
    ax = _sum_axes(s.x.ndim, aggregate)
    ax = ax + (s.x.ndim - 1,)
    kx = jnp.where(keep, s.x, 0.0)
    kt = jnp.where(keep, s.t, 0.0)
    sk_x = jnp.where(s.m, soft_skeleton(kx, iters=iters), 0.0)
    sk_t = jnp.where(s.m, soft_skeleton(kt, iters=iters), 0.0)
    tprec = (jnp.sum(sk_x * kt, axis=ax) + smooth) / (jnp.sum(sk_x, axis=ax) + smooth)
    tsens = (jnp.sum(sk_t * kx, axis=ax) + smooth) / (jnp.sum(sk_t, axis=ax) + smooth)
    cl = 1.0 - 2.0 * tprec * tsens / (tprec + tsens)
    dice = 1.0 - (2.0 * jnp.sum(kx * kt, axis=ax) + smooth) / (
        jnp.sum(kx, axis=ax) + jnp.sum(kt, axis=ax) + smooth
    )
    return _out((1.0 - alpha) * dice + alpha * cl, s)
