"""Flax NNX helpers: SAM / AACE-SAM / SAF / MESA on an nnx.Module equal the linen path.

The same conv + BatchNorm + Dense network is built in linen and in NNX with identical weights;
after several steps parameters and running statistics must agree to float32 precision.
"""

import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lossjax.losses import aace_loss
from lossjax.sharpness import (
    aace_sam,
    flax_sam_grads,
    looksam,
    mesa,
    mesa_params,
    mesa_targets,
    nnx_apply,
    nnx_helpers,
    nnx_sam_grads,
    nnx_sam_step,
    saf,
    saf_targets,
    sam,
)

STEPS = 3
RTOL, ATOL = 2e-5, 2e-6  # float32: jit-to-jit reassociation only


def ce(z, y):
    return optax.softmax_cross_entropy_with_integer_labels(z, y)


class LNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5, name="bn")(x)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return nn.Dense(3, name="dense")(x)


class NNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=0.5, rngs=rngs)
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.dense(jnp.mean(nnx.relu(self.bn(self.conv(x))), axis=(1, 2)))


X = jax.random.normal(jax.random.key(0), (8, 5, 5, 1)) * 2.0 + 0.5
Y = jnp.arange(8) % 3
IDX = jnp.arange(8)


@pytest.fixture(scope="module")
def linen_init():
    v = LNet().init(jax.random.key(1), X, train=False)
    # non-trivial starting statistics, so that a wrong momentum path shows
    stats = jax.tree.map(lambda s: s + 0.3, v["batch_stats"])
    return v["params"], stats


def nnx_copy(params, stats):
    """An NNX model holding exactly the linen weights and statistics."""
    model = NNet(nnx.Rngs(7))
    for f, tree in ((nnx.Param, params), (nnx.BatchStat, stats)):
        st = nnx.state(model, f)
        nnx.replace_by_pure_dict(st, jax.tree.map(jnp.asarray, tree))
        nnx.update(model, st)
    return model


def nnx_trees(model):
    return (nnx.to_pure_dict(nnx.state(model, nnx.Param)), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))


def assert_trees(a, b, rtol=RTOL, atol=ATOL):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(jax.tree.map(lambda _: 0, a)) == jax.tree.structure(jax.tree.map(lambda _: 0, b))
    for u, v in zip(la, lb):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def max_diff(a, b):
    return max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------------------
# SAM / AACE-SAM, BatchNorm statistics from the first pass only: NNX == linen helper
# ------------------------------------------------------------------------------------------


_LINEN_RUNS = {}


def linen_run(params, stats, tx, ascent):
    key = (id(tx), ascent)
    if key in _LINEN_RUNS:
        return _LINEN_RUNS[key]
    apply = LNet().apply

    @jax.jit
    def step(params, stats, opt_state):
        g = flax_sam_grads(apply, params, {"batch_stats": stats}, X, Y, loss_fn=ce, ascent_loss_fn=ascent,
                           apply_kwargs={"train": True})
        u, opt_state = tx.update(g.ascent_grads, opt_state, params, grad_fn=g.grad_fn)
        return optax.apply_updates(params, u), g.model_state["batch_stats"], opt_state

    opt_state = tx.init(params)
    for _ in range(STEPS):
        params, stats, opt_state = step(params, stats, opt_state)
    _LINEN_RUNS[key] = params, stats
    return params, stats


@nnx.jit(static_argnames=("ascent", "state_update"))
def nnx_step(model, opt, x, y, ascent=None, state_update="first"):
    return nnx_sam_step(model, opt, x, y, loss_fn=ce, ascent_loss_fn=ascent, state_update=state_update).ascent_loss


# module-level optimizers: a reused transformation object reuses the compiled nnx.jit step
TX_SAM = optax.chain(sam(0.5), optax.sgd(0.1, momentum=0.9))
TX_AACE = optax.chain(aace_sam(2.0), optax.sgd(0.1, momentum=0.9))


