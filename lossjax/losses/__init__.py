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
    reduce_loss,
    margin_lse,
    masked_logsumexp,
)
from lossjax.losses.aace import (
    aace_loss,
)
from lossjax.losses.comp_sum import (
    comp_sum_loss,
    generalized_cross_entropy_loss,
    truncated_generalized_cross_entropy_loss,
    taylor_cross_entropy_loss,
    mae_loss,
    smooth_adversarial_comp_sum_loss,
)
from lossjax.losses.robust import (
    reverse_cross_entropy_loss,
    symmetric_cross_entropy_loss,
    normalized_cross_entropy_loss,
    normalized_focal_loss,
    normalized_generalized_cross_entropy_loss,
    normalized_mae_loss,
    active_passive_loss,
    ACTIVE_LOSSES,
    PASSIVE_LOSSES,
)
from lossjax.losses.ldr import (
    ldr_kl_loss,
    aldr_kl_loss,
    LDR_NORMALIZATIONS,
)
from lossjax.losses.focal import (
    softmax_focal_loss,
    dual_cross_entropy_loss,
    dual_cross_entropy_focal_loss,
    class_balanced_weights,
    per_example_class_weights,
)
from lossjax.losses.zloss import (
    spherical_z_loss,
    logsumexp_squared_penalty,
    cross_entropy_with_z_loss,
)
from lossjax.losses.stablemax import (
    stablemax_log_transform,
    stablemax,
    log_stablemax,
    stablemax_cross_entropy_loss,
)
from lossjax.losses.diagnostics import (
    softmax_collapse_fraction,
    zero_loss_fraction,
)
from lossjax.losses.calibration import (
    correctness_aware_loss,
)
from lossjax.losses.self_adjusting_dice import (
    self_adjusting_dice_loss,
)
from lossjax.losses.coverage import (
    dco_loss,
    dco_loss_from_log_prob,
    dco_gradient_factor,
)
from lossjax.losses.anyloss import (
    anyloss,
    anyloss_loss,
    ANYLOSS_METRICS,
)
from lossjax.losses.ensloss import (
    ensloss_derivatives,
    ensloss_surrogate,
)
from lossjax.losses.trajectory import (
    trajectory_kl_loss,
)
from lossjax.losses.distillation import (
    kd_loss,
    nkd_loss,
    uskd_loss,
    dkd_loss,
    binary_kl_loss,
    binary_kl_norm_loss,
    plackett_luce_distillation_loss,
)
from lossjax.losses.retrieval import (
    decoupled_softmax_loss,
    infonce_loss,
    soft_topk_loss,
    mann_whitney_loss,
    profit_aware_pairwise_bce,
    weighted_listwise_bce,
)
from lossjax.losses.preference import (
    sequence_logprob,
    dpo_loss,
    spo_loss,
)
from lossjax.losses.metric import (
    multi_similarity_miner,
    multi_similarity_loss,
    supcon_loss,
    triplet_loss,
    soft_triple_loss,
    soft_triple_center_regularizer,
    mixup_positiveness,
    metrix_multi_similarity_loss,
    class_prototypes,
    proto_triplet_loss,
    icnn_loss,
)
from lossjax.losses.regression import (
    bin_edges,
    bin_centers,
    hl_gauss_probs,
    two_hot_probs,
    categorical_projection,
    bins_to_value,
    hl_gauss_loss,
    two_hot_loss,
)
from lossjax.losses.segmentation import (
    jaccard_metric_loss,
    dice_semimetric_loss,
    sauna_jaccard_loss,
    stable_focal_l1_loss,
    soft_dice_loss,
    tversky_loss,
    generalized_dice_loss,
    soft_skeleton,
    cl_dice_loss,
)
from lossjax.losses.sequence import (
    eisl_loss,
    cs_divergence,
    aggregate_response_loss,
    input_gradient_penalty,
    ce_input_gradient_penalty,
)
from lossjax.losses.neural_collapse import (
    NeuralCollapseMetrics,
    neural_collapse,
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
    "multi_similarity_miner",
    "multi_similarity_loss",
    "supcon_loss",
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
    "stable_focal_l1_loss",
    "soft_dice_loss",
    "tversky_loss",
    "generalized_dice_loss",
    "soft_skeleton",
    "cl_dice_loss",
    "eisl_loss",
    "cs_divergence",
    "aggregate_response_loss",
    "input_gradient_penalty",
    "ce_input_gradient_penalty",
    "NeuralCollapseMetrics",
    "neural_collapse",
]
