"""Bad-input sweep over the whole public API of :mod:`lossjax.losses`.

Every name in ``lossjax.losses.__all__`` must appear either in ``CASES`` (with an input builder) or
in ``SKIP`` (with the reason it is not a logits → loss function), so a new loss cannot ship without
passing the sweep. The rules checked are those of ``docs/conventions.md``:

* NaN in → NaN out (never silently dropped); a NaN in a row masked by ``where`` reaches neither the
  value (0) nor the gradient (0).
* ``±inf`` logits are evaluated as their limit: the oracle is the same function in float64 at
  ``±1e300`` (``exp`` underflows to exactly 0 there, so float64 computes the limit).
* ``±1e4`` and ``±3e38`` logits: value and gradient equal the float64 result (cast to float32;
  a float64 value beyond the float32 range must come out as ``±inf``).
* bf16/f16 inputs compute in float32 (output float32, equal to the float32 result on the rounded
  inputs); ``K = 1``; an empty batch gives an empty per-example result; an all-masked batch gives
  0 with zero gradient.
* An out-of-range integer label raises ``ValueError`` naming ``labels`` outside ``jit``; under
  ``jit`` (here with ``vmap`` and ``grad``) that example's value and gradient are NaN and the others
  are unchanged.

Each function is compiled twice (compile time dominates, so at a low LLVM optimisation level):
every float32 check in one program (``jit(vmap(value_and_grad))`` over the input variants, the
bf16 input and ``K = 1``) and the float64 oracle; the f16 input and the empty batch are only
traced (``jax.eval_shape``); the out-of-range labels are called eagerly (they must raise early).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lossjax.losses as L

K = 4
NAN, INF = np.nan, np.inf
BIG = 1e300  # float64 stand-in for ±inf: exp underflows to 0, so float64 gives the limit
F32_MAX = float(np.finfo(np.float32).max)

# --------------------------------------------------------------------------------------------
# inputs: one batch whose rows each carry one hazard (rowwise functions keep them independent)
# --------------------------------------------------------------------------------------------

_RNG = np.random.default_rng(13)
_BASE = (_RNG.normal(size=(12, K)) * 1.5).astype(np.float32)
LABELS = np.array([0, 3, 0, 0, 0, 0, 1, 2, 0, 3, 1, 2], np.int32)  # rows 2-4: label 0
ROW_NAN, ROW_NEG_INF, ROW_TGT_NEG_INF, ROW_POS_INF, ROW_MASKED = 2, 3, 4, 5, 11
ROWS_SCALE = (6, 7, 8, 9)  # ±1e4, ±3e38
ROWS_CLEAN = (0, 1, 10)


def hazard_batch(shape: tuple[int, ...]) -> np.ndarray:
    """``[12, ...]`` float32 batch: rows 0,1,10 clean; 2 NaN; 3 −inf (non-target); 4 −inf
    (target, element 0); 5 +inf; 6-7 ±1e4; 8-9 ±3e38; 11 NaN (to be masked)."""
    n = int(np.prod(shape[1:]))
    flat = np.resize(_BASE, (12, n)).astype(np.float32).copy()
    flat[ROW_NAN, 1] = NAN
    flat[ROW_NEG_INF, 1] = -INF
    flat[ROW_TGT_NEG_INF, 0] = -INF
    flat[ROW_POS_INF, 1] = INF
    flat[6, :] = np.resize([1e4, -1e4, 0.5, 1e4 - 1.0], n)
    flat[7, :] = np.resize([-1e4, 1e4, -1e4, 3.0], n)
    flat[8, :] = np.resize([3e38, -3e38, 0.0, 1.0], n)
    flat[9, :] = np.resize([-3e38, 3e38, 3e38, -1.0], n)
    flat[ROW_MASKED, 2] = NAN
    return flat.reshape((12,) + tuple(shape[1:]))


def to_f64(x: np.ndarray) -> np.ndarray:
    y = np.asarray(x, np.float64).copy()
    y[np.isposinf(y)] = BIG
    y[np.isneginf(y)] = -BIG
    return y


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """``call(x, y, w)``: ``x`` the differentiated input ``[B, *shape]``, ``y`` int labels ``[B]``
    in ``[0, K)``, ``w`` a per-example bool mask ``[B]`` or None."""

    call: Callable[..., Any]
    shape: tuple[int, ...] = (K,)
    rowwise: bool = True  # output [B], row i depends on input row i only
    labels: bool = True  # y are class labels subject to the out-of-range rule
    where: bool = True
    k1: bool | None = True  # K = 1 accepted; False: must raise ValueError; None: not a class axis
    nonfinite: bool = True  # ±inf/±1e4/±3e38 rows are meaningful inputs (False: skip them)
    overflow_nan: bool = False  # at ±3e38 NaN is allowed (documented), a wrong number is not
    label_name: str = "labels"  # the argument a bad-label ValueError must name
    f64_oracle: bool = True  # False: random draws depend on the dtype; compare with float32
    keeps_dtype: bool = False  # an elementwise transform: half in → half out (not float32)
    rtol: float = 2e-4
    extra: dict = field(default_factory=dict)


def _teacher(shape):
    t = (np.random.default_rng(7).normal(size=(12,) + tuple(shape)) * 1.5).astype(np.float32)
    return t


T4 = _teacher((K,))


def _cd(x):
    """The compute dtype of x (float32 for half inputs): fixed inputs of the table use it, so the
    half-precision check rounds only x."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _t(x):
    """Teacher / second input of the batch size and dtype of x (float64 under x64)."""
    t = T4[: x.shape[0], : x.shape[-1]]
    return jnp.asarray(t, jnp.promote_types(jnp.result_type(x), jnp.float32))


def cls(fn, **kw):
    return Case(lambda x, y, w: fn(x, y, where=w, **kw))


