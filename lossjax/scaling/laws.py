"""Functional forms of published neural scaling laws (natural parameters, pure ``jnp``).

Every function evaluates one law at given sizes with explicitly named constants; the published
constants live in :mod:`lossjax.scaling.published` and the robust fitter in
:mod:`lossjax.scaling.fitting`. All functions broadcast over their array arguments and are
``jit``/``vmap``/``grad`` friendly. Sizes must be positive; this is checked when the inputs are
concrete (outside ``jit``).

Forms:

* :func:`power_law_plus_constant` — ``L∞ + (x0/x)^α`` (Henighan et al. 2020, eq. 1.1).
* :func:`kaplan_loss_n`, :func:`kaplan_loss_d`, :func:`kaplan_loss_nd` — Kaplan et al. 2020.
* :func:`chinchilla_loss` — ``E + A/N^α + B/D^β`` (Hoffmann et al. 2022, Approach 3).
* :func:`nmt_bivariate_loss` — Ghorbani et al. 2021 encoder/decoder law (form only).
* :func:`lr_annealing_loss` — Tissue et al. 2024 ``L0 + A·S1^(−α) − C·S2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "power_law_plus_constant",
    "kaplan_loss_n",
    "kaplan_loss_d",
    "kaplan_loss_nd",
    "chinchilla_loss",
    "nmt_bivariate_loss",
    "lr_annealing_loss",
]


def _is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _float(x: ArrayLike, name: str) -> jax.Array:
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _positive(x: ArrayLike, name: str) -> jax.Array:
    """Returns ``x`` as a floating array; raises ValueError if a concrete ``x`` has values <= 0."""
    if _is_concrete(x):
        host = np.asarray(x)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {host.dtype}")
        if host.size and not np.all(host > 0):
            raise ValueError(f"{name} must be strictly positive (and not NaN)")
    return _float(x, name)


def _nonnegative(x: ArrayLike, name: str) -> jax.Array:
    if _is_concrete(x):
        host = np.asarray(x)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {host.dtype}")
        if host.size and not np.all(host >= 0):
            raise ValueError(f"{name} must be non-negative (and not NaN)")
    return _float(x, name)


def power_law_plus_constant(
    x: ArrayLike, *, l_inf: ArrayLike, x0: ArrayLike, alpha: ArrayLike
) -> jax.Array:
    r"""Power law plus constant ``L(x) = L∞ + (x0/x)^α``.

    .. math:: L(x) = L_\infty + \left(\frac{x_0}{x}\right)^{\alpha}

    Henighan et al.'s form (eq. 1.1): ``L∞`` estimates the entropy of the data and the power-law
    term the reducible loss ``D_KL(true‖model)``. With ``l_inf = 0`` it is Kaplan et al.'s
    single-variable law. Evaluated as ``L∞ + exp(α·(log x0 − log x))``.

    Reference: T. Henighan et al., "Scaling Laws for Autoregressive Generative Modeling",
    arXiv:2010.14701 (2020).

    Args:
      x: positive sizes (parameters, compute, data), any shape.
      l_inf: irreducible loss ``L∞`` (broadcasts against ``x``).
      x0: positive scale ``x0``.
      alpha: exponent ``α``.

    Returns:
      Loss at each ``x`` (broadcast shape).

    Example:
      >>> round(float(power_law_plus_constant(1e4, l_inf=3.12, x0=80.0, alpha=0.24)), 4)
      3.4339
    """
    x = _positive(x, "x")
    x0 = _positive(x0, "x0")
    return jnp.asarray(l_inf) + jnp.exp(jnp.asarray(alpha) * (jnp.log(x0) - jnp.log(x)))


def kaplan_loss_n(n: ArrayLike, *, n_c: ArrayLike = 8.8e13, alpha_n: ArrayLike = 0.076) -> jax.Array:
    r"""Kaplan et al.'s parameter-limited law ``L(N) = (N_c/N)^{α_N}``.

    .. math:: L(N) = \left(\frac{N_c}{N}\right)^{\alpha_N}

    ``N`` counts non-embedding parameters; loss in nats per token on WebText2. Defaults are the
    published ``α_N = 0.076, N_c = 8.8e13``.

    Reference: J. Kaplan et al., "Scaling Laws for Neural Language Models", arXiv:2001.08361.

    Args:
      n: positive non-embedding parameter counts.
      n_c: scale ``N_c``.
      alpha_n: exponent ``α_N``.

    Returns:
      Loss (nats/token).

    Example:
      >>> round(float(kaplan_loss_n(1e9)), 4)
      2.3756
    """
    return power_law_plus_constant(n, l_inf=0.0, x0=n_c, alpha=alpha_n)


def kaplan_loss_d(d: ArrayLike, *, d_c: ArrayLike = 5.4e13, alpha_d: ArrayLike = 0.095) -> jax.Array:
    r"""Kaplan et al.'s data-limited law ``L(D) = (D_c/D)^{α_D}``.

    .. math:: L(D) = \left(\frac{D_c}{D}\right)^{\alpha_D}

    Defaults are the published ``α_D = 0.095, D_c = 5.4e13`` tokens (large models, early stopping).

    Reference: J. Kaplan et al., "Scaling Laws for Neural Language Models", arXiv:2001.08361.

    Args:
      d: positive dataset sizes in tokens.
      d_c: scale ``D_c``.
      alpha_d: exponent ``α_D``.

    Returns:
      Loss (nats/token).

    Example:
      >>> round(float(kaplan_loss_d(1e10)), 4)
      2.2624
    """
    return power_law_plus_constant(d, l_inf=0.0, x0=d_c, alpha=alpha_d)


def kaplan_loss_nd(
    n: ArrayLike,
    d: ArrayLike,
    *,
    n_c: ArrayLike = 6.4e13,
    d_c: ArrayLike = 1.8e13,
    alpha_n: ArrayLike = 0.076,
    alpha_d: ArrayLike = 0.103,
) -> jax.Array:
    r"""Kaplan et al.'s joint law ``L(N, D) = [(N_c/N)^{α_N/α_D} + D_c/D]^{α_D}``.

    .. math:: L(N, D) = \left[\left(\frac{N_c}{N}\right)^{\alpha_N/\alpha_D}
              + \frac{D_c}{D}\right]^{\alpha_D}

    Evaluated in log space as ``α_D · logaddexp((α_N/α_D)·log(N_c/N), log(D_c/D))``. Defaults are
    the joint re-fit constants of the paper's Table 2 (``α_N = 0.076, α_D = 0.103,
    N_c = 6.4e13, D_c = 1.8e13``), as restated in secondary sources (not yet checked against the
    PDF; ``docs/open_questions.md``).
    For ``D → ∞`` it reduces to :func:`kaplan_loss_n` with the same ``N_c, α_N``.

    Reference: J. Kaplan et al., "Scaling Laws for Neural Language Models", arXiv:2001.08361.

    Args:
      n: positive non-embedding parameter counts.
      d: positive token counts (broadcast against ``n``).
      n_c, d_c: scales.
      alpha_n, alpha_d: exponents.

    Returns:
      Loss (nats/token).

    Example:
      >>> round(float(kaplan_loss_nd(1e9, 1e11)), 4)
      2.3308
    """
    n = _positive(n, "n")
    d = _positive(d, "d")
    n_c = _positive(n_c, "n_c")
    d_c = _positive(d_c, "d_c")
    alpha_n = jnp.asarray(alpha_n)
    alpha_d = jnp.asarray(alpha_d)
    t_n = (alpha_n / alpha_d) * (jnp.log(n_c) - jnp.log(n))
    t_d = jnp.log(d_c) - jnp.log(d)
    return jnp.exp(alpha_d * jnp.logaddexp(t_n, t_d))


def chinchilla_loss(
    n: ArrayLike,
    d: ArrayLike,
    *,
    e: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
) -> jax.Array:
    r"""Chinchilla parametric loss ``L(N, D) = E + A/N^α + B/D^β``.

    .. math:: L(N, D) = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}

    Hoffmann et al.'s Approach 3 (``N`` parameters, ``D`` training tokens). Evaluated as
    ``exp(logsumexp(log E, log A − α log N, log B − β log D))`` (positive ``E, A, B``). Published
    constants (Hoffmann and the Besiroglu et al. 2024 correction) are in
    :mod:`lossjax.scaling.published`.

    References: J. Hoffmann et al., "Training Compute-Optimal Large Language Models",
    arXiv:2203.15556 (2022); T. Besiroglu et al., "Chinchilla Scaling: A replication attempt",
    arXiv:2404.10102 (2024).

    Args:
      n: positive parameter counts.
      d: positive token counts (broadcast against ``n``).
      e, a, b: positive constants ``E, A, B``.
      alpha, beta: exponents.

    Returns:
      Loss (nats/token).

    Example:
      >>> L = chinchilla_loss(70e9, 1.4e12, e=1.69, a=406.4, b=410.7, alpha=0.34, beta=0.28)
      >>> round(float(L), 4)
      1.9366
    """
    n = _positive(n, "n")
    d = _positive(d, "d")
    e = _positive(e, "e")
    a = _positive(a, "a")
    b = _positive(b, "b")
    terms = jnp.stack(
        jnp.broadcast_arrays(
            jnp.log(e),
            jnp.log(a) - jnp.asarray(alpha) * jnp.log(n),
            jnp.log(b) - jnp.asarray(beta) * jnp.log(d),
        )
    )
    return jnp.exp(jax.nn.logsumexp(terms, axis=0))


def nmt_bivariate_loss(
    n_enc: ArrayLike,
    n_dec: ArrayLike,
    *,
    beta: ArrayLike,
    p_enc: ArrayLike,
    p_dec: ArrayLike,
    l_inf: ArrayLike,
    n_enc_ref: ArrayLike = 1.0,
    n_dec_ref: ArrayLike = 1.0,
) -> jax.Array:
    r"""Ghorbani et al.'s bivariate encoder/decoder law for neural machine translation.

    .. math:: L(N_e, N_d) = \beta \left(\frac{\bar N_e}{N_e}\right)^{p_e}
              \left(\frac{\bar N_d}{N_d}\right)^{p_d} + L_\infty

    ``N_e, N_d`` are the encoder and decoder parameter counts, ``N̄_e, N̄_d`` fixed reference sizes
    (normalisers), ``p_e, p_d`` the encoder/decoder exponents, ``β`` a positive multiplier and
    ``L∞`` the irreducible loss. At fixed total ``N_e + N_d`` the loss is minimised at
    ``N_e/N_d = p_e/p_d``; scaling both in proportion gives the effective exponent ``p_e + p_d``.

    Only the functional form is implemented: the paper's fitted constants (per language pair and
    test set) were not available to this project and are deliberately **not** provided here.

    Reference: B. Ghorbani et al., "Scaling Laws for Neural Machine Translation",
    arXiv:2109.07740 (ICLR 2022).

    Args:
      n_enc, n_dec: positive encoder / decoder parameter counts (broadcast together).
      beta: positive multiplier ``β``.
      p_enc, p_dec: exponents ``p_e, p_d``.
      l_inf: irreducible loss ``L∞``.
      n_enc_ref, n_dec_ref: positive reference sizes ``N̄_e, N̄_d``.

    Returns:
      Loss at each ``(n_enc, n_dec)``.

    Example:
      >>> L = nmt_bivariate_loss(2e8, 1e8, beta=0.5, p_enc=0.3, p_dec=0.5, l_inf=1.0,
      ...                        n_enc_ref=1e8, n_dec_ref=1e8)
      >>> round(float(L), 4)
      1.4061
    """
    n_enc = _positive(n_enc, "n_enc")
    n_dec = _positive(n_dec, "n_dec")
    beta = _positive(beta, "beta")
    n_enc_ref = _positive(n_enc_ref, "n_enc_ref")
    n_dec_ref = _positive(n_dec_ref, "n_dec_ref")
    log_term = (
        jnp.log(beta)
        + jnp.asarray(p_enc) * (jnp.log(n_enc_ref) - jnp.log(n_enc))
        + jnp.asarray(p_dec) * (jnp.log(n_dec_ref) - jnp.log(n_dec))
    )
    return jnp.asarray(l_inf) + jnp.exp(log_term)


def lr_annealing_loss(
    s1: ArrayLike,
    s2: ArrayLike,
    *,
    l0: ArrayLike,
    a: ArrayLike,
    alpha: ArrayLike,
    c: ArrayLike,
) -> jax.Array:
    r"""Tissue et al.'s learning-rate-annealing law ``L(s) = L0 + A·S1^(−α) − C·S2``.

    .. math:: L(s) = L_0 + A\,S_1(s)^{-\alpha} - C\,S_2(s)

    ``S1`` is the forward area (cumulative learning rate) and ``S2`` the annealing area with
    momentum decay; compute both from a learning-rate schedule with
    :func:`lossjax.scaling.annealing.lr_annealing_areas`. Caveat (ICLR 2025 reviews): ``S2`` keeps
    growing when zero-LR steps are appended, so the law must not be used to optimise schedules
    outside the family it was fitted on.

    Reference: H. Tissue et al., "Scaling Law with Learning Rate Annealing", arXiv:2408.11029.

    Args:
      s1: positive forward areas ``S1``.
      s2: non-negative annealing areas ``S2`` (broadcast against ``s1``).
      l0: loss floor ``L0``.
      a: coefficient ``A`` of the power-law term.
      alpha: exponent ``α``.
      c: coefficient ``C`` of the annealing term.

    Returns:
      Predicted loss at each step.

    Example:
      >>> round(float(lr_annealing_loss(10.0, 0.5, l0=2.0, a=1.0, alpha=0.5, c=0.1)), 4)
      2.2662
    """
    s1 = _positive(s1, "s1")
    s2 = _float(s2, "s2")
    return (
        jnp.asarray(l0)
        + jnp.asarray(a) * jnp.exp(-jnp.asarray(alpha) * jnp.log(s1))
        - jnp.asarray(c) * s2
    )
