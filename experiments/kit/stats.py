"""Paired comparisons over seeds: one t-test and one set of verdict words for every report.

The reports compare two methods run on the same seeds (same split, same initialisation), so the
per-seed differences ``d_i = a_i − b_i`` are paired. The two-sided paired t-test (Student 1908;
e.g. Dietterich 1998, *Approximate statistical tests for comparing supervised classification
learning algorithms*, Neural Computation 10(7), §3) uses

    t = mean(d) / (std(d) · sqrt(1/J + c)),   std with ddof = 1, J = len(d),

with ``c = 0`` for independent replicates, and ``c = n_test / n_train`` for J repeated random
train/test splits of one dataset — the corrected resampled t-test of Nadeau & Bengio (2003,
*Inference for the generalization error*, Machine Learning 52(3), eq. 20), since overlapping
training sets make the plain test over-confident. The difference is significant at ``level`` when
``|t| > t_{1 − level/2, J − 1}``.

Verdict words (:data:`VERDICTS`), from the point of view of the first method ``a`` given which
direction is better (``"higher"`` for accuracy, ``"lower"`` for an error):

* ``"better"`` — significantly better, ``"worse"`` — significantly worse,
* ``"no significant difference"`` — neither, ``"n/a"`` — fewer than two differences.

:func:`claim_word` maps a verdict on "``a`` beats ``b``" onto the words a report prints next to a
claim: ``held`` / ``did not hold`` / ``not resolved`` / ``n/a``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["VERDICTS", "PairedTest", "paired_t_test", "claim_word", "spearman"]

VERDICTS = ("better", "worse", "no significant difference", "n/a")
_CLAIM = {"better": "held", "worse": "did not hold", "no significant difference": "not resolved", "n/a": "n/a"}


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Result of :func:`paired_t_test` (``t``/``critical`` are NaN when undefined)."""

    n: int
    mean: float
    std: float
    t: float
    critical: float
    verdict: str

    def fmt(self, digits: int = 2) -> str:
        """``"mean ± std"`` of the differences, or ``"—"`` without data."""
        return "—" if self.n == 0 else f"{self.mean:+.{digits}f} ± {self.std:.{digits}f}"


def paired_t_test(diffs: Sequence[float] | None, *, better: str = "higher", test_over_train: float = 0.0,
                  level: float = 0.05) -> PairedTest:
    """Two-sided paired t-test of ``mean(diffs) = 0`` (``diffs = a − b`` per seed).

    Args:
      diffs: per-seed differences, first method minus second (``None`` = no data).
      better: ``"higher"`` if a larger value is better (accuracy), ``"lower"`` if smaller is (error).
      test_over_train: ``n_test / n_train`` for repeated random splits (Nadeau–Bengio), else 0.
      level: significance level of the two-sided test.

    Returns:
      A :class:`PairedTest`; ``verdict`` is one of :data:`VERDICTS`. NaN differences give ``"n/a"``.

    Raises:
      ValueError: ``better`` is not ``"higher"``/``"lower"``, ``level`` not in (0, 1) or
        ``test_over_train`` < 0.

    Example:
      >>> paired_t_test([1.0, 1.2, 0.8]).verdict
      'better'
      >>> paired_t_test([1.0, 1.2, 0.8], better="lower").verdict
      'worse'
      >>> paired_t_test([1.0, -1.0, 0.1]).verdict
      'no significant difference'
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"`better` must be 'higher' or 'lower', got {better!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")
    if test_over_train < 0:
        raise ValueError(f"`test_over_train` must be >= 0, got {test_over_train}.")
    d = np.asarray([] if diffs is None else diffs, dtype=float).ravel()
    nan = float("nan")
    if d.size == 0:
        return PairedTest(0, nan, nan, nan, nan, "n/a")
    m = float(d.mean())
    s = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if d.size < 2 or not np.all(np.isfinite(d)):
        return PairedTest(int(d.size), m, s, nan, nan, "n/a")
    from scipy import stats

    crit = float(stats.t.ppf(1.0 - level / 2.0, d.size - 1))
    t = m / (s * math.sqrt(1.0 / d.size + test_over_train)) if s > 0 else math.copysign(math.inf, m) if m else 0.0
    sign = 1.0 if better == "higher" else -1.0
    if sign * t > crit:
        verdict = "better"
    elif sign * t < -crit:
        verdict = "worse"
    else:
        verdict = "no significant difference"
    return PairedTest(int(d.size), m, s, float(t), crit, verdict)


def claim_word(verdict: str) -> str:
    """The report's word for the claim "``a`` beats ``b``" given the test's verdict.

    Example:
      >>> [claim_word(v) for v in VERDICTS]
      ['held', 'did not hold', 'not resolved', 'n/a']
    """
    if verdict not in _CLAIM:
        raise ValueError(f"`verdict` must be one of {VERDICTS}, got {verdict!r}.")
    return _CLAIM[verdict]


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation ρ_s of ``x`` and ``y`` and its two-sided p-value (Spearman 1904,
    *The proof and measurement of association between two things*, Am. J. Psychol. 15(1)):
    Pearson's correlation of the ranks (ties get their mean rank), p from the t distribution with
    ``n − 2`` degrees of freedom (``scipy.stats.spearmanr``). NaN when undefined (a constant input).

    Raises:
      ValueError: ``x`` and ``y`` differ in length.

    Example:
      >>> r, p = spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 25.0, 100.0])
      >>> round(r, 5), round(p, 5)
      (1.0, 0.0)
    """
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if a.size != b.size:
        raise ValueError(f"`x` and `y` must have the same length, got {a.size} and {b.size}.")
    from scipy import stats

    r = stats.spearmanr(a, b)
    return float(r.statistic), float(r.pvalue)
