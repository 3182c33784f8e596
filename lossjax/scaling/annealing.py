"""Learning-rate areas for Tissue et al.'s annealing law, plus a warmup–stable–decay schedule.

Tissue et al. (arXiv:2408.11029) predict the loss after ``s`` steps from two functionals of the
learning-rate schedule ``η_1, η_2, …``:

* forward area ``S1(s) = Σ_{i=1..s} η_i`` (the area under the LR curve);
* annealing area ``S2(s) = Σ_{i=1..s} m_i`` with ``m_i = λ·m_{i−1} + (η_{i−1} − η_i)``, ``m_0 = 0``
  — a momentum-smoothed accumulation of LR decreases (``λ`` = decay factor, 0.999 in public
  reproductions).

and ``L(s) = L0 + A·S1^(−α) − C·S2`` (:func:`lossjax.scaling.laws.lr_annealing_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["lr_annealing_areas", "warmup_stable_decay_schedule"]


def lr_annealing_areas(
    learning_rates: ArrayLike,
    *,
    decay: float = 0.999,
    warmup_steps: int = 0,
) -> tuple[jax.Array, jax.Array]:
    r"""Forward area ``S1`` and annealing area ``S2`` after every step of an LR schedule.

    .. math::
        S_1(s) = \sum_{i=1}^{s} \eta_i, \qquad
        m_i = \lambda\, m_{i-1} + (\eta_{i-1} - \eta_i), \qquad
        S_2(s) = \sum_{i=1}^{s} m_i

    with ``m_0 = 0`` and ``η_0 := η_1`` (the first step has no LR drop). ``λ → 0`` gives
    ``S2(s) = η_1 − η_s`` (the plain drop in LR); ``λ`` near 1 models the delayed response of the
    loss to annealing. LR *increases* (warmup) enter ``m`` with a negative sign; pass
    ``warmup_steps`` to ignore the LR changes of the first ``warmup_steps`` steps in ``S2`` (they
    still count in ``S1``). This follows the reading that only annealing enters ``S2``; how the
    paper treats warmup is an open question (``docs/open_questions.md``).

    Reference: H. Tissue et al., "Scaling Law with Learning Rate Annealing", arXiv:2408.11029.

    Args:
      learning_rates: ``[T]`` learning rate used at steps ``1..T`` (non-negative).
      decay: momentum factor ``λ`` in ``[0, 1)``.
      warmup_steps: number of leading steps whose LR changes are excluded from ``S2``.

    Returns:
      ``(S1, S2)``, each ``[T]``: the areas after steps ``1..T``.

    Example:
      >>> import jax.numpy as jnp
      >>> s1, s2 = lr_annealing_areas(jnp.array([1.0, 1.0, 0.5, 0.0]), decay=0.5)
      >>> s1.tolist(), s2.tolist()
      ([1.0, 2.0, 2.5, 2.5], [0.0, 0.0, 0.5, 1.25])
    """
    lr = jnp.asarray(learning_rates)
    if lr.ndim != 1:
        raise ValueError(f"learning_rates must be 1-D [T], got shape {lr.shape}")
    if lr.shape[0] == 0:
        raise ValueError("learning_rates must be non-empty")
    if not jnp.issubdtype(lr.dtype, jnp.floating):
        lr = lr.astype(jnp.result_type(float))
    if not isinstance(lr, jax.core.Tracer) and not np.all(np.asarray(lr) >= 0):
        raise ValueError("learning_rates must be non-negative (and not NaN)")
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    if int(warmup_steps) < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    prev = jnp.concatenate([lr[:1], lr[:-1]])
    drops = prev - lr
    steps = jnp.arange(lr.shape[0])
    drops = jnp.where(steps < int(warmup_steps), jnp.zeros_like(drops), drops)

    def body(m, drop):
        m = decay * m + drop
        return m, m

    _, m = jax.lax.scan(body, jnp.zeros((), lr.dtype), drops)
    return jnp.cumsum(lr), jnp.cumsum(m)


def warmup_stable_decay_schedule(
    peak_value: float,
    total_steps: int,
    *,
    decay_steps: int,
    warmup_steps: int = 0,
    end_value: float = 0.0,
    init_value: float = 0.0,
) -> Callable[[ArrayLike], jax.Array]:
    r"""Warmup–stable–decay (WSD) learning-rate schedule, optax-compatible.

    Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, constant
    ``peak_value`` until step ``total_steps − decay_steps``, then linear decay to ``end_value``
    at step ``total_steps`` (held afterwards). ``count`` is the 0-based optimiser step, as in
    optax schedules.

    .. math:: \eta(t) = \begin{cases}
        \eta_{init} + (\eta_{peak}-\eta_{init})\, t/W & t < W\\
        \eta_{peak} & W \le t < T-K\\
        \eta_{peak} + (\eta_{end}-\eta_{peak})\,(t-T+K)/K & T-K \le t \le T
      \end{cases}

    Reference: S. Hu et al., "MiniCPM", arXiv:2404.06395 (WSD); used as the annealing family
    in Tissue et al., arXiv:2408.11029.

    Args:
      peak_value: LR of the stable phase.
      total_steps: last step of the decay.
      decay_steps: length ``K`` of the final linear decay (``0 ≤ K ≤ total_steps − warmup``).
      warmup_steps: length ``W`` of the linear warmup.
      end_value: LR at the end of the decay.
      init_value: LR at step 0 when warming up.

    Returns:
      A schedule ``count -> learning rate``.

    Example:
      >>> sched = warmup_stable_decay_schedule(1.0, 10, decay_steps=4)
      >>> [round(float(sched(t)), 2) for t in (0, 5, 6, 7, 8, 10)]
      [1.0, 1.0, 1.0, 0.75, 0.5, 0.0]
    """
    total_steps = int(total_steps)
    decay_steps = int(decay_steps)
    warmup_steps = int(warmup_steps)
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0 <= decay_steps <= total_steps - warmup_steps:
        raise ValueError(
            f"decay_steps must be in [0, total_steps - warmup_steps], got {decay_steps}"
        )
    decay_start = total_steps - decay_steps

    def schedule(count: ArrayLike) -> jax.Array:
        t = jnp.asarray(count, dtype=jnp.result_type(float))
        warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
        frac = jnp.clip((t - decay_start) / max(decay_steps, 1), 0.0, 1.0)
        dec = peak_value + (end_value - peak_value) * frac
        out = jnp.where(t >= decay_start, dec, peak_value)
        return jnp.where(t < warmup_steps, warm, out)

    return schedule
