"""CPU benchmark of the linear-head family against the materialised-logits versions (one run, ratios).

For each LM shape (N tokens, hidden D, vocabulary V) and each family -- ``linear_ce_head`` (loss +
entropy), ``linear_kd_loss`` (JSD, teacher hidden size 2D), ``linear_dpo_loss`` (precomputed
reference log-probabilities) and ``linear_kto_loss`` (unpaired examples, precomputed reference
log-probabilities, the batch KL reference point from mismatched pairs: one more forward-only pass over
the same number of tokens) -- it compiles ``jax.value_and_grad`` w.r.t. the student/policy (E, C) for
``impl='naive'`` (f32 logits materialised, autodiff) and ``impl='chunked'`` (``block_v`` tiles,
custom_vjp), reads ``memory_analysis().temp_size_in_bytes``, and times both interleaved for ``--rounds``
rounds after two warm-up calls (median of ``perf_counter`` around ``block_until_ready``). Only the
same-round ratios are meaningful on a shared host.

    python benchmarks/linear_head.py            # three shapes
    python benchmarks/linear_head.py --quick    # one small shape (seconds)
    python benchmarks/linear_head.py --families kto   # rerun some families, keep the other rows

Writes ``benchmarks/results/linear_head_cpu.json`` and ``linear_head_cpu.md``; with ``--families`` the
rows of the other families are kept from the existing JSON (each row records the host load of its run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from lossjax.kernels import ChunkedConfig, linear_ce_head, linear_dpo_loss, linear_kd_loss, linear_kto_loss

MIB = 2**20
SHAPES = [(512, 64, 8192), (1024, 128, 16384), (1024, 128, 32768)]
QUICK = [(256, 64, 4096)]


def _programs(impl, n, d, v, bv):
    cfg = ChunkedConfig(block_v=bv) if impl == "chunked" else None
    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((v, d)) / np.sqrt(d), jnp.float32)
    et = jnp.asarray(rng.standard_normal((n, 2 * d)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((v, 2 * d)) / np.sqrt(2 * d), jnp.float32)
    t = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    ep = e.reshape(2, n // 32, 16, d)
    tp = t.reshape(2, n // 32, 16)
    ref = jnp.full((2, n // 32), -150.0)
    ek, tk = e.reshape(n // 16, 16, d), t.reshape(n // 16, 16)
    des = jnp.arange(n // 16) % 3 != 0
    refk = jnp.full((n // 16,), -150.0)
    def head(e, c, t):
        return (lambda o: o.loss + 0.01 * jnp.mean(o.entropy))(
            linear_ce_head(e, c, t, impl=impl, config=cfg))
    def kd(e, c, et, ct):
        return linear_kd_loss(e, c, et, ct, divergence="jsd", impl=impl, config=cfg)
    def dpo(e, c, t, ref):
        return jnp.sum(linear_dpo_loss(e, c, t, ref_logps=ref, impl=impl, config=cfg))
    def kto(e, c, t, ref):
        kl_e, kl_t = jnp.roll(e, 1, axis=0), jnp.roll(t, 1, axis=0)  # mismatched pairs (x_i, y_{i-1})
        return jnp.mean(linear_kto_loss(e, c, t, des, ref_logps=ref, kl_embeddings=kl_e, kl_tokens=kl_t,
                                        ref_kl_logps=ref - 1.0, impl=impl, config=cfg))
    return {
        "head": (jax.value_and_grad(head, argnums=(0, 1)), (e, c, t)),
        "kd_jsd": (jax.value_and_grad(kd, argnums=(0, 1)), (e, c, et, ct)),
        "dpo": (jax.value_and_grad(dpo, argnums=(0, 1)), (ep, c, tp, ref)),
        "kto": (jax.value_and_grad(kto, argnums=(0, 1)), (ek, c, tk, refk)),
    }


def run(shapes, bv, rounds, families=None):
    rows = []
    for n, d, v in shapes:
        progs = {impl: _programs(impl, n, d, v, bv) for impl in ("naive", "chunked")}
        for fam in progs["naive"]:
            if families and fam not in families:
                continue
            comp, args, mem = {}, {}, {}
            for impl in progs:
                fn, a = progs[impl][fam]
                comp[impl] = jax.jit(fn).lower(*a).compile()
                args[impl] = a
                mem[impl] = comp[impl].memory_analysis().temp_size_in_bytes / MIB
                for _ in range(2):
                    jax.block_until_ready(comp[impl](*a))
            times = {impl: [] for impl in comp}
            for _ in range(rounds):
                for impl in comp:
                    t0 = time.perf_counter()
                    jax.block_until_ready(comp[impl](*args[impl]))
                    times[impl].append(time.perf_counter() - t0)
            med = {k: float(np.median(x)) for k, x in times.items()}
            row = dict(family=fam, n=n, d=d, v=v, block_v=bv, logits_mib=n * v * 4 / MIB,
                       naive_mib=mem["naive"], chunked_mib=mem["chunked"],
                       mem_ratio=mem["chunked"] / mem["naive"], naive_ms=1e3 * med["naive"],
                       chunked_ms=1e3 * med["chunked"], time_ratio=med["chunked"] / med["naive"],
                       load_avg_1m=round(os.getloadavg()[0], 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def write(rows, path_json, path_md, rounds, families=None):
    env = dict(jax=jax.__version__, python=platform.python_version(), backend=jax.default_backend(),
               cpus=os.cpu_count(), machine=platform.machine(), load_avg_1m=round(os.getloadavg()[0], 1))
    note = ""
    if families and os.path.exists(path_json):  # keep the other families' rows of the previous run
        with open(path_json) as f:
            old = json.load(f)
        prev_env = old.get("env", {})
        kept = [dict(r, load_avg_1m=r.get("load_avg_1m", prev_env.get("load_avg_1m"))) for r in old["rows"]
                if r["family"] not in families]
        order = {(r["n"], r["d"], r["v"]): i for i, r in enumerate(kept + rows)}
        rows = sorted(kept + rows, key=lambda r: (order[(r["n"], r["d"], r["v"])], r["family"] in families))
        note = (f" Rows of {', '.join(sorted(families))} from this run; the others from an earlier run "
                f"({old.get('rounds')} rounds; host load in the last column).")
    with open(path_json, "w") as f:
        json.dump(dict(env=env, rounds=rounds, rows=rows), f, indent=1)
    lines = [
        "# Linear-head family: temp memory and time vs materialised logits (CPU)", "",
        f"env: {env}; `python benchmarks/linear_head.py` (fwd+bwd w.r.t. the student/policy E and C, f32; "
        f"median of {rounds} interleaved rounds; ratios = chunked / naive in the same run; the host is shared "
        f"with other jobs, so absolute times are noisy).{note}", "",
        "| family | N | D | V | block_v | f32 logits MiB | naive temp MiB | chunked temp MiB | mem ratio "
        "| naive ms | chunked ms | time ratio | load 1m |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['family']} | {r['n']} | {r['d']} | {r['v']} | {r['block_v']} | {r['logits_mib']:.1f} | "
                     f"{r['naive_mib']:.2f} | {r['chunked_mib']:.2f} | {r['mem_ratio']:.4f} | {r['naive_ms']:.1f} | "
                     f"{r['chunked_ms']:.1f} | {r['time_ratio']:.2f} | {r.get('load_avg_1m', '')} |")
    with open(path_md, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block_v", type=int, default=1024)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "linear_head_cpu"))
    ap.add_argument("--families", default=None, help="comma-separated subset of head,kd_jsd,dpo,kto")
    a = ap.parse_args()
    fams = set(a.families.split(",")) if a.families else None
    rows = run(QUICK if a.quick else SHAPES, a.block_v, a.rounds, fams)
    write(rows, a.out + ".json", a.out + ".md", a.rounds, fams)


if __name__ == "__main__":
    main()
