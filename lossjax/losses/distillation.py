"""Logit-based knowledge-distillation losses.

* :func:`kd_loss` — classic temperature-scaled KD (Hinton et al., 2015), the ``T²·KL`` term only.
* :func:`nkd_loss` — Normalized KD (Yang et al., ICCV 2023).
* :func:`uskd_loss` — Universal Self-KD (same paper), teacher-free.
* :func:`dkd_loss` — Decoupled KD (Zhao et al., CVPR 2022), TCKD + NCKD.
* :func:`binary_kl_loss`, :func:`binary_kl_norm_loss` — the logit-level losses of Dual-Head KD
  (Yang et al., 2024); the second is the closed form ``T²·Σ log cosh((zs − zt)/(2T))``.
* :func:`plackett_luce_distillation_loss` — PLD (Bassam, Zhu & Bian, 2025).

Conventions: student logits first, teacher logits second; the teacher enters under
``jax.lax.stop_gradient``; temperatures divide logits; per-example outputs (class axis removed);
classes masked with a per-class ``where`` are removed from *both* distributions. Every softmax
is a masked log-space one from :mod:`lossjax.losses._core`, so ``±1e4`` logits and ``-inf``
entries stay finite where the mathematics is finite.

References for the formulas: each function's docstring; the frozen test values and their oracles are
listed in ``docs/design/test_vectors.md`` §3.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from lossjax.losses._core import (
    Prepared,
    finalize,
    label_log_prob,
    log_softmax,
    margin_lse,
    prepare,
    require_floating,
    require_nonnegative,
    require_option,
    require_positive,
)

__all__ = [
    "kd_loss",
    "nkd_loss",
    "uskd_loss",
    "dkd_loss",
    "binary_kl_loss",
    "binary_kl_norm_loss",
    "plackett_luce_distillation_loss",
]

_NEG_INF = -jnp.inf


# --------------------------------------------------------------------------------------------
# private helpers
# --------------------------------------------------------------------------------------------


def _prepare_pair(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    axis: int,
    where: ArrayLike | None,
    student_name: str = "student_logits",
    teacher_name: str = "teacher_logits",
) -> tuple[Prepared, jax.Array]:
    """Validate a (student, teacher) logit pair; returns the prepared student and the teacher.

    The teacher comes back class-axis-last, in the compute dtype, under ``stop_gradient`` and
    with the classes masked by ``where`` set to ``-inf`` (like the student).
    """
    require_floating(teacher_logits, teacher_name)
    p = prepare(
        student_logits,
        teacher_logits,
        axis=axis,
        where=where,
        allow_int=False,
        logits_name=student_name,
        labels_name=teacher_name,
    )
    t = jax.lax.stop_gradient(p.labels)
    if p.class_mask is not None:
        t = jnp.where(p.class_mask, t, _NEG_INF)
    return p, t


def _int_labels(labels: ArrayLike, logits: ArrayLike, axis: int, name: str = "labels") -> jax.Array:
    """Integer labels as given, or the argmax of probability labels (the reference convention)."""
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        if labels.shape != jnp.shape(logits):
            raise ValueError(
                f"Probability `{name}` must have the shape of the logits {jnp.shape(logits)}, "
                f"got {labels.shape}."
            )
        return jnp.argmax(labels, axis=axis).astype(jnp.int32)
    return labels


def _prepare_teacher(
    teacher_logits: ArrayLike, student_logits: ArrayLike, labels: jax.Array, *, axis: int, where: Any
) -> Prepared:
    require_floating(teacher_logits, "teacher_logits")
    if jnp.shape(teacher_logits) != jnp.shape(student_logits):
        raise ValueError(
            f"`teacher_logits` must have the shape of `student_logits` {jnp.shape(student_logits)}, "
            f"got {jnp.shape(teacher_logits)}."
        )
    pt = prepare(
        jax.lax.stop_gradient(jnp.asarray(teacher_logits)),
        labels,
        axis=axis,
        where=where,
        allow_soft=False,
        logits_name="teacher_logits",
    )
    # the teacher is computed in the student's compute dtype
    return pt


def _scaled(p: Prepared, temperature: Any) -> Prepared:
    return p._replace(logits=p.logits / temperature)


def _non_target(p: Prepared, target_mask: jax.Array) -> Prepared:
    """The same Prepared with the target class(es) removed (``-inf``)."""
    return p._replace(logits=jnp.where(target_mask, _NEG_INF, p.logits))


def _xent(t_log: jax.Array, s_log: jax.Array) -> jax.Array:
    """``−Σ_k t_k log s_k`` with the double where (``t_k = 0`` terms are exactly 0)."""
    t = jnp.exp(t_log)
    keep = t_log != _NEG_INF
    return -jnp.sum(jnp.where(keep, t * jnp.where(keep, s_log, 0.0), 0.0), axis=-1)


def _kl_log(s_log: jax.Array, t_log: jax.Array) -> jax.Array:
    """``KL(t ‖ s)`` from log-probabilities via ``optax.losses.kl_divergence_with_log_targets``.

    Entries with ``t_k = 0`` (``log t_k = -inf``) are excluded with optax's ``where=``.
    """
    keep = t_log != _NEG_INF
    s_log = jnp.where(keep, s_log, 0.0)
    t_log_safe = jnp.where(keep, t_log, 0.0)
    return optax.losses.kl_divergence_with_log_targets(s_log, t_log_safe, where=keep)


# --------------------------------------------------------------------------------------------
# classic KD
# --------------------------------------------------------------------------------------------


def kd_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 4.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Classic knowledge-distillation term ``T²·KL(softmax(zt/T) ‖ softmax(zs/T))``.

    .. math::
        L_{KD} = T^2 \sum_k q_k\,(\log q_k - \log p_k),\qquad
        q = \mathrm{softmax}(z_t/T),\ p = \mathrm{softmax}(z_s/T).

    Only the distillation term is returned; the usual recipe mixes it with the hard-label
    cross-entropy, ``(1−α)·CE + α·kd_loss`` (mdistiller CIFAR-100: ``T=4``, CE 0.1, KD 0.9;
    ImageNet R34→R18: ``T=1``, 0.5/0.5). The ``T²`` factor keeps the gradient magnitude
    comparable across temperatures; as ``T → ∞``, ``L_KD → (1/2K)·Σ_k (d_k − d̄)²`` with
    ``d = z_s − z_t`` (Hinton's logit-matching limit). At ``T = 1`` the gradient with respect to
    ``z_s`` is ``softmax(z_s) − softmax(z_t)``.

    The KL is :func:`optax.losses.kl_divergence_with_log_targets` on masked log-softmaxes (the
    teacher entropy is included, so identical logits give exactly 0; the cls_KD ``KDLoss`` uses
    the cross-entropy form, which differs by ``T²·H(q)`` but has the same gradient). Classes
    where the teacher has probability 0 (``-inf`` teacher logit or masked class) contribute 0.

    Args:
      student_logits: floating ``[..., K]`` student logits (trained).
      teacher_logits: floating ``[..., K]`` teacher logits (stop-gradient inside).
      temperature: ``T > 0``; divides both logits.
      axis: class axis.
      where: optional bool mask, per example ``[...]`` or per class ``[..., K]`` (masked classes
        are removed from both distributions; masked rows give 0).

    Returns:
      Per-example losses ``[...]`` (float32, or float64 for float64 input).

    References:
      G. Hinton, O. Vinyals and J. Dean, "Distilling the Knowledge in a Neural Network",
      NIPS Deep Learning Workshop 2014, arXiv:1503.02531.

    Example:
      >>> import jax.numpy as jnp
      >>> zs, zt = jnp.array([2.0, 1.0, 0.0, -1.0]), jnp.array([1.0, 3.0, 0.0, 0.0])
      >>> round(float(kd_loss(zs, zt, temperature=4.0)), 5)
      0.74019
      >>> float(kd_loss(zs, zs))
      0.0
    """
    require_positive(temperature, "temperature")
    p, t = _prepare_pair(student_logits, teacher_logits, axis=axis, where=where)
    s_log = log_softmax(_scaled(p, temperature))
    t_log = log_softmax(p._replace(logits=t / temperature))
    return finalize(p, temperature**2 * _kl_log(s_log, t_log))


