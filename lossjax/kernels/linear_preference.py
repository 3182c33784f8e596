"""Fused-linear preference losses: sequence log-probabilities from hidden states, and DPO / SPO / ORPO / KTO.

A sequence log-probability is a masked sum of target log-probabilities, i.e. minus the per-token linear
cross-entropy summed over the sequence with the prompt and padding positions ignored:

    log pi(y | x) = sum_t m_t log softmax(E_t C^T + b)[y_t] = - sum_t nll_t   (nll_t = 0 where m_t = 0)

so it is computed by :func:`lossjax.kernels.linear_cross_entropy` (``reduction='none'``, masked positions
set to ``ignore_index``) on any of its implementations and meshes (batch-sharded, and vocab-parallel with
``vocab_axis``), never forming the N x V logits. The final formulas are those of
:func:`lossjax.losses.dpo_loss`, :func:`lossjax.losses.spo_loss` and :func:`lossjax.losses.kto_loss`;
ORPO is written here.

Chosen / rejected responses are stacked on a leading axis of size 2: ``embeddings`` [2, ..., T, D] and
``tokens`` [2, ..., T] (index 0 = chosen, 1 = rejected), so each head runs once over all tokens. KTO's
examples are unpaired: ``embeddings`` [..., T, D] with a bool ``desirable`` [...].
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.kernels.linear_ce import linear_cross_entropy
from lossjax.kernels.linear_ce_config import ChunkedConfig, PallasConfig
from lossjax.losses.preference import dpo_loss, kto_loss, spo_loss

__all__ = ["linear_sequence_logprob", "linear_dpo_loss", "linear_spo_loss", "linear_orpo_loss", "linear_kto_loss"]

_IGNORE = -100


def _masked_targets(tokens, mask, lead):
    t = jnp.asarray(tokens)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"tokens must be an integer array, got dtype {t.dtype}")
    if t.shape != lead:
        raise ValueError(f"tokens shape {t.shape} must equal embeddings.shape[:-1] = {lead}")
    if t.ndim < 1:
        raise ValueError("tokens must have a time axis")
    if mask is None:
        return t, None
    m = jnp.asarray(mask)
    if m.dtype != jnp.bool_ or m.shape != t.shape:
        raise ValueError(f"mask must be a bool array of shape {t.shape}, got {m.dtype}{m.shape}")
    return jnp.where(m, t, _IGNORE), m


def linear_sequence_logprob(
    embeddings: ArrayLike,
    classifier: ArrayLike,
    tokens: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    bias: ArrayLike | None = None,
    average: bool = False,
    softcap: float | None = None,
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | None = None,
    vocab_axis: str | None = None,
) -> jax.Array:
    r"""Sequence log-probability ``sum_t m_t log softmax(E_t C^T + b)[y_t]`` without the logits.

    The fused-linear form of :func:`lossjax.losses.sequence_logprob` (the DPO policy / reference term,
    Rafailov et al., NeurIPS 2023, Eq. 7): ``embeddings[..., t, :]`` must already be aligned with
    ``tokens[..., t]`` (for a causal LM pass the hidden states of positions ``0..T-2`` with tokens
    ``1..T-1``). Masked positions (prompt, padding) may hold any token id. ``average=True`` divides by
    the number of unmasked tokens (``max(., 1)``). Computed as minus the summed per-token
    :func:`lossjax.kernels.linear_cross_entropy` (``reduction='none'``), so every ``impl``, ``softcap``,
    the batch-sharded meshes and ``vocab_axis`` apply.

    Args:
      embeddings: [..., T, D] hidden states.
      classifier: [V, D] output embedding.
      tokens: integer [..., T] target tokens.
      mask: optional bool [..., T] (False at prompt and padding positions).
      bias, softcap, impl, config, vocab_axis: as in :func:`linear_cross_entropy`.
      average: length-normalise.

    Returns:
      [...] f32 sequence log-probabilities.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.losses import sequence_logprob
      >>> from lossjax.kernels import linear_sequence_logprob
      >>> e = jax.random.normal(jax.random.key(0), (2, 5, 8))
      >>> c = jax.random.normal(jax.random.key(1), (40, 8))
      >>> y = jnp.arange(10).reshape(2, 5)
      >>> m = jnp.array([[False, True, True, True, True], [False, False, True, True, False]])
      >>> lp = jax.jit(linear_sequence_logprob)(e, c, y, m)
      >>> bool(jnp.allclose(lp, sequence_logprob(e @ c.T, y, m), rtol=1e-5))
      True
    """
    e = jnp.asarray(embeddings)
    t, m = _masked_targets(tokens, mask, e.shape[:-1])
    nll = linear_cross_entropy(e, classifier, t, bias=bias, ignore_index=_IGNORE, reduction="none",
                               softcap=softcap, impl=impl, config=config, vocab_axis=vocab_axis)
    total = -jnp.sum(nll.astype(jnp.float32), axis=-1)
    if not average:
        return total
    count = t.shape[-1] if m is None else jnp.sum(m, axis=-1)
    return total / jnp.maximum(count, 1).astype(jnp.float32)


def _sg(x):
    return None if x is None else jax.lax.stop_gradient(jnp.asarray(x))


def _policy_and_ref_logps(e, policy_classifier, tokens, mask, ref_embeddings, ref_classifier, ref_logps, *,
                          policy_bias, ref_bias, kw, shape_name):
    """Sequence log-probs of the policy and (under stop_gradient, float32) of the reference, which comes
    either precomputed (``ref_logps``) or from its hidden states and classifier."""
    if (ref_logps is None) == (ref_embeddings is None or ref_classifier is None):
        raise ValueError("give either ref_logps, or both ref_embeddings and ref_classifier")
    pol = linear_sequence_logprob(e, policy_classifier, tokens, mask, bias=policy_bias, **kw)
    if ref_logps is not None:
        ref = jnp.asarray(ref_logps)
        if ref.shape != pol.shape:
            raise ValueError(f"ref_logps must have shape {pol.shape} ({shape_name}), got {ref.shape}")
    else:
        ref = linear_sequence_logprob(_sg(ref_embeddings), _sg(ref_classifier), tokens, mask, bias=_sg(ref_bias),
                                      **kw)
    return pol, jax.lax.stop_gradient(ref.astype(jnp.float32))


def _pair_logps(policy_embeddings, policy_classifier, tokens, mask, ref_embeddings, ref_classifier, ref_logps,
                *, policy_bias, ref_bias, average, softcap, impl, config, vocab_axis):
    e = jnp.asarray(policy_embeddings)
    if e.ndim < 3 or e.shape[0] != 2:
        raise ValueError(f"policy_embeddings must have shape [2, ..., T, D] (chosen, rejected), got {e.shape}")
    kw = dict(average=average, softcap=softcap, impl=impl, config=config, vocab_axis=vocab_axis)
    return _policy_and_ref_logps(e, policy_classifier, tokens, mask, ref_embeddings, ref_classifier, ref_logps,
                                 policy_bias=policy_bias, ref_bias=ref_bias, kw=kw, shape_name="chosen, rejected")


def linear_dpo_loss(
    policy_embeddings: ArrayLike,
    policy_classifier: ArrayLike,
    tokens: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    ref_embeddings: ArrayLike | None = None,
    ref_classifier: ArrayLike | None = None,
    ref_logps: ArrayLike | None = None,
    policy_bias: ArrayLike | None = None,
    ref_bias: ArrayLike | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    average: bool = False,
    softcap: float | None = None,
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | None = None,
    vocab_axis: str | None = None,
) -> jax.Array:
    r"""DPO from hidden states and classifiers, without the N x V logits.

    .. math::
        L = -\log\sigma\Bigl(\beta\bigl[(\log\pi_\theta(y_w) - \log\pi_{ref}(y_w))
                                    - (\log\pi_\theta(y_l) - \log\pi_{ref}(y_l))\bigr]\Bigr)

    (Rafailov et al., "Direct Preference Optimization", NeurIPS 2023, Eq. 7; with ``label_smoothing`` the
    conservative variant of :func:`lossjax.losses.dpo_loss`, which computes the final formula). The
    sequence log-probabilities come from :func:`linear_sequence_logprob`; the reference enters under
    ``stop_gradient``, either as hidden states + classifier or as precomputed ``ref_logps`` [2, ...].

    Args:
      policy_embeddings: [2, ..., T, D] (index 0 chosen, 1 rejected).
      policy_classifier: [V, D].
      tokens: integer [2, ..., T]; mask: optional bool [2, ..., T] (False at prompt / padding).
      ref_embeddings, ref_classifier: the reference model's [2, ..., T, D_ref] and [V, D_ref], or
      ref_logps: precomputed reference log-probabilities [2, ...].
      policy_bias, ref_bias: optional [V] biases.
      beta, label_smoothing: see :func:`lossjax.losses.dpo_loss`.
      average, softcap, impl, config, vocab_axis: see :func:`linear_sequence_logprob`.

    Returns:
      Per-pair losses [...].

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.kernels import linear_dpo_loss
      >>> e = jax.random.normal(jax.random.key(0), (2, 3, 4, 8))
      >>> c = jax.random.normal(jax.random.key(1), (20, 8))
      >>> y = jnp.zeros((2, 3, 4), jnp.int32)
      >>> loss = jax.jit(linear_dpo_loss)(e, c, y, ref_embeddings=e, ref_classifier=c)
      >>> bool(jnp.allclose(loss, jnp.log(2.0)))
      True
    """
    pol, ref = _pair_logps(policy_embeddings, policy_classifier, tokens, mask, ref_embeddings, ref_classifier,
                           ref_logps, policy_bias=policy_bias, ref_bias=ref_bias, average=average,
                           softcap=softcap, impl=impl, config=config, vocab_axis=vocab_axis)
    return dpo_loss(pol[0], pol[1], ref[0], ref[1], beta=beta, label_smoothing=label_smoothing)


def linear_spo_loss(
    policy_embeddings: ArrayLike,
    policy_classifier: ArrayLike,
    tokens: ArrayLike,
    degree_logits: ArrayLike,
    degree_labels: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    ref_embeddings: ArrayLike | None = None,
    ref_classifier: ArrayLike | None = None,
    ref_logps: ArrayLike | None = None,
    policy_bias: ArrayLike | None = None,
    ref_bias: ArrayLike | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    ssl_weight: float = 1.0,
    average: bool = False,
    softcap: float | None = None,
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | None = None,
    vocab_axis: str | None = None,
) -> jax.Array:
    r"""SPO (DPO + ``ssl_weight`` x preference-degree cross-entropy) from hidden states, without the logits.

    ``L = L_DPO + lambda CE(degree_logits, degree_labels)`` (Li et al., "SPO: Self-supervised Preference
    Optimization", EMNLP Findings 2024, arXiv 2409.17791); the DPO term is that of
    :func:`linear_dpo_loss` and the final formula is :func:`lossjax.losses.spo_loss`.

    Args:
      policy_embeddings, policy_classifier, tokens, mask, ref_*: see :func:`linear_dpo_loss`.
      degree_logits: floating [..., *extra, K] degree-classifier logits; degree_labels: integer [..., *extra].
      beta, label_smoothing, ssl_weight: see :func:`lossjax.losses.spo_loss`.
      average, softcap, impl, config, vocab_axis: see :func:`linear_sequence_logprob`.

    Returns:
      Per-pair losses [...].

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.kernels import linear_spo_loss
      >>> e = jax.random.normal(jax.random.key(0), (2, 3, 4, 8))
      >>> c = jax.random.normal(jax.random.key(1), (20, 8))
      >>> y = jnp.zeros((2, 3, 4), jnp.int32)
      >>> spo = jax.jit(linear_spo_loss)
      >>> loss = spo(e, c, y, jnp.zeros((3, 4)), jnp.zeros(3, jnp.int32), ref_logps=jnp.zeros((2, 3)))
      >>> loss.shape
      (3,)
    """
    pol, ref = _pair_logps(policy_embeddings, policy_classifier, tokens, mask, ref_embeddings, ref_classifier,
                           ref_logps, policy_bias=policy_bias, ref_bias=ref_bias, average=average,
                           softcap=softcap, impl=impl, config=config, vocab_axis=vocab_axis)
    return spo_loss(pol[0], pol[1], ref[0], ref[1], degree_logits, degree_labels, beta=beta,
                    label_smoothing=label_smoothing, ssl_weight=ssl_weight)


def linear_orpo_loss(
    embeddings: ArrayLike,
    classifier: ArrayLike,
    tokens: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    bias: ArrayLike | None = None,
    lam: float = 0.1,
    softcap: float | None = None,
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | None = None,
    vocab_axis: str | None = None,
) -> jax.Array:
    r"""ORPO (odds-ratio preference optimisation, no reference model) from hidden states, without the logits.

    With the length-normalised log-probabilities ``l_w``, ``l_l`` of the chosen and rejected responses
    (:func:`linear_sequence_logprob` with ``average=True``) and ``log odds(y) = l - log(1 - exp(l))``::

        L = -l_w - lam * log sigmoid(log odds(y_w) - log odds(y_l))

    (Hong et al., "ORPO: Monolithic Preference Optimization without Reference Model", EMNLP 2024,
    arXiv 2403.07691, Sec. 4.1: ``L_SFT + lambda L_OR``). ``log(1 - exp(l))`` is computed as
    ``log(-expm1(l))``.

    Args:
      embeddings: [2, ..., T, D] (index 0 chosen, 1 rejected); classifier: [V, D].
      tokens: integer [2, ..., T]; mask: optional bool [2, ..., T].
      bias, softcap, impl, config, vocab_axis: see :func:`linear_sequence_logprob`.
      lam: weight of the odds-ratio term (>= 0).

    Returns:
      Per-pair losses [...].

    Example:
      >>> import functools, jax, jax.numpy as jnp
      >>> from lossjax.kernels import linear_orpo_loss
      >>> e = jnp.zeros((2, 1, 3, 4)); c = jnp.zeros((10, 4)); y = jnp.zeros((2, 1, 3), jnp.int32)
      >>> orpo = jax.jit(functools.partial(linear_orpo_loss, lam=0.5))
      >>> round(float(orpo(e, c, y)[0]), 5)  # log 10 + 0.5 log 2
      2.64916
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
        raise ValueError(f"lam must be a non-negative float, got {lam!r}")
    e = jnp.asarray(embeddings)
    if e.ndim < 3 or e.shape[0] != 2:
        raise ValueError(f"embeddings must have shape [2, ..., T, D] (chosen, rejected), got {e.shape}")
    lp = linear_sequence_logprob(e, classifier, tokens, mask, bias=bias, average=True, softcap=softcap, impl=impl,
                                 config=config, vocab_axis=vocab_axis)
    log_odds = lp - jnp.log(-jnp.expm1(lp))
    return -lp[0] - lam * jax.nn.log_sigmoid(log_odds[0] - log_odds[1])


def linear_kto_loss(
    policy_embeddings: ArrayLike,
    policy_classifier: ArrayLike,
    tokens: ArrayLike,
    desirable: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    ref_embeddings: ArrayLike | None = None,
    ref_classifier: ArrayLike | None = None,
    ref_logps: ArrayLike | None = None,
    policy_bias: ArrayLike | None = None,
    ref_bias: ArrayLike | None = None,
    reference_point: ArrayLike | None = None,
    kl_embeddings: ArrayLike | None = None,
    kl_tokens: ArrayLike | None = None,
    kl_mask: ArrayLike | None = None,
    ref_kl_embeddings: ArrayLike | None = None,
    ref_kl_logps: ArrayLike | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    where: ArrayLike | None = None,
    average: bool = False,
    softcap: float | None = None,
    impl: Literal["auto", "naive", "chunked", "pallas", "tpu"] = "auto",
    config: ChunkedConfig | PallasConfig | None = None,
    vocab_axis: str | None = None,
) -> jax.Array:
    r"""KTO from hidden states and classifiers, without the N x V logits.

    Per example, with :math:`r = \log\pi_\theta(y|x) - \log\pi_{ref}(y|x)` and the reference point
    :math:`z_0`: :math:`\lambda_D\,\sigma(\beta(z_0 - r))` for a desirable example and
    :math:`\lambda_U\,\sigma(\beta(r - z_0))` for an undesirable one, i.e. :math:`\lambda_y - v(x, y)`
    (Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization", ICML 2024,
    arXiv 2402.01306, Sec. 4, Eq. 8; the final formula is :func:`lossjax.losses.kto_loss`). The sequence
    log-probabilities come from :func:`linear_sequence_logprob`; the reference model enters under
    ``stop_gradient``, as hidden states + classifier or as precomputed ``ref_logps`` [...].

    The reference point is either ``reference_point`` (computed elsewhere), or the paper's batch estimate
    ``max(0, mean_i [log pi_theta(y_i'|x_i) - log pi_ref(y_i'|x_i)])`` over mismatched pairs, whose
    policy hidden states ``kl_embeddings`` [..., T', D] and tokens ``kl_tokens`` (``kl_mask``) you pass,
    with the reference's as ``ref_kl_embeddings`` (scored by ``ref_classifier``) or ``ref_kl_logps``.
    The KL pass runs forward only (everything in it is under ``stop_gradient``).

    Args:
      policy_embeddings: [..., T, D] hidden states of the examples; policy_classifier: [V, D].
      tokens: integer [..., T]; desirable: bool [...]; mask: optional bool [..., T] (False at prompt /
        padding).
      ref_embeddings, ref_classifier: the reference model's [..., T, D_ref] and [V, D_ref], or
      ref_logps: precomputed reference log-probabilities [...].
      policy_bias, ref_bias: optional [V] biases.
      reference_point: the KL reference point, or None (then the ``kl_*`` arguments).
      kl_embeddings, kl_tokens, kl_mask: the policy's hidden states, tokens and mask of the mismatched pairs.
      ref_kl_embeddings, ref_kl_logps: the reference's hidden states of the mismatched pairs, or their
        log-probabilities [...].
      beta, desirable_weight, undesirable_weight, where: see :func:`lossjax.losses.kto_loss`.
      average, softcap, impl, config, vocab_axis: see :func:`linear_sequence_logprob`.

    Returns:
      Per-example losses [...].

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from lossjax.kernels import linear_kto_loss
      >>> e = jax.random.normal(jax.random.key(0), (4, 5, 8))
      >>> c = jax.random.normal(jax.random.key(1), (20, 8))
      >>> y = jnp.zeros((4, 5), jnp.int32)
      >>> des = jnp.array([True, True, False, False])
      >>> kto = jax.jit(lambda e, c: linear_kto_loss(e, c, y, des, ref_embeddings=e, ref_classifier=c,
      ...                                            reference_point=0.0, desirable_weight=1.5))
      >>> [round(float(v), 5) for v in kto(e, c)]  # r = z_0 = 0: lambda_y / 2
      [0.75, 0.75, 0.5, 0.5]
    """
    e = jnp.asarray(policy_embeddings)
    if e.ndim < 2:
        raise ValueError(f"policy_embeddings must have shape [..., T, D], got {e.shape}")
    if (ref_logps is None) == (ref_embeddings is None or ref_classifier is None):
        raise ValueError("give either ref_logps, or both ref_embeddings and ref_classifier")
    if kl_embeddings is not None:
        if kl_tokens is None:
            raise ValueError("kl_embeddings needs kl_tokens (the tokens of the mismatched pairs)")
        if ref_logps is not None and ref_kl_logps is None:
            raise ValueError("with ref_logps, the KL estimate needs ref_kl_logps")
        if ref_logps is None and ref_kl_embeddings is None:
            raise ValueError("with ref_embeddings, the KL estimate needs ref_kl_embeddings")
    elif kl_tokens is not None or kl_mask is not None or ref_kl_embeddings is not None or ref_kl_logps is not None:
        raise ValueError("the kl_* arguments need kl_embeddings")
    if (reference_point is None) == (kl_embeddings is None):
        raise ValueError("give either reference_point, or kl_embeddings (the batch estimate of the reference point)")
    if jnp.shape(desirable) != e.shape[:-2]:
        raise ValueError(f"desirable must have the examples' batch shape {e.shape[:-2]}, got {jnp.shape(desirable)}")
    kw = dict(average=average, softcap=softcap, impl=impl, config=config, vocab_axis=vocab_axis)
    pol, ref = _policy_and_ref_logps(e, policy_classifier, tokens, mask, ref_embeddings, ref_classifier, ref_logps,
                                     policy_bias=policy_bias, ref_bias=ref_bias, kw=kw,
                                     shape_name="the examples' batch shape")
    kl_pol = kl_ref = None
    if kl_embeddings is not None:
        kl_pol = linear_sequence_logprob(_sg(kl_embeddings), _sg(policy_classifier), kl_tokens, kl_mask,
                                         bias=_sg(policy_bias), **kw)
        if ref_logps is not None:
            kl_ref = ref_kl_logps
        else:
            kl_ref = linear_sequence_logprob(_sg(ref_kl_embeddings), _sg(ref_classifier), kl_tokens, kl_mask,
                                             bias=_sg(ref_bias), **kw)
    return kto_loss(pol, ref, desirable, reference_point=reference_point,
                    kl_policy_logps=kl_pol, kl_ref_logps=kl_ref, beta=beta, desirable_weight=desirable_weight,
                    undesirable_weight=undesirable_weight, where=where)
