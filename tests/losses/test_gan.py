"""Relativistic GAN losses: NumPy float64 restatement of Jolicoeur-Martineau's RSGAN / RaSGAN / RaLSGAN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd_grad import fd_grad

from lossjax.losses.gan import relativistic_average_gan_loss, relativistic_gan_loss


def _sp(z):
    return np.logaddexp(0.0, z)


def _np_ra(r, f, player, kind):
    rb, fb = r.mean(), f.mean()
    if kind == "standard":  # −E log σ(C_r − C̄_f) − E log(1 − σ(C_f − C̄_r)), and swapped for G
        if player == "discriminator":
            return np.mean(-np.log(1 / (1 + np.exp(-(r - fb))))) + np.mean(-np.log(1 - 1 / (1 + np.exp(-(f - rb)))))
        return np.mean(-np.log(1 / (1 + np.exp(-(f - rb))))) + np.mean(-np.log(1 - 1 / (1 + np.exp(-(r - fb)))))
    if player == "discriminator":
        return np.mean((r - fb - 1) ** 2) + np.mean((f - rb + 1) ** 2)
    return np.mean((f - rb - 1) ** 2) + np.mean((r - fb + 1) ** 2)


def test_float64_oracle_and_gradients():
    rng = np.random.default_rng(2)
    r, f = rng.normal(size=5) + 1, rng.normal(size=3)
    combos = [(p, k) for p in ("discriminator", "generator") for k in ("standard", "least_squares")]
    with jax.enable_x64(True):

        @jax.jit
        def run(r, f):
            out = []
            for p, k in combos:
                out.append(jax.value_and_grad(
                    lambda a, b, p=p, k=k: relativistic_average_gan_loss(a, b, player=p, kind=k), argnums=(0, 1))(r, f))
            pair = jax.value_and_grad(lambda a: relativistic_gan_loss(a, r[:3] * 0.5).sum())(r[:3])
            pair_g = relativistic_gan_loss(r[:3], f, player="generator")
            return out, pair, pair_g

        out, pair, pair_g = run(jnp.asarray(r), jnp.asarray(f))
    for (p, k), (v, (gr, gf)) in zip(combos, out, strict=True):
        np.testing.assert_allclose(v, _np_ra(r, f, p, k), rtol=1e-12)
        np.testing.assert_allclose(gr, fd_grad(lambda a, p=p, k=k: _np_ra(a, f, p, k), r), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(gf, fd_grad(lambda b, p=p, k=k: _np_ra(r, b, p, k), f), rtol=1e-6, atol=1e-9)
    r3 = r[:3]
    np.testing.assert_allclose(pair[0], _sp(-(r3 - 0.5 * r3)).sum(), rtol=1e-12)
    np.testing.assert_allclose(pair[1], fd_grad(lambda a: _sp(-(a - 0.5 * r3)).sum(), r3), rtol=1e-6)
    np.testing.assert_allclose(pair_g, -np.log(1 / (1 + np.exp(-(f - r3)))), rtol=1e-12)


def test_masks_extremes_nan_errors():
    r = jnp.array([1.0, 3.0, jnp.nan])
    f = jnp.array([0.0, -2.0])
    m = jnp.array([True, True, False])

    @jax.jit
    def run(r, f):
        v, g = jax.value_and_grad(lambda a: relativistic_average_gan_loss(a, f, where_real=m))(r)
        big = relativistic_gan_loss(jnp.array([1e30, -1e30]), jnp.array([-1e30, 1e30]))
        return v, g, relativistic_average_gan_loss(r, f), big, relativistic_gan_loss(r, r, where=m)

    v, g, v_nan, big, pm = run(r, f)
    np.testing.assert_allclose(v, _np_ra(np.array([1.0, 3.0]), np.array([0.0, -2.0]), "discriminator", "standard"),
                               rtol=1e-6)
    assert float(g[2]) == 0.0 and np.all(np.isfinite(g))  # masked NaN sample: no leak
    assert np.isnan(v_nan)  # unmasked NaN propagates
    np.testing.assert_allclose(big, [0.0, 2e30], rtol=1e-6)  # softplus form: no overflow
    assert float(pm[2]) == 0.0 and float(pm[0]) == pytest.approx(np.log(2.0), rel=1e-6)
    none_r, none_f = jnp.zeros(3, bool), jnp.zeros(2, bool)
    assert float(relativistic_average_gan_loss(r, f, where_real=none_r, where_fake=none_f)) == 0.0
    with pytest.raises(ValueError, match="player"):
        relativistic_gan_loss(f, f, player="critic")
    with pytest.raises(ValueError, match="kind"):
        relativistic_average_gan_loss(f, f, kind="hinge")
    with pytest.raises(ValueError, match="fake_logits"):
        relativistic_gan_loss(r, f)
    with pytest.raises(ValueError, match="where_fake"):
        relativistic_average_gan_loss(r, f, where_fake=m)
