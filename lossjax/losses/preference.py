"""Preference-optimisation building blocks: sequence log-probabilities, DPO, SPO and KTO.

* :func:`sequence_logprob` — masked sum (or mean) of token log-probabilities.
* :func:`dpo_loss` — Direct Preference Optimization (Rafailov et al., NeurIPS 2023), with the
  conservative / label-smoothed variant.
* :func:`spo_loss` — Self-supervised Preference Optimization (Li et al., EMNLP Findings 2024):
  DPO plus an auxiliary classification of the "preference degree".
* :func:`kto_loss` — Kahneman-Tversky Optimization (Ethayarajh et al., ICML 2024): unpaired
  desirable / undesirable examples against a KL reference point.

References: R. Rafailov et al., "Direct Preference Optimization", NeurIPS 2023 (Eq. 7); Li et al.,
SPO, EMNLP Findings 2024, arXiv:2409.17791. Frozen test values: ``docs/design/test_vectors.md`` §3.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from lossjax.losses._core import (
    bool_mask,
    check_labels,
    finalize,
    is_concrete,
    label_log_prob,
    poison_bad_labels,
    prepare,
    require_floating,
    require_nonnegative,
    require_range,
)

__all__ = [
    "sequence_logprob",
    "dpo_loss",
    "spo_loss",
    "kto_loss",
]


def sequence_logprob(
    logits: ArrayLike,
    tokens: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    average: bool = False,
    axis: int = -1,
) -> jax.Array:
    r"""Sequence log-probability ``Σ_t m_t · log softmax(logits_t)[tokens_t]``.

    .. math::
        \log \pi(y \mid x) = \sum_{t} m_t \log p_\theta(y_t \mid x, y_{<t}),

    or the mean over the ``m_t = 1`` positions with ``average=True`` (length-normalised, as in
    IPO/SimPO-style variants). ``logits[..., t, :]`` must already be aligned with
    ``tokens[..., t]`` (shift by one yourself for causal LMs: ``logits[:, :-1]`` with
    ``tokens[:, 1:]``). The token log-probability is the masked, log-space ``log p_y`` of
    :mod:`lossjax.losses._core` (``−softplus(ℓu)``), exact for ``±1e4`` logits; an all-masked
    sequence gives 0.

    Args:
      logits: floating ``[..., T, V]`` (vocabulary axis ``axis``).
      tokens: integer ``[..., T]``.
      mask: optional bool ``[..., T]`` (prompt and padding positions ``False``).
      average: divide by the number of unmasked tokens (``max(·, 1)``).
      axis: vocabulary axis of ``logits``.

    Returns:
      ``[...]`` sequence log-probabilities (float32, or float64 for float64 input).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> logits = jnp.log(jnp.array([[[0.5, 0.5], [0.25, 0.75]]]))
      >>> round(float(sequence_logprob(logits, jnp.array([[0, 1]]))[0]), 6)
      -0.980829
      >>> float(sequence_logprob(logits, jnp.array([[0, 1]]), jnp.array([[False, False]]))[0])
      0.0
    """
    require_floating(logits, "logits")
    tokens = jnp.asarray(tokens)
    if jnp.ndim(tokens) < 1:
        raise ValueError("`tokens` must have a time axis; got a scalar.")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"`mask` must be a bool array, got {mask.dtype}.")
        if mask.shape != tokens.shape:
            raise ValueError(f"`mask` must have the shape of `tokens` {tokens.shape}, got {mask.shape}.")
    p = prepare(logits, tokens, axis=axis, where=mask, allow_soft=False, labels_name="tokens")
    tok = finalize(p, label_log_prob(p))
    total = jnp.sum(tok, axis=-1)
    if not average:
        return total
    count = tokens.shape[-1] if mask is None else jnp.sum(mask, axis=-1)
    return total / jnp.maximum(count, 1).astype(total.dtype)


def _check_where(where: ArrayLike | None, shape: tuple[int, ...]) -> jax.Array | None:
    return None if where is None else bool_mask(where, shape)


def _mask_rows(where: jax.Array | None, a: jax.Array) -> jax.Array:
    """Double where: a masked example is replaced by 0 before any arithmetic (NaN-safe grad)."""
    if where is None:
        return a
    w = where.reshape(where.shape + (1,) * (a.ndim - where.ndim))
    return jnp.where(w, a, jnp.zeros((), a.dtype))


def _check_logps(*arrays: tuple[str, ArrayLike]) -> tuple[jax.Array, ...]:
    shape = jnp.shape(arrays[0][1])
    out = []
    for name, a in arrays:
        require_floating(a, name)
        if jnp.shape(a) != shape:
            raise ValueError(f"`{name}` must have the shape of `{arrays[0][0]}` {shape}, got {jnp.shape(a)}.")
        a = jnp.asarray(a)
        out.append(a.astype(jnp.promote_types(a.dtype, jnp.float32)))
    return tuple(out)


def dpo_loss(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    ref_chosen_logps: ArrayLike,
    ref_rejected_logps: ArrayLike,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Direct Preference Optimization loss (with optional conservative label smoothing).

    .. math::
        \Delta = \bigl(\log\pi_\theta(y_w|x) - \log\pi_{ref}(y_w|x)\bigr)
               - \bigl(\log\pi_\theta(y_l|x) - \log\pi_{ref}(y_l|x)\bigr),\qquad
        L = (1-\varepsilon)\,\mathrm{softplus}(-\beta\Delta) + \varepsilon\,\mathrm{softplus}(\beta\Delta).

    ``ε = 0`` is DPO (``−log σ(βΔ)``); ``ε > 0`` is the conservative DPO of the TRL/cDPO
    recipe (labels flipped with probability ε). Symmetries: swapping chosen and rejected maps
    ``Δ → −Δ``, so ``L(Δ) − L(−Δ) = −(1 − 2ε)βΔ``; ``Δ = 0`` gives ``log 2``; ``ε = ½`` is even
    in ``Δ``. Inputs are sequence log-probabilities (see :func:`sequence_logprob`); the reference
    model's enter under ``jax.lax.stop_gradient``.

    Args:
      policy_chosen_logps, policy_rejected_logps: floating ``[...]`` policy log-probs.
      ref_chosen_logps, ref_rejected_logps: floating ``[...]`` reference log-probs.
      beta: ``β ≥ 0`` (0.1 typical, TRL default).
      label_smoothing: ``ε ∈ [0, 0.5]``.
      where: optional bool ``[...]`` row mask (masked pairs give 0).

    Returns:
      Per-pair losses ``[...]``.

    References:
      R. Rafailov, A. Sharma, E. Mitchell, S. Ermon, C. D. Manning and C. Finn, "Direct
      Preference Optimization: Your Language Model is Secretly a Reward Model", NeurIPS 2023,
      arXiv:2305.18290.

    Example:
      >>> import jax.numpy as jnp
      >>> a = lambda v: jnp.array([v])
      >>> round(float(dpo_loss(a(-10.0), a(-12.0), a(-11.0), a(-11.5), beta=0.1)[0]), 6)
      0.620957
    """
    require_nonnegative(beta, "beta")
    require_range(label_smoothing, "label_smoothing", 0.0, 0.5)
    pc, pr, rc, rr = _check_logps(
        ("policy_chosen_logps", policy_chosen_logps),
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    )
    where = _check_where(where, pc.shape)
    pc, pr, rc, rr = (_mask_rows(where, a) for a in (pc, pr, rc, rr))
    rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
    delta = beta * ((pc - rc) - (pr - rr))
    loss = (1.0 - label_smoothing) * jax.nn.softplus(-delta)
    if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):
        loss = loss + label_smoothing * jax.nn.softplus(delta)
    if where is not None:
        loss = jnp.where(where, loss, 0.0)
    return loss


