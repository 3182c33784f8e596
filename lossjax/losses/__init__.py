"""lossjax.losses: pure, per-example losses of the cross-entropy family and beyond.

Every loss is ``name_loss(logits, labels, *, hyper=..., axis=-1, where=None)`` returning one value
per example (class axis removed), computed in float32 (float64 for float64 input) from the
log-space primitives of :mod:`lossjax.losses._core`. Integer labels ``[...]`` and probability
labels ``[..., K]`` are told apart by dtype. Labels out of range cannot raise under ``jit``;
validate a dataset with :func:`check_labels` outside ``jit``.

Example:
  >>> import jax.numpy as jnp
  >>> import lossjax
  >>> x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
  >>> y = jnp.array([0, 1])
  >>> lossjax.losses.generalized_cross_entropy_loss(x, y, q=0.7).shape
  (2,)
"""

from lossjax.losses._core import (
    check_labels,
    margin_lse,
    masked_logsumexp,
    reduce_loss,
)
from lossjax.losses.aace import (
    aace_loss,
)
from lossjax.losses.anyloss import (
    ANYLOSS_METRICS,
    anyloss,
    anyloss_loss,
)
from lossjax.losses.boundary import (
    boundary_aware_cross_entropy_loss,
    boundary_weight_map,
    skeleton_recall_loss,
)
from lossjax.losses.calibration import (
    correctness_aware_loss,
)
from lossjax.losses.comp_sum import (
    comp_sum_loss,
    generalized_cross_entropy_loss,
    mae_loss,
    smooth_adversarial_comp_sum_loss,
    taylor_cross_entropy_loss,
    truncated_generalized_cross_entropy_loss,
)
from lossjax.losses.consistency import symmetric_consistency_loss
from lossjax.losses.coverage import (
    dco_gradient_factor,
    dco_loss,
    dco_loss_from_log_prob,
)
from lossjax.losses.cs_ib import conditional_cs_divergence, cs_ib_loss, cs_qmi
from lossjax.losses.detection_score import dc_pdd_score, reference_log_frequencies
from lossjax.losses.diagnostics import (
    softmax_collapse_fraction,
    zero_loss_fraction,
)
from lossjax.losses.distillation import (
    binary_kl_loss,
    binary_kl_norm_loss,
    dkd_loss,
    kd_loss,
    nkd_loss,
    plackett_luce_distillation_loss,
    uskd_loss,
)
from lossjax.losses.ensloss import (
    ensloss_derivatives,
    ensloss_surrogate,
)
from lossjax.losses.focal import (
    class_balanced_weights,
    dual_cross_entropy_focal_loss,
    dual_cross_entropy_loss,
    per_example_class_weights,
    softmax_focal_loss,
)
from lossjax.losses.gan import relativistic_average_gan_loss, relativistic_gan_loss
from lossjax.losses.hyperbolic import (
    hyperbolic_cross_entropy_loss,
    hyperbolic_mlr_logits,
    poincare_distance,
    poincare_expmap0,
)
from lossjax.losses.hyperbolic_one_class import (
    gaussian_pseudo_negatives,
    hyperbolic_one_class_cross_entropy_loss,
    hyperbolic_pairwise_confusion_loss,
)
from lossjax.losses.ldr import (
    LDR_NORMALIZATIONS,
    aldr_kl_loss,
    ldr_kl_loss,
)
from lossjax.losses.metric import (
    class_prototypes,
    icnn_loss,
    metrix_multi_similarity_loss,
    mixup_positiveness,
    multi_similarity_loss,
    multi_similarity_miner,
    proto_triplet_loss,
    soft_triple_center_regularizer,
    soft_triple_loss,
    supcon_loss,
    triplet_loss,
)
from lossjax.losses.neural_collapse import (
    NeuralCollapseMetrics,
    neural_collapse,
)
from lossjax.losses.nlm_direction import nlm_cosine
from lossjax.losses.ordinal import ordinal_cross_entropy_loss, ordinal_logits
from lossjax.losses.preference import (
    dpo_loss,
    kto_loss,
    sequence_logprob,
    spo_loss,
)
from lossjax.losses.ranking_distill import cprd_loss
from lossjax.losses.regression import (
    bin_centers,
    bin_edges,
    bins_to_value,
    categorical_projection,
    hl_gauss_loss,
    hl_gauss_probs,
    two_hot_loss,
    two_hot_probs,
)
from lossjax.losses.retrieval import (
    decoupled_softmax_loss,
    infonce_loss,
    mann_whitney_loss,
    profit_aware_pairwise_bce,
    soft_topk_loss,
    weighted_listwise_bce,
)
from lossjax.losses.robust import (
    ACTIVE_LOSSES,
    PASSIVE_LOSSES,
    active_passive_loss,
    normalized_cross_entropy_loss,
    normalized_focal_loss,
    normalized_generalized_cross_entropy_loss,
    normalized_mae_loss,
    reverse_cross_entropy_loss,
    symmetric_cross_entropy_loss,
)
from lossjax.losses.sauna import sauna_transform
from lossjax.losses.segmentation import (
    cl_dice_loss,
    dice_semimetric_loss,
    generalized_dice_loss,
    jaccard_metric_loss,
    sauna_jaccard_loss,
    soft_dice_loss,
    soft_skeleton,
    stable_focal_l1_loss,
    tversky_loss,
)
from lossjax.losses.self_adjusting_dice import (
    self_adjusting_dice_loss,
)
from lossjax.losses.sequence import (
    aggregate_response_loss,
    ce_input_gradient_penalty,
    cs_divergence,
    eisl_loss,
    input_gradient_penalty,
)
from lossjax.losses.stablemax import (
    log_stablemax,
    stablemax,
    stablemax_cross_entropy_loss,
    stablemax_log_transform,
)
from lossjax.losses.supcon_anchors import supcon_prototype_loss
from lossjax.losses.superpixel import superpixel_pool
from lossjax.losses.trajectory import (
    trajectory_kl_loss,
)
from lossjax.losses.tri_bce import tri_bce_loss
from lossjax.losses.unlearning import unlearning_joint_loss
from lossjax.losses.utilization import embedding_utilization
from lossjax.losses.variance import variance_constrained_cross_entropy_loss
from lossjax.losses.zloss import (
    cross_entropy_with_z_loss,
    logsumexp_squared_penalty,
    spherical_z_loss,
)

