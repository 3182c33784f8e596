"""CPU benchmark for lossjax.kernels.linear_cross_entropy (method: docs/design/kernels.md §4).

Memory: ``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes`` for the forward and for
``jax.value_and_grad`` w.r.t. (E, C), naive (optax on materialised f32 logits) vs chunked (and Pallas in
interpret mode, memory only). Time: jit, two warm-up calls, then all candidates interleaved for ``--rounds``
rounds; median and min of ``perf_counter`` around ``block_until_ready``; only same-round ratios against the
naive path are meaningful on a shared host.

    python benchmarks/kernels.py            # full §9.1 memory sweep + timing subset
    python benchmarks/kernels.py --quick    # reduced sweep (about a minute)

Writes ``benchmarks/results/kernels_cpu.json`` and ``kernels_cpu.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax.kernels import ChunkedConfig, PallasConfig, linear_cross_entropy

MIB = 2 ** 20
BV = 1024


def _naive(t):
    def f(e, c):
        logits = jnp.dot(e, c.T, preferred_element_type=jnp.float32)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, t))
    return f


def _ours(impl, t, **kw):
    def f(e, c):
        conf = PallasConfig(**kw) if impl == "pallas" else ChunkedConfig(**kw)
        return linear_cross_entropy(e, c, t, impl=impl, config=conf).astype(jnp.float32)
    return f


def _cands(t):
    return {"naive": _naive(t), "chunked": _ours("chunked", t, block_v=BV)}


def _temp(f, *args):
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def _sds(n, d, v):
    return (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((v, d), jnp.float32))


def memory_sweep(ns, ds, vs, pallas_shapes):
    rows = []
    for n, d, v in itertools.product(ns, ds, vs):
        t = jnp.zeros((n,), jnp.int32)
        row = dict(n=n, d=d, v=v, logits_MiB=n * v * 4 / MIB, C_MiB=v * d * 4 / MIB)
        for name, f in _cands(t).items():
            row[f"{name}_fwd_MiB"] = _temp(f, *_sds(n, d, v)) / MIB
            row[f"{name}_fwdbwd_MiB"] = _temp(jax.value_and_grad(f, argnums=(0, 1)), *_sds(n, d, v)) / MIB
        row["chunked/naive_fwdbwd"] = row["chunked_fwdbwd_MiB"] / row["naive_fwdbwd_MiB"]
        if (n, d, v) in pallas_shapes:
            f = _ours("pallas", t, block_n=128, block_v=512)
            row["pallas_interp_fwd_MiB"] = _temp(f, *_sds(n, d, v)) / MIB
            row["pallas_interp_fwdbwd_MiB"] = _temp(jax.value_and_grad(f, argnums=(0, 1)), *_sds(n, d, v)) / MIB
        rows.append(row)
        print("mem", {k: round(x, 3) if isinstance(x, float) else x for k, x in row.items()}, flush=True)
    return rows


def time_shapes(shapes, rounds):
    rows = []
    for n, d, v in shapes:
        k = jax.random.split(jax.random.key(0), 3)
        e = jax.random.normal(k[0], (n, d)) / d ** 0.25
        c = jax.random.normal(k[1], (v, d)) / d ** 0.25
        t = jax.random.randint(k[2], (n,), 0, v)
        fns = {}
        for name, f in _cands(t).items():
            fns[(name, "fwd")] = jax.jit(f)
            fns[(name, "fwd+bwd")] = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        for f in fns.values():  # compile, then one warm run
            jax.block_until_ready(f(e, c))
            jax.block_until_ready(f(e, c))
        times = {key: [] for key in fns}
        for _ in range(rounds):
            for key, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(e, c))
                times[key].append(time.perf_counter() - t0)
        for mode in ("fwd", "fwd+bwd"):
            nm, ch = np.asarray(times[("naive", mode)]), np.asarray(times[("chunked", mode)])
            row = dict(n=n, d=d, v=v, mode=mode, naive_median_ms=1e3 * np.median(nm), naive_min_ms=1e3 * nm.min(),
                       chunked_median_ms=1e3 * np.median(ch), chunked_min_ms=1e3 * ch.min(),
                       ratio_median=float(np.median(ch / nm)), ratio_min=float(ch.min() / nm.min()))
            rows.append(row)
            print("time", {k_: round(x, 3) if isinstance(x, float) else x for k_, x in row.items()}, flush=True)
    return rows


def _md(res):
    out = ["# lossjax.kernels CPU benchmark\n", f"env: {res['env']}\n",
           "## Temp memory (MiB, `memory_analysis().temp_size_in_bytes`, f32)\n",
           "| N | D | V | f32 logits | naive fwd | chunked fwd | naive fwd+bwd | chunked fwd+bwd "
           "| chunked/naive (fwd+bwd) | Pallas-interp fwd | Pallas-interp fwd+bwd |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["memory"]:
        out.append(f"| {r['n']} | {r['d']} | {r['v']} | {r['logits_MiB']:.1f} | {r['naive_fwd_MiB']:.2f} | "
                   f"{r['chunked_fwd_MiB']:.2f} | {r['naive_fwdbwd_MiB']:.2f} | {r['chunked_fwdbwd_MiB']:.2f} | "
                   f"{r['chunked/naive_fwdbwd']:.4f} | {r.get('pallas_interp_fwd_MiB', float('nan')):.2f} | "
                   f"{r.get('pallas_interp_fwdbwd_MiB', float('nan')):.2f} |")
    out += ["", f"## Time (ms; {res['rounds']} interleaved rounds; "
            "ratio = chunked / naive (optax on f32 logits), same round)\n",
            "| N | D | V | mode | naive median | naive min | chunked median | chunked min "
            "| ratio (median of per-round) | ratio (min/min) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["time"]:
        out.append(f"| {r['n']} | {r['d']} | {r['v']} | {r['mode']} | {r['naive_median_ms']:.1f} | "
                   f"{r['naive_min_ms']:.1f} | {r['chunked_median_ms']:.1f} | {r['chunked_min_ms']:.1f} | "
                   f"{r['ratio_median']:.3f} | {r['ratio_min']:.3f} |")
    s = res["summary"]
    out += ["", "## Targets\n",
            f"- chunked temp independent of V (per (N, D)): **{s['chunked_flat_in_v']}**",
            "- chunked fwd+bwd temp / naive at N=4096, V=65536: max over D = "
            f"**{s['ratio_4096_65536']:.4f}** (target <= 0.05)",
            f"- chunked / naive time: max median ratio = **{s['max_time_ratio']:.3f}** (target <= 1.3)", ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    if args.quick:
        ns, ds, vs = [1024, 4096], [64], [8192, 65536]
        tshapes = [(1024, 128, 8192)]
    else:
        ns, ds, vs = [512, 1024, 2048, 4096], [64, 128, 256], [4096, 8192, 32768, 65536]
        tshapes = [(2048, 256, 8192), (2048, 256, 32768), (4096, 64, 65536)]
    pallas_shapes = {(1024, 64, 8192), (4096, 64, 8192), (1024, 64, 65536)}
    res = {"env": dict(jax=jax.__version__, python=platform.python_version(), backend=jax.default_backend(),
                       cpus=os.cpu_count(), machine=platform.machine()), "rounds": args.rounds, "block_v": BV}
    t0 = time.time()
    res["memory"] = memory_sweep(ns, ds, vs, pallas_shapes)
    res["time"] = time_shapes(tshapes, args.rounds)
    flat = True
    for n, d in itertools.product(ns, ds):
        vals = {r["chunked_fwdbwd_MiB"] for r in res["memory"] if r["n"] == n and r["d"] == d}
        vals |= {r["chunked_fwd_MiB"] + 1e6 for r in res["memory"] if r["n"] == n and r["d"] == d}
        flat &= len(vals) == 2
    big = [r["chunked/naive_fwdbwd"] for r in res["memory"] if r["n"] == 4096 and r["v"] == 65536]
    res["summary"] = dict(chunked_flat_in_v=bool(flat), ratio_4096_65536=max(big) if big else float("nan"),
                          max_time_ratio=max(r["ratio_median"] for r in res["time"]), seconds=time.time() - t0)
    print("summary", res["summary"], flush=True)
    os.makedirs(args.out, exist_ok=True)
    tag = "kernels_cpu_quick" if args.quick else "kernels_cpu"
    with open(os.path.join(args.out, f"{tag}.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    with open(os.path.join(args.out, f"{tag}.md"), "w") as fh:
        fh.write(_md(res))


if __name__ == "__main__":
    main()
