"""Stable log-space primitives shared by every loss family.

Everything label-, mask- and reduction-related lives here, once:

* :func:`prepare` validates ``logits``/``labels``/``where`` (errors name the argument), tells
  integer labels ``[...]`` from probability labels ``[..., K]`` by dtype, moves the class axis
  last and computes in float32 (float64 when the input is float64).
* :func:`margin_lse` is the comp-sum statistic ``ℓu = logsumexp_{k≠y}(x_k − x_y)``; every loss
  that depends on the logits only through ``p_y`` is a scalar map of it (``−log p_y =
  softplus(ℓu)``, ``1 − p_y = sigmoid(ℓu)``, ...), which never forms ``1 − p_y`` by subtraction.
* :func:`finalize` zeroes masked rows with ``jnp.where`` (so a NaN in a masked row cannot leak),
  :func:`reduce_loss` reduces with ``mean = Σ w·ℓ / max(Σ w, 1)`` (an all-masked batch gives 0).

The stable forms (everything through ``ℓu = log Σ_{k≠y} exp(x_k − x_y)``) are explained in
``docs/design/test_vectors.md`` §1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "Prepared",
    "prepare",
    "margin_lse",
    "masked_logsumexp",
    "log_softmax",
    "softmax",
    "label_log_prob",
    "expect",
    "finalize",
    "reduce_loss",
    "check_labels",
    "poison_bad_labels",
    "nll_from_lu",
    "py_from_lu",
    "one_minus_py_from_lu",
    "log_one_minus_py_from_lu",
    "require_positive",
    "require_nonnegative",
    "require_option",
    "require_range",
    "require_floating",
    "require_integer",
    "require_rank",
    "is_concrete",
    "compute_dtype",
    "replicate_on_explicit_mesh",
]


# --------------------------------------------------------------------------------------------
# validation helpers (python-number checks; traced values are accepted unchecked)
# --------------------------------------------------------------------------------------------


def is_concrete(value: Any) -> bool:
    """True when ``value`` is a python number or a concrete (non-traced) array."""
    return not isinstance(value, jax.core.Tracer)


def _scalar(value: Any) -> Any:
    if not is_concrete(value):
        return None
    arr = np.asarray(value)
    if arr.size != 1:
        return None
    return arr.reshape(()).item()


def require_positive(value: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value > 0`` (skipped for traced values)."""
    v = _scalar(value)
    if v is not None and not v > 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")


