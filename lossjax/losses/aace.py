"""Adaptive Adversarial Cross-Entropy (AACE), the ascent loss of AACE-SAM.

Ratchatorn & Tanaka, "Adaptive Adversarial Cross-Entropy Loss for Sharpness-Aware
Minimization", ICIP 2024 (arXiv 2406.14329); behaviour matched to the official code
(T-Ratchatorn/AACE ``adversarial_cross_entropy.py``); design notes in
``docs/design/sam_family.md`` §2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses import _core

__all__ = ["aace_loss"]

_MODES = ("ada", "rand", "const")


def aace_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    th: float = 0.0,
    mode: str = "ada",
    key: jax.Array | None = None,
    renormalize: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example AACE loss: a KL to an *adversarial* target that moves mass off the label.

    With ``p = softmax(stop_gradient(z))`` the target ``t`` (no gradient) is

    .. math::
        t_y = \min(p_y, th),\qquad t_j = \frac{a_j}{\sum_{k≠y} a_k}\ (j ≠ y),\qquad
        a_j = \begin{cases} p_j & \texttt{'ada'}\\ 1 − U_j,\ U_j∼\mathcal U[0,1) & \texttt{'rand'}\\
        1 & \texttt{'const'}\end{cases}

    and the loss is :math:`L = \sum_j t_j(\log t_j − \log\mathrm{softmax}(z)_j)` (terms with
    ``t_j = 0`` contribute 0), differentiable only through ``log_softmax(z)``:
    ``∂L/∂z = (Σ_j t_j) p − t``. For the default ``th = 0, mode = 'ada'``,
    ``L = −log(1 − p_y)`` exactly, with the same gradient; it grows without bound as
    ``p_y → 1`` while its gradient norm tends to ``sqrt(1 + Σ q_j²) ≥ 1`` — which is why
    descending it is a useful, convergence-adaptive ascent direction for CE in
    :func:`lossjax.sharpness.aace_sam`. In ``'ada'`` mode the target is formed in log space
    (``log t_j = z_j − logsumexp_{k≠y} z_k``), so ``±1e4`` logits stay finite.

    Official-code parity: for ``th > 0`` the official target is **not** normalised
    (``Σt = 1 + min(p_y, th)``); that is the default here (``renormalize=False``).
    ``renormalize=True`` (an lossjax option, not in the paper's code) scales the non-target part
    by ``1 − t_y`` so that ``Σt = 1``.

    Args:
      logits: floating ``[..., K]`` logits.
      labels: integer labels ``[...]``, or one-hot floating labels ``[..., K]`` (reduced with
        ``argmax``; AACE is defined for a single label).
      th: target-class threshold (0 in every released run; a downstream user uses 0.5).
      mode: ``'ada'`` (model's own non-target probabilities), ``'rand'`` or ``'const'``.
      key: PRNG key, required for ``mode='rand'`` (fresh noise per call: pass a new key each
        step).
      renormalize: see above.
      axis: class axis.
      where: per-example ``[...]`` or per-class ``[..., K]`` bool mask (masked classes are
        outside the softmax and get ``t = 0``; masked rows give 0).

    Returns:
      ``[...]`` float32 (float64 for float64 inputs) per-example loss.

    Example:
        >>> import jax.numpy as jnp
        >>> z = jnp.array([[2.0, 0.0, 0.0]])
        >>> round(float(aace_loss(z, jnp.array([0]))[0]), 5)   # -log(1 - p_y) = log(1 + e²/2)
        1.5464
    """
    _core.require_option(mode, _MODES, "mode")
    _core.require_nonnegative(th, "th")
    if mode == "rand" and key is None:
        raise ValueError("aace_loss(mode='rand') needs a PRNG `key` (e.g. jax.random.key(step)).")
    labels_arr = jnp.asarray(labels)
    if jnp.issubdtype(labels_arr.dtype, jnp.floating):
        labels_arr = jnp.argmax(jnp.moveaxis(labels_arr, axis, -1), axis=-1)
        logits = jnp.moveaxis(jnp.asarray(logits), axis, -1)
        if where is not None and jnp.ndim(where) == jnp.ndim(logits):
            where = jnp.moveaxis(jnp.asarray(where), axis, -1)
        axis = -1
    p = _core.prepare(logits, labels_arr, axis=axis, where=where, allow_soft=False)
    x = p.logits
    k = p.num_classes
    dt = p.dtype
    # classes not masked by `where` (a -inf logit is probability 0, not a mask)
    valid = jnp.ones(x.shape, bool) if p.class_mask is None else p.class_mask
    onehot = jax.nn.one_hot(p.labels, k, dtype=bool)
    others = valid & ~onehot
    log_q = _core.log_softmax(p)  # differentiable part, masked classes -inf
    xs = jax.lax.stop_gradient(x)
    log_p = jax.lax.stop_gradient(log_q)

    # --- target (stop-gradient) ---
    log_py = jnp.sum(jnp.where(onehot, log_p, 0.0), axis=-1)
    py = jnp.exp(log_py)
    t_y = jnp.minimum(py, jnp.asarray(th, dt))
    if mode == "ada":
        # log t_j = (x_j − m) − log Σ_{k≠y} exp(x_k − m): the shift is subtracted before any
        # rounding at the logits' magnitude (at ±1e4 a rounded logsumexp moves t_j by 1e-3).
        m = jnp.max(jnp.where(others, xs, -jnp.inf), axis=-1, keepdims=True)
        m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), dt))
        shifted = jnp.where(others, xs - m, -jnp.inf)
        lse_rel = _core.masked_logsumexp(shifted, others)
        has_other = lse_rel != -jnp.inf
        log_t = jnp.where(others, shifted - jnp.where(has_other, lse_rel, 0.0)[..., None], -jnp.inf)
    else:
        if mode == "rand":
            u = jax.random.uniform(key, x.shape, dtype=dt)
            a = 1.0 - u
        else:
            a = jnp.ones(x.shape, dt)
        a = jnp.where(others, a, 0.0)
        total = jnp.sum(a, axis=-1, keepdims=True)
        ok = total > 0
        log_t = jnp.where(
            others & ok, jnp.log(jnp.where(others, a, 1.0)) - jnp.log(jnp.where(ok, total, 1.0)), -jnp.inf
        )
    if renormalize:
        log_scale = jnp.log1p(-t_y)  # finite: t_y <= th, and t_y < 1 unless th >= p_y = 1
        log_t = log_t + log_scale[..., None]
    t_nt = jnp.where(others, jnp.exp(log_t), 0.0)

    # --- loss: Σ_j t_j (log t_j − log q_j) ---
    lq_safe = jnp.where(valid, log_q, 0.0)
    # `t == 0` (not `t > 0`) selects the 0·log 0 = 0 terms, so a NaN target propagates.
    nt_terms = jnp.where(t_nt == 0, 0.0, t_nt * (jnp.where(t_nt == 0, 0.0, log_t) - lq_safe))
    loss = jnp.sum(nt_terms, axis=-1)
    lq_y = jnp.sum(jnp.where(onehot, lq_safe, 0.0), axis=-1)
    log_ty = jnp.log(jnp.where(t_y == 0, 1.0, t_y))
    loss = loss + jnp.where(t_y == 0, 0.0, t_y * (log_ty - lq_y))
    return _core.finalize(p, loss)
