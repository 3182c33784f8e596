"""lossjax: cross-entropy-family losses, sharpness-aware optax transformations and CE kernels.

Subpackages:

* :mod:`lossjax.losses` — pure per-example losses (AACE, comp-sum, GCE, LDR, focal, z-losses,
  StableMax, distillation, retrieval, metric learning, HL-Gauss, segmentation, sequence, …).
* :mod:`lossjax.sharpness` — SAM, ASAM, AACE-SAM, GSAM, Friendly-SAM, LookSAM, Momentum-SAM,
  SAF, MESA and ⊥Grad as chainable ``optax`` transformations (re-exported here).
* :mod:`lossjax.kernels` — ``linear_cross_entropy`` (Cut Cross-Entropy: naive / chunked /
  Pallas-Triton; sharded and vocab-parallel) and the two-pass softmax.
* :mod:`lossjax.scaling` — scaling-law forms, published constants and a robust fitter.
* :mod:`lossjax.diagnostics` — sharpness measurement: top Hessian eigenvalues (power
  iteration, Lanczos), Hutchinson trace, SAM ε-/m-sharpness, ASAM adaptive sharpness.

Example:
  >>> import jax.numpy as jnp, optax
  >>> import lossjax
  >>> tx = optax.chain(lossjax.aace_sam(rho=0.2), optax.sgd(0.1, momentum=0.9))
  >>> params = {"w": jnp.ones(3)}
  >>> state = tx.init(params)
  >>> grad_fn = lambda p: {"w": 2.0 * p["w"]}      # gradient of sum(w**2)
  >>> updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
  >>> updates["w"].shape
  (3,)
"""

from lossjax import diagnostics, kernels, losses, scaling, sharpness
from lossjax.kernels import linear_cross_entropy, two_pass_log_softmax, two_pass_softmax
from lossjax.sharpness import (
    FlaxSAMGrads,
    FriendlySAMState,
    LookSAMState,
    MESAState,
    MSAMState,
    NNXSAMGrads,
    SAFState,
    SAMOutput,
    SAMState,
    TrajectoryTargets,
    aace_sam,
    asam,
    asam_default_mask,
    find_mesa_state,
    find_saf_state,
    find_sam_state,
    flax_sam_grads,
    friendly_sam,
    grouped_sam_gradient,
    gsam,
    gsam_rho_schedule,
    looksam,
    mesa,
    mesa_params,
    mesa_targets,
    msam,
    msam_params,
    nnx_apply,
    nnx_sam_grads,
    nnx_sam_step,
    orthograd,
    per_replica,
    saf,
    saf_targets,
    sam,
    sam_gradient,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # subpackages
    "kernels",
    "losses",
    "scaling",
    "sharpness",
    "diagnostics",
    # kernels
    "linear_cross_entropy",
    "two_pass_softmax",
    "two_pass_log_softmax",
    # sharpness-aware transformations
    "sam",
    "asam",
    "aace_sam",
    "sam_gradient",
    "asam_default_mask",
    "SAMState",
    "SAMOutput",
    "find_sam_state",
    "gsam",
    "gsam_rho_schedule",
    "friendly_sam",
    "FriendlySAMState",
    "looksam",
    "LookSAMState",
    "msam",
    "msam_params",
    "MSAMState",
    "grouped_sam_gradient",
    "per_replica",
    "flax_sam_grads",
    "FlaxSAMGrads",
    "nnx_sam_grads",
    "nnx_sam_step",
    "nnx_apply",
    "NNXSAMGrads",
    "saf",
    "saf_targets",
    "SAFState",
    "find_saf_state",
    "mesa",
    "mesa_params",
    "mesa_targets",
    "MESAState",
    "find_mesa_state",
    "TrajectoryTargets",
    "orthograd",
]