def spo_loss(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    ref_chosen_logps: ArrayLike,
    ref_rejected_logps: ArrayLike,
    degree_logits: ArrayLike,
    degree_labels: ArrayLike,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    ssl_weight: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Self-supervised Preference Optimization: DPO + λ · preference-degree classification.

    .. math::
        L = L_{DPO} + \lambda\,\mathrm{CE}(\text{degree\_logits}, \text{degree\_labels}).

    SPO builds response variants by removing key content, with known "preference degree"
    labels, and trains an auxiliary classifier to recognise the degree; the alignment loss is
    unchanged. Building the variants and their labels is data-pipeline work; this function
    combines the two terms. ``degree_logits`` may carry extra axes between the batch axes and
    the class axis (several variants per pair): the CE is averaged over them. The CE is
    :func:`optax.losses.softmax_cross_entropy_with_integer_labels`.

    ``λ`` (``ssl_weight``) default 1.0 is a placeholder; the paper's value was not confirmed
    (``docs/open_questions.md``). Not to be confused with "SPO: Self Preference Optimization with Self
    Regularization" (EMNLP Findings 2025).

    Args:
      policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: see
        :func:`dpo_loss` (shape ``[B]``, or any batch shape ``[...]``).
      degree_logits: floating ``[..., *extra, D]`` degree-classifier logits.
      degree_labels: integer ``[..., *extra]`` degree labels.
      beta, label_smoothing: see :func:`dpo_loss`.
      ssl_weight: ``λ ≥ 0``.
      where: optional bool row mask of the batch shape.

    Returns:
      Per-pair losses ``[...]``.

    References:
      Li et al., "SPO: Self-supervised Preference Optimization", EMNLP Findings 2024,
      arXiv:2409.17791.

    Example:
      >>> import jax.numpy as jnp
      >>> a = lambda v: jnp.array([v])
      >>> dl, dy = jnp.zeros((1, 3)), jnp.array([2])
      >>> round(float(spo_loss(a(-10.0), a(-12.0), a(-11.0), a(-11.5), dl, dy)[0]), 6)
      1.719569
    """
    require_nonnegative(ssl_weight, "ssl_weight")
    align = dpo_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=beta,
        label_smoothing=label_smoothing,
        where=where,
    )
    batch = align.shape
    where = _check_where(where, batch)
    require_floating(degree_logits, "degree_logits")
    degree_logits = jnp.asarray(degree_logits)
    degree_labels = jnp.asarray(degree_labels)
    if not jnp.issubdtype(degree_labels.dtype, jnp.integer):
        raise TypeError(f"`degree_labels` must be integer class indices, got {degree_labels.dtype}.")
    if degree_labels.shape != degree_logits.shape[:-1]:
        raise ValueError(
            f"`degree_labels` must have shape {degree_logits.shape[:-1]} (the shape of "
            f"`degree_logits` without the class axis), got {degree_labels.shape}."
        )
    if degree_labels.shape[: len(batch)] != batch:
        raise ValueError(
            f"`degree_labels` must start with the batch shape {batch}, got {degree_labels.shape}."
        )
    logits = _mask_rows(where, degree_logits.astype(jnp.promote_types(degree_logits.dtype, jnp.float32)))
    n_deg = logits.shape[-1]
    # the package label rule (docs/conventions.md): error outside jit, NaN example under jit
    if is_concrete(degree_labels) and (where is None or is_concrete(where)):
        rows = None if where is None else np.broadcast_to(
            np.asarray(where).reshape(where.shape + (1,) * (degree_labels.ndim - where.ndim)),
            degree_labels.shape,
        )
        check_labels(degree_labels, n_deg, where=rows, name="degree_labels")
    else:
        logits = poison_bad_labels(logits, degree_labels, n_deg)
        if where is not None:
            logits = _mask_rows(where, logits)
    degree_labels = jnp.clip(degree_labels, 0, n_deg - 1)
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(logits, degree_labels)
    extra = tuple(range(len(batch), ce.ndim))
    if extra:
        ce = jnp.mean(ce, axis=extra)
    loss = align + ssl_weight * ce
    if where is not None:
        loss = jnp.where(where, loss, 0.0)
    return loss


def _kto_reference_point(reference_point, kl_policy_logps, kl_ref_logps, where, shape, dtype) -> jax.Array:
    """``z_0 = max(0, KL)`` under ``stop_gradient``: given, or the batch estimate from mismatched pairs."""
    kl_given = kl_policy_logps is not None or kl_ref_logps is not None
    if (reference_point is None) == (not kl_given) or (kl_given and (kl_policy_logps is None or kl_ref_logps is None)):
        raise ValueError("give either `reference_point`, or both `kl_policy_logps` and `kl_ref_logps` "
                         "(the batch estimate of the KL reference point).")
    if reference_point is not None:
        require_floating(reference_point, "reference_point")
        z = jnp.asarray(reference_point).astype(dtype)
        try:
            np.broadcast_shapes(z.shape, shape)
        except ValueError:
            raise ValueError(f"`reference_point` must broadcast to the batch shape {shape}, got {z.shape}.") from None
    else:
        kp, kr = _check_logps(("kl_policy_logps", kl_policy_logps), ("kl_ref_logps", kl_ref_logps))
        if kp.shape != shape:
            raise ValueError(f"`kl_policy_logps` must have the batch shape {shape}, got {kp.shape}.")
        gap = _mask_rows(where, kp - kr).astype(dtype)
        count = gap.size if where is None else jnp.sum(where)
        z = jnp.sum(gap) / jnp.maximum(count, 1).astype(dtype)
    return jax.lax.stop_gradient(jnp.maximum(z, 0.0))


def kto_loss(
    policy_logps: ArrayLike,
    ref_logps: ArrayLike,
    desirable: ArrayLike,
    *,
    reference_point: ArrayLike | None = None,
    kl_policy_logps: ArrayLike | None = None,
    kl_ref_logps: ArrayLike | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Kahneman-Tversky Optimization loss of unpaired desirable / undesirable examples.

    With the implied reward :math:`r = \log\pi_\theta(y|x) - \log\pi_{ref}(y|x)` and the reference
    point :math:`z_0`,

    .. math::
        v(x, y) = \begin{cases} \lambda_D\,\sigma(\beta(r - z_0)) & y \text{ desirable} \\
                                \lambda_U\,\sigma(\beta(z_0 - r)) & y \text{ undesirable} \end{cases},
        \qquad L(x, y) = \lambda_y - v(x, y),

    computed as :math:`\lambda_D\,\sigma(\beta(z_0 - r))` resp. :math:`\lambda_U\,\sigma(\beta(r - z_0))`
    (Ethayarajh et al., ICML 2024, Sec. 4, Eq. 8; the batch loss is the mean of these). The paper's
    reference point is :math:`z_0 = \mathrm{KL}(\pi_\theta(y'|x)\,\|\,\pi_{ref}(y'|x))`, estimated
    without gradient as :math:`\hat z_0 = \max(0, \frac1m \sum_i \log\pi_\theta(y_{i'}|x_i) -
    \log\pi_{ref}(y_{i'}|x_i))` over *mismatched* pairs of the batch (each prompt with another example's
    completion, e.g. the next one's). Give either

    * ``kl_policy_logps`` / ``kl_ref_logps`` (batch-shaped log-probs of the mismatched pairs): the
      batch estimate above, averaged over the examples kept by ``where`` (one scalar for the batch), or
    * ``reference_point``: an estimate computed elsewhere (e.g. averaged over devices or a running
      mean; a scalar or batch-broadcastable array), clamped at 0 like the batch estimate.

    Either way :math:`z_0` enters under ``stop_gradient``, as does the reference model. The paper's
    defaults are ``beta = 0.1`` and :math:`\lambda_D = \lambda_U = 1`, with the advice to keep
    :math:`\lambda_D n_D / (\lambda_U n_U)` in :math:`[1, 4/3]` for imbalanced data.

    Args:
      policy_logps: floating ``[...]`` policy sequence log-probs (:func:`sequence_logprob`).
      ref_logps: floating ``[...]`` reference sequence log-probs.
      desirable: bool ``[...]``, True for desirable examples.
      reference_point: the KL reference point (clamped at 0), or None.
      kl_policy_logps, kl_ref_logps: floating ``[...]`` log-probs of the mismatched pairs, or None.
      beta: ``β ≥ 0``.
      desirable_weight, undesirable_weight: ``λ_D, λ_U ≥ 0``.
      where: optional bool ``[...]`` example mask (masked examples give 0 and leave the batch estimate).

    Returns:
      Per-example losses ``[...]``.

    References:
      K. Ethayarajh, W. Xu, N. Muennighoff, D. Jurafsky and D. Kiela, "KTO: Model Alignment as Prospect
      Theoretic Optimization", ICML 2024, arXiv:2402.01306.

    Example:
      >>> import jax.numpy as jnp
      >>> pol, ref = jnp.array([-10.0, -12.0]), jnp.array([-11.0, -11.5])
      >>> out = kto_loss(pol, ref, jnp.array([True, False]), reference_point=0.2, beta=0.1)
      >>> [round(float(v), 5) for v in out]   # [sigmoid(-0.08), sigmoid(-0.07)]
      [0.48001, 0.48251]
    """
    require_nonnegative(beta, "beta")
    require_nonnegative(desirable_weight, "desirable_weight")
    require_nonnegative(undesirable_weight, "undesirable_weight")
    pol, ref = _check_logps(("policy_logps", policy_logps), ("ref_logps", ref_logps))
    desirable = jnp.asarray(desirable)
    if desirable.dtype != jnp.bool_:
        raise TypeError(f"`desirable` must be a bool array, got {desirable.dtype}.")
    if desirable.shape != pol.shape:
        raise ValueError(f"`desirable` must have the shape of `policy_logps` {pol.shape}, got {desirable.shape}.")
    where = _check_where(where, pol.shape)
    z0 = _kto_reference_point(reference_point, kl_policy_logps, kl_ref_logps, where, pol.shape, pol.dtype)
    pol, ref = _mask_rows(where, pol), jax.lax.stop_gradient(_mask_rows(where, ref))
    if where is not None:  # a per-example reference point may hold NaN at masked examples
        z0 = jnp.where(where, z0, jnp.zeros((), z0.dtype))
    d = beta * ((pol - ref) - z0)
    loss = jnp.where(desirable, desirable_weight * jax.nn.sigmoid(-d), undesirable_weight * jax.nn.sigmoid(d))
    if where is not None:
        loss = jnp.where(where, loss, 0.0)
    return loss
