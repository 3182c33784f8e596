"""CPU measurement of Cut Cross-Entropy's gradient filter (``filter_eps``) on the chunked path.

Wijmans et al. (arXiv 2411.09009, Sec. 4.3) skip the backward work of gradient blocks whose entries
``|softmax - onehot|`` are all below a precision threshold (bf16: 2^-12), and sort the vocabulary by average
logit so that small entries cluster into skippable blocks; they report no loss in convergence. Two parts:

``--part speed``: fwd+bwd time of ``linear_cross_entropy(impl='chunked')`` exact vs ``filter_eps=2^-12``,
with the vocabulary in frequency order ("sorted", the paper's sorting) or randomly permuted ("unsorted"),
and the materialised-logits optax path for reference, on LM-like inputs: targets drawn from a Zipf(1)
unigram distribution, logits ``z = log unigram + N(0, 1)`` noise from a random linear head (a trained LM's
logits carry the unigram prior). Interleaved rounds, median and min, ratios in one run. Next to the times:
the fraction of whole ``N x block_v`` tiles whose GEMMs the chunked path skips, and the fraction of
``128 x 128`` blocks below the threshold (what a block-granular kernel could skip).

``--part convergence``: the char-LM of ``notebooks/02_scaling_laws_measured.py`` (model and data imported
from ``notebooks/nbhelpers.py``), trained with Adam for ``--steps`` steps with the chunked head exact and
with the filter (threshold 2^-12 on f32 inputs, blocks of 128, 8 and 1 entries), same seeds and batches,
plus a positive control (threshold 2^-4, elementwise) showing the comparison can detect a change; train and
validation loss curves and a PNG plot.

    python benchmarks/gradient_filter_cpu.py                  # both parts
    python benchmarks/gradient_filter_cpu.py --part speed --quick

Writes ``benchmarks/results/gradient_filter_cpu.{json,md}`` and ``gradient_filter_cpu_convergence.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax.kernels import ChunkedConfig, linear_cross_entropy

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
EPS = 2.0 ** -12  # the bf16 threshold of CCE ('auto' for bf16 inputs), applied to f32 inputs here
BV = 1024
SHAPES = [(512, 256, 32768), (256, 128, 65536), (1024, 64, 16384)]
QUICK_SHAPES = [(256, 64, 8192)]


# ------------------------------------------------------------------------------------------ speed
def lm_inputs(n, d, v, seed=0):
    """E [n, d+1], C [v, d+1] (rows in frequency order), Zipf(1) targets: z = log unigram + noise."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, v + 1)
    unigram = 1.0 / ranks
    unigram /= unigram.sum()
    e = rng.normal(size=(n, d)) / d ** 0.25
    c = rng.normal(size=(v, d)) / d ** 0.25
    e = np.concatenate([e, np.ones((n, 1))], 1).astype(np.float32)
    c = np.concatenate([c, np.log(unigram)[:, None]], 1).astype(np.float32)
    t = rng.choice(v, size=n, p=unigram).astype(np.int32)
    return e, c, t