def cls_batch(fn, **kw):
    return Case(lambda x, y, w: fn(x, y, where=w, **kw), rowwise=False)


def _bin(y):
    return (y % 2).astype(jnp.int32)


EMB = np.random.default_rng(3).normal(size=(12, 4)).astype(np.float32)
CENTERS = np.random.default_rng(4).normal(size=(4, 3 * 2)).astype(np.float32)
PROTOS = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
W34 = np.random.default_rng(6).normal(size=(3, K)).astype(np.float32)
SEG_T = np.random.default_rng(8).uniform(size=(12, 4, 2)).astype(np.float32)
PAIR_Y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2], np.int32)
HYP = np.random.default_rng(9).normal(size=(K, K)).astype(np.float32)


def _hp(x):
    """``[K, d]`` gyroplane parameters for features of size ``d = x.shape[-1]``."""
    return jnp.asarray(HYP[:, : x.shape[-1]], _cd(x))


def _rows(x, w):
    """The caller's double ``where``: masked rows replaced before a transform (None: unchanged)."""
    return x if w is None else jnp.where(w.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))


def _emb_y(y):
    return jnp.asarray(PAIR_Y[: y.shape[0]])


CASES: dict[str, Case] = {
    # --- functions of p_y and friends ------------------------------------------------------
    "aace_loss": cls(L.aace_loss),
    "aace_loss[th=.5,const]": cls(L.aace_loss, th=0.5, mode="const"),
    "comp_sum_loss": cls(L.comp_sum_loss),
    "comp_sum_loss[tau=.5]": cls(L.comp_sum_loss, tau=0.5),
    "generalized_cross_entropy_loss": cls(L.generalized_cross_entropy_loss),
    "truncated_generalized_cross_entropy_loss": cls(L.truncated_generalized_cross_entropy_loss),
    "taylor_cross_entropy_loss": cls(L.taylor_cross_entropy_loss),
    "mae_loss": cls(L.mae_loss),
    "smooth_adversarial_comp_sum_loss": Case(
        lambda x, y, w: L.smooth_adversarial_comp_sum_loss(x, x[..., ::-1], y, nu=0.5, where=w)
    ),
    "reverse_cross_entropy_loss": cls(L.reverse_cross_entropy_loss),
    "symmetric_cross_entropy_loss": cls(L.symmetric_cross_entropy_loss),
    "normalized_cross_entropy_loss": Case(
        lambda x, y, w: L.normalized_cross_entropy_loss(x, y, where=w), k1=False, overflow_nan=True
    ),
    "normalized_focal_loss": Case(
        lambda x, y, w: L.normalized_focal_loss(x, y, where=w), k1=False, overflow_nan=True
    ),
    "normalized_focal_loss[official]": Case(
        lambda x, y, w: L.normalized_focal_loss(x, y, detach_focal_weight=True, where=w),
        k1=False,
        overflow_nan=True,
    ),
    "normalized_generalized_cross_entropy_loss": Case(
        lambda x, y, w: L.normalized_generalized_cross_entropy_loss(x, y, where=w),
        k1=False,
        overflow_nan=True,
    ),
    "normalized_mae_loss": Case(lambda x, y, w: L.normalized_mae_loss(x, y, where=w), k1=False),
    "active_passive_loss": Case(
        lambda x, y, w: L.active_passive_loss(x, y, where=w), k1=False, overflow_nan=True
    ),
    "active_passive_loss[fl,mae]": cls(L.active_passive_loss, active="fl", passive="mae"),
    "ldr_kl_loss": cls(L.ldr_kl_loss),
    "ldr_kl_loss[softplus_mean]": cls(L.ldr_kl_loss, normalize="softplus_mean"),
    "aldr_kl_loss": Case(lambda x, y, w: L.aldr_kl_loss(x, y, where=w)[0]),
    "softmax_focal_loss": cls(L.softmax_focal_loss),
    "dual_cross_entropy_loss": cls(L.dual_cross_entropy_loss),
    "dual_cross_entropy_focal_loss": cls(L.dual_cross_entropy_focal_loss),
    "spherical_z_loss": cls(L.spherical_z_loss),
    "logsumexp_squared_penalty": Case(
        lambda x, y, w: L.logsumexp_squared_penalty(x, where=w), labels=False
    ),
    "cross_entropy_with_z_loss": Case(
        lambda x, y, w: sum(L.cross_entropy_with_z_loss(x, y, where=w))
    ),
    "stablemax_log_transform": Case(
        lambda x, y, w: jnp.sum(L.stablemax_log_transform(x), -1),
        labels=False,
        where=False,
        keeps_dtype=True,
    ),
    "stablemax": Case(lambda x, y, w: L.stablemax(x)[..., 0], labels=False, where=False),
    "log_stablemax": Case(lambda x, y, w: L.log_stablemax(x)[..., 0], labels=False, where=False),
    "stablemax_cross_entropy_loss": cls(L.stablemax_cross_entropy_loss),
    "correctness_aware_loss": Case(
        lambda x, y, w: L.correctness_aware_loss(x, y, 1.5, where=w), rowwise=False
    ),
    "dco_loss": cls(L.dco_loss, n=4.0),
    "dco_gradient_factor": cls(L.dco_gradient_factor, n=4.0),
    "dco_loss_from_log_prob": Case(
        lambda x, y, w: L.dco_loss_from_log_prob(x[:, 1], n=4.0, where=w),
        labels=False,
    ),
    "hl_gauss_loss": Case(
        lambda x, y, w: L.hl_gauss_loss(x, y.astype(jnp.float32) + 0.3, v_min=0.0, v_max=4.0, where=w),
        labels=False,
    ),
    "two_hot_loss": Case(
        lambda x, y, w: L.two_hot_loss(x, y.astype(jnp.float32) + 0.3, v_min=0.0, v_max=3.0, where=w),
        labels=False,
        k1=None,
    ),
    "bins_to_value": Case(
        lambda x, y, w: L.bins_to_value(x, v_min=0.0, v_max=3.0), labels=False, where=False, k1=None
    ),
    # --- distillation (x is the student; the teacher is fixed) ------------------------------
    "kd_loss": Case(lambda x, y, w: L.kd_loss(x, _t(x), where=w), labels=False),
    "nkd_loss": Case(lambda x, y, w: L.nkd_loss(x, _t(x), y, where=w)),
    "uskd_loss": Case(lambda x, y, w: L.uskd_loss(x, _t(x), y, where=w)),
    "dkd_loss": Case(lambda x, y, w: L.dkd_loss(x, _t(x), y, where=w)),
    "binary_kl_loss": Case(lambda x, y, w: L.binary_kl_loss(x, _t(x), where=w), labels=False),
    "binary_kl_norm_loss": Case(
        lambda x, y, w: L.binary_kl_norm_loss(x, _t(x), where=w), labels=False
    ),
    "plackett_luce_distillation_loss": Case(
        lambda x, y, w: L.plackett_luce_distillation_loss(x, _t(x), y, where=w)
    ),
    "trajectory_kl_loss": Case(
        lambda x, y, w: L.trajectory_kl_loss(x, _t(x), where=w), labels=False
    ),
    # --- retrieval / ranking (rows are queries over K candidates) ---------------------------
    "decoupled_softmax_loss": Case(
        lambda x, y, w: L.decoupled_softmax_loss(x, jax.nn.one_hot(y, x.shape[-1], dtype=bool), where=w),
        labels=False,
    ),
    "infonce_loss": Case(
        lambda x, y, w: L.infonce_loss(x, jax.nn.one_hot(y, x.shape[-1], dtype=bool), where=w),
        labels=False,
    ),
    "soft_topk_loss": Case(
        lambda x, y, w: L.soft_topk_loss(x, jax.nn.one_hot(y, x.shape[-1], dtype=bool), k=2, num_iters=4, where=w),
        labels=False,
        k1=None,
    ),
    "mann_whitney_loss": Case(
        lambda x, y, w: L.mann_whitney_loss(x, jax.nn.one_hot(y, x.shape[-1], dtype=bool), where=w),
        labels=False,
        rowwise=False,
    ),
    "profit_aware_pairwise_bce": Case(
        lambda x, y, w: L.profit_aware_pairwise_bce(x, _t(x), top_k=2, where=w),
        labels=False,
        k1=None,
    ),
    "weighted_listwise_bce": Case(
        lambda x, y, w: L.weighted_listwise_bce(x, jax.nn.one_hot(y, x.shape[-1]), where=w),
        labels=False,
    ),
    # --- preference (x[:, :4] are the four sequence log-probabilities) ----------------------
    "dpo_loss": Case(
        lambda x, y, w: L.dpo_loss(x[:, 0], x[:, 1], x[:, 2], x[:, 3], where=w),
        labels=False,
        k1=None,
    ),
    "spo_loss": Case(
        lambda x, y, w: L.spo_loss(x[:, 0], x[:, 1], x[:, 2], x[:, 3], _t(x)[:, :3], y % 3, where=w),
        labels=False,
        k1=None,
    ),
    "kto_loss": Case(  # x[:, 0] policy, x[:, 1] reference log-probs; fixed reference point (rowwise)
        lambda x, y, w: L.kto_loss(x[:, 0], x[:, 1], y % 2 == 0, reference_point=0.3, beta=0.5,
                                   desirable_weight=1.2, where=w),
        labels=False,
        k1=None,
    ),
    "sequence_logprob": Case(
        lambda x, y, w: L.sequence_logprob(
            x, jnp.stack([y, (y + 1) % x.shape[-1]], 1), None if w is None else jnp.stack([w, w], 1)
        ),
        shape=(2, K),
        label_name="tokens",
    ),
    # --- metric learning (x are embeddings, labels are class ids of the pairs) -------------
    "multi_similarity_loss": Case(
        lambda x, y, w: L.multi_similarity_loss(x, _emb_y(y), where=w), rowwise=False, labels=False
    ),
    "supcon_loss": Case(
        lambda x, y, w: L.supcon_loss(x, _emb_y(y), where=w), rowwise=False, labels=False
    ),
    "supcon_prototype_loss": Case(
        lambda x, y, w: L.supcon_prototype_loss(x, _emb_y(y), _hp(x), where=w), rowwise=False, labels=False
    ),
    "triplet_loss": Case(
        lambda x, y, w: L.triplet_loss(x, _emb_y(y), where=w), rowwise=False, labels=False
    ),
    "triplet_loss[hard,soft]": Case(
        lambda x, y, w: L.triplet_loss(x, _emb_y(y), mining="hard", soft=True, where=w),
        rowwise=False,
        labels=False,
    ),
    # --- hyperbolic (x are Euclidean features mapped into the Poincaré ball) -------------------
    "poincare_expmap0": Case(lambda x, y, w: L.poincare_expmap0(x).sum(-1), labels=False, where=False, k1=None),
    "poincare_distance": Case(
        lambda x, y, w: L.poincare_distance(L.poincare_expmap0(x), 0.1 * _t(x)),
        labels=False,
        where=False,
        k1=None,
    ),
    "hyperbolic_mlr_logits": Case(
        lambda x, y, w: L.hyperbolic_mlr_logits(L.poincare_expmap0(x), 0.1 * _hp(x), _hp(x)).sum(-1),
        labels=False,
        where=False,
        k1=None,
    ),
    "hyperbolic_cross_entropy_loss": Case(
        lambda x, y, w: L.hyperbolic_cross_entropy_loss(
            L.poincare_expmap0(_rows(x, w)), y, 0.1 * _hp(x), _hp(x), where=w
        ),
        k1=None,
    ),
    # Hyp-OC: embeddings through the clipped exponential map (clip_r = 2 keeps them off the ball's edge)
    "hyperbolic_pairwise_confusion_loss": Case(
        lambda x, y, w: L.hyperbolic_pairwise_confusion_loss(L.poincare_expmap0(_rows(x, w), clip_r=2.0), where=w),
        rowwise=False,
        labels=False,
    ),
    "hyperbolic_pairwise_confusion_loss[released]": Case(
        lambda x, y, w: L.hyperbolic_pairwise_confusion_loss(
            L.poincare_expmap0(_rows(x, w), c=0.1, clip_r=2.0), c=0.1, distance="released", where=w
        ),
        rowwise=False,
        labels=False,
    ),
    "hyperbolic_one_class_cross_entropy_loss": Case(  # real rows x, pseudo-negatives x/2 reversed
        lambda x, y, w: L.hyperbolic_one_class_cross_entropy_loss(
            L.poincare_expmap0(_rows(x, w), clip_r=2.0), L.poincare_expmap0(0.5 * _rows(x, w)[::-1], clip_r=2.0),
            0.1 * _hp(x)[:2], _hp(x)[:2], where=None if w is None else jnp.concatenate([w, w[::-1]])
        ),
        rowwise=False,
        labels=False,
        k1=None,
    ),
    "soft_triple_loss": Case(
        lambda x, y, w: L.soft_triple_loss(
            x, jnp.asarray(CENTERS[: x.shape[-1]], _cd(x)), y % 3, centers_per_class=2, where=w
        ),
        labels=False,
        nonfinite=False,  # x are embeddings, not logits
        k1=None,
    ),
    "metrix_multi_similarity_loss": Case(
        lambda x, y, w: L.metrix_multi_similarity_loss(
            x, jnp.asarray(EMB[: x.shape[0], : x.shape[1]], _cd(x)),
            jnp.full((x.shape[0], x.shape[0]), 0.5, _cd(x)), where=w,
        ),
        rowwise=False,
        labels=False,
    ),
    "proto_triplet_loss": Case(
        lambda x, y, w: L.proto_triplet_loss(x, y % 3, jnp.asarray(PROTOS[:, : x.shape[-1]], _cd(x)), where=w),
        labels=False,
        nonfinite=False,  # x are embeddings, not logits
    ),
    "icnn_loss": Case(
        lambda x, y, w: L.icnn_loss(x, _emb_y(y), k=1), rowwise=False, labels=False, where=False
    ),
    # --- segmentation (x are per-pixel logits [B, N=4, C=2]) --------------------------------
    "jaccard_metric_loss": Case(
        lambda x, y, w: L.jaccard_metric_loss(x, _seg_t(x), from_logits=True, where=_pix(w, x)),
        shape=(4, 2),
        labels=False,
        k1=False,
    ),
    "dice_semimetric_loss": Case(
        lambda x, y, w: L.dice_semimetric_loss(x, _seg_t(x), from_logits=True, where=_pix(w, x)),
        shape=(4, 2),
        labels=False,
        k1=False,
    ),
    "soft_dice_loss": Case(
        lambda x, y, w: L.soft_dice_loss(x, _seg_t(x), from_logits=True, where=_pix(w, x)),
        shape=(4, 2),
        labels=False,
        k1=False,
    ),
    "tversky_loss": Case(
        lambda x, y, w: L.tversky_loss(x, _seg_t(x), from_logits=True, where=_pix(w, x)),
        shape=(4, 2),
        labels=False,
        k1=False,
    ),
    "generalized_dice_loss": Case(
        lambda x, y, w: L.generalized_dice_loss(
            x, jnp.argmax(_seg_t(x), -1), from_logits=True, where=_pix(w, x)
        ),
        shape=(4, 2),
        labels=False,
        k1=False,
    ),
    "cl_dice_loss": Case(
        lambda x, y, w: L.cl_dice_loss(
            x.reshape(x.shape[0], 2, 2, 2),
            jnp.argmax(_seg_t(x), -1).reshape(x.shape[0], 2, 2),
            from_logits=True,
            where=None if w is None else _pix(w, x).reshape(x.shape[0], 2, 2),
        ),
        shape=(4, 2),
        labels=False,
        k1=False,
    ),
    "sauna_jaccard_loss": Case(
        lambda x, y, w: L.sauna_jaccard_loss(x, _t(x), from_logits=True, where=_elem(w, x)),
        labels=False,
    ),
    "sauna_jaccard_loss[separate]": Case(
        lambda x, y, w: L.sauna_jaccard_loss(x, _t(x), combine="separate", from_logits=True, where=_elem(w, x)),
        labels=False,
    ),
    "stable_focal_l1_loss": Case(
        lambda x, y, w: L.stable_focal_l1_loss(x, _t(x), from_logits=True, where=_elem(w, x)),
        labels=False,
        rowwise=False,  # a mean over the kept elements
    ),
    "self_adjusting_dice_loss": Case(
        lambda x, y, w: L.self_adjusting_dice_loss(x, y, set_level=False, where=w)
    ),
    "self_adjusting_dice_loss[set]": Case(
        lambda x, y, w: L.self_adjusting_dice_loss(x, y, where=w), rowwise=False
    ),
    # --- binary / set-level losses on x[:, 1] (the column the NaN rows use) ----------------
    "anyloss_loss": Case(
        lambda x, y, w: L.anyloss_loss(x[:, 1], _bin(y), amplify=10.0, where=w),
        rowwise=False,
        labels=False,
    ),
    "anyloss": Case(
        lambda x, y, w: L.anyloss(x[:, 1], _bin(y), amplify=10.0, where=w),
        rowwise=False,
        labels=False,
    ),
    "ensloss_surrogate": Case(
        lambda x, y, w: L.ensloss_surrogate(x[:, 1], _bin(y), jax.random.key(0), where=w),
        rowwise=False,
        labels=False,
        f64_oracle=False,
    ),
    # --- sequence ---------------------------------------------------------------------------
    "eisl_loss": Case(
        lambda x, y, w: L.eisl_loss(x, jnp.stack([y, (y + 1) % x.shape[-1], y], 1), where=w),
        shape=(3, K),
        label_name="targets",
    ),
    "cs_divergence": Case(
        lambda x, y, w: L.cs_divergence(x[:, 1], _t(x)[:, 0], where_x=w),
        rowwise=False,
        labels=False,
    ),
    "conditional_cs_divergence": Case(
        lambda x, y, w: L.conditional_cs_divergence(_t(x)[:, :2], _t(x)[:, 2], x[:, 1], where=w),
        rowwise=False,
        labels=False,
    ),
    "cs_qmi": Case(lambda x, y, w: L.cs_qmi(_t(x)[:, :2], x[:, 1:3], where=w), rowwise=False, labels=False),
    "cs_ib_loss": Case(
        lambda x, y, w: L.cs_ib_loss(_t(x)[:, :2], x[:, 2:], _t(x)[:, 3], x[:, 1], beta=0.5, where=w),
        rowwise=False,
        labels=False,
    ),
    "aggregate_response_loss": Case(
        lambda x, y, w: L.aggregate_response_loss(
            x[:, 1], jnp.arange(x.shape[0]) // 2, jnp.ones(((x.shape[0] + 1) // 2,), _cd(x)),
            rho=0.5, num_bags=(x.shape[0] + 1) // 2, where=w,
        ),
        rowwise=False,
        labels=False,
    ),
    "ce_input_gradient_penalty": Case(
        lambda x, y, w: L.ce_input_gradient_penalty(
            lambda p, v: v @ p, jnp.asarray(W34, _cd(x)), x[:, :3], y, noise="none"
        ),
        labels=False,
        where=False,
        nonfinite=False,  # x are network inputs, not logits
        k1=None,
    ),
    "input_gradient_penalty": Case(
        lambda x, y, w: L.input_gradient_penalty(
            lambda p, v, t: jnp.sum(jnp.tanh(v * p), -1), jnp.asarray(T4[0], _cd(x)), x, None,
            noise="none",
        ),
        labels=False,
        where=False,
        nonfinite=False,  # x are network inputs, not logits
        k1=None,
    ),
    # --- issue 16 methods (consistency, ordinal, GAN, unlearning, ranking, detection, segmentation) ---
    "symmetric_consistency_loss": Case(
        lambda x, y, w: L.symmetric_consistency_loss(x, _t(x), where=w), labels=False
    ),
    "ordinal_cross_entropy_loss": Case(
        lambda x, y, w: L.ordinal_cross_entropy_loss(x[:, 0], x[:, 1:], y, where=w),
        nonfinite=False,  # (score, thresholds): a ±inf threshold makes the cumulative logits inf − inf
    ),
    "ordinal_logits": Case(
        lambda x, y, w: jnp.sum(L.ordinal_logits(x[:, 0], x[:, 1:]), -1), labels=False, where=False
    ),
    "relativistic_gan_loss": Case(
        lambda x, y, w: L.relativistic_gan_loss(x[:, 0], x[:, 1], where=w), shape=(3,), labels=False
    ),
    "relativistic_average_gan_loss": Case(
        lambda x, y, w: L.relativistic_average_gan_loss(x[:, 0], x[:, 1], where_real=w, where_fake=w),
        shape=(3,),
        rowwise=False,
        labels=False,
    ),
    "unlearning_joint_loss": Case(
        lambda x, y, w: L.unlearning_joint_loss(
            x, y, 0.5 * x[::-1], y[::-1], where_forget=w, where_retain=None if w is None else w[::-1]
        ),
        rowwise=False,
    ),
    "cprd_loss": Case(lambda x, y, w: L.cprd_loss(x, _t(x), num_hard=3, where=w), labels=False),
    "dc_pdd_score": Case(
        lambda x, y, w: L.dc_pdd_score(
            x, jnp.broadcast_to(PDD_IDS[: x.shape[1]], x.shape), jnp.asarray(PDD_REF), upper_bound=2.0, where=w
        ),
        labels=False,
    ),
    "boundary_aware_cross_entropy_loss": Case(
        lambda x, y, w: L.boundary_aware_cross_entropy_loss(x, jnp.argmax(_seg_t(x), -1), where=w),
        shape=(4, 2),
        labels=False,
    ),
    "skeleton_recall_loss": Case(
        lambda x, y, w: L.skeleton_recall_loss(
            x.reshape(x.shape[0], 2, 2, 2),
            jnp.argmax(_seg_t(x), -1).reshape(x.shape[0], 2, 2),
            from_logits=True,
            where=None if w is None else _pix(w, x).reshape(x.shape[0], 2, 2),
        ),
        shape=(4, 2),
        labels=False,
    ),
    "variance_constrained_cross_entropy_loss": Case(
        lambda x, y, w: L.variance_constrained_cross_entropy_loss(
            x, jnp.argmax(_seg_t(x), -1), jnp.broadcast_to(jnp.array([1, 1, 2, 0]), x.shape[:2]),
            num_instances=2, where=w,
        ),
        shape=(4, 2),
        labels=False,
    ),
    "tri_bce_loss": Case(
        lambda x, y, w: L.tri_bce_loss(x[:, 0], x[:, 1], x[:, 2], _bin(y), where=w),
        shape=(3,),
        rowwise=False,
        labels=False,
    ),
    "embedding_utilization": Case(
        lambda x, y, w: L.embedding_utilization(x, jnp.asarray(EMB[:, : x.shape[1]]), where_query=w),
        rowwise=False,
        labels=False,
    ),
}

