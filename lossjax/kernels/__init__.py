"""lossjax.kernels: memory-light linear cross-entropy (Cut Cross-Entropy) and the two-pass softmax."""

from lossjax.kernels.linear_ce import IMPLS, REDUCTIONS, linear_cross_entropy, resolve_filter_eps
from lossjax.kernels.linear_ce_common import LinearCEConfig
from lossjax.kernels.softmax import (
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

__all__ = [
    "IMPLS",
    "REDUCTIONS",
    "SOFTMAX_IMPLS",
    "SOFTMAX_STATES",
    "LinearCEConfig",
    "extexp",
    "extexp_merge",
    "extexp_row_reduce",
    "linear_cross_entropy",
    "online_softmax_merge",
    "online_softmax_row_reduce",
    "online_softmax_update",
    "resolve_filter_eps",
    "two_pass_log_softmax",
    "two_pass_softmax",
]
