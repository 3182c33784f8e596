"""lossjax.kernels: memory-light linear cross-entropy (Cut Cross-Entropy) and the two-pass softmax."""

from lossjax.kernels.linear_ce import IMPLS, REDUCTIONS, linear_cross_entropy, resolve_filter_eps
from lossjax.kernels.linear_ce_common import LinearCEConfig
from lossjax.kernels.linear_ce_config import ChunkedConfig, PallasConfig
from lossjax.kernels.linear_ce_tpu import TpuConfig
from lossjax.kernels.linear_head import LinearHeadOutput, linear_ce_head
from lossjax.kernels.linear_kd import DIVERGENCES, linear_kd_loss
from lossjax.kernels.linear_preference import (
    linear_dpo_loss,
    linear_kto_loss,
    linear_orpo_loss,
    linear_sequence_logprob,
    linear_spo_loss,
)
from lossjax.kernels.softmax import (
    SOFTMAX_ALGORITHMS,
    SOFTMAX_IMPLS,
    SOFTMAX_STATES,
    extexp,
    extexp_merge,
    extexp_row_reduce,
    online_softmax_merge,
    online_softmax_row_reduce,
    online_softmax_update,
    two_pass_log_softmax,
    two_pass_softmax,
)
from lossjax.kernels.softmax_tpu import two_pass_log_softmax_tpu, two_pass_softmax_tpu

__all__ = [
    "DIVERGENCES",
    "LinearHeadOutput",
    "linear_ce_head",
    "linear_dpo_loss",
    "linear_kd_loss",
    "linear_kto_loss",
    "linear_orpo_loss",
    "linear_sequence_logprob",
    "linear_spo_loss",
    "IMPLS",
    "REDUCTIONS",
    "SOFTMAX_ALGORITHMS",
    "SOFTMAX_IMPLS",
    "SOFTMAX_STATES",
    "ChunkedConfig",
    "LinearCEConfig",
    "PallasConfig",
    "TpuConfig",
    "extexp",
    "extexp_merge",
    "extexp_row_reduce",
    "linear_cross_entropy",
    "online_softmax_merge",
    "online_softmax_row_reduce",
    "online_softmax_update",
    "resolve_filter_eps",
    "two_pass_log_softmax",
    "two_pass_log_softmax_tpu",
    "two_pass_softmax",
    "two_pass_softmax_tpu",
]