PDD_IDS = np.array([0, 1, 0, 2], np.int32)  # position 2 repeats token 0 (not scored)
PDD_REF = np.log(np.array([0.5, 0.3, 0.2], np.float32))


def _seg_t(x):
    dt = jnp.promote_types(x.dtype, jnp.float32)
    return jnp.asarray(SEG_T[: x.shape[0], : x.shape[1], : x.shape[2]], dt)


def _elem(w, x):
    """Per-example mask broadcast to every element of ``x`` (None stays None)."""
    if w is None:
        return None
    return jnp.broadcast_to(w.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)


def _pix(w, x):
    """Per-example mask broadcast to per-pixel ``[B, N]`` (None stays None)."""
    if w is None:
        return None
    return jnp.broadcast_to(w.reshape((-1,) + (1,) * (x.ndim - 2)), x.shape[:-1])


SKIP = {
    "check_labels": "eager label validation (tested in tests/losses/test_nonfinite.py)",
    "reduce_loss": "a reduction, not a loss (tested with masks in tests/test_sharded_losses.py)",
    "margin_lse": "takes a Prepared tuple; every comp-sum case above goes through it",
    "masked_logsumexp": "primitive; tested in tests/losses/test_nonfinite.py",
    "ACTIVE_LOSSES": "constant",
    "PASSIVE_LOSSES": "constant",
    "LDR_NORMALIZATIONS": "constant",
    "ANYLOSS_METRICS": "constant",
    "class_balanced_weights": "class-count weights, not a function of logits",
    "per_example_class_weights": "label → weight lookup, not a function of logits",
    "softmax_collapse_fraction": "non-differentiable diagnostic (a fraction of the batch)",
    "zero_loss_fraction": "non-differentiable diagnostic (a fraction of the batch)",
    "ensloss_derivatives": "random derivative draws (no gradient); ensloss_surrogate is swept",
    "multi_similarity_miner": "returns boolean pair masks, not a loss",
    "soft_triple_center_regularizer": "a function of the centers only (no batch)",
    "mixup_positiveness": "label arithmetic, not a function of logits",
    "class_prototypes": "per-class means, not a loss",
    "bin_edges": "constructs a support", "bin_centers": "constructs a support",
    "hl_gauss_probs": "target construction", "two_hot_probs": "target construction",
    "categorical_projection": "target construction",
    "soft_skeleton": "morphological transform used inside cl_dice_loss (swept there)",
    "NeuralCollapseMetrics": "a NamedTuple type",
    "neural_collapse": "diagnostic metrics of features, not a loss",
    "boundary_weight_map": "label-derived weight map (no logits); swept through boundary_aware_cross_entropy_loss",
    "reference_log_frequencies": "corpus statistic from token counts, not a function of logits",
    "nlm_cosine": "pytree diagnostic cos(g, θ) (tested in tests/losses/test_utilization.py)",
    "sauna_transform": "NumPy/SciPy label transform of binary masks, outside jit (tests/losses/test_sauna.py)",
    "gaussian_pseudo_negatives": "a sampler (no gradient; tests/losses/test_hyperbolic_one_class.py)",
    "superpixel_pool": "label-free pooling of per-pixel values into segments (tests/losses/test_superpixel.py)",
}