# --------------------------------------------------------------------------------------------
# NKD
# --------------------------------------------------------------------------------------------


def nkd_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 1.0,
    gamma: float = 1.5,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Normalized knowledge distillation (NKD).

    .. math::
        L_{NKD} = -\,t_y \log s_y \;-\; \gamma T^2 \sum_{i\ne y} \hat t^{T}_i \log \hat s^{T}_i,

    with ``s = softmax(zs)``, ``t = softmax(zt)`` (no temperature on the target part; ``t_y`` is
    a constant) and ``ŝ^T = softmax(zs[\y]/T)``, ``t̂^T = softmax(zt[\y]/T)`` the non-target
    distributions renormalised over the ``K − 1`` non-target classes. The paper *adds* this to
    the student's cross-entropy (total ``CE + L_NKD``). Note the non-target part is a
    cross-entropy (not a KL), as in the released code: for ``zs = zt`` it equals ``γT²·H(t̂)``.

    Defaults (released configs): ImageNet CNNs ``T=1, γ=1.5``; DeiT ``T=1, γ=1``; CIFAR-100
    ``T=3, γ=3.5``. Probability labels (mixup/cutmix) are reduced to their argmax, as in the
    reference code. With ``K = 2`` the non-target term is exactly 0.

    Args:
      student_logits: floating ``[..., K]``.
      teacher_logits: floating ``[..., K]`` (stop-gradient inside).
      labels: integer ``[...]``, or probability vectors ``[..., K]`` (argmax is used).
      temperature: ``T > 0`` of the non-target part.
      gamma: weight ``γ ≥ 0`` of the non-target part.
      axis: class axis.
      where: optional per-example or per-class bool mask.

    Returns:
      Per-example losses ``[...]``.

    References:
      Z. Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
      Approach with Normalized Loss and Customized Soft Labels", ICCV 2023 (code:
      github.com/yzd-v/cls_KD).

    Example:
      >>> import jax.numpy as jnp
      >>> zs, zt = jnp.array([2.0, 1.0, 0.0, -1.0]), jnp.array([1.0, 3.0, 0.0, 0.0])
      >>> round(float(nkd_loss(zs, zt, jnp.array(0))), 6)
      0.863403
    """
    require_positive(temperature, "temperature")
    require_nonnegative(gamma, "gamma")
    y = _int_labels(labels, student_logits, axis)
    p = prepare(student_logits, y, axis=axis, where=where, allow_soft=False, logits_name="student_logits")
    pt = _prepare_teacher(teacher_logits, student_logits, y, axis=axis, where=where)
    log_sy = label_log_prob(p)
    t_y = jnp.exp(label_log_prob(pt))
    onehot = jax.nn.one_hot(p.labels, p.num_classes, dtype=bool)
    s_hat = log_softmax(_non_target(_scaled(p, temperature), onehot))
    t_hat = log_softmax(_non_target(_scaled(pt, temperature), onehot))
    target = jnp.where(t_y > 0, -t_y * log_sy, 0.0)
    loss = target + gamma * temperature**2 * _xent(t_hat, s_hat)
    return finalize(p, loss)


# --------------------------------------------------------------------------------------------
# USKD
# --------------------------------------------------------------------------------------------


def uskd_loss(
    student_logits: ArrayLike,
    weak_logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    mu: float = 0.005,
    rank_mode: str = "reference",
    axis: int = -1,
    where: ArrayLike | None = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""Universal self-knowledge distillation (USKD): teacher-free soft targets.

    .. math::
        L_{USKD} = \alpha L_t + \beta L_{non} + L_{weak},

    1. *soft target*: ``p̂_y = sg(s_y² + v − mean_batch(s_y²))`` with ``s = softmax(zs)`` and
       ``v = 1`` for hard labels; ``L_t = −p̂_y·log s_y``.
    2. *weak supervision* from an auxiliary head on a mid-level feature (its logits ``w`` are an
       argument; the head is a model concern): ``L_weak = −μ Σ_c ỹ_c log softmax(w)_c`` with
       ``ỹ = 0.9·onehot(y) + 0.1/K``.
    3. *Zipf non-target labels*: classes are ranked by a score (descending, 1-based rank ``r``
       over all ``K`` classes), weighted ``1/r``, the target dropped and the rest renormalised →
       ``z̃`` (stop-gradient); ``L_non = −Σ_{i≠y} z̃_i log softmax(zs[\y])_i``.

    ``rank_mode`` selects the ranking score:

    * ``"reference"`` (default) — as in the released code, whose published numbers it reproduces:
      ``softmax(w)_i/(1 − softmax(w)_y + 1e-6) + log_softmax(zs)_i/(1 − log_softmax(zs)_y + 1e-6)``
      (the second term uses *log*-probabilities because of a variable re-binding there).
    * ``"probs"`` — the evident intent, probabilities in both terms.
    * ``"weak_probs"`` — a paper reading that ranks by the weak-head probabilities only.
      Which of the last two the paper's text means is an open question (``docs/open_questions.md``).

    Probability labels (mixup/cutmix) follow the reference: the two largest label entries
    ``(v_1, v_2)`` become the targets (entries with value 0 contribute nothing to ``L_t``), both
    are removed from the non-target distribution, and ``ỹ = 0.9·labels + 0.1/K``.

    The batch mean in ``p̂`` runs over all leading axes, respects ``where`` (masked rows are left
    out) and, with ``axis_name``, is taken across devices (``jax.lax.psum``; the reference uses
    the per-GPU batch). A single-row batch gives ``p̂_y = v`` exactly. Masked classes (per-class
    ``where``) are excluded from every softmax and ranked last.

    Defaults: ImageNet ``alpha=1, beta=0.1, mu=0.005``; CIFAR-100 ``alpha=0.1, beta=0.1, mu=0.1``.
    It is *added* to the student's cross-entropy.

    Args:
      student_logits: floating ``[..., K]`` logits of the main head.
      weak_logits: floating ``[..., K]`` logits of the auxiliary (weak) head.
      labels: integer ``[...]`` or probability vectors ``[..., K]``.
      alpha, beta, mu: weights (``≥ 0``) of ``L_t``, ``L_non`` and ``L_weak``.
      rank_mode: ``"reference"``, ``"probs"`` or ``"weak_probs"``.
      axis: class axis.
      where: optional per-example or per-class bool mask.
      axis_name: optional mapped axis name for a cross-device batch mean.

    Returns:
      Per-example losses ``[...]``; their (masked) mean is the reference's batch loss.

    References:
      Z. Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
      Approach with Normalized Loss and Customized Soft Labels", ICCV 2023.

    Example:
      >>> import jax.numpy as jnp
      >>> zs = jnp.array([[2.0, 1.0, 0.0, -1.0], [0.5, 0.2, 1.5, -0.3]])
      >>> w = jnp.array([[1.0, 0.0, 0.5, -0.5], [0.0, 0.3, 1.0, 0.8]])
      >>> round(float(uskd_loss(zs, w, jnp.array([0, 2])).mean()), 6)
      0.628132
    """
    require_nonnegative(alpha, "alpha")
    require_nonnegative(beta, "beta")
    require_nonnegative(mu, "mu")
    require_option(rank_mode, ("reference", "probs", "weak_probs"), "rank_mode")
    require_floating(weak_logits, "weak_logits")
    if jnp.shape(weak_logits) != jnp.shape(student_logits):
        raise ValueError(
            f"`weak_logits` must have the shape of `student_logits` {jnp.shape(student_logits)}, "
            f"got {jnp.shape(weak_logits)}."
        )
    p = prepare(student_logits, labels, axis=axis, where=where, logits_name="student_logits")
    pw = prepare(weak_logits, labels, axis=axis, where=where, logits_name="weak_logits")
    k = p.num_classes
    if p.soft:
        if k < 2:
            raise ValueError("`labels` given as probabilities need at least 2 classes.")
        value, idx = jax.lax.top_k(p.labels, 2)
        weak_target = 0.9 * p.labels + 0.1 / k
    else:
        idx = p.labels[..., None]
        value = jnp.ones(idx.shape, p.dtype)
        weak_target = 0.9 * jax.nn.one_hot(p.labels, k, dtype=p.dtype) + 0.1 / k
    target_mask = jnp.any(jax.nn.one_hot(idx, k, dtype=bool), axis=-2)
    valid = p.logits != _NEG_INF

    ls = log_softmax(p)
    ls_t = jnp.take_along_axis(ls, idx, axis=-1)  # [..., m]
    # 1. soft target label (stop-gradient; masked batch mean)
    sq = jax.lax.stop_gradient(jnp.exp(2.0 * ls_t))
    rows = jnp.ones(sq.shape[:-1], bool) if p.row_mask is None else p.row_mask
    flat_sq = jnp.where(rows[..., None], sq, 0.0).reshape(-1, sq.shape[-1])
    total = jnp.sum(flat_sq, axis=0)
    count = jnp.sum(rows).astype(p.dtype)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
        count = jax.lax.psum(count, axis_name)
    mean_sq = total / jnp.maximum(count, 1.0)
    p_hat = jnp.where(value == 0, 0.0, sq + value - mean_sq)
    p_hat = jax.lax.stop_gradient(p_hat)
    l_t = -jnp.sum(jnp.where(p_hat != 0, p_hat * jnp.where(ls_t != _NEG_INF, ls_t, 0.0), 0.0), -1)
    # p_hat != 0 on a -inf target (masked label class) gives inf, which finalize removes
    l_t = jnp.where(jnp.all((ls_t != _NEG_INF) | (p_hat == 0), -1), l_t, jnp.inf)

    # 2. weak supervision
    lw = log_softmax(pw)
    l_weak = -mu * jnp.sum(jnp.where(lw != _NEG_INF, weak_target * lw, 0.0), axis=-1)

    # 3. Zipf non-target labels
    w_prob = jax.lax.stop_gradient(jnp.exp(lw))
    w_t = jnp.sum(jnp.take_along_axis(w_prob, idx, axis=-1), axis=-1, keepdims=True)
    ls_sg = jax.lax.stop_gradient(ls)
    if rank_mode == "reference":
        s_term = ls_sg
        s_t = jnp.sum(jax.lax.stop_gradient(ls_t), axis=-1, keepdims=True)
    else:
        s_term = jnp.exp(ls_sg)
        s_t = jnp.sum(jnp.exp(jax.lax.stop_gradient(ls_t)), axis=-1, keepdims=True)
    score = w_prob / (1.0 - w_t + 1e-6)
    if rank_mode != "weak_probs":
        score = score + jnp.where(valid, s_term, 0.0) / (1.0 - s_t + 1e-6)
    score = jnp.where(valid, score, _NEG_INF)
    order = jnp.argsort(-score, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)  # 0-based position in descending order
    zipf = 1.0 / (rank + 1).astype(p.dtype)
    non_target = valid & ~target_mask
    zipf = jnp.where(non_target, zipf, 0.0)
    z_sum = jnp.sum(zipf, axis=-1, keepdims=True)
    z_tilde = zipf / jnp.where(z_sum > 0, z_sum, 1.0)
    ns = log_softmax(_non_target(p, target_mask))
    l_non = -jnp.sum(jnp.where(z_tilde > 0, z_tilde * jnp.where(non_target, ns, 0.0), 0.0), -1)

    return finalize(p, alpha * l_t + beta * l_non + l_weak)


