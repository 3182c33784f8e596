"""Build the optax chain (and learning-rate schedule) an :class:`OptimConfig` describes.

=========  ====================================================================================
sgd        ``chain([clip], add_decayed_weights(wd), sgd(schedule, momentum))``
sam        ``chain(lossjax.sharpness.sam(ρ), …)``          ascent loss CE, ``grad_fn`` CE
asam       ``chain(lossjax.sharpness.asam(ρ, eta=η), …)``  ascent loss CE
aace_sam   ``chain(lossjax.sharpness.aace_sam(ρ), …)``     ascent loss AACE (descended), ``grad_fn`` CE
gsam       ``chain(lossjax.sharpness.gsam(ρ_t, α), …)``    ρ_t follows the LR (ρ_max = ``rho``)
saf        ``chain(lossjax.sharpness.saf(λ, τ, Ẽ, …), …)`` one pass + trajectory KL term
mesa       ``chain(…, lossjax.sharpness.mesa(λ, τ, β))``   one pass + one EMA-teacher forward
=========  ====================================================================================

Weight decay is PyTorch-style coupled decay added to the (SAM) gradient at the unperturbed
weights, before momentum — the DAV / ASAM / AACE code's semantics (docs/design/sam_family.md §1). With
``group_size = m > 0`` (m-sharpness) the SAM transform is left out of the chain and the train
step computes the group-averaged SAM gradient itself with ``lossjax.sharpness.sam_gradient``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

import lossjax.sharpness as lsh
from experiments.common.config import OptimConfig

__all__ = ["OptimSetup", "build_optimizer", "make_schedule"]


class OptimSetup(NamedTuple):
    """What the train step needs to know about the optimizer.

    Attributes:
      tx: the optax chain.
      schedule: ``step -> learning rate``.
      kind: ``'plain'`` (sgd), ``'sam'`` (two passes via ``grad_fn``), ``'grouped'``
        (m-sharpness, SAM gradient computed in the step), ``'saf'`` or ``'mesa'``.
      ascent: ``'ce'`` or ``'aace'`` — the loss of the first pass.
      sam_kwargs: ``sam_gradient`` options for the grouped path.
    """

    tx: optax.GradientTransformationExtraArgs
    schedule: optax.Schedule
    kind: str
    ascent: str
    sam_kwargs: dict


def make_schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """Per-step learning rate. Step milestones fall on epoch boundaries (AACE's StepLR:
    ×0.2 at 30/60/80 % of the epochs); cosine decays to 0 over all steps."""
    total = max(steps_per_epoch * epochs, 1)
    warm = cfg.warmup_epochs * steps_per_epoch
    lr = cfg.learning_rate
    if cfg.schedule == "step":
        bounds: dict[int, float] = {}
        for m in cfg.step_milestones:
            b = int(round(m * epochs)) * steps_per_epoch
            if b > 0:
                bounds[b] = bounds.get(b, 1.0) * cfg.step_factor
        main = optax.piecewise_constant_schedule(lr, bounds)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total - warm, 1))
    else:
        main = optax.constant_schedule(lr)
    if warm:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])
    return main


def build_optimizer(cfg: OptimConfig, *, steps_per_epoch: int, epochs: int, num_examples: int,
                    num_classes: int) -> OptimSetup:
    """The chain, schedule and train-step kind for ``cfg``."""
    schedule = make_schedule(cfg, steps_per_epoch, epochs)
    base: list[Any] = []
    if cfg.clip_norm:
        base.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.weight_decay:
        base.append(optax.add_decayed_weights(cfg.weight_decay))
    base.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))

    name = cfg.name
    ascent = "aace" if name == "aace_sam" else "ce"
    sam_kwargs: dict = {}
    if name in ("sam", "asam", "aace_sam"):
        if name == "sam":
            sam_kwargs = dict(rho=cfg.rho, normalize=True, direction="ascent")
            front = lsh.sam(cfg.rho)
        elif name == "asam":
            sam_kwargs = dict(rho=cfg.rho, normalize=True, direction="ascent", adaptive=True, eta=cfg.eta,
                              adaptive_mask=lsh.asam_default_mask)
            front = lsh.asam(cfg.rho, eta=cfg.eta)
        else:
            sam_kwargs = dict(rho=cfg.rho, normalize=cfg.normalize, direction="descent")
            front = lsh.aace_sam(cfg.rho, normalize=cfg.normalize)
        if cfg.group_size:
            return OptimSetup(optax.chain(*base), schedule, "grouped", ascent, sam_kwargs)
        return OptimSetup(optax.chain(front, *base), schedule, "sam", ascent, sam_kwargs)
    if name == "gsam":
        lr_max = cfg.learning_rate
        lr_min = float(schedule(max(steps_per_epoch * epochs - 1, 0)))
        rho = lsh.gsam_rho_schedule(schedule, rho_max=cfg.rho, rho_min=cfg.gsam_rho_min, lr_max=lr_max,
                                    lr_min=lr_min)
        return OptimSetup(optax.chain(lsh.gsam(rho, alpha=cfg.gsam_alpha), *base), schedule, "sam", ascent, {})
    end = cfg.saf_end or None
    if name == "saf":
        front = lsh.saf(cfg.saf_lam, cfg.saf_tau, cfg.saf_delay, cfg.saf_start, end,
                        num_examples=num_examples, num_classes=num_classes)
        return OptimSetup(optax.chain(front, *base), schedule, "saf", ascent, {})
    if name == "mesa":
        back = lsh.mesa(cfg.saf_lam, cfg.saf_tau, cfg.mesa_decay, cfg.saf_start, end)
        return OptimSetup(optax.chain(*base, back), schedule, "mesa", ascent, {})
    return OptimSetup(optax.chain(*base), schedule, "plain", ascent, {})