# Checks that still fail, with the reason (the sweep fails if one of them starts to pass, so
# this table only shrinks). Categories: nan, nonfinite (±inf/±1e4/±3e38 vs float64), masked,
# all_masked, label_jit, label_eager, half, empty, k1, dtype.
_BALL_EDGE = (
    "huge features map to within 1e-5 of the Poincaré ball's edge, where float32 keeps ~3 digits of "
    "1 − c‖x‖² (relative error ~1e-3 vs float64; inherent to the ball model in float32)"
)
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "poincare_distance": {"nonfinite": _BALL_EDGE},
    "hyperbolic_mlr_logits": {"nonfinite": _BALL_EDGE},
    "hyperbolic_cross_entropy_loss": {"nonfinite": _BALL_EDGE},
}


def test_every_public_name_is_swept_or_skipped():
    covered = {n.split("[")[0] for n in CASES}
    missing = [n for n in L.__all__ if n not in covered and n not in SKIP]
    assert not missing, f"add these public names to CASES or SKIP: {missing}"
    stale = [n for n in list(covered) + list(SKIP) if n not in L.__all__]
    assert not stale, stale


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def _vg(case: Case, x, y, w):
    def total(x):
        out = case.call(x, y, w)
        return jnp.sum(out), out

    (_, out), g = jax.value_and_grad(total, has_aux=True)(x)
    return out, g


