"""Cost growth with the number of classes K of today's spherical Z-loss (a linear head, fwd+bwd, CPU).

de Brébisson & Vincent (2016) place the Z-loss in the spherical family, whose exact gradient update can be
computed in O(D^2) per example *independently of K* (Vincent, de Brébisson & Bouthillier, NeurIPS 2015) when
the output layer is kept in a factored form and trained by plain SGD. ``lossjax.losses.spherical_z_loss``
takes materialised logits, so a training step costs O(N D K). This script measures that growth:
``value_and_grad`` w.r.t. (h, W) of ``mean(spherical_z_loss(h @ W.T, y))`` at fixed N, D for growing K, next
to optax's softmax cross-entropy on the same head, and fits the log-log slope of time against K (1 means
linear growth, 0 would be the factored algorithm's independence). Why the factored update is not in lossjax:
``docs/design/spherical_zloss.md``.

    python benchmarks/zloss_scaling.py      # writes benchmarks/results/zloss_scaling_cpu.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax.losses import spherical_z_loss

KS = [1024, 4096, 16384, 65536, 262144]
QUICK_KS = [256, 1024, 4096]


def bench(n, d, ks, rounds):
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
    rows = []
    for k in ks:
        w = jnp.asarray((rng.normal(size=(k, d)) / np.sqrt(d)).astype(np.float32))
        y = jnp.asarray(rng.integers(0, k, n).astype(np.int32))
        def zl(h, w, y=y):
            return jnp.mean(spherical_z_loss(h @ w.T, y))

        def ce(h, w, y=y):
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h @ w.T, y))

        fns = {"spherical_z_loss": jax.jit(jax.value_and_grad(zl, argnums=(0, 1))),
               "softmax_ce": jax.jit(jax.value_and_grad(ce, argnums=(0, 1)))}
        for f in fns.values():
            jax.block_until_ready(f(h, w))
            jax.block_until_ready(f(h, w))
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(h, w))
                times[name].append(time.perf_counter() - t0)
        row = {"n": n, "d": d, "k": k, "load_1min": os.getloadavg()[0]}
        for name in fns:
            a = np.asarray(times[name])
            row[f"{name}_median_ms"] = float(np.median(a) * 1e3)
            row[f"{name}_min_ms"] = float(a.min() * 1e3)
        row["zloss_over_ce_median"] = row["spherical_z_loss_median_ms"] / row["softmax_ce_median_ms"]
        rows.append(row)
        print({a: (round(b, 3) if isinstance(b, float) else b) for a, b in row.items()}, flush=True)
    return rows


def slopes(rows, name):
    k = np.log([r["k"] for r in rows])
    out = {}
    for stat in ("median", "min"):
        t = np.log([r[f"{name}_{stat}_ms"] for r in rows])
        out[stat] = float(np.polyfit(k, t, 1)[0])
        # the last two points only: the compute-bound end of the range
        out[f"{stat}_last2"] = float((t[-1] - t[-2]) / (k[-1] - k[-2]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "zloss_scaling_cpu"))
    a = ap.parse_args()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    load0 = os.getloadavg()[0]
    rows = bench(a.n, a.d, QUICK_KS if a.quick else KS, a.rounds)
    load1 = os.getloadavg()[0]
    sl = {name: slopes(rows, name) for name in ("spherical_z_loss", "softmax_ce")}
    meta = {"command": "python benchmarks/zloss_scaling.py" + (" --quick" if a.quick else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "jax": jax.__version__, "cpu": cpu,
            "cpus": os.cpu_count(), "load_before": load0, "load_after": load1, "rounds": a.rounds}
    with open(a.out + ".json", "w") as fh:
        json.dump({"meta": meta, "rows": rows, "slopes": sl}, fh, indent=1)
    loaded = load0 > 0.5 * (os.cpu_count() or 1)
    lines = [
        "# Spherical Z-loss: training cost against the number of classes K (CPU)", "",
        "Claim (de Brébisson & Vincent 2016, with Vincent et al. 2015's factored update): a spherical-family loss can "
        "be trained at a cost independent of K. `lossjax.losses.spherical_z_loss` takes materialised logits; this "
        "measures how its fwd+bwd cost grows with K. Reason the factored update is not implemented: "
        "`docs/design/spherical_zloss.md`.", "",
        f"Command: `{meta['command']}`; {meta['date']}; jax {meta['jax']}; CPU {cpu}, {os.cpu_count()} CPUs; "
        f"1-min load average {load0:.1f} before / {load1:.1f} after"
        + (" — **the machine was shared and heavily loaded**: absolute times are inflated; the slopes and the "
           "same-round ratio are what to read." if loaded else "."), "",
        f"`jax.value_and_grad` w.r.t. (h, W) of the mean loss of `h @ W.T`, h [{a.n}, {a.d}], W [K, {a.d}], f32, "
        f"{a.rounds} interleaved rounds; median (min) ms.", "",
        "| K | spherical_z_loss ms | softmax CE (optax) ms | Z-loss / CE (median) |", "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['k']} | {r['spherical_z_loss_median_ms']:.2f} ({r['spherical_z_loss_min_ms']:.2f}) | "
                     f"{r['softmax_ce_median_ms']:.2f} ({r['softmax_ce_min_ms']:.2f}) | "
                     f"{r['zloss_over_ce_median']:.2f} |")
    lines += ["", "Log-log slope of time against K (1 = linear in K; the factored update would give 0):", "",
              "| loss | slope, all K (median / min) | slope, last two K (median / min) |", "|---|---|---|"]
    for name, s in sl.items():
        lines.append(f"| {name} | {s['median']:.2f} / {s['min']:.2f} | "
                     f"{s['median_last2']:.2f} / {s['min_last2']:.2f} |")
    with open(a.out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("wrote", a.out + ".md")


if __name__ == "__main__":
    main()
