"""The linear-head family on 8 fake CPU devices; run as a script by ``test_linear_head_sharded.py``.

Prints ``RESULT_JSON {...}``: per case the largest relative difference of the value and the gradients
against the same function on one device, and the gradients' shardings.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from lossjax.kernels import ChunkedConfig, linear_ce_head, linear_dpo_loss, linear_kd_loss  # noqa: E402

B, T, D, DT, V = 8, 4, 16, 12, 64
CFG = ChunkedConfig(block_v=24)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _data():
    rng = np.random.default_rng(0)

    def f(*s):
        return rng.standard_normal(s).astype(np.float32)

    t = rng.integers(0, V, (B, T)).astype(np.int32)
    t[1, 2] = -100
    m = np.ones((2, B // 2, T), bool)
    m[:, :, 0] = False
    return dict(e=f(B, T, D), c=f(V, D) / 2, et=f(B, T, DT), ct=f(V, DT) / 2, t=t,
                ep=f(2, B // 2, T, D), m=m, y=rng.integers(0, V, (2, B // 2, T)).astype(np.int32))


def _fns(x):
    ref = jnp.full((2, B // 2), -20.0)

    def head(e, c, vocab_axis=None):
        out = linear_ce_head(e, c, x["t"], z_loss=1e-3, shift=1, softcap=4.0, temperature=1.5, config=CFG,
                             vocab_axis=vocab_axis)
        return out.loss + 0.1 * jnp.sum(out.entropy) + 0.01 * jnp.sum(out.argmax)  # argmax: exact ints

    def head_vp(e, c):
        return head(e, c, "model")

    def kd(e, c, vocab_axis=None):
        return linear_kd_loss(e, c, x["et"], x["ct"], divergence="jsd", temperature=2.0, config=CFG,
                              vocab_axis=vocab_axis)

    def dpo(e, c, vocab_axis=None):
        return jnp.sum(linear_dpo_loss(e, c, x["y"], x["m"], ref_logps=ref, config=CFG, vocab_axis=vocab_axis))

    def kd_vp(e, c):
        return kd(e, c, "model")

    def dpo_vp(e, c):
        return dpo(e, c, "model")

    return {"head": (head, "e"), "head_vp": (head_vp, "e"), "kd": (kd, "e"), "kd_vp": (kd_vp, "e"),
            "dpo": (dpo, "ep"), "dpo_vp": (dpo_vp, "ep")}


def main():
    x = _data()
    fns = _fns(x)
    single = {k: jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x[ek], x["c"])
              for k, (f, ek) in fns.items() if not k.endswith("_vp")}
    for k in ("head", "kd", "dpo"):
        single[k + "_vp"] = single[k]  # vocab-parallel vs one device
    cases = []
    for mode in ("explicit", "auto"):
        at = AxisType.Explicit if mode == "explicit" else AxisType.Auto
        mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(at, at))
        for name, (f, ek) in fns.items():
            if mode == "auto" and name.startswith("dpo"):
                continue  # linear_cross_entropy's own sharded tests cover its Auto-mesh paths
            case = f"{mode}_{name}"
            try:
                lead = P(None, "data") if ek == "ep" else P("data")
                csp = P("model", None) if name.endswith("_vp") else P(None, None)
                e = jax.device_put(x[ek], NamedSharding(mesh, lead))
                c = jax.device_put(x["c"], NamedSharding(mesh, csp))
                with jax.set_mesh(mesh):
                    val, (de, dc) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(e, c)
                sv, (sde, sdc) = single[name]
                cases.append(dict(case=case, rel=max(_rel(val, sv), _rel(de, sde), _rel(dc, sdc)),
                                  finite=bool(np.isfinite(val)), dc_spec=str(dc.sharding.spec),
                                  de_spec=str(de.sharding.spec)))
            except Exception as err:  # reported, asserted on by the test
                cases.append(dict(case=case, error=f"{type(err).__name__}: {err}"[:600]))
    print("RESULT_JSON " + json.dumps(dict(devices=jax.device_count(), cases=cases)))


if __name__ == "__main__":
    main()