# --------------------------------------------------------------------------------------------
# DKD
# --------------------------------------------------------------------------------------------


def _binary_log_probs(p: Prepared) -> jax.Array:
    """``[log p_y, log(1 − p_y)]`` from ℓu (exact: no ``1 − p_y`` cancellation)."""
    lu = margin_lse(p)
    return jnp.stack([-jax.nn.softplus(lu), jax.nn.log_sigmoid(lu)], axis=-1)


def dkd_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Decoupled knowledge distillation (DKD): target-class KD + non-target-class KD.

    .. math::
        L_{DKD} = T^2\bigl(\alpha\,\mathrm{KL}(b_t \| b_s) + \beta\,\mathrm{KL}(\hat p_t \| \hat p_s)\bigr),

    with ``b = [p_y, 1 − p_y]`` the binary target/non-target probabilities at temperature ``T``
    and ``p̂`` the distribution over the non-target classes at temperature ``T``. The paper's
    decomposition, ``KL(p_t‖p_s) = KL(b_t‖b_s) + (1 − p_t[y])·KL(p̂_t‖p̂_s)``, holds exactly.

    ``log(1 − p_y)`` is ``log_sigmoid(ℓu)`` with ``ℓu = logsumexp_{k≠y}(z_k − z_y)/T`` (no
    cancellation), and the target class is removed with ``-inf`` rather than the reference's
    ``−1000`` offset (which is fragile in bf16 and for large logit ranges). The linear warm-up
    factor ``min(epoch/warmup, 1)`` of the recipe is the caller's; the loss is *added* to CE.

    Defaults: CIFAR-100 ``α=1, β=8, T=4`` (these defaults); ImageNet R34→R18 ``α=1, β=0.5, T=1``.

    Args:
      student_logits: floating ``[..., K]``.
      teacher_logits: floating ``[..., K]`` (stop-gradient inside).
      labels: integer ``[...]``.
      temperature: ``T > 0``.
      alpha: TCKD weight ``≥ 0``.
      beta: NCKD weight ``≥ 0``.
      axis: class axis.
      where: optional per-example or per-class bool mask.

    Returns:
      Per-example losses ``[...]``.

    References:
      B. Zhao, Q. Cui, R. Song, Y. Qiu and J. Liang, "Decoupled Knowledge Distillation",
      CVPR 2022, arXiv:2203.08679.

    Example:
      >>> import jax.numpy as jnp
      >>> zs, zt = jnp.array([2.0, 1.0, 0.0, -1.0]), jnp.array([1.0, 3.0, 0.0, 0.0])
      >>> round(float(dkd_loss(zs, zt, jnp.array(0), temperature=4.0, alpha=1.0, beta=8.0)), 4)
      3.2927
    """
    require_positive(temperature, "temperature")
    require_nonnegative(alpha, "alpha")
    require_nonnegative(beta, "beta")
    p = prepare(student_logits, labels, axis=axis, where=where, allow_soft=False, logits_name="student_logits")
    pt = _prepare_teacher(teacher_logits, student_logits, labels, axis=axis, where=where)
    ps, pts = _scaled(p, temperature), _scaled(pt, temperature)
    tckd = _kl_log(_binary_log_probs(ps), _binary_log_probs(pts))
    onehot = jax.nn.one_hot(p.labels, p.num_classes, dtype=bool)
    nckd = _kl_log(log_softmax(_non_target(ps, onehot)), log_softmax(_non_target(pts, onehot)))
    return finalize(p, temperature**2 * (alpha * tckd + beta * nckd))


# --------------------------------------------------------------------------------------------
# Dual-Head KD logit-level losses
# --------------------------------------------------------------------------------------------


def _pair_valid(p: Prepared, t: jax.Array, student_logits: ArrayLike, axis: int) -> tuple[jax.Array, jax.Array]:
    """Unmasked student ``[..., K]`` and the per-class validity (mask, and not ``-inf`` in both)."""
    s = jnp.moveaxis(jnp.asarray(student_logits), axis, -1).astype(p.dtype)
    if p.row_mask is not None:
        # double where: a masked row never reaches the arithmetic (NaN-safe gradient)
        s = jnp.where(p.row_mask[..., None], s, jnp.zeros((), p.dtype))
    valid = ~((s == _NEG_INF) & (t == _NEG_INF))
    if p.class_mask is not None:
        valid = valid & p.class_mask
    return s, valid


def binary_kl_norm_loss(
    aux_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 2.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""BinaryKL-Norm logit-matching loss of Dual-Head KD, in closed form.

    .. math::
        L = T^2 \sum_c \mathrm{KL}\bigl(\mathrm{Bern}(\tfrac12) \,\|\, \mathrm{Bern}(\sigma((z_{s,c}-z_{t,c})/T))\bigr)
          = T^2 \sum_c \log\cosh\frac{z_{s,c}-z_{t,c}}{2T}.

    Computed with :func:`optax.losses.log_cosh` (stable for large ``|d|``). It is minimised iff
    ``zs = zt`` and is *not* shift-invariant (a pure logit-matching loss); the gradient is
    ``(T/2)·tanh((zs − zt)/(2T))`` per class, bounded by ``T/2``. The reference clamps ``σ`` to
    ``[1e-8, 1 − 1e-8]``, which caps each class term near ``8.52·T²`` with zero gradient once
    ``|d|/T > 18.4``; this unclamped form keeps the bounded non-zero gradient instead.

    In DHKD this loss trains an *auxiliary* linear head on the shared backbone, while the main
    head gets CE (the two-head model is a model concern). Recipe: CIFAR ``T=2``, weight 1;
    ImageNet R34→R18 ``T=2``, weight 0.1. Classes that are ``-inf`` in both inputs, or masked by
    a per-class ``where``, contribute 0.

    Args:
      aux_logits: floating ``[..., K]`` logits of the auxiliary student head.
      teacher_logits: floating ``[..., K]`` (stop-gradient inside).
      temperature: ``T > 0``.
      axis: class axis.
      where: optional per-example or per-class bool mask.

    Returns:
      Per-example losses ``[...]`` (summed over classes).

    References:
      P. Yang et al., "Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an
      Auxiliary Head", arXiv:2411.08937, 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> zs, zt = jnp.array([2.0, 1.0, 0.0]), jnp.array([1.0, 3.0, 0.0])
      >>> round(float(binary_kl_norm_loss(zs, zt, temperature=2.0)), 6)
      0.604177
    """
    require_positive(temperature, "temperature")
    p, t = _prepare_pair(student_logits=aux_logits, teacher_logits=teacher_logits, axis=axis,
                         where=where, student_name="aux_logits")
    s, valid = _pair_valid(p, t, aux_logits, axis)
    d = jnp.where(valid, (s - t) / (2.0 * temperature), 0.0)
    per_class = optax.losses.log_cosh(d)
    return finalize(p, temperature**2 * jnp.sum(jnp.where(valid, per_class, 0.0), axis=-1))


