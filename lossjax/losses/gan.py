"""Relativistic GAN losses (the discriminator/generator rules beside the DRAGAN penalty).

* :func:`relativistic_gan_loss` — paired relativistic standard GAN (RSGAN).
* :func:`relativistic_average_gan_loss` — relativistic *average* GAN (RaSGAN, RaLSGAN).

Both take the critic's raw outputs ``C(x)`` (logits, before any sigmoid) on real and fake
samples. ``−log σ(z)`` is computed as ``softplus(−z)`` so large critic values cannot overflow.
The gradient penalty that usually accompanies them is
:func:`lossjax.losses.input_gradient_penalty` (DRAGAN).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses._core import bool_mask, compute_dtype, require_floating, require_option

__all__ = ["relativistic_gan_loss", "relativistic_average_gan_loss"]

_PLAYERS = ("discriminator", "generator")
_KINDS = ("standard", "least_squares")


def _critic(x: ArrayLike, name: str) -> jax.Array:
    require_floating(x, name)
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must be a vector of critic outputs [B], got shape {x.shape}.")
    return x


def _mask(where: ArrayLike | None, n: int, name: str) -> jax.Array | None:
    return None if where is None else bool_mask(where, (n,), name)


def relativistic_gan_loss(
    real_logits: ArrayLike,
    fake_logits: ArrayLike,
    *,
    player: str = "discriminator",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Paired relativistic standard GAN loss (RSGAN), one value per (real, fake) pair.

    .. math::
        \ell_D = -\log\sigma\big(C(x_r) - C(x_f)\big) = \mathrm{softplus}\big(C(x_f) - C(x_r)\big),
        \qquad
        \ell_G = -\log\sigma\big(C(x_f) - C(x_r)\big).

    The discriminator estimates the probability that the real sample is *more* realistic than the
    fake one (Jolicoeur-Martineau 2019, Sec. 4, the relativistic standard GAN "RSGAN"); the generator loss
    swaps the roles, so it also pushes the critic's value on real data down.

    Reference: A. Jolicoeur-Martineau, "The relativistic discriminator: a key element missing from
    standard GAN", ICLR 2019, arXiv:1807.00734.

    Args:
      real_logits: ``[B]`` critic outputs ``C(x_r)``.
      fake_logits: ``[B]`` critic outputs ``C(x_f)`` (paired with the real ones).
      player: ``"discriminator"`` or ``"generator"``.
      where: optional bool ``[B]``; masked pairs give 0 (and no gradient).

    Returns:
      ``[B]`` per-pair losses (float32, or float64 for float64 input).

    Example:
      >>> import jax.numpy as jnp
      >>> r, f = jnp.array([2.0, 0.0]), jnp.array([0.0, 0.0])
      >>> [round(float(v), 5) for v in relativistic_gan_loss(r, f)]
      [0.12693, 0.69315]
    """
    require_option(player, _PLAYERS, "player")
    r = _critic(real_logits, "real_logits")
    f = _critic(fake_logits, "fake_logits")
    if r.shape != f.shape:
        raise ValueError(
            f"`fake_logits` must have the shape of `real_logits` {r.shape}, got {f.shape}."
        )
    dtype = compute_dtype(jnp.result_type(r, f))
    r, f = r.astype(dtype), f.astype(dtype)
    m = _mask(where, r.shape[0], "where")
    if m is not None:
        r = jnp.where(m, r, 0.0)
        f = jnp.where(m, f, 0.0)
    d = r - f if player == "discriminator" else f - r
    out = jax.nn.softplus(-d)
    return out if m is None else jnp.where(m, out, jnp.zeros((), dtype))


def _masked_mean(x: jax.Array, m: jax.Array | None) -> jax.Array:
    if m is None:
        return jnp.mean(x) if x.shape[0] else jnp.zeros((), x.dtype)
    return jnp.sum(jnp.where(m, x, 0.0)) / jnp.maximum(jnp.sum(m), 1).astype(x.dtype)


def relativistic_average_gan_loss(
    real_logits: ArrayLike,
    fake_logits: ArrayLike,
    *,
    player: str = "discriminator",
    kind: str = "standard",
    where_real: ArrayLike | None = None,
    where_fake: ArrayLike | None = None,
) -> jax.Array:
    r"""Relativistic average GAN loss (RaSGAN / RaLSGAN), a scalar over the batch.

    With ``C̄_r = E_{x_r} C(x_r)`` and ``C̄_f = E_{x_f} C(x_f)`` (means over the batch),
    ``kind="standard"`` (RaSGAN):

    .. math::
        L_D = \mathbb{E}_{x_r}\,\mathrm{softplus}\big(-(C(x_r) - \bar C_f)\big)
            + \mathbb{E}_{x_f}\,\mathrm{softplus}\big(C(x_f) - \bar C_r\big),

    i.e. ``−E log D̃(x_r) − E log(1 − D̃(x_f))`` with ``D̃(x_r) = σ(C(x_r) − C̄_f)`` and
    ``D̃(x_f) = σ(C(x_f) − C̄_r)``; ``L_G`` swaps real and fake. ``kind="least_squares"``
    (RaLSGAN): ``L_D = E_r (C(x_r) − C̄_f − 1)² + E_f (C(x_f) − C̄_r + 1)²`` and ``L_G`` swapped
    (Jolicoeur-Martineau 2019, Sec. 4, the relativistic average discriminator, and its RaLSGAN
    variant). Real and fake batches may have different sizes; the means inside are
    part of the loss, so it is not per-example.

    Reference: A. Jolicoeur-Martineau, "The relativistic discriminator: a key element missing from
    standard GAN", ICLR 2019, arXiv:1807.00734.

    Args:
      real_logits: ``[Br]`` critic outputs on real samples.
      fake_logits: ``[Bf]`` critic outputs on generated samples.
      player: ``"discriminator"`` or ``"generator"``.
      kind: ``"standard"`` (RaSGAN) or ``"least_squares"`` (RaLSGAN).
      where_real: optional bool ``[Br]`` mask of the real samples that count.
      where_fake: optional bool ``[Bf]`` mask of the fake samples that count.

    Returns:
      A scalar (0 when a side has no sample that counts).

    Example:
      >>> import jax.numpy as jnp
      >>> r, f = jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0])
      >>> round(float(relativistic_average_gan_loss(r, f)), 5)
      0.14508
    """
    require_option(player, _PLAYERS, "player")
    require_option(kind, _KINDS, "kind")
    r = _critic(real_logits, "real_logits")
    f = _critic(fake_logits, "fake_logits")
    dtype = compute_dtype(jnp.result_type(r, f))
    r, f = r.astype(dtype), f.astype(dtype)
    mr = _mask(where_real, r.shape[0], "where_real")
    mf = _mask(where_fake, f.shape[0], "where_fake")
    if mr is not None:
        r = jnp.where(mr, r, 0.0)
    if mf is not None:
        f = jnp.where(mf, f, 0.0)
    rbar, fbar = _masked_mean(r, mr), _masked_mean(f, mf)
    dr, df = r - fbar, f - rbar  # relativistic real / fake
    if player == "generator":
        dr, df = -dr, -df  # real is "less realistic than average fake", fake "more"
    if kind == "standard":
        real_term, fake_term = jax.nn.softplus(-dr), jax.nn.softplus(df)
    else:
        real_term, fake_term = (dr - 1.0) ** 2, (df + 1.0) ** 2
    return (_masked_mean(real_term, mr) + _masked_mean(fake_term, mf)).astype(dtype)