def require_nonnegative(value: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value >= 0`` (skipped for traced values)."""
    v = _scalar(value)
    if v is not None and not v >= 0:
        raise ValueError(f"`{name}` must be >= 0, got {value!r}.")


def require_range(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` lies in the given interval."""
    v = _scalar(value)
    if v is None:
        return
    ok = True
    if low is not None:
        ok &= v >= low if low_inclusive else v > low
    if high is not None:
        ok &= v <= high if high_inclusive else v < high
    if not ok:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        hi = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ValueError(f"`{name}` must lie in {lo}, {hi}, got {value!r}.")


def require_option(value: Any, options: Sequence[Any], name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"Unknown `{name}`={value!r}; expected one of {list(options)}.")


def require_floating(x: Any, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``x`` has a floating dtype."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating dtype, got {dtype}.")


def require_integer(x: Any, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``x`` has an integer dtype."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"`{name}` must have an integer dtype, got {dtype}.")


def require_rank(x: Any, ranks: int | Sequence[int], name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``ndim(x)`` is in ``ranks``."""
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    nd = jnp.ndim(x)
    if nd not in ranks:
        want = ranks[0] if len(ranks) == 1 else f"one of {list(ranks)}"
        raise ValueError(f"`{name}` must have rank {want}, got shape {jnp.shape(x)}.")


def bool_mask(where: Any, shape: tuple[int, ...], name: str = "where") -> jax.Array:
    """``where`` as a bool array of ``shape`` (all ``True`` when ``None``).

    Raises ``TypeError`` for a non-bool array and ``ValueError`` for another shape, both naming
    ``name``.

    Example:
        >>> bool_mask(None, (2,)).tolist()
        [True, True]
    """
    if where is None:
        return jnp.ones(shape, bool)
    mask = jnp.asarray(where)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`{name}` must be a bool array, got {mask.dtype}.")
    if mask.shape != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {mask.shape}.")
    return mask


def replicate_on_explicit_mesh(x: jax.Array) -> jax.Array:
    """All-gather ``x`` over the explicit axes of the current mesh (identity otherwise).

    Pairwise losses (every row against every other row) need the whole batch on every device;
    on an Explicit mesh (``jax.make_mesh``'s default) JAX refuses the implicit all-gather, so
    these losses state it. The gradient comes back with the input's sharding.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not mesh.explicit_axes:
        return x
    return jax.sharding.reshard(x, jax.sharding.PartitionSpec())


def compute_dtype(dtype: Any) -> jnp.dtype:
    """float32 for half/single inputs, float64 for float64 inputs (only with x64 enabled)."""
    return jnp.promote_types(dtype, jnp.float32)


def check_labels(
    labels: ArrayLike,
    num_classes: int,
    *,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    name: str = "labels",
) -> None:
    """Eagerly check that integer ``labels`` lie in ``[0, num_classes)``.

    The package-wide label rule (``docs/conventions.md``): an out-of-range label never becomes a
    valid class. Every loss calls this on concrete labels (outside ``jit``), so a bad label raises
    a ``ValueError`` naming ``labels``; under ``jit`` the example's value and gradient are NaN
    instead. Rows masked by a per-example ``where`` and labels equal to ``ignore_index`` are not
    checked (they do not count).

    Example:
        >>> import jax.numpy as jnp
        >>> check_labels(jnp.array([0, 2]), 3)
        >>> check_labels(jnp.array([0, -100]), 3, ignore_index=-100)
        >>> check_labels(jnp.array([0, 3]), 3)
        Traceback (most recent call last):
        ...
        ValueError: `labels` must lie in [0, 3); found values in [0, 3].
    """
    if not is_concrete(labels):
        raise ValueError(f"check_labels needs concrete `{name}`; call it outside jit.")
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`{name}` must have an integer dtype, got {arr.dtype}.")
    keep = np.ones(arr.shape, bool)
    if where is not None:
        if not is_concrete(where):
            raise ValueError("check_labels needs a concrete `where`; call it outside jit.")
        keep &= np.broadcast_to(np.asarray(where, bool), arr.shape)
    if ignore_index is not None:
        keep &= arr != ignore_index
    vals = arr[keep]
    if vals.size and (vals.min() < 0 or vals.max() >= num_classes):
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes}); found values in [{vals.min()}, {vals.max()}]"
            + ("" if ignore_index is None else f" (ignore_index={ignore_index} excepted)")
            + "."
        )


def poison_bad_labels(
    x: jax.Array, labels: jax.Array, num_classes: int, ignore: jax.Array | None = None
) -> jax.Array:
    """Return ``x`` with every row whose label is out of ``[0, num_classes)`` set to NaN.

    The traced half of the label rule: under ``jit`` a bad label cannot raise, so the example's
    value and gradient become NaN (``x + NaN``, which keeps the gradient path) instead of being
    silently clamped onto a valid class. ``ignore`` marks rows that are ignored (not poisoned).
    """
    bad = (labels < 0) | (labels >= num_classes)
    if ignore is not None:
        bad = bad & ~ignore
    return x + jnp.where(bad, jnp.nan, 0.0).astype(x.dtype)[..., None]


# --------------------------------------------------------------------------------------------
# canonicalisation
# --------------------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """Canonical inputs of a classification loss.

    Attributes:
      logits: ``[..., K]`` in the compute dtype; classes masked by ``where`` are ``-inf``.
      labels: int32 ``[...]`` (clipped into ``[0, K)``) or soft labels ``[..., K]``.
      soft: whether ``labels`` are probability vectors.
      class_mask: bool ``[..., K]`` of valid classes, or ``None`` when every class is valid.
      row_mask: bool ``[...]`` of rows that count, or ``None`` when every row counts.
      num_classes: ``K``.
      dtype: the output dtype (float32, or float64 for float64 inputs).
    """

    logits: jax.Array
    labels: jax.Array
    soft: bool
    class_mask: jax.Array | None
    row_mask: jax.Array | None
    num_classes: int
    dtype: Any


def prepare(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    allow_soft: bool = True,
    allow_int: bool = True,
    ignore_index: int | None = None,
    logits_name: str = "logits",
    labels_name: str = "labels",
) -> Prepared:
    """Validate and canonicalise the arguments of a classification loss.

    Args:
      logits: floating ``[..., K, ...]`` scores; ``axis`` is the class axis.
      labels: integer class indices with the shape of ``logits`` without the class axis, or
        floating probability vectors of the shape of ``logits`` (told apart by dtype).
      axis: the class axis of ``logits`` (and of soft ``labels``).
      where: optional bool mask, per example (shape of ``logits`` without the class axis) or per
        class (shape of ``logits``). Masked classes are removed from the normaliser; rows with no
        valid class, or masked rows, contribute 0.
      allow_soft: whether probability labels are accepted.
      allow_int: whether integer labels are accepted.
      ignore_index: optional integer label value that masks its row exactly like ``where``.

    Out-of-range integer labels follow the package rule (``docs/conventions.md``): a
    ``ValueError`` naming ``labels`` for concrete labels, NaN value and gradient for that example
    under ``jit``. Rows that do not count (masked by ``where``, ``ignore_index``, or a masked label
    class) have their logits and soft labels replaced by zeros before any arithmetic, so a NaN or
    ``inf`` there cannot reach the gradient (the "double where").

    Returns:
      A :class:`Prepared` tuple with the class axis last.
    """
    require_floating(logits, logits_name)
    logits = jnp.asarray(logits)
    if logits.ndim < 1:
        raise ValueError(f"`{logits_name}` must have a class axis; got a scalar.")
    if not -logits.ndim <= axis < logits.ndim:
        raise ValueError(f"`axis`={axis} is out of range for `{logits_name}` of rank {logits.ndim}.")
    dtype = compute_dtype(logits.dtype)
    x = jnp.moveaxis(logits, axis, -1).astype(dtype)
    num_classes = x.shape[-1]
    batch_shape = x.shape[:-1]

    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        if not allow_int:
            raise TypeError(f"`{labels_name}` must be floating probability vectors, got {labels.dtype}.")
        if labels.dtype == jnp.bool_:
            raise TypeError(f"`{labels_name}` must be integer class indices, got bool.")
        if labels.shape != batch_shape:
            raise ValueError(
                f"Integer `{labels_name}` must have shape {batch_shape} (the shape of "
                f"`{logits_name}` {logits.shape} without the class axis), got {labels.shape}."
            )
        lab = labels.astype(jnp.int32)
        y = jnp.clip(lab, 0, num_classes - 1)
        soft = False
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        if not allow_soft:
            raise TypeError(f"`{labels_name}` must be integer class indices, got {labels.dtype}.")
        if labels.shape != logits.shape:
            raise ValueError(
                f"Probability `{labels_name}` must have the shape of `{logits_name}` "
                f"{logits.shape}, got {labels.shape}."
            )
        y = jnp.moveaxis(labels, axis, -1).astype(dtype)
        soft = True
    else:
        raise TypeError(f"`{labels_name}` must be integer or floating, got {labels.dtype}.")

    class_mask = None
    row_mask = None
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a bool array, got {where.dtype}.")
        if where.shape == logits.shape:
            class_mask = jnp.moveaxis(where, axis, -1)
            row_mask = jnp.any(class_mask, axis=-1)
            if not soft:
                # A row whose label class is masked out has no defined loss: it is dropped.
                row_mask = row_mask & jnp.take_along_axis(class_mask, y[..., None], -1)[..., 0]
            x = jnp.where(class_mask, x, -jnp.inf)
        elif where.shape == batch_shape:
            row_mask = where
        else:
            raise ValueError(
                f"`where` must have shape {batch_shape} (per example) or {logits.shape} "
                f"(per class), got {where.shape}."
            )
    if not soft:
        ignore = None
        if ignore_index is not None:
            ignore = lab == ignore_index
            row_mask = ~ignore if row_mask is None else row_mask & ~ignore
        if is_concrete(lab) and (where is None or is_concrete(where)):
            row_where = None
            if where is not None:
                row_where = where if where.shape == batch_shape else np.any(np.asarray(where), axis)
            check_labels(
                lab, num_classes, where=row_where, ignore_index=ignore_index, name=labels_name
            )
        else:
            x = poison_bad_labels(x, lab, num_classes, ignore)
    if row_mask is not None:
        # double where: rows that do not count never reach exp/log, so their gradient is 0.
        x = jnp.where(row_mask[..., None], x, jnp.zeros((), dtype))
        if soft:
            y = jnp.where(row_mask[..., None], y, jnp.zeros((), dtype))
    return Prepared(x, y, soft, class_mask, row_mask, num_classes, dtype)


# --------------------------------------------------------------------------------------------
# stable log-space primitives
# --------------------------------------------------------------------------------------------


def masked_logsumexp(x: jax.Array, mask: jax.Array | None = None, axis: int = -1) -> jax.Array:
    """``log Σ_{k: mask_k} exp(x_k)`` with finite gradients wherever the value is finite.

    Entries masked out by ``mask`` contribute nothing and never reach ``exp`` (a masked ``1e4``,
    ``inf`` or NaN cannot reach the value or the gradient). Unmasked entries follow IEEE
    arithmetic: ``-inf`` contributes ``exp(-inf) = 0``, ``+inf`` gives ``+inf`` and a NaN gives NaN
    (it is never dropped). An empty sum gives ``-inf`` with a zero (not NaN) gradient. The shift by
    the (stop-gradient) maximum keeps ``x_k − max`` in ``[-inf, 0]``, so ``±3e38`` cannot overflow.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(masked_logsumexp(jnp.array([0.0, 0.0, 5.0]), jnp.array([True, True, False]))), 4)
      0.6931
    """
    if mask is None:
        mask = jnp.ones(x.shape, bool)
    xm = jnp.where(mask, x, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(xm, axis=axis, keepdims=True, initial=-jnp.inf))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), x.dtype))
    s = jnp.sum(jnp.exp(jnp.where(mask, x - m, -jnp.inf)), axis=axis, keepdims=True)
    nonempty = s != 0  # NaN counts as non-empty (it must propagate)
    out = jnp.where(nonempty, jnp.log(jnp.where(nonempty, s, 1.0)) + m, -jnp.inf)
    return jnp.squeeze(out, axis=axis)


def _leave_one_out_lse(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``[..., K]`` with entry k = ``logsumexp_{j≠k, mask_j} x_j``, O(K) memory, no cancellation.

    For k other than the (first) argmax the complement contains the maximum, so its shifted sum
    is ``S − e_k ≥ 1`` and the subtraction loses at most a factor 2 in relative precision. For the
    argmax itself the complement is summed directly, shifted by the second-largest value. A NaN
    anywhere in the row makes every entry NaN.
    """
    k = x.shape[-1]
    valid = jnp.ones(x.shape, bool) if mask is None else mask
    xs = jax.lax.stop_gradient(x)
    top = jnp.argmax(jnp.where(valid, xs, -jnp.inf), axis=-1)
    is_top = jax.nn.one_hot(top, k, dtype=bool)
    # complement of the argmax, summed directly
    lse_not_top = masked_logsumexp(x, valid & ~is_top)
    # everything else: logsumexp over all minus own term, via log(S - e_k) with shift m
    m = jnp.max(jnp.where(valid, xs, -jnp.inf), axis=-1, keepdims=True, initial=-jnp.inf)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), x.dtype))
    e = jnp.exp(jnp.where(valid, x - m, -jnp.inf))
    s = jnp.sum(e, axis=-1, keepdims=True)
    rest = s - e
    pos = rest > 0
    lse_rest = jnp.where(pos, jnp.log(jnp.where(pos, rest, 1.0)) + m, -jnp.inf)
    lse_rest = jnp.where(jnp.isnan(rest), jnp.nan, lse_rest)
    out = jnp.where(is_top, lse_not_top[..., None], lse_rest)
    row_nan = jnp.any(jnp.isnan(jnp.where(valid, xs, 0.0)), axis=-1, keepdims=True)
    return jnp.where(row_nan, jnp.nan, out)


