"""Naive (materialised-logits) linear cross-entropy: the test oracle and the ``impl='naive'`` path.

It forms the full f32 logits ``z = softcap(E C^T + b)`` of shape [N, V] and differentiates with plain JAX
autodiff, so its memory grows as N*V (this is what the other implementations avoid).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lossjax.kernels.linear_ce_common import LinearCEConfig, apply_softcap, matmul_precision

__all__ = ["naive_nll_lse", "naive_logits"]


def naive_logits(e: jax.Array, c: jax.Array, bias: jax.Array | None, softcap: float | None) -> jax.Array:
    """Full f32 logits ``softcap(E C^T + b)``, shape [N, V]."""
    a = lax.dot_general(
        e, c, (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32, precision=matmul_precision(e.dtype),
    )
    if bias is not None:
        a = a + bias.astype(jnp.float32)
    return apply_softcap(a, softcap)


def naive_nll_lse(
    e: jax.Array, c: jax.Array, bias: jax.Array | None, targets: jax.Array, cfg: LinearCEConfig
) -> tuple[jax.Array, jax.Array]:
    """Per-row ``(nll, lse)`` in f32 from materialised logits; nll is 0 on ignored rows.

    nll_i = lse_i - (1 - a) z_{i,t_i} - (a / V) sum_v z_iv; out-of-range targets give z_t = 0.
    """
    z = naive_logits(e, c, bias, cfg.softcap)
    vocab = c.shape[0]
    lse = jax.nn.logsumexp(z, axis=-1)
    valid = targets != cfg.ignore_index
    in_range = (targets >= 0) & (targets < vocab)
    safe_t = jnp.where(in_range, targets, 0)
    zt = jnp.take_along_axis(z, safe_t[:, None], axis=-1)[:, 0]
    zt = jnp.where(in_range, zt, 0.0)
    nll = lse - (1.0 - cfg.label_smoothing) * zt
    if cfg.label_smoothing:
        nll = nll - (cfg.label_smoothing / vocab) * jnp.sum(z, axis=-1)
    nll = jnp.where(valid, nll, 0.0)
    return nll, lse