@pytest.mark.parametrize("tx, ascent", [(TX_SAM, None), (TX_AACE, aace_loss)], ids=["sam", "aace_sam"])
def test_first_pass_stats_match_linen(linen_init, tx, ascent):
    params, stats = linen_init
    ref_p, ref_s = linen_run(params, stats, tx, ascent)

    model = nnx_copy(params, stats)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(STEPS):
        nnx_step(model, opt, X, Y, ascent=ascent)
    got_p, got_s = nnx_trees(model)
    assert_trees(got_p, ref_p)
    assert_trees(got_s, ref_s)
    assert int(opt.step[...]) == STEPS
    # the comparison can fail: the run moved the weights and the statistics
    assert max_diff(got_p, params) > 1e-3 and max_diff(got_s, stats) > 1e-3


def test_jax_jit_plain_optax_matches_linen(linen_init):
    """Without nnx.Optimizer/nnx.jit: jax.jit over (graphdef, state), optax on pure arrays."""
    params, stats = linen_init
    ref_p, ref_s = linen_run(params, stats, TX_SAM, None)
    graphdef, state = nnx.split(nnx_copy(params, stats))

    @jax.jit
    def step(state, opt_state):
        model = nnx.merge(graphdef, state)
        w = nnx.as_pure(nnx.state(model, nnx.Param))
        g = nnx_sam_grads(model, X, Y, loss_fn=ce)
        u, opt_state = TX_SAM.update(nnx.as_pure(g.ascent_grads), opt_state, w, grad_fn=g.grad_fn)
        nnx.update(model, optax.apply_updates(w, u))
        return nnx.state(model), opt_state

    opt_state = TX_SAM.init(nnx.as_pure(nnx.state(nnx.merge(graphdef, state), nnx.Param)))
    for _ in range(STEPS):
        state, opt_state = step(state, opt_state)
    assert_trees(nnx_trees(nnx.merge(graphdef, state)), (ref_p, ref_s))


# ------------------------------------------------------------------------------------------
# state_update='both' (SamsungLabs/ASAM): oracle = the two passes written out by hand in linen
# ------------------------------------------------------------------------------------------


def test_both_passes_stats_match_hand_written_linen(linen_init):
    params, stats = linen_init
    rho, base = 0.5, optax.sgd(0.1)
    apply = LNet().apply

    @jax.jit
    def ref_step(params, stats, base_state):
        def loss(p, s):
            z, new = apply({"params": p, "batch_stats": s}, X, train=True, mutable=["batch_stats"])
            return ce(z, Y).mean(), new["batch_stats"]

        (_, s1), d = jax.value_and_grad(loss, has_aux=True)(params, stats)  # pass 1 at w
        n = jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(d)))
        w_adv = jax.tree.map(lambda w, g: w + rho * g / (n + 1e-12), params, d)  # Foret et al. Eq. 2
        (_, s2), g = jax.value_and_grad(loss, has_aux=True)(w_adv, s1)  # pass 2 from pass 1's stats
        u, base_state = base.update(g, base_state, params)
        return optax.apply_updates(params, u), s2, base_state, s1

    rp, rs, bs = params, stats, base.init(params)
    for _ in range(STEPS):
        rp, rs, bs, s1_last = ref_step(rp, rs, bs)

    model = nnx_copy(params, stats)
    opt = nnx.Optimizer(model, optax.chain(sam(rho), base), wrt=nnx.Param)
    for _ in range(STEPS):
        nnx_step(model, opt, X, Y, state_update="both")
    got_p, got_s = nnx_trees(model)
    assert_trees(got_p, rp)
    assert_trees(got_s, rs)
    # the second pass really moved the statistics, so a first-pass-only step would fail here
    assert max_diff(rs, s1_last) > 1e-3

    # and the linen helper's state_update='both' agrees
    tx = optax.chain(sam(rho), base)

    @jax.jit
    def linen_step(params, stats, opt_state):
        g = flax_sam_grads(apply, params, {"batch_stats": stats}, X, Y, loss_fn=ce,
                           apply_kwargs={"train": True}, state_update="both")
        u, opt_state = tx.update(g.ascent_grads, opt_state, params, grad_fn=g.grad_fn)
        return optax.apply_updates(params, u), g.final_model_state()["batch_stats"], opt_state

    lp, ls, lst = params, stats, tx.init(params)
    for _ in range(STEPS):
        lp, ls, lst = linen_step(lp, ls, lst)
    assert_trees((got_p, got_s), (lp, ls))


