"""Vocab-parallel linear cross-entropy vs naive sharded logits: per-device temp memory and time.

For a model axis of 1, 2, 4 and 8 devices (a ``('model',)`` mesh of that many devices; the rows are
replicated, the classifier is split over its vocabulary) and fixed N, D, V, it compiles ``value_and_grad``
w.r.t. (E, C) of

* **vocab-parallel**: ``linear_cross_entropy(e, c, t, vocab_axis='model')`` (each device streams tiles of
  its own vocabulary shard; only [N] vectors cross the axis);
* **naive**: ``optax.softmax_cross_entropy_with_integer_labels(e @ c.T, t)`` on the same shardings (the
  compiler keeps the [N, V] f32 logits sharded over V),

and reports ``memory_analysis().temp_size_in_bytes`` (per device) and the median / min time over
interleaved rounds, with the ratios vocab-parallel / naive. On fake CPU devices
(``--xla_force_host_platform_device_count``) all devices share the host cores, so times measure total work,
not parallel speed-up; compare ratios within one run only.

Run from the repository root::

    python benchmarks/linear_ce_sharded.py            # writes benchmarks/results/linear_ce_sharded_cpu.{md,json}
    python benchmarks/linear_ce_sharded.py --quick    # small shapes, a smoke run
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lossjax.kernels import linear_cross_entropy  # noqa: E402

MIB = 2 ** 20
AXES = (1, 2, 4, 8)


def _fns(t):
    def vp(e, c):
        return linear_cross_entropy(e, c, t, vocab_axis="model")

    def naive(e, c):
        logits = jnp.dot(e, c.T, preferred_element_type=jnp.float32, precision=jax.lax.Precision.HIGHEST)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, t))

    return {"vocab_parallel": vp, "naive": naive}


def _setup(m, n, d, v):
    mesh = Mesh(np.array(jax.devices()[:m]), ("model",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(0)
    e = jax.device_put((rng.standard_normal((n, d)) / d ** 0.25).astype(np.float32), NamedSharding(mesh, P()))
    c = jax.device_put((rng.standard_normal((v, d)) / d ** 0.25).astype(np.float32),
                       NamedSharding(mesh, P("model", None)))
    t = jax.device_put(rng.integers(0, v, n).astype(np.int32), NamedSharding(mesh, P()))
    return mesh, e, c, t


def run(n, d, v, rounds):
    rows = []
    compiled = {}
    for m in AXES:
        mesh, e, c, t = _setup(m, n, d, v)
        for name, f in _fns(t).items():
            fb = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
            comp = fb.lower(e, c).compile()
            fwd = jax.jit(f).lower(e, c).compile().memory_analysis().temp_size_in_bytes
            compiled[(m, name)] = (comp, e, c)
            val, _ = comp(e, c)
            rows.append(dict(model_axis=m, impl=name, fwd_temp_MiB=fwd / MIB,
                             fwdbwd_temp_MiB=comp.memory_analysis().temp_size_in_bytes / MIB,
                             loss=float(val), times=[]))
            print(f"compiled m={m} {name}: temp fwd+bwd {rows[-1]['fwdbwd_temp_MiB']:.2f} MiB", flush=True)
    by = {(r["model_axis"], r["impl"]): r for r in rows}
    for _ in range(2):  # warm-up
        for comp, e, c in compiled.values():
            jax.block_until_ready(comp(e, c))
    for _ in range(rounds):  # interleaved rounds
        for key, (comp, e, c) in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(comp(e, c))
            by[key]["times"].append(time.perf_counter() - t0)
    out = []
    for m in AXES:
        vp, nv = by[(m, "vocab_parallel")], by[(m, "naive")]
        per_round = [a / b for a, b in zip(vp["times"], nv["times"])]
        out.append(dict(
            model_axis=m, n=n, d=d, v=v, v_per_device=v // m,
            vp_fwd_temp_MiB=vp["fwd_temp_MiB"], naive_fwd_temp_MiB=nv["fwd_temp_MiB"],
            vp_fwdbwd_temp_MiB=vp["fwdbwd_temp_MiB"], naive_fwdbwd_temp_MiB=nv["fwdbwd_temp_MiB"],
            temp_ratio_fwdbwd=vp["fwdbwd_temp_MiB"] / nv["fwdbwd_temp_MiB"],
            vp_median_ms=1e3 * float(np.median(vp["times"])), vp_min_ms=1e3 * min(vp["times"]),
            naive_median_ms=1e3 * float(np.median(nv["times"])), naive_min_ms=1e3 * min(nv["times"]),
            time_ratio_median=float(np.median(per_round)), time_ratio_min=min(vp["times"]) / min(nv["times"]),
            loss_abs_diff=abs(vp["loss"] - nv["loss"]),
            logits_per_device_MiB=n * (v // m) * 4 / MIB))
    return out


def _md(res):
    env = res["env"]
    lines = ["# Vocab-parallel linear cross-entropy vs naive sharded logits (fake CPU devices)\n",
             f"- command: `{env['command']}`",
             f"- device: {env['device']} x{env['device_count']} (fake), host `{env['host']}`, "
             f"{env['cpu_count']} CPUs; jax {env['jax']}; {env['date']}",
             f"- N={res['n']}, D={res['d']}, V={res['v']}, f32; value_and_grad w.r.t. (E, C); classifier "
             "P('model', None), rows replicated; temp = `memory_analysis().temp_size_in_bytes` per device; "
             f"time: median / min over {res['rounds']} interleaved rounds after 2 warm-ups",
             "- fake devices share the host's cores: times are total work, not parallel speed-up\n",
             "| model axis | V / device | f32 logits / device (MiB) | VP fwd temp | naive fwd temp | VP fwd+bwd temp "
             "| naive fwd+bwd temp | temp ratio VP/naive | VP ms (median / min) | naive ms (median / min) "
             "| time ratio VP/naive (median of rounds / min) | loss diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['model_axis']} | {r['v_per_device']} | {r['logits_per_device_MiB']:.1f} | "
            f"{r['vp_fwd_temp_MiB']:.2f} | {r['naive_fwd_temp_MiB']:.2f} | {r['vp_fwdbwd_temp_MiB']:.2f} | "
            f"{r['naive_fwdbwd_temp_MiB']:.2f} | **{r['temp_ratio_fwdbwd']:.3f}** | "
            f"{r['vp_median_ms']:.1f} / {r['vp_min_ms']:.1f} | {r['naive_median_ms']:.1f} / {r['naive_min_ms']:.1f} | "
            f"**{r['time_ratio_median']:.2f}** / {r['time_ratio_min']:.2f} | {r['loss_abs_diff']:.1e} |")
    lines += ["", "Temp memory in MiB. The vocab-parallel temp is bounded by its [N, block_v] tiles (default "
              "block_v 1024 on CPU) and so stays flat once V / device >= block_v; the naive temp holds the "
              "sharded f32 logits (and their gradient) and falls as 1 / model axis.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--v", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="N=128, D=32, V=2048, 2 rounds")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.v, args.rounds = 128, 32, 2048, 2
    rows = run(args.n, args.d, args.v, args.rounds)
    env = dict(command="python benchmarks/linear_ce_sharded.py " + " ".join(sys.argv[1:]), jax=jax.__version__,
               device=jax.devices()[0].device_kind, device_count=jax.device_count(), host=platform.machine(),
               cpu_count=os.cpu_count(), date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    res = dict(env=env, n=args.n, d=args.d, v=args.v, rounds=args.rounds, rows=rows)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"linear_ce_sharded_{args.tag}")
    with open(base + ".json", "w") as fh:
        json.dump(res, fh, indent=1)
    with open(base + ".md", "w") as fh:
        fh.write(_md(res))
    print(_md(res))


if __name__ == "__main__":
    main()
