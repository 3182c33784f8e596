"""SAF / MESA (acceptance check 15)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lossjax.losses.trajectory import trajectory_kl_loss
from lossjax.sharpness import mesa, mesa_params, mesa_targets, saf, saf_targets


def test_spec_values_and_gradient_through_penalty():
    z = jnp.array([2.0, -1.0, 0.5])
    ref = jnp.array([1.0, 0.0, 0.0])
    # 0.34462882 is the float64 value; float32 rounding stays within 3e-6
    np.testing.assert_allclose(trajectory_kl_loss(z, ref, tau=5.0), 0.34462882, rtol=3e-6)
    from lossjax.sharpness import TrajectoryTargets

    t = TrajectoryTargets(ref[None], jnp.array([0.3]), jnp.asarray(5.0))
    np.testing.assert_allclose(t.penalty(z[None]), 0.10338865, rtol=3e-6)
    grad = jax.grad(lambda q: t.penalty(q[None]))(z)
    np.testing.assert_allclose(grad, [0.08639905, -0.10609394, 0.01969490], atol=1e-7)


def _record(tx, s, idx, epoch, val):
    w = jnp.zeros(2)
    logits = jnp.full((len(idx), 3), float(val))
    _, s = tx.update(w, s, w, logits=logits, sample_idx=jnp.asarray(idx), epoch=epoch)
    return s


@pytest.mark.parametrize("delay", [1, 2, 3])
def test_buffer_read_exactly_delay_epochs_later(delay):
    tx = optax.chain(saf(0.3, 5.0, delay_epochs=delay, start_epoch=-1, num_examples=5, num_classes=3), optax.sgd(0.1))
    s = tx.init(jnp.zeros(2))
    idx = [1, 3]
    for e in range(8):
        t = saf_targets(s, jnp.array(idx), e)
        if e >= delay:
            np.testing.assert_allclose(t.weight, [0.3, 0.3])
            np.testing.assert_allclose(t.logits, np.full((2, 3), float(10 * (e - delay))))
        else:
            np.testing.assert_allclose(t.weight, [0.0, 0.0])
        s = _record(tx, s, idx, e, 10 * e)
    # an example recorded at epoch 0 only: available at `delay`, not earlier, not later
    tx = saf(delay_epochs=delay, start_epoch=-1, num_examples=5, num_classes=3)
    s = _record(tx, tx.init(None), [4], 0, 7.0)
    for e in range(2 * delay + 3):
        expected = 0.3 if e == delay else 0.0
        np.testing.assert_allclose(saf_targets(s, jnp.array([4]), e).weight, [expected])


def test_gate_is_strict_and_padding_ignored():
    tx = saf(0.3, delay_epochs=1, start_epoch=3, end_epoch=6, num_examples=4, num_classes=3)
    s = tx.init(None)
    for e in range(10):
        w = float(saf_targets(s, jnp.array([0]), e).weight[0])
        assert w == (float(np.float32(0.3)) if 3 < e < 6 else 0.0), (e, w)
        s = _record(tx, s, [0], e, e)
    # padded rows (index >= N or negative) are neither written nor read
    s2 = _record(tx, tx.init(None), [4, -1], 0, 5.0)
    np.testing.assert_array_equal(np.asarray(s2.logits), 0.0)
    assert float(saf_targets(s2, jnp.array([4, -1]), 5).weight.sum()) == 0.0


def test_saf_errors_and_jit():
    tx = saf(num_examples=4, num_classes=3)
    with pytest.raises(ValueError, match="sample_idx"):
        tx.update(jnp.zeros(2), tx.init(None), None, logits=jnp.zeros((1, 3)), epoch=0)
    with pytest.raises(ValueError, match="num_classes"):
        saf(num_examples=4, num_classes=0)
    with pytest.raises(ValueError, match="No SAFState"):
        saf_targets(optax.sgd(0.1).init(jnp.zeros(2)), jnp.array([0]), 3)

    @jax.jit
    def step(s, e):
        return tx.update(jnp.zeros(2), s, None, logits=jnp.ones((2, 3)), sample_idx=jnp.array([0, 1]), epoch=e)[1]

    s = step(tx.init(None), 0)
    s = step(s, 1)
    assert int(s.epochs[0, 1]) == 1


def test_mesa_ema_geometric_and_targets():
    beta = 0.9
    theta0, theta = jnp.array([1.0, -2.0]), jnp.array([3.0, 0.5])
    tx = mesa(0.8, 5.0, decay=beta, after_update=False)
    s = tx.init(theta0)
    for t in range(1, 6):
        _, s = tx.update(jnp.zeros(2), s, theta)
        np.testing.assert_allclose(mesa_params(s) - theta, beta**t * (theta0 - theta), rtol=1e-5)
    # after_update (last in chain): averages params + updates
    tx = optax.chain(optax.sgd(1.0), mesa(decay=0.5))
    s = tx.init(theta0)
    u, s = tx.update(jnp.array([1.0, 1.0]), s, theta0)
    np.testing.assert_allclose(u, [-1.0, -1.0])  # pass-through
    np.testing.assert_allclose(mesa_params(s), 0.5 * theta0 + 0.5 * (theta0 - 1.0))
    t = mesa_targets(s, jnp.ones((4, 3)), 6)
    np.testing.assert_allclose(t.weight, np.full(4, 0.8))
    assert float(mesa_targets(s, jnp.ones((4, 3)), 5).weight.sum()) == 0.0
