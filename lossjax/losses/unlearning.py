"""Constrained-unlearning joint loss: ascend the forget-set cross-entropy, hold the retain set.

Machine unlearning of a language model trains on two sets at once: the *forget* set, whose
token cross-entropy is maximised (gradient ascent), and the *retain* set, whose outputs must not
drift (cross-entropy on its labels, or the KL to the frozen original model). The SHA256 system
applies this joint loss to the lower layers only (the layers that causal tracing shows to store
the facts; layer selection is done by freezing parameters, e.g. ``optax.multi_transform``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import (
    finalize,
    log_softmax,
    margin_lse,
    nll_from_lu,
    prepare,
    require_nonnegative,
    require_option,
    require_positive,
)
from lossjax.losses.distillation import _kl_log

__all__ = ["unlearning_joint_loss"]

_RETAIN = ("ce", "kl")


def _mean(v: jax.Array, m: jax.Array | None) -> jax.Array:
    if m is None:
        return jnp.sum(v) / max(v.size, 1)
    return jnp.sum(jnp.where(m, v, 0.0)) / jnp.maximum(jnp.sum(m), 1).astype(v.dtype)


def unlearning_joint_loss(
    forget_logits: ArrayLike,
    forget_labels: ArrayLike,
    retain_logits: ArrayLike,
    retain_targets: ArrayLike,
    *,
    retain: str = "ce",
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    forget_cap: float | None = None,
    where_forget: ArrayLike | None = None,
    where_retain: ArrayLike | None = None,
) -> jax.Array:
    r"""Joint unlearning objective (a scalar): forget-set CE ascent plus a retain-set term.

    .. math::
        L = -\alpha\,\min\big(\overline{\mathrm{CE}}_{\text{forget}},\ c\big)
            + \beta\, R_{\text{retain}},\qquad
        R_{\text{retain}} = \overline{\mathrm{CE}}_{\text{retain}}
        \ \text{or}\ \overline{\mathrm{KL}}\big(\pi_{\text{orig}} \,\Vert\, \pi_\theta\big)

    with ``CE̅`` the mean token cross-entropy over the tokens that count, ``α = forget_weight``,
    ``β = retain_weight`` and ``c = forget_cap`` (``None``: no cap). Maximising the forget-set
    output-token cross-entropy while keeping the retain set close is the joint loss of the SHA256
    constrained-unlearning system (Agrawal & Huang 2025, Sec. 3: "maximizing forget set loss via
    output token cross-entropy penalties and minimizing retain set deviation"). Plain ascent is
    unbounded (the loss goes to ``−∞`` as the forget probabilities vanish); the cap stops the
    ascent once the mean forget CE reaches ``c`` (its gradient is then 0). The paper's adaptive
    schedule of the regularisation weight is left to the caller (pass ``retain_weight``).

    Reference: S. Agrawal, K.-H. Huang, "SHA256 at SemEval-2025 Task 4: Selective Amnesia —
    Constrained Unlearning for Large Language Models via Knowledge Isolation", SemEval 2025,
    arXiv:2504.12996.

    Args:
      forget_logits: floating ``[..., V]`` logits on the forget set.
      forget_labels: integer ``[...]`` tokens (or probability labels ``[..., V]``).
      retain_logits: floating ``[..., V]`` logits on the retain set.
      retain_targets: ``retain="ce"``: integer ``[...]`` tokens (or probabilities ``[..., V]``);
        ``retain="kl"``: floating ``[..., V]`` logits of the frozen original model (stop-gradient).
      retain: ``"ce"`` or ``"kl"``.
      forget_weight: ``α ≥ 0``.
      retain_weight: ``β ≥ 0``.
      forget_cap: optional ``c > 0``.
      where_forget: optional bool mask of the forget tokens that count (``[...]``).
      where_retain: optional bool mask of the retain tokens that count (``[...]``).

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> f = jnp.zeros((2, 4)); r = jnp.zeros((3, 4))
      >>> round(float(unlearning_joint_loss(f, jnp.array([0, 1]), r, jnp.array([0, 1, 2]))), 5)   # −ln4 + ln4
      0.0
    """
    require_option(retain, _RETAIN, "retain")
    require_nonnegative(forget_weight, "forget_weight")
    require_nonnegative(retain_weight, "retain_weight")
    if forget_cap is not None:
        require_positive(forget_cap, "forget_cap")
    pf = prepare(forget_logits, forget_labels, where=where_forget,
                 logits_name="forget_logits", labels_name="forget_labels")
    ce_f = finalize(pf, _ce(pf))
    lf = _mean(ce_f, pf.row_mask)
    if forget_cap is not None:
        lf = jnp.minimum(lf, forget_cap)
    if retain == "ce":
        pr = prepare(retain_logits, retain_targets, where=where_retain,
                     logits_name="retain_logits", labels_name="retain_targets")
        r = finalize(pr, _ce(pr))
    else:
        ref = jax.lax.stop_gradient(jnp.asarray(retain_targets))
        pr = prepare(retain_logits, ref, where=where_retain, allow_int=False,
                     logits_name="retain_logits", labels_name="retain_targets")
        t_log = log_softmax(pr._replace(logits=pr.labels))
        r = finalize(pr, _kl_log(log_softmax(pr), t_log))
    lr = _mean(r, pr.row_mask)
    dtype = jnp.promote_types(pf.dtype, pr.dtype)
    return (-forget_weight * lf + retain_weight * lr).astype(dtype)


def _ce(p) -> jax.Array:
    lu = margin_lse(p)
    if p.soft:
        t = p.labels
        return jnp.sum(jnp.where(t != 0, t * nll_from_lu(lu), 0.0), axis=-1)
    return nll_from_lu(lu)
