"""Published scaling-law constants (Kaplan 2020, Henighan 2020, Hoffmann 2022, Besiroglu 2024).

Numbers are the papers' (sources and provenance in ``docs/design/experiments.md`` §3); the Kaplan
joint re-fit was read from secondary copies, not from the PDF (``docs/open_questions.md``). Ghorbani et al.'s
NMT constants are intentionally absent (not retrieved; see
:func:`lossjax.scaling.laws.nmt_bivariate_loss`).

Example:
  >>> from lossjax.scaling import published as P
  >>> P.CHINCHILLA_BESIROGLU_2024.alpha, P.CHINCHILLA_HOFFMANN_2022.alpha
  (0.3478, 0.34)
  >>> P.HENIGHAN_2020["Image 8x8"].alpha_n
  0.24
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = [
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
]


class ChinchillaConstants(NamedTuple):
    """Constants of ``L(N, D) = E + A/N^α + B/D^β`` (fields ``e, a, b, alpha, beta``)."""

    e: float
    a: float
    b: float
    alpha: float
    beta: float


class KaplanConstants(NamedTuple):
    """Kaplan et al. 2020 constants: ``L(N) = (n_c/N)^alpha_n``, ``L(D) = (d_c/D)^alpha_d``,
    ``L(C_min) = (c_c/C)^alpha_c`` (C in PF-days) and ``N_opt ∝ C^n_opt_exponent``."""

    n_c: float
    alpha_n: float
    d_c: float
    alpha_d: float
    c_c: float
    alpha_c: float
    n_opt_exponent: float


class HenighanRow(NamedTuple):
    """One row of Henighan et al. 2020 Table 1.

    ``L(N) = l_inf_n + (N/n0)^(−alpha_n)``, ``L(C) = l_inf_c + (C/c0)^(−alpha_c)`` (C in PF-days),
    ``N_opt(C) = (C/c_opt0)^opt_exponent``. ``None`` marks entries the table does not give
    (multimodal ``L(C)`` rows are for the combined loss).
    """

    l_inf_n: float
    n0: float
    alpha_n: float
    l_inf_c: float | None
    c0: float | None
    alpha_c: float | None
    c_opt0: float | None
    opt_exponent: float | None


#: Hoffmann et al. 2022 Approach 3, rounded body-text values.
CHINCHILLA_HOFFMANN_2022 = ChinchillaConstants(e=1.69, a=406.4, b=410.7, alpha=0.34, beta=0.28)

#: Hoffmann et al. 2022 Approach 3, less-rounded values from the paper's TeX source (as used by
#: Besiroglu et al.): α = 0.3392, β = 0.2849, log A = 6.0073, log B = 6.0179, log E = 0.5267.
CHINCHILLA_HOFFMANN_2022_UNROUNDED = ChinchillaConstants(
    e=math.exp(0.5267), a=math.exp(6.0073), b=math.exp(6.0179), alpha=0.3392, beta=0.2849
)

#: Besiroglu, Erdil, Barnett & You 2024 re-fit of the Chinchilla data (arXiv:2404.10102).
CHINCHILLA_BESIROGLU_2024 = ChinchillaConstants(
    e=1.8172, a=482.01, b=2085.43, alpha=0.3478, beta=0.3658
)

#: Training compute of Chinchilla / Gopher (FLOPs), 70B parameters x 1.4T tokens x 6 ≈ 5.88e23
#: (the paper quotes 5.76e23 for the Gopher budget).
CHINCHILLA_GOPHER_COMPUTE = 5.76e23

#: Kaplan et al. 2020 single-variable fits (N non-embedding parameters, D tokens, C PF-days).
KAPLAN_2020 = KaplanConstants(
    n_c=8.8e13, alpha_n=0.076, d_c=5.4e13, alpha_d=0.095, c_c=3.1e8, alpha_c=0.050,
    n_opt_exponent=0.73,
)

#: Kaplan et al. 2020 joint ``L(N, D)`` re-fit (Table 2; read from secondary copies, see docs/open_questions.md).
KAPLAN_2020_JOINT = KaplanConstants(
    n_c=6.4e13, alpha_n=0.076, d_c=1.8e13, alpha_d=0.103, c_c=math.nan, alpha_c=math.nan,
    n_opt_exponent=0.73,
)

#: Henighan et al. 2020 Table 1, keyed by domain.
HENIGHAN_2020: dict[str, HenighanRow] = {
    "Language": HenighanRow(0.0, 1.47e14, 0.070, 0.0, 3.47e8, 0.048, 3.3e-13, 0.73),
    "Image 8x8": HenighanRow(3.12, 8.0e1, 0.24, 3.13, 1.8e-8, 0.19, 5.3e-14, 0.64),
    "Image 16x16": HenighanRow(2.64, 2.8e2, 0.22, 2.64, 1.6e-8, 0.16, 4.8e-12, 0.75),
    "Image 32x32": HenighanRow(2.20, 6.3e1, 0.13, 2.21, 3.6e-9, 0.10, 1.6e-13, 0.65),
    "Image VQ 16x16": HenighanRow(3.99, 2.7e4, 0.13, 4.09, 6.1e-7, 0.11, 6.2e-14, 0.64),
    "Image VQ 32x32": HenighanRow(3.07, 1.9e4, 0.14, 3.17, 2.6e-6, 0.12, 9.4e-13, 0.70),
    "Text-to-Im (text)": HenighanRow(0.0, 5.6e8, 0.037, None, None, None, None, None),
    "Text-to-Im (image)": HenighanRow(2.0, 5.1e3, 0.16, 1.93, 1.5e-6, 0.15, 9.4e-13, 0.70),
    "Im-to-Text (text)": HenighanRow(0.0, 7.0e8, 0.039, None, None, None, None, None),
    "Im-to-Text (image)": HenighanRow(2.0, 5.5e3, 0.15, 1.97, 1.5e-6, 0.16, 3.3e-12, 0.72),
    "Video VQ 16x16x16": HenighanRow(1.01, 3.7e4, 0.24, 0.95, 2.2e-5, 0.14, 1.13e-12, 0.71),
    "Math (extrapolate)": HenighanRow(0.28, 1.1e4, 0.16, 0.14, 1.4e-5, 0.17, 2.3e-12, 0.69),
}