def _minus(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a − b`` for log-probabilities: ``(−inf) − (−inf)`` is ``−inf`` (probability 0), not NaN."""
    both = (a == -jnp.inf) & (b == -jnp.inf)
    return jnp.where(both, -jnp.inf, a - jnp.where(both, 0.0, b))


def margin_lse(p: Prepared) -> jax.Array:
    """The comp-sum statistic ``ℓu = logsumexp_{k≠y}(x_k − x_y) = log((1 − p_y)/p_y)``.

    Returns ``[...]`` for integer labels, and ``[..., K]`` (the statistic for every candidate
    class) for soft labels. Computed as ``(m − x_y) + log Σ_{k≠y} exp(x_k − m)`` with ``m`` the
    largest other logit, so ``x_k − x_y`` is never formed (no overflow at ``±3e38``).

    Non-finite logits (``docs/conventions.md``): a ``-inf`` logit is probability 0, so a ``-inf``
    label logit gives ``ℓu = +inf`` (cross-entropy ``+inf``); ``-inf`` when the label is the only
    class with non-zero probability (``K = 1``, masked classes); NaN anywhere in the row gives NaN.
    Classes masked by ``where`` give ``-inf`` in the soft-label form (they are not candidates).

    Example:
      >>> import jax.numpy as jnp
      >>> p = prepare(jnp.array([[2.0, 1.0, 0.1]]), jnp.array([0]))
      >>> round(float(margin_lse(p)[0]), 4)  # log(e^-1 + e^-1.9)
      -0.6588
    """
    x = p.logits
    if p.soft:
        lse = _leave_one_out_lse(x)
        lu = _minus(lse, x)
        if p.class_mask is not None:
            lu = jnp.where(p.class_mask, lu, -jnp.inf)
        return lu
    others = ~jax.nn.one_hot(p.labels, p.num_classes, dtype=bool)
    xy = jnp.take_along_axis(x, p.labels[..., None], axis=-1)[..., 0]
    # (m − x_y) + log Σ_{k≠y} exp(x_k − m): exact difference of nearby logits, no overflow.
    m = jax.lax.stop_gradient(jnp.max(jnp.where(others, x, -jnp.inf), axis=-1, initial=-jnp.inf))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), x.dtype))
    s = jnp.sum(jnp.exp(jnp.where(others, x - m[..., None], -jnp.inf)), axis=-1)
    nonempty = s != 0
    log_s = jnp.where(nonempty, jnp.log(jnp.where(nonempty, s, 1.0)), -jnp.inf)
    return log_s + (m - xy)


def log_softmax(p: Prepared) -> jax.Array:
    """Masked log-softmax ``[..., K]`` of ``p.logits`` (masked or ``-inf`` classes give ``-inf``).

    A NaN logit makes the whole row NaN; an all ``-inf`` row gives ``-inf`` everywhere.
    """
    x = p.logits
    # (x − m) − log Σ exp(x − m): nearby logits subtract exactly before any rounding at |m|.
    m_raw = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True, initial=-jnp.inf))
    m = jnp.where(jnp.isfinite(m_raw), m_raw, jnp.zeros((), x.dtype))
    shifted = x - m
    s = jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True)
    nonempty = s != 0
    log_s = jnp.where(nonempty, jnp.log(jnp.where(nonempty, s, 1.0)), -jnp.inf)
    out = _minus(shifted, log_s)
    # a +inf logit takes all the probability (shared among the +inf classes): the limit
    top = x == jnp.inf
    n_top = jnp.sum(top, axis=-1, keepdims=True).astype(x.dtype)
    at_inf = jnp.where(top, -jnp.log(jnp.maximum(n_top, 1.0)), -jnp.inf)
    return jnp.where((m_raw == jnp.inf) & ~jnp.isnan(s), at_inf, out)


def softmax(p: Prepared) -> jax.Array:
    """Masked softmax ``[..., K]`` (masked classes give 0; an empty row gives zeros)."""
    return jnp.exp(log_softmax(p))


def label_log_prob(p: Prepared) -> jax.Array:
    """``log p_y = −softplus(ℓu)``: ``[...]`` for integer labels, ``[..., K]`` for soft labels."""
    return -nll_from_lu(margin_lse(p))


def expect(p: Prepared, per_class: jax.Array) -> jax.Array:
    """Soft-label expectation ``Σ_k t_k ℓ(x, k)``; identity for integer labels.

    Classes with ``t_k = 0`` are skipped with ``jnp.where`` so an infinite ``ℓ(x, k)`` on a
    masked class cannot turn into ``0 · inf = NaN``.
    """
    if not p.soft:
        return per_class
    t = p.labels
    return jnp.sum(jnp.where(t != 0, t * per_class, 0.0), axis=-1)


def finalize(p: Prepared, loss: jax.Array) -> jax.Array:
    """Zero the rows that do not count (``jnp.where``, not a product) and cast to ``p.dtype``."""
    loss = loss.astype(p.dtype)
    if p.row_mask is None:
        return loss
    return jnp.where(p.row_mask, loss, jnp.zeros((), p.dtype))


def reduce_loss(
    loss: ArrayLike, reduction: str = "none", where: ArrayLike | None = None
) -> jax.Array:
    """Reduce per-example losses: ``'none'``, ``'sum'`` or ``'mean'``.

    ``'mean'`` is ``Σ w·ℓ / max(Σ w, 1)`` so that an all-masked batch gives 0, not NaN.

    Example:
        >>> import jax.numpy as jnp
        >>> float(reduce_loss(jnp.array([1.0, 3.0]), 'mean'))
        2.0
        >>> float(reduce_loss(jnp.array([1.0, 3.0]), 'mean', where=jnp.array([False, False])))
        0.0
    """
    require_option(reduction, ("none", "mean", "sum"), "reduction")
    loss = jnp.asarray(loss)
    if where is not None:
        where = jnp.asarray(where)
        if where.shape != loss.shape:
            raise ValueError(f"`where` must have shape {loss.shape}, got {where.shape}.")
        loss = jnp.where(where, loss, 0.0)
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    count = loss.size if where is None else jnp.sum(where)
    return total / jnp.maximum(count, 1)


# --------------------------------------------------------------------------------------------
# scalar maps of ℓu (stable forms of functions of p_y)
# --------------------------------------------------------------------------------------------


def nll_from_lu(lu: jax.Array) -> jax.Array:
    """``−log p_y = softplus(ℓu)``."""
    return jax.nn.softplus(lu)


def py_from_lu(lu: jax.Array) -> jax.Array:
    """``p_y = sigmoid(−ℓu)``."""
    return jax.nn.sigmoid(-lu)


def one_minus_py_from_lu(lu: jax.Array) -> jax.Array:
    """``1 − p_y = sigmoid(ℓu)`` (exact where ``1 − softmax`` rounds to 0)."""
    return jax.nn.sigmoid(lu)


def log_one_minus_py_from_lu(lu: jax.Array) -> jax.Array:
    """``log(1 − p_y) = log_sigmoid(ℓu)``."""
    return jax.nn.log_sigmoid(lu)


def py_loss(
    fn: Callable[[jax.Array], jax.Array],
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Per-example loss for a loss that depends on the logits only through ``ℓu``.

    ``fn`` maps ``ℓu`` to the loss; soft labels use the expectation convention.
    """
    p = prepare(logits, labels, axis=axis, where=where)
    return finalize(p, expect(p, fn(margin_lse(p))))


__all__.append("py_loss")
