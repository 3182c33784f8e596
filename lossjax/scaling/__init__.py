"""lossjax.scaling: scaling-law forms, published constants, robust fits and compute allocation.

* :mod:`~lossjax.scaling.laws` — functional forms (Henighan/Kaplan, Chinchilla, Ghorbani NMT,
  Tissue LR annealing).
* :mod:`~lossjax.scaling.published` — published constants (Hoffmann 2022 next to the
  Besiroglu et al. 2024 correction, Kaplan 2020, Henighan 2020 Table 1).
* :mod:`~lossjax.scaling.parametric` — fittable log-space parameterisations and init grids.
* :mod:`~lossjax.scaling.fitting` — Huber-on-log, L-BFGS over a vmapped grid, bootstrap CIs,
  parameter-recovery check.
* :mod:`~lossjax.scaling.annealing` — LR-schedule areas ``S1``, ``S2`` and a WSD schedule.
* :mod:`~lossjax.scaling.allocation` — compute-optimal ``N_opt(C)``, ``D_opt(C)``.
"""

from lossjax.scaling.allocation import (
    chinchilla_allocation_exponents,
    chinchilla_compute_optimal,
    chinchilla_optimal_loss,
)
from lossjax.scaling.annealing import lr_annealing_areas, warmup_stable_decay_schedule
from lossjax.scaling.fitting import (
    RecoveryReport,
    ScalingBootstrap,
    ScalingFit,
    bootstrap_scaling_law,
    check_parameter_recovery,
    fit_scaling_law,
)
from lossjax.scaling.laws import (
    chinchilla_loss,
    kaplan_loss_d,
    kaplan_loss_n,
    kaplan_loss_nd,
    lr_annealing_loss,
    nmt_bivariate_loss,
    power_law_plus_constant,
)
from lossjax.scaling.parametric import (
    CHINCHILLA,
    CHINCHILLA_EPOCH_GRID,
    KAPLAN_ND,
    LR_ANNEALING,
    POWER_LAW,
    POWER_LAW_PLUS_CONSTANT,
    ScalingLaw,
    get_law,
    nmt_bivariate_law,
    product_grid,
)
from lossjax.scaling.published import (
    CHINCHILLA_BESIROGLU_2024,
    CHINCHILLA_GOPHER_COMPUTE,
    CHINCHILLA_HOFFMANN_2022,
    CHINCHILLA_HOFFMANN_2022_UNROUNDED,
    HENIGHAN_2020,
    KAPLAN_2020,
    KAPLAN_2020_JOINT,
    ChinchillaConstants,
    HenighanRow,
    KaplanConstants,
)

__all__ = [
    # laws
    "power_law_plus_constant",
    "kaplan_loss_n",
    "kaplan_loss_d",
    "kaplan_loss_nd",
    "chinchilla_loss",
    "nmt_bivariate_loss",
    "lr_annealing_loss",
    # published constants
    "ChinchillaConstants",
    "KaplanConstants",
    "HenighanRow",
    "CHINCHILLA_HOFFMANN_2022",
    "CHINCHILLA_HOFFMANN_2022_UNROUNDED",
    "CHINCHILLA_BESIROGLU_2024",
    "CHINCHILLA_GOPHER_COMPUTE",
    "KAPLAN_2020",
    "KAPLAN_2020_JOINT",
    "HENIGHAN_2020",
    # fittable laws
    "ScalingLaw",
    "POWER_LAW",
    "POWER_LAW_PLUS_CONSTANT",
    "CHINCHILLA",
    "KAPLAN_ND",
    "LR_ANNEALING",
    "CHINCHILLA_EPOCH_GRID",
    "nmt_bivariate_law",
    "get_law",
    "product_grid",
    # fitting
    "ScalingFit",
    "ScalingBootstrap",
    "RecoveryReport",
    "fit_scaling_law",
    "bootstrap_scaling_law",
    "check_parameter_recovery",
    # annealing
    "lr_annealing_areas",
    "warmup_stable_decay_schedule",
    # allocation
    "chinchilla_allocation_exponents",
    "chinchilla_compute_optimal",
    "chinchilla_optimal_loss",
]
