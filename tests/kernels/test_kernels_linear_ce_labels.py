"""The label rule: ``ignore_index`` masks exactly like a where-mask; any other target outside [0, V) raises
outside ``jit`` (naming ``targets``) and gives a NaN loss and NaN gradients for that row under ``jit``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kernels_oracle import make_data, ref_linear_ce, rel, split_knobs

from lossjax.kernels import linear_cross_entropy

E, C, T, _ = make_data(24, 16, 300, seed=21, ignore_frac=0.0)
KNOBS = dict(block_v=128, block_n=8)


@pytest.mark.parametrize("bad", [300, 1000, -1, -7])
def test_out_of_range_targets_raise_outside_jit(bad):
    t = T.copy()
    t[3] = bad
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(E, C, t)
    t[3] = -100  # ignore_index is never out of range
    assert np.isfinite(float(linear_cross_entropy(E, C, t)))
    with pytest.raises(ValueError, match="targets"):  # any ignore_index is allowed, other negatives are not
        linear_cross_entropy(E, C, np.where(t == -100, -5, t), ignore_index=-7)


def test_shift_only_checks_the_targets_it_uses():
    t = T.reshape(2, 12).copy()
    t[:, 0] = 10_000  # position 0 is never a target with shift=1
    assert np.isfinite(float(linear_cross_entropy(E.reshape(2, 12, 16), C, t, shift=1)))
    t[:, 5] = 10_000
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(E.reshape(2, 12, 16), C, t, shift=1)


@pytest.mark.parametrize("impl", ["naive", "chunked", "pallas"])
def test_out_of_range_target_under_jit_gives_nan_loss_and_grad(impl):
    opts = split_knobs(impl, dict(KNOBS))

    @jax.jit
    def run(e, c, t):
        per_row = linear_cross_entropy(e, c, t, impl=impl, reduction="none", **opts)
        grads = jax.grad(lambda e, c: linear_cross_entropy(e, c, t, impl=impl, **opts), argnums=(0, 1))(e, c)
        return per_row, grads

    t = T.copy()
    t[3], t[7] = 300, -2  # V and a negative that is not ignore_index
    per_row, (de, dc) = run(E, C, t)
    per_row, de = np.asarray(per_row), np.asarray(de)
    assert np.isnan(per_row[[3, 7]]).all() and np.isnan(de[[3, 7]]).all() and np.isnan(np.asarray(dc)).any()
    ok = np.ones(24, bool)
    ok[[3, 7]] = False
    want, *_ = ref_linear_ce(E[ok], C, t[ok], reduction="none")
    assert rel(per_row[ok], want) <= 1e-5  # other rows are untouched
    assert np.isfinite(de[ok]).all()


@pytest.mark.parametrize("impl", ["chunked", "naive"])
def test_ignore_index_is_exactly_a_where_mask(impl):
    opts = split_knobs(impl, dict(KNOBS))
    mask = np.random.default_rng(2).random(24) < 0.3
    t_ign = np.where(mask, -100, T).astype(np.int32)

    def masked_sum(e, c):  # the where-mask over the per-row losses of the unmasked targets
        return jnp.sum(jnp.where(mask, 0.0, linear_cross_entropy(e, c, T, impl=impl, reduction="none", **opts)))

    def ignored_sum(e, c):
        return linear_cross_entropy(e, c, t_ign, impl=impl, reduction="sum", **opts)

    v1, g1 = jax.jit(jax.value_and_grad(masked_sum, argnums=(0, 1)))(E, C)
    v2, g2 = jax.jit(jax.value_and_grad(ignored_sum, argnums=(0, 1)))(E, C)
    assert rel(v2, v1) <= 1e-6
    assert rel(g2[0], g1[0]) <= 1e-6 and rel(g2[1], g1[1]) <= 1e-6
    assert np.all(np.asarray(g2[0])[mask] == 0.0)
    mean = jax.jit(lambda e, c: linear_cross_entropy(e, c, t_ign, impl=impl, **opts))(E, C)
    assert rel(mean, float(v1) / int((~mask).sum())) <= 1e-6  # 'mean' divides by the unmasked count