def skip_fractions(e, c, t, eps, bv=BV, block=128):
    """(fraction of N x bv tiles with all |p - onehot| < eps, fraction of block x block blocks below eps)."""
    z = jnp.asarray(e) @ jnp.asarray(c).T
    d = jax.nn.softmax(z, axis=-1) - jax.nn.one_hot(t, c.shape[0])
    small = np.asarray(jnp.abs(d) < eps)
    n, v = small.shape
    tiles = small.reshape(n, v // bv, bv).all(axis=(0, 2)).mean()
    nb = n // block
    blocks = small[: nb * block].reshape(nb, block, v // block, block).all(axis=(1, 3)).mean()
    return float(tiles), float(blocks)


def speed(shapes, rounds):
    rows = []
    for n, d, v in shapes:
        e, c, t = lm_inputs(n, d, v)
        perm = np.random.default_rng(1).permutation(v)  # unsorted: token id k has frequency rank perm[k]
        c_uns = c[perm]
        inv = np.argsort(perm)
        t_uns = inv[t].astype(np.int32)
        cases = {"sorted": (e, c, t), "unsorted": (e, c_uns, t_uns)}
        fns, args = {}, {}
        for vs, (ee, cc, tt) in cases.items():
            ee, cc, tt = jnp.asarray(ee), jnp.asarray(cc), jnp.asarray(tt)
            for name, eps in (("exact", None), ("filter", EPS)):
                def loss(e_, c_, tt=tt, eps=eps):
                    return linear_cross_entropy(e_, c_, tt, impl="chunked", filter_eps=eps,
                                                config=ChunkedConfig(block_v=BV))
                fns[f"chunked_{name}_{vs}"] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
                args[f"chunked_{name}_{vs}"] = (ee, cc)
            if vs == "unsorted":
                def naive(e_, c_, tt=tt):
                    return optax.softmax_cross_entropy_with_integer_labels(e_ @ c_.T, tt).mean()
                fns["naive_optax"] = jax.jit(jax.value_and_grad(naive, argnums=(0, 1)))
                args["naive_optax"] = (ee, cc)
        outs = {}
        for k, f in fns.items():
            outs[k] = jax.block_until_ready(f(*args[k]))
            jax.block_until_ready(f(*args[k]))
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(*args[k]))
                times[k].append(time.perf_counter() - t0)
        ref_dc = np.asarray(outs["chunked_exact_sorted"][1][1])
        row = {"n": n, "d": d + 1, "v": v, "rounds": rounds, "load_1min": os.getloadavg()[0]}
        tiles_s, blocks_s = skip_fractions(e, c, t, EPS)
        tiles_u, blocks_u = skip_fractions(e, c_uns, t_uns, EPS)
        row.update(skipped_tiles_sorted=tiles_s, skipped_tiles_unsorted=tiles_u,
                   small_blocks128_sorted=blocks_s, small_blocks128_unsorted=blocks_u)
        fdc = np.asarray(outs["chunked_filter_sorted"][1][1])
        row["filter_dC_rel_err"] = float(np.abs(fdc - ref_dc).max() / np.abs(ref_dc).max())
        for k in fns:
            a = np.asarray(times[k])
            row[f"{k}_median_ms"] = float(np.median(a) * 1e3)
            row[f"{k}_min_ms"] = float(a.min() * 1e3)
        for vs in cases:
            for stat in ("median", "min"):
                row[f"filter_speedup_{vs}_{stat}"] = (row[f"chunked_exact_{vs}_{stat}_ms"]
                                                      / row[f"chunked_filter_{vs}_{stat}_ms"])
        row["chunked_exact_over_naive_median"] = row["chunked_exact_unsorted_median_ms"] / row["naive_optax_median_ms"]
        rows.append(row)
        print({k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items()}, flush=True)
    return rows


# ------------------------------------------------------------------------------------ convergence
def convergence(steps, seeds, width, batch, eval_every):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "notebooks"))
    import nbhelpers as H  # the notebook's char-LM model and data

    ids = jnp.asarray(H.load_stdlib_text())
    n_val = int(len(ids) * 0.1)
    train, val = ids[:-n_val], ids[-n_val:]
    context, embed = 16, 16
    vstart = np.random.default_rng(123).integers(0, n_val - context - 1, 2048)
    vwin = jnp.asarray(vstart[:, None] + np.arange(context + 1))
    vx, vy = val[vwin[:, :-1]], val[vwin[:, -1]]
    adam = optax.adam(3e-3)
    # the last variant is a positive control: a threshold far above bf16 precision must visibly change training
    variants = {"exact": (None, 128), "filter_b128": (EPS, 128), "filter_b8": (EPS, 8), "filter_b1": (EPS, 1),
                "control_eps2^-4_b1": (2.0 ** -4, 1)}

    def make_run(eps, block):
        cfg = ChunkedConfig(block_v=BV, filter_block=block)

        def objective(p, mask, xb, yb):
            return linear_cross_entropy(H._lm_hidden(p, mask, xb), p["cls"], yb, impl="chunked",
                                        filter_eps=eps, config=cfg)

        def filtered_fraction(p, mask, xb, yb):
            z = H._lm_hidden(p, mask, xb) @ p["cls"].T
            dd = jax.nn.softmax(z) - jax.nn.one_hot(yb, z.shape[1])
            return jnp.mean(jnp.abs(dd) < EPS)

        def run(seed):
            kinit, kdata = jax.random.split(jax.random.PRNGKey(seed))
            p, mask = H._lm_init(kinit, width, width, context, embed)
            state = adam.init(p)

            def step(carry, k):
                p, state = carry
                start = jax.random.randint(k, (batch,), 0, train.shape[0] - context - 1)
                win = start[:, None] + jnp.arange(context + 1)
                xb, yb = train[win[:, :-1]], train[win[:, -1]]
                loss, g = jax.value_and_grad(objective)(p, mask, xb, yb)
                upd, state = adam.update(g, state, p)
                return (optax.apply_updates(p, upd), state), (loss, filtered_fraction(p, mask, xb, yb))

            def chunk(carry, k):
                carry, (tl, ff) = jax.lax.scan(step, carry, jax.random.split(k, eval_every))
                vl = linear_cross_entropy(H._lm_hidden(carry[0], mask, vx), carry[0]["cls"], vy, impl="chunked")
                return carry, (tl, ff, vl)

            _, (tl, ff, vl) = jax.lax.scan(chunk, (p, state), jax.random.split(kdata, steps // eval_every))
            return tl.reshape(-1), ff.reshape(-1), vl

        return jax.jit(jax.vmap(run))

    out = {"steps": steps, "seeds": list(seeds), "width": width, "batch": batch, "eval_every": eval_every,
           "eps": EPS, "vocab": H.VOCAB, "curves": {}}
    for name, (eps, block) in variants.items():
        t0 = time.perf_counter()
        tl, ff, vl = (np.asarray(a) for a in make_run(eps, block)(jnp.asarray(seeds)))
        out["curves"][name] = {"train": tl.tolist(), "small_fraction": ff.tolist(), "val": vl.tolist(),
                               "seconds": time.perf_counter() - t0}
        print(name, "final val", vl[:, -1], "small-entry fraction (last 50 steps)", ff[:, -50:].mean(),
              f"{time.perf_counter() - t0:.1f}s", flush=True)
    return out


def plot(conv, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, conv["steps"] + 1)
    vsteps = np.arange(conv["eval_every"], conv["steps"] + 1, conv["eval_every"])
    for i, (name, c) in enumerate(conv["curves"].items()):
        tl = np.asarray(c["train"]).mean(0)
        k = 25
        sm = np.convolve(tl, np.ones(k) / k, mode="valid")
        ls = ["-", "--", ":", "-.", "-"][i % 5]
        ax[0].plot(steps[k - 1:], sm, label=name, lw=1.2, ls=ls)
        ax[1].plot(vsteps, np.asarray(c["val"]).mean(0), marker="o", ms=3, label=name, ls=ls)
    ax[0].set(xlabel="step", ylabel="train CE (nats/char, 25-step mean)", title="char LM, mean over seeds")
    ax[1].set(xlabel="step", ylabel="val CE (nats/char)",
              title=f"filter_eps = 2^-12 (control 2^-4), width {conv['width']}")
    # the positive control diverges; keep the axes on the range of the other variants (its curve leaves the plot)
    for j, key in enumerate(("train", "val")):
        vals = np.concatenate([np.asarray(c[key]).mean(0) for n, c in conv["curves"].items()
                               if not n.startswith("control")])
        ax[j].set_ylim(vals.min() - 0.05, vals.max() + 0.1)
    for a in ax:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_md(path, meta, speed_rows, conv):
    lines = ["# Cut Cross-Entropy gradient filter on CPU (chunked path)", "",
             "Claims tested (Wijmans et al., arXiv 2411.09009, Sec. 4.3 and Sec. 5): filtering below-precision "
             "gradient entries speeds up the backward without changing convergence; sorting the vocabulary "
             "clusters the skippable entries into blocks.", "",
             f"Command: `{meta['command']}`; {meta['date']}; jax {meta['jax']}; CPU {meta['cpu']}; "
             f"1-min load average {meta['load_before']:.1f} before / {meta['load_after']:.1f} after on "
             f"{os.cpu_count()} CPUs" + (" — **the machine was shared and heavily loaded**: only same-run ratios mean "
                                         "anything." if meta["load_before"] > 0.5 * os.cpu_count() else "."), ""]
    if speed_rows:
        rounds = speed_rows[0].get("rounds", meta["rounds"])
        lines += ["## Speed (fwd+bwd w.r.t. E and C, f32, `block_v` 1024, `filter_eps` 2^-12, `filter_block` 128)", "",
                  f"Rounds: {rounds} (candidates interleaved). Inputs: Zipf(1) targets, logits = log unigram + "
                  "N(0,1) noise (see the script). 'sorted' = vocabulary in frequency order (the paper's sorting), "
                  "'unsorted' = random vocabulary order. Speed-up = exact / filtered time (median, min in brackets).",
                  "", "| N | D | V | exact ms (sorted) | filter ms (sorted) | speed-up sorted | speed-up unsorted | "
                  "naive optax ms | chunked exact / naive | skipped N×1024 tiles sorted / unsorted | "
                  "128×128 blocks below eps sorted / unsorted | dC rel. err (filter) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in speed_rows:
            lines.append(
                f"| {r['n']} | {r['d']} | {r['v']} | {r['chunked_exact_sorted_median_ms']:.0f} | "
                f"{r['chunked_filter_sorted_median_ms']:.0f} | {r['filter_speedup_sorted_median']:.2f} "
                f"({r['filter_speedup_sorted_min']:.2f}) | {r['filter_speedup_unsorted_median']:.2f} "
                f"({r['filter_speedup_unsorted_min']:.2f}) | {r['naive_optax_median_ms']:.0f} | "
                f"{r['chunked_exact_over_naive_median']:.2f} | {r['skipped_tiles_sorted']:.2f} / "
                f"{r['skipped_tiles_unsorted']:.2f} | {r['small_blocks128_sorted']:.2f} / "
                f"{r['small_blocks128_unsorted']:.2f} | {r['filter_dC_rel_err']:.1e} |")
    if conv:
        lines += ["", "## Convergence on the char-LM of notebook 02", "",
                  f"Model and data from `notebooks/nbhelpers.py` (16-char context, 16-d embeddings, GELU width "
                  f"{conv['width']}, V = {conv['vocab']}), Adam 3e-3, batch {conv['batch']}, {conv['steps']} steps, "
                  f"seeds {conv['seeds']}; identical initialisation and batches in every variant; the head is "
                  f"`linear_cross_entropy(impl='chunked')` with `filter_eps` = 2^-12 on f32 inputs and "
                  f"`ChunkedConfig(filter_block=b)`. 'small entries' = fraction of |softmax − onehot| < 2^-12 "
                  "(the entries the elementwise filter zeroes), last 50 steps.", "",
                  "| variant | final val CE (per seed) | mean train CE, last 50 steps "
                  "| max abs Δ val vs exact over the run | small entries |", "|---|---|---|---|---|"]
        ex = np.asarray(conv["curves"]["exact"]["val"])
        for name, c in conv["curves"].items():
            v = np.asarray(c["val"])
            tl = np.asarray(c["train"])
            lines.append(f"| {name} | {', '.join(f'{x:.4f}' for x in v[:, -1])} | {tl[:, -50:].mean():.4f} | "
                         f"{np.abs(v - ex).max():.2e} | {np.asarray(c['small_fraction'])[:, -50:].mean():.3f} |")
        lines += ["", "![loss curves](gradient_filter_cpu_convergence.png)"]
    if meta.get("verdict"):
        lines += ["", "## Verdict", "", meta["verdict"]]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("speed", "convergence", "both"), default="both")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shapes", default=None, help="N,D,V;N,D,V;... (default: the SHAPES list)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(RESULTS, "gradient_filter_cpu"))
    a = ap.parse_args()
    import subprocess

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    prev = {}
    if os.path.exists(a.out + ".json"):
        with open(a.out + ".json") as fh:
            prev = json.load(fh)
    meta = {"command": "python benchmarks/gradient_filter_cpu.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "jax": jax.__version__, "cpu": cpu,
            "rounds": a.rounds, "load_before": os.getloadavg()[0]}
    speed_rows = prev.get("speed")
    conv = prev.get("convergence")
    if a.part in ("speed", "both"):
        shapes = QUICK_SHAPES if a.quick else SHAPES
        if a.shapes:
            shapes = [tuple(int(x) for x in sh.split(",")) for sh in a.shapes.split(";")]
        speed_rows = speed(shapes, 2 if a.quick else a.rounds)
    if a.part in ("convergence", "both"):
        conv = convergence(60 if a.quick else a.steps, (0, 1), 32 if a.quick else a.width, 128, 10 if a.quick else 50)
        plot(conv, os.path.join(os.path.dirname(a.out), "gradient_filter_cpu_convergence.png"))
    meta["load_after"] = os.getloadavg()[0]
    meta["verdict"] = prev.get("meta", {}).get("verdict")
    with open(a.out + ".json", "w") as fh:
        json.dump({"meta": meta, "speed": speed_rows, "convergence": conv}, fh, indent=1)
    write_md(a.out + ".md", meta, speed_rows, conv)
    print("wrote", a.out + ".md")


if __name__ == "__main__":
    main()