def binary_kl_loss(
    aux_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 2.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""BinaryKL loss of Dual-Head KD: per-class Bernoulli KL at temperature ``T``.

    .. math::
        L = T^2 \sum_c \mathrm{KL}\bigl(\mathrm{Bern}(\sigma(z_{t,c}/T)) \,\|\, \mathrm{Bern}(\sigma(z_{s,c}/T))\bigr),

    computed with ``log_sigmoid`` (no clamping, unlike the reference's ``[1e-8, 1 − 1e-8]``).
    See :func:`binary_kl_norm_loss` for the variant DHKD uses.

    Args:
      aux_logits: floating ``[..., K]`` auxiliary-head logits.
      teacher_logits: floating ``[..., K]`` (stop-gradient inside).
      temperature: ``T > 0``.
      axis: class axis.
      where: optional per-example or per-class bool mask.

    Returns:
      Per-example losses ``[...]``.

    References:
      P. Yang et al., "Dual-Head Knowledge Distillation", arXiv:2411.08937, 2024.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([2.0, -1.0, 0.5])
      >>> float(binary_kl_loss(z, z))
      0.0
    """
    require_positive(temperature, "temperature")
    p, t = _prepare_pair(aux_logits, teacher_logits, axis=axis, where=where, student_name="aux_logits")
    s, valid = _pair_valid(p, t, aux_logits, axis)
    a = jnp.where(valid, t / temperature, 0.0)
    b = jnp.where(valid, s / temperature, 0.0)

    def term(sign: float) -> jax.Array:
        la, lb = jax.nn.log_sigmoid(sign * a), jax.nn.log_sigmoid(sign * b)
        keep = la != _NEG_INF
        return jnp.where(keep, jnp.exp(la) * (jnp.where(keep, la, 0.0) - lb), 0.0)

    per_class = term(1.0) + term(-1.0)
    return finalize(p, temperature**2 * jnp.sum(jnp.where(valid, per_class, 0.0), axis=-1))


# --------------------------------------------------------------------------------------------
# Plackett-Luce distillation
# --------------------------------------------------------------------------------------------


def plackett_luce_distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha_temperature: float = 1.0,
    weighting: str = "teacher",
    top_k: int | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Plackett–Luce distillation (PLD): a confidence-weighted list-wise loss.

    The "teacher-optimal" permutation ``π*`` puts the true label first, then the other classes
    by descending teacher logit (ties by class index). With ``α_k`` the teacher's softmax mass of
    the class at position ``k``:

    .. math::
        L_{PLD} = \sum_{k=1}^{K} \alpha_k\Bigl[\log\sum_{j\ge k} e^{z_{s,\pi^*_j}} - z_{s,\pi^*_k}\Bigr].

    Position 1 is ``α_y·CE(y, zs)``, so PLD is used *instead of* CE + KD (no mixing weight). It
    is convex in ``zs`` and invariant to adding a constant to ``zs``. ``weighting="uniform"``
    (``α_k = 1``) is ListMLE on ``π*``. ``top_k`` keeps only the first ``top_k`` positions (the
    suffix log-sum-exps still run over all remaining classes; weights are not renormalised).

    ``α = softmax(zt/τ)`` with ``τ = alpha_temperature = 1`` and no renormalisation after the
    permutation is the reading implemented, known from the paper's abstract and summaries only;
    check the paper's equation before relying on other temperatures (``docs/open_questions.md``).

    Stable: the permuted logits go through ``jax.lax.cumlogsumexp(..., reverse=True)``; masked
    classes sort last and are filled with a finite value ``e^{-100}`` below the row minimum (exact
    to float64 precision, and no NaN gradient from ``-inf`` inside the scan). Only ``where``
    removes a class: a ``−inf`` student logit is probability 0 (``docs/conventions.md``), so its
    position's term is ``+inf`` (value and gradient those of the logit at ``−1e4``).

    Args:
      student_logits: floating ``[..., K]``.
      teacher_logits: floating ``[..., K]`` (stop-gradient inside).
      labels: integer ``[...]``.
      alpha_temperature: ``τ > 0`` of the teacher confidences.
      weighting: ``"teacher"`` (PLD) or ``"uniform"`` (ListMLE on the teacher-optimal order).
      top_k: optional number of leading positions kept (``1 ≤ top_k``).
      axis: class axis.
      where: optional per-example or per-class bool mask.

    Returns:
      Per-example losses ``[...]``.

    References:
      E. Bassam, D. Zhu and K. Bian, "PLD: A Choice-Theoretic List-Wise Knowledge Distillation",
      arXiv:2506.12542, 2025.

    Example:
      >>> import jax.numpy as jnp
      >>> zs, zt = jnp.array([1.0, 2.0, 0.5, -1.0]), jnp.array([0.3, 2.5, 1.0, -2.0])
      >>> round(float(plackett_luce_distillation_loss(zs, zt, jnp.array(0))), 6)
      0.335992
      >>> round(float(plackett_luce_distillation_loss(zs, zt, jnp.array(0), weighting="uniform")), 5)
      1.93791
    """
    require_positive(alpha_temperature, "alpha_temperature")
    require_option(weighting, ("teacher", "uniform"), "weighting")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive int or None, got {top_k!r}.")
    p = prepare(student_logits, labels, axis=axis, where=where, allow_soft=False, logits_name="student_logits")
    pt = _prepare_teacher(teacher_logits, student_logits, labels, axis=axis, where=where)
    k = p.num_classes
    onehot = jax.nn.one_hot(p.labels, k, dtype=bool)
    # only `where` removes a class: a -inf student logit is a class of probability 0 that keeps
    # its place in the teacher's order (docs/conventions.md)
    valid = jnp.ones(p.logits.shape, bool) if p.class_mask is None else p.class_mask
    key = jnp.where(onehot, jnp.inf, pt.logits)
    key = jnp.where(valid, key, _NEG_INF)
    # descending order: sort ascending on the negated key; masked classes go last
    order = jnp.argsort(jnp.where(valid, -key, jnp.inf), axis=-1, stable=True)
    zs = jnp.take_along_axis(p.logits, order, axis=-1)
    v = jnp.take_along_axis(valid, order, axis=-1)
    zs_sg = jax.lax.stop_gradient(zs)
    finite = v & jnp.isfinite(zs_sg)
    low = jnp.min(jnp.where(finite, zs_sg, jnp.inf), axis=-1, keepdims=True)
    low = jnp.where(jnp.isinf(low), 0.0, low)
    # -inf entries: position k's term log Σ_{j≥k} e^{z_j} − z_k is +inf while a larger logit
    # follows, and log(#-inf entries from k on) when only -inf entries are left (the limit of
    # equal logits tending to -inf together). Those trailing entries (and masked classes) enter
    # the scan as a finite fill e^{-100} below the row minimum, so no -inf − (-inf) is formed.
    neg_inf = v & (zs_sg == _NEG_INF)
    rest = jax.lax.cumsum((v & ~neg_inf).astype(jnp.int32), axis=zs.ndim - 1, reverse=True)
    tail = neg_inf & (rest == 0)
    zs_scan = jnp.where(v & ~tail, zs, low - 100.0)
    suffix = jax.lax.cumlogsumexp(zs_scan, axis=zs.ndim - 1, reverse=True)
    n_tail = jax.lax.cumsum(tail.astype(zs.dtype), axis=zs.ndim - 1, reverse=True)
    term = jnp.where(tail, jnp.log(jnp.maximum(n_tail, 1.0)), suffix - jnp.where(tail, 0.0, zs))
    if weighting == "teacher":
        weights = jnp.exp(log_softmax(_scaled(pt, alpha_temperature)))
        weights = jnp.take_along_axis(weights, order, axis=-1)
    else:
        weights = jnp.ones_like(term)
    # a teacher probability of 0 contributes 0 (never 0·inf)
    keep = v & (weights != 0)
    if top_k is not None:
        keep = keep & (jnp.arange(k) < top_k)
    loss = jnp.sum(jnp.where(keep, weights * term, 0.0), axis=-1)
    # a label on a masked class has no defined loss; prepare already drops that row
    return finalize(p, loss)