def test_nan_in_nan_out(linen_init):
    model = nnx_copy(*linen_init)
    opt = nnx.Optimizer(model, TX_SAM, wrt=nnx.Param)
    loss = nnx_step(model, opt, X.at[0, 0, 0, 0].set(jnp.nan), Y)
    assert np.isnan(float(loss))
    got_p, got_s = nnx_trees(model)
    assert all(np.isnan(np.asarray(v)).all() for v in jax.tree.leaves(got_s))
    assert np.isnan(np.asarray(got_p["dense"]["kernel"])).all()  # (relu passes no gradient at NaN)


# ------------------------------------------------------------------------------------------
# Dropout: pass 2 replays pass 1's mask; RNG counters advance once per step
# ------------------------------------------------------------------------------------------


class DropNet(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 16, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.lin(x))))


def test_dropout_same_mask_in_both_passes():
    x = jax.random.normal(jax.random.key(3), (8, 4))
    model = DropNet(nnx.Rngs(0))
    ref = nnx.clone(model)  # same weights, same RNG state

    @nnx.jit
    def run(model, ref):
        p0 = nnx.as_pure(nnx.state(model, nnx.Param))
        g = nnx_sam_grads(model, x, Y, loss_fn=ce)
        again = g.grad_fn(p0)  # pass 2 at w itself
        grad = nnx.grad(lambda m: ce(m(x), Y).mean())
        oracle = nnx.as_pure(grad(ref))  # a plain train-mode gradient with the same RNG state
        fresh = nnx.as_pure(grad(ref))  # ... and with the next mask
        return nnx.as_pure(g.ascent_grads), again, oracle, fresh

    count0 = int(model.drop.rngs.count[...])
    ascent, again, oracle, fresh = run(model, ref)
    assert_trees(again, ascent, rtol=1e-6, atol=1e-7)
    assert_trees(ascent, oracle, rtol=1e-6, atol=1e-7)
    assert max_diff(fresh, oracle) > 1e-4  # another mask would give another gradient
    assert int(model.drop.rngs.count[...]) == count0 + 1


# ------------------------------------------------------------------------------------------
# SAF and MESA on NNX (nnx.Optimizer + nnx.as_pure(opt_state)) == linen
# ------------------------------------------------------------------------------------------


def saf_tx():
    return optax.chain(saf(lam=0.8, tau=2.0, delay_epochs=1, start_epoch=0, num_examples=8, num_classes=3),
                       optax.sgd(0.2, momentum=0.9))


def mesa_tx():
    return optax.chain(optax.sgd(0.2, momentum=0.9), mesa(lam=0.8, tau=2.0, decay=0.5, start_epoch=-1))


def test_saf_matches_linen(linen_init):
    params, stats = linen_init
    apply, tx = LNet().apply, saf_tx()

    @jax.jit
    def lstep(params, stats, opt_state, epoch):
        t = saf_targets(opt_state, IDX, epoch)

        def loss(p):
            z, new = apply({"params": p, "batch_stats": stats}, X, train=True, mutable=["batch_stats"])
            return ce(z, Y).mean() + t.penalty(z), (z, new["batch_stats"])

        (_, (z, s)), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, opt_state = tx.update(g, opt_state, params, logits=z, sample_idx=IDX, epoch=epoch)
        return optax.apply_updates(params, u), s, opt_state, t.weight

    @nnx.jit
    def nstep(model, opt, epoch):
        t = saf_targets(nnx.as_pure(opt.opt_state), IDX, epoch)

        def loss(m):
            z = m(X)
            return ce(z, Y).mean() + t.penalty(z), z

        (_, z), g = nnx.value_and_grad(loss, has_aux=True)(model)
        opt.update(model, g, logits=z, sample_idx=IDX, epoch=epoch)
        return t.weight

    model = nnx_copy(params, stats)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    p, s, st = params, stats, tx.init(params)
    for epoch in range(STEPS):
        p, s, st, lw = lstep(p, s, st, epoch)
        nw = nstep(model, opt, epoch)
        np.testing.assert_array_equal(np.asarray(nw), np.asarray(lw))
    assert float(lw[0]) == pytest.approx(0.8)  # the term was active in the last steps
    got_p, got_s = nnx_trees(model)
    assert_trees(got_p, p)
    assert_trees(got_s, s)


