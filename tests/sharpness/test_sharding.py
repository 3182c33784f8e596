"""The SAM family with FSDP-sharded parameters on 8 fake CPU devices equals one device.

Every transform of :mod:`lossjax.sharpness` (sam, asam, aace_sam, gsam, friendly_sam, looksam,
msam, saf, mesa) trains a small MLP whose every parameter is sharded over ``'data'`` (FSDP,
gathered just before use) with the batch sharded over ``'data'`` too, under ``jit`` on an
Explicit mesh (``jax.make_mesh``'s default) and on an Auto mesh; the 3-step trajectory must equal
the single-device one, and on the Explicit mesh the parameters must stay FSDP-sharded.
m-sharpness (Foret et al., ICLR 2021, §4.1) with FSDP parameters under ``jax.shard_map``: each
device gathers the weights, perturbs with its own batch's gradient and reduce-scatters the SAM
gradient; the trajectory must equal :func:`lossjax.sharpness.grouped_sam_gradient` with
``m`` = the per-device batch. All in ONE subprocess (8 host devices need a fresh process).
"""

import os
import subprocess
import sys

SCRIPT = r"""
import os
import sys
import time
sys.modules["flax"] = None  # lossjax.sharpness (flax_sam_grads included) must not need Flax
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from lossjax import sharpness as S
from lossjax.losses.aace import aace_loss
assert jax.device_count() == 8
T0 = time.time()
N, D, H, C = 16, 8, 16, 4
X = jax.random.normal(jax.random.key(0), (N, D))
Y = jnp.arange(N) % C
IDX = jnp.arange(N)
P0 = {"w1": jax.random.normal(jax.random.key(1), (D, H)) * 0.5, "b1": jnp.zeros(H),
      "w2": jax.random.normal(jax.random.key(2), (H, C)) * 0.5}
FSDP = {"w1": P("data", None), "b1": P("data"), "w2": P("data", None)}  # every leaf sharded over 'data'

def apply(p, x, gather):
    p = jax.tree.map(gather, p)      # FSDP: gather the weights just before use
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

def ce(z, y):
    return optax.softmax_cross_entropy_with_integer_labels(z, y)

def base():
    return (optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9))

TXS0 = {
    "sam": lambda: optax.chain(S.sam(0.1), *base()),
    "asam": lambda: optax.chain(S.asam(0.5), *base()),
    "aace_sam": lambda: optax.chain(S.aace_sam(0.2), *base()),
    "gsam": lambda: optax.chain(S.gsam(0.1, alpha=0.3), *base()),
    "friendly_sam": lambda: optax.chain(S.friendly_sam(0.1, lmbda=0.6), *base()),
    "looksam": lambda: optax.chain(S.looksam(0.1, k=2), *base()),
    "msam": lambda: optax.chain(optax.clip_by_global_norm(10.0), S.msam(learning_rate=0.1, rho=0.3, weight_decay=1e-3)),
    "saf": lambda: optax.chain(S.saf(0.3, 2.0, delay_epochs=1, start_epoch=-1, num_examples=N, num_classes=C), *base()),
    "mesa": lambda: optax.chain(*base(), S.mesa(0.8, 2.0, decay=0.5, start_epoch=-1)),
}
STEPS = 3
TXS = TXS0

def make_run(name, gather):
    tx = TXS[name]()

    @jax.jit
    def run(p, x, y, idx):
        def step(carry, epoch):
            p, s = carry
            loss = lambda q: ce(apply(q, x, gather), y).mean()
            if name == "msam":
                u, s = tx.update(jax.grad(loss)(S.msam_params(s, p)), s, p)
            elif name in ("saf", "mesa"):
                t = (S.saf_targets(s, idx, epoch) if name == "saf"
                     else S.mesa_targets(s, apply(S.mesa_params(s), x, gather), epoch))
                total = lambda q: (lambda z: (ce(z, y).mean() + t.penalty(z), z))(apply(q, x, gather))
                g, z = jax.grad(total, has_aux=True)(p)
                u, s = tx.update(g, s, p, logits=z, sample_idx=idx, epoch=epoch)
            else:
                asc = (lambda q: aace_loss(apply(q, x, gather), y).mean()) if name == "aace_sam" else loss
                u, s = tx.update(jax.grad(asc)(p), s, p, grad_fn=jax.grad(loss))
            p = optax.apply_updates(p, u)
            return (p, s), p

        (p, _), traj = jax.lax.scan(step, (p, tx.init(p)), jnp.arange(STEPS))
        return p, traj

    return run


ident = lambda q: q
refs = {n: make_run(n, ident)(P0, X, Y, IDX) for n in TXS}
print("single-device refs", round(time.time() - T0, 1), flush=True)
for axis_type in ("Explicit", "Auto"):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    with jax.set_mesh(mesh):
        gather = lambda q: jax.sharding.reshard(q, P())
        p = {k: jax.device_put(v, NamedSharding(mesh, FSDP[k])) for k, v in P0.items()}
        x, y, idx = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (X, Y, IDX))
        for name in TXS:
            out, traj = make_run(name, gather)(p, x, y, idx)
            for a, b in zip(jax.tree.leaves(traj), jax.tree.leaves(refs[name][1])):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6,
                                           err_msg=f"{axis_type} {name}")
            moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(P0)))
            assert moved > 1e-3, (name, moved)
            if axis_type == "Explicit":  # parameters stay FSDP-sharded (never silently replicated)
                for k in out:
                    assert out[k].sharding.spec == FSDP[k], (name, k, out[k].sharding.spec)
            print("OK", axis_type, name, round(time.time() - T0, 1), flush=True)

# --- m-sharpness per device with FSDP parameters, under shard_map --------------------------------
G = N // 8  # examples per device = m
def msharp_reference():
    tx = optax.chain(*base())
    p, s, traj = P0, tx.init(P0), []
    gl = lambda q, b: jax.grad(lambda r: ce(apply(r, b[0], ident), b[1]).mean())(q)
    for _ in range(STEPS):
        out = S.grouped_sam_gradient(gl, gl, p, (X, Y), group_size=G, rho=0.1)
        u, s = tx.update(out.grads, s, p)
        p = optax.apply_updates(p, u)
        traj.append(p)
    return traj
ref_traj = jax.jit(msharp_reference)()
print("m-sharpness reference", round(time.time() - T0, 1), flush=True)

def fsdp_step(p, s, xb, yb):  # p, s: this device's FSDP shards; xb, yb: its G examples
    tx = optax.chain(*base())
    w = jax.tree.map(lambda q: jax.lax.all_gather(q, "data", axis=0, tiled=True), p)  # full, varying
    loss = lambda q: ce(apply(q, xb, ident), yb).mean()
    out = S.sam_gradient(jax.grad(loss)(w), w, jax.grad(loss), rho=0.1)  # ε from this device's batch
    g = jax.tree.map(lambda a: jax.lax.psum_scatter(a, "data", scatter_dimension=0, tiled=True) / 8, out.grads)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

for axis_type in ("Explicit", "Auto"):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    spec_of = lambda a: P("data", *([None] * (a.ndim - 1))) if a.ndim else P()
    p = {k: jax.device_put(v, NamedSharding(mesh, FSDP[k])) for k, v in P0.items()}
    s = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, spec_of(a))), optax.chain(*base()).init(P0))
    x, y = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (X, Y))
    sspec = jax.tree.map(spec_of, s)
    f = jax.jit(jax.shard_map(fsdp_step, mesh=mesh, in_specs=(FSDP, sspec, P("data"), P("data")),
                              out_specs=(FSDP, sspec)))
    for t in range(STEPS):
        p, s = f(p, s, x, y)
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_traj[t])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6, err_msg=f"{axis_type} {t}")
    assert p["w1"].sharding.is_equivalent_to(NamedSharding(mesh, FSDP["w1"]), 2), p["w1"].sharding
    # the trap: the chained transform with axis_name fed the shards would normalise per slice
    def shards_to_chain(p, s, xb, yb):
        tx = optax.chain(S.sam(0.1, axis_name="data"), optax.sgd(0.1))
        g = jax.tree.map(jnp.ones_like, p)
        return tx.update(g, tx.init(p), p, grad_fn=lambda q: q)[0]
    try:
        jax.jit(jax.shard_map(shards_to_chain, mesh=mesh, in_specs=(FSDP, sspec, P("data"), P("data")),
                              out_specs=FSDP))(p, s, x, y)
        raise AssertionError("FSDP shards passed to sam(axis_name=...) were not refused")
    except ValueError as err:
        assert "vary over 'data'" in str(err), err
    print("OK m-sharpness FSDP", axis_type, round(time.time() - T0, 1), flush=True)

# flax_sam_grads without Flax installed: any apply function with linen's calling convention
g = S.flax_sam_grads(lambda v, x: apply(v["params"], x, ident), P0, None, X, Y, loss_fn=ce, mutable=())
ref = jax.grad(lambda q: ce(apply(q, X, ident), Y).mean())(P0)
for a, b in zip(jax.tree.leaves(g.ascent_grads), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
assert not any(m.startswith("flax.") for m in sys.modules)
print("OK no flax", round(time.time() - T0, 1), flush=True)
"""


def test_sam_family_fsdp_on_explicit_and_auto_meshes_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=420)
    except subprocess.TimeoutExpired as err:  # subprocess.run kills the child before raising
        raise AssertionError(f"8-device script timed out: {(err.stdout or b'')[-2000:]!r}") from None
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert out.count("OK ") == 2 * 9 + 2 + 1, out[-3000:]