__all__ = [
    "check_labels",
    "reduce_loss",
    "margin_lse",
    "masked_logsumexp",
    "aace_loss",
    "comp_sum_loss",
    "generalized_cross_entropy_loss",
    "truncated_generalized_cross_entropy_loss",
    "taylor_cross_entropy_loss",
    "mae_loss",
    "smooth_adversarial_comp_sum_loss",
    "reverse_cross_entropy_loss",
    "symmetric_cross_entropy_loss",
    "normalized_cross_entropy_loss",
    "normalized_focal_loss",
    "normalized_generalized_cross_entropy_loss",
    "normalized_mae_loss",
    "active_passive_loss",
    "ACTIVE_LOSSES",
    "PASSIVE_LOSSES",
    "ldr_kl_loss",
    "hyperbolic_cross_entropy_loss",
    "hyperbolic_mlr_logits",
    "poincare_distance",
    "poincare_expmap0",
    "hyperbolic_pairwise_confusion_loss",
    "hyperbolic_one_class_cross_entropy_loss",
    "gaussian_pseudo_negatives",
    "aldr_kl_loss",
    "LDR_NORMALIZATIONS",
    "softmax_focal_loss",
    "dual_cross_entropy_loss",
    "dual_cross_entropy_focal_loss",
    "class_balanced_weights",
    "per_example_class_weights",
    "spherical_z_loss",
    "logsumexp_squared_penalty",
    "cross_entropy_with_z_loss",
    "stablemax_log_transform",
    "stablemax",
    "log_stablemax",
    "stablemax_cross_entropy_loss",
    "softmax_collapse_fraction",
    "zero_loss_fraction",
    "correctness_aware_loss",
    "self_adjusting_dice_loss",
    "dco_loss",
    "dco_loss_from_log_prob",
    "dco_gradient_factor",
    "anyloss",
    "anyloss_loss",
    "ANYLOSS_METRICS",
    "ensloss_derivatives",
    "ensloss_surrogate",
    "trajectory_kl_loss",
    "kd_loss",
    "nkd_loss",
    "uskd_loss",
    "dkd_loss",
    "binary_kl_loss",
    "binary_kl_norm_loss",
    "plackett_luce_distillation_loss",
    "decoupled_softmax_loss",
    "infonce_loss",
    "soft_topk_loss",
    "mann_whitney_loss",
    "profit_aware_pairwise_bce",
    "weighted_listwise_bce",
    "sequence_logprob",
    "dpo_loss",
    "spo_loss",
    "kto_loss",
    "multi_similarity_miner",
    "multi_similarity_loss",
    "supcon_loss",
    "supcon_prototype_loss",
    "superpixel_pool",
    "triplet_loss",
    "soft_triple_loss",
    "soft_triple_center_regularizer",
    "mixup_positiveness",
    "metrix_multi_similarity_loss",
    "class_prototypes",
    "proto_triplet_loss",
    "icnn_loss",
    "bin_edges",
    "bin_centers",
    "hl_gauss_probs",
    "two_hot_probs",
    "categorical_projection",
    "bins_to_value",
    "hl_gauss_loss",
    "two_hot_loss",
    "jaccard_metric_loss",
    "dice_semimetric_loss",
    "sauna_jaccard_loss",
    "sauna_transform",
    "stable_focal_l1_loss",
    "soft_dice_loss",
    "tversky_loss",
    "generalized_dice_loss",
    "soft_skeleton",
    "cl_dice_loss",
    "eisl_loss",
    "cs_divergence",
    "conditional_cs_divergence",
    "cs_qmi",
    "cs_ib_loss",
    "aggregate_response_loss",
    "input_gradient_penalty",
    "ce_input_gradient_penalty",
    "NeuralCollapseMetrics",
    "neural_collapse",
    "symmetric_consistency_loss",
    "ordinal_logits",
    "ordinal_cross_entropy_loss",
    "relativistic_gan_loss",
    "relativistic_average_gan_loss",
    "unlearning_joint_loss",
    "cprd_loss",
    "reference_log_frequencies",
    "dc_pdd_score",
    "boundary_weight_map",
    "boundary_aware_cross_entropy_loss",
    "skeleton_recall_loss",
    "variance_constrained_cross_entropy_loss",
    "tri_bce_loss",
    "embedding_utilization",
    "nlm_cosine",
]