def _try(fn):
    """Run ``fn`` (eagerly or at trace time); an exception is returned, not raised."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - reported as a failure or an expected refusal
        return err


# XLA CPU compile options of the sweep's programs: each program runs once, so compile time
# dominates; LLVM's optimisation level changes the speed of the generated code, not its IEEE
# arithmetic (no fast-math either way).
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _run_compiled(fn, *args):
    """``jax.jit(fn)(*args)``, compiled with :data:`_FAST_COMPILE`."""
    return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)(*args)


def _compiled(case: Case, errors: dict, xs, ys, ws, x_bf16):
    """One compiled program per function: every float32 check of the sweep at once.

    ``vmap`` over the slices of ``xs`` (as given / one out-of-range label / all masked / the
    bf16-rounded input / for batch-level functions the clean batch) with ``value_and_grad``; the
    bf16 input and ``K = 1``. Exceptions raised while tracing a part are stored in ``errors``
    (that part returns None). The f16 input and the empty batch only need the output's dtype and
    shape (and trace-time errors): they are traced with ``jax.eval_shape``, not compiled.
    """

    def part(key, fn):
        out = _try(fn)
        if isinstance(out, Exception):
            errors[key] = out
            return None
        return out

    def run(xs, ys, ws, xh):
        vmapped = jax.vmap(lambda a, b, c: _vg(case, a, b, c if case.where else None))(xs, ys, ws)
        x, y, w = xs[0], ys[0], (ws[0] if case.where else None)
        half = part("bfloat16", lambda: case.call(xh, y, w))
        k1 = None
        if case.shape == (K,) and case.k1 is not None:
            k1 = part("k1", lambda: _vg(case, x[:, :1], jnp.zeros_like(y), w))
        return vmapped, half, k1

    out = _try(lambda: _run_compiled(run, xs, ys, ws, x_bf16))
    if isinstance(out, Exception):
        raise out
    x, y, w = xs[0], ys[0], (ws[0] if case.where else None)
    f16 = jax.ShapeDtypeStruct(x.shape, jnp.float16)
    x0 = jax.ShapeDtypeStruct((0,) + x.shape[1:], x.dtype)
    shapes = {
        "float16": part("float16", lambda: jax.eval_shape(lambda a: case.call(a, y, w), f16)),
        "empty": part(
            "empty",
            lambda: jax.eval_shape(lambda a: case.call(a, y[:0], None if w is None else w[:0]), x0),
        ),
    }
    return out, shapes


def _f64(case: Case, x, y, w):
    with jax.enable_x64(True):
        x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y)
        v, g = _run_compiled(lambda a, b, c: _vg(case, a, b, c), x, y, w)
        return np.asarray(v), np.asarray(g)


def _close(got, want, rtol, atol):
    """Compare float32 ``got`` to the float64 oracle ``want`` (NaN oracle: anything goes)."""
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64)
    ok = np.isnan(want)
    # within a factor 4 of float32 overflow an intermediate may overflow: accept ±inf there
    over = np.isfinite(want) & (np.abs(want) > F32_MAX / 4)
    inf_want = np.isinf(want) | over
    with np.errstate(invalid="ignore"):
        ok |= inf_want & (got == np.sign(want) * np.inf)
    fin = np.isfinite(want) & (np.abs(want) <= F32_MAX)
    with np.errstate(invalid="ignore"):
        ok |= fin & (np.abs(got - want) <= atol + rtol * np.abs(want))
    return ok


def _inputs(case: Case):
    """The hazard batch (rowwise functions) or a clean batch with one NaN row (batch-level)."""
    x = hazard_batch((12,) + case.shape)
    if not case.rowwise:
        clean = x[[0, 1, 10] * 4].copy()
        bump = np.arange(12, dtype=np.float32).reshape((12,) + (1,) * len(case.shape))
        x = clean + np.float32(0.25) * bump
    return x


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep(name):
    case = CASES[name]
    fails: list[tuple[str, str]] = []

    def fail(category: str, message: str) -> None:
        fails.append((category, message))

    x = _inputs(case)
    y = np.asarray(LABELS)
    w = np.ones(12, bool)
    masked = ROW_MASKED if case.rowwise else 4
    x_run = x.copy()
    if not case.rowwise:
        x_run.reshape(12, -1)[masked, 1] = NAN  # the NaN row; masked in slice 0 when `where`
    if case.where:
        w[masked] = False
    y_bad = y.copy()
    if case.labels:
        y_bad[0] = -1
    x_bf16 = x_run.astype(jnp.bfloat16)
    # slices: as given / one out-of-range label / all masked / bf16-rounded (/ clean batch)
    xs = [x_run, x_run, x_run, x_bf16.astype(np.float32)]
    ys = [y, y_bad, y, y]
    ws = [w, w, np.zeros(12, bool), w]
    if not case.rowwise and not case.f64_oracle:
        xs, ys, ws = xs + [x], ys + [y], ws + [w]
    errors: dict = {}
    ((vv, gg), half_bf16, k1), shapes = _compiled(
        case, errors, np.stack(xs), np.stack(ys), np.stack(ws), x_bf16
    )
    half = {
        "bfloat16": errors.get("bfloat16", half_bf16),
        "float16": errors.get("float16", shapes["float16"]),
    }
    empty = errors.get("empty", shapes["empty"])
    k1 = errors.get("k1", k1)
    vv, gg = np.asarray(vv), np.asarray(gg)
    rounded = vv[3]
    v, g = vv[0], gg[0]
    wj = jnp.asarray(w) if case.where else None

    if v.dtype != np.float32:
        fail("dtype", f"output dtype {v.dtype} for float32 input")
    if case.rowwise:
        v64, g64 = _f64(case, to_f64(x_run), jnp.asarray(y), wj)
        if not np.isnan(v[ROW_NAN]):
            fail("nan", f"NaN input gave {v[ROW_NAN]} (NaN must propagate)")
        rows = list(ROWS_CLEAN)
        if case.nonfinite:
            rows += [ROW_NEG_INF, ROW_TGT_NEG_INF, ROW_POS_INF, *ROWS_SCALE]
        for r in rows:
            scale = np.max(np.abs(np.where(np.isfinite(x[r]), x[r], 0)))
            atol = 1e-5 if scale < 100 else (4e-3 * max(1.0, scale / 1e4) if scale < 1e5 else 1e-5)
            vok = _close(v[r], v64[r], case.rtol, atol)
            if r in (ROW_NEG_INF, ROW_TGT_NEG_INF, ROW_POS_INF) and abs(v64[r]) > 600:
                # log-divergent limit: at ∓1e300 float64 gives ≈ ±690, the limit is ±inf
                vok |= np.asarray(v[r]) == np.sign(v64[r]) * np.inf
            if r == ROW_POS_INF or (r in ROWS_SCALE[2:] and case.overflow_nan):
                vok |= np.isnan(v[r])  # NaN allowed (documented), a wrong finite value is not
            if not vok.all():
                fail("nonfinite", f"row {r} ({x[r].ravel().tolist()}): value {v[r]} vs float64 {v64[r]}")
            gok = _close(g[r], g64[r], case.rtol * 10, max(atol, 1e-4))
            if r == ROW_POS_INF:  # +inf: the gradient is not specified (optax, torch: NaN)
                gok[:] = True
            if r in ROWS_SCALE[2:] and case.overflow_nan:
                gok |= np.isnan(g[r])
            if not gok.all():
                fail(
                    "nonfinite",
                    f"row {r} ({x[r].ravel().tolist()}): grad {g[r].ravel()} vs float64 {g64[r].ravel()}"
                )
        if case.where and (v[ROW_MASKED] != 0 or np.any(g[ROW_MASKED] != 0)):
            fail("masked", f"masked NaN row: value {v[ROW_MASKED]}, grad {g[ROW_MASKED].ravel()}")
        if not case.where and not np.isnan(v[ROW_MASKED]):
            fail("nan", "NaN input (row 11) did not propagate")
    else:
        if case.f64_oracle:
            v64, g64 = _f64(case, x, jnp.asarray(y), wj)  # clean batch, same mask
        else:
            v64, g64 = vv[4], gg[4]  # the clean batch, compiled with the other float32 checks
        if case.where:
            same_v = np.allclose(v, v64, rtol=case.rtol, atol=1e-5)
            if not (same_v and np.allclose(g, g64, rtol=case.rtol * 10, atol=1e-4)):
                fail("masked", f"masked NaN row changes the result or gradient: {v} vs {v64} (float64, clean row)")
            if np.any(g.reshape(12, -1)[masked] != 0):
                fail("masked", f"masked NaN row gets gradient {g[masked].ravel()}")
        elif not np.any(np.isnan(v)):
            fail("nan", f"NaN input gave {v} (NaN must propagate)")
    # traced out-of-range label: NaN for that example only
    if case.labels:
        if case.rowwise:
            no_grad = not np.any(gg[0])  # a stop-gradient quantity: only the value can be NaN
            ok = np.isnan(vv[1][0]) and (no_grad or np.any(np.isnan(gg[1][0])))
            ok &= np.array_equal(vv[1][1:], v[1:], equal_nan=True)
        else:
            ok = np.any(np.isnan(vv[1]))
        if not ok:
            fail("label_jit", f"traced out-of-range label: value {vv[1]} (want NaN for that example)")
    # all-masked batch
    if case.where and (np.any(vv[2] != 0) or np.any(gg[2] != 0)):
        fail("all_masked", f"all-masked batch: value {vv[2]}, nonzero grad {np.any(gg[2] != 0)}")
    # half precision computes in float32 (an elementwise transform keeps the input dtype)
    for dt, out in half.items():
        want_dt = jnp.dtype(dt) if case.keeps_dtype else np.float32
        if isinstance(out, Exception):
            fail("half", f"{dt} input raised {type(out).__name__}: {out}")
        elif out.dtype != want_dt:
            fail("half", f"{dt} input gave dtype {out.dtype} (want {jnp.dtype(want_dt).name})")
    tol = dict(rtol=2e-2, atol=1e-2) if case.keeps_dtype else dict(rtol=1e-5, atol=1e-6)
    if not isinstance(half["bfloat16"], Exception) and not np.allclose(
        np.asarray(half["bfloat16"], np.float32), rounded, equal_nan=True, **tol
    ):
        fail("half", "bf16 input differs from float32 on the rounded inputs")
    # empty batch
    if isinstance(empty, Exception) and not (
        not case.rowwise and isinstance(empty, ValueError) and "`" in str(empty)
    ):  # a batch-level loss may refuse an empty batch with a clear error naming the argument
        fail("empty", f"empty batch raised {type(empty).__name__}: {empty}")
    elif case.rowwise and empty.shape != (0,):
        fail("empty", f"empty batch gave shape {empty.shape}, want (0,)")
    # K = 1
    if k1 is not None and case.k1 is not None:
        if case.k1:
            if isinstance(k1, Exception):
                fail("k1", f"K=1 raised {type(k1).__name__}: {k1}")
            else:
                v1, g1 = (np.asarray(a) for a in k1)
                v1, g1 = np.asarray(v1), np.asarray(g1)
                if case.rowwise:  # the hazard rows are NaN/inf on purpose: check the clean ones
                    v1, g1 = v1[np.array(ROWS_CLEAN)], g1[np.array(ROWS_CLEAN)]
                if not (np.all(np.isfinite(v1)) and np.all(np.isfinite(g1))):
                    fail("k1", f"K=1 gave value {v1}, grad {g1.ravel()}")
        elif not isinstance(k1, ValueError):
            fail("k1", f"K=1 must raise ValueError (declared unsupported), got {k1!r}")
    # eager out-of-range labels: ValueError naming labels
    if case.labels:
        for badv in (-1, K, -100):
            yb = jnp.asarray(y).at[0].set(badv)
            err = _try(lambda yb=yb: case.call(jnp.asarray(x), yb, wj))
            if not isinstance(err, ValueError) or case.label_name not in str(err):
                fail(
                    "label_eager",
                    f"label {badv} outside jit: got {err!r:.80}, want ValueError naming {case.label_name}",
                )
    failed = {c for c, _ in fails}
    known = KNOWN_GAPS.get(name, {})
    new_fails = [f"[{c}] {m}" for c, m in fails if c not in known]
    fixed = sorted(set(known) - failed)
    assert not new_fails, f"{name}:\n  " + "\n  ".join(new_fails)
    assert not fixed, f"{name}: known gaps {fixed} now pass; remove them from KNOWN_GAPS"