def test_mesa_matches_linen(linen_init):
    params, stats = linen_init
    apply, tx = LNet().apply, mesa_tx()

    @jax.jit
    def lstep(params, stats, opt_state):
        teacher = apply({"params": mesa_params(opt_state), "batch_stats": stats}, X, train=False)  # eval mode
        t = mesa_targets(opt_state, teacher, 1)

        def loss(p):
            z, new = apply({"params": p, "batch_stats": stats}, X, train=True, mutable=["batch_stats"])
            return ce(z, Y).mean() + t.penalty(z), new["batch_stats"]

        (_, s), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, u), s, opt_state

    @nnx.jit
    def nstep(model, opt):
        st = nnx.as_pure(opt.opt_state)
        teacher = nnx_apply(nnx.view(model, use_running_average=True), mesa_params(st), X)
        t = mesa_targets(st, teacher, 1)
        def loss(m):
            z = m(X)  # one call: each call updates the running statistics
            return ce(z, Y).mean() + t.penalty(z)

        opt.update(model, nnx.grad(loss)(model))

    model = nnx_copy(params, stats)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    p, s, st = params, stats, tx.init(params)
    for _ in range(STEPS):
        p, s, st = lstep(p, s, st)
        nstep(model, opt)
    got_p, got_s = nnx_trees(model)
    assert_trees(got_p, p)
    assert_trees(got_s, s)
    assert_trees(nnx.to_pure_dict(mesa_params(nnx.as_pure(opt.opt_state))), mesa_params(st))
    assert max_diff(got_p, params) > 1e-3


def test_nnx_apply_leaves_model_unchanged(linen_init):
    params, stats = linen_init
    model = nnx_copy(params, stats)
    shifted = jax.tree.map(lambda w: w + 0.1, nnx.as_pure(nnx.state(model, nnx.Param)))
    out = nnx_apply(model, shifted, X)  # train mode: updates BN statistics of its copy only
    shifted_linen = jax.tree.map(lambda w: w + 0.1, params)
    ref, _ = LNet().apply({"params": shifted_linen, "batch_stats": stats}, X, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-6)
    assert_trees(nnx_trees(model), (params, stats), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------
# errors and the optional dependency
# ------------------------------------------------------------------------------------------


def test_bad_arguments():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    x, y = jnp.ones((2, 2)), jnp.zeros(2, jnp.int32)
    with pytest.raises(ValueError, match="state_update"):
        nnx_sam_grads(model, x, y, loss_fn=ce, state_update="second")
    with pytest.raises(TypeError, match="model"):
        nnx_sam_grads({"w": 1.0}, x, y, loss_fn=ce)
    with pytest.raises(TypeError, match="loss_fn"):
        nnx_sam_grads(model, x, y, loss_fn=None)
    with pytest.raises(TypeError, match="optimizer"):
        nnx_sam_step(model, optax.sgd(0.1), x, y, loss_fn=ce)
    with pytest.raises(TypeError, match="model"):
        nnx_apply([1.0], {}, x)


def test_both_under_lax_cond_is_refused():
    model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    opt = nnx.Optimizer(model, optax.chain(looksam(0.05, k=2), optax.sgd(0.1)), wrt=nnx.Param)
    step = nnx.jit(lambda m, o: nnx_sam_step(m, o, jnp.arange(8.0).reshape(4, 2), jnp.arange(4) % 3,
                                             loss_fn=ce, state_update="both"))
    with pytest.raises(ValueError, match="state_update='first'"):
        step(model, opt)


def test_missing_flax_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "flax" or m.startswith("flax.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "flax", None)  # makes `import flax` raise ImportError
    with pytest.raises(ImportError, match=r"lossjax\[flax\]"):
        nnx_helpers.nnx_sam_grads(object(), 0, 0, loss_fn=ce)
    old = types.ModuleType("flax")  # a Flax without the pure-state NNX API
    old.nnx = types.ModuleType("flax.nnx")
    monkeypatch.setitem(sys.modules, "flax", old)
    monkeypatch.setitem(sys.modules, "flax.nnx", old.nnx)
    with pytest.raises(ImportError, match=r"newer Flax.*lossjax\[flax\]"):
        nnx_helpers.nnx_apply(object(), {})


def test_import_does_not_import_flax():
    code = "import sys, lossjax, lossjax.sharpness.nnx_helpers; sys.exit('flax' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or "importing lossjax imported flax"
