"""Cost of the sharpness measurements of :mod:`lossjax.diagnostics`, in training-step units.

Models of the digits experiments (imported, not copied): ``SmallCNN`` (width 32, BatchNorm;
``experiments.common.models``, the network of ``configs/digits``) and the ReLU ``MLP`` of
``experiments.common.small_models`` (hidden 128-128 on the flattened 8×8 image). Data: sklearn's
``load_digits`` (random images if sklearn is missing). The training step is one jitted SGD
(momentum 0.9) step at the digits recipe's batch size 64. Each measurement is one jitted call at
the measuring batch (default 64, the training batch); after a warm-up call we time ``--repeats`` calls per
function, interleaved round-robin with training steps so that load drift hits all alike, and
report medians and the ratio to the training-step median. The CNN runs with ``unroll=True``
(XLA:CPU runs convolutions inside loop bodies ~60× slower; one ``lax.while_loop`` power
iteration is timed for comparison), the MLP with the default loops. The CNN loss is evaluated in train
mode (batch statistics, as the step differentiates it) and its BatchNorm updates are discarded.

Usage::

    python benchmarks/sharpness_measure.py [--batches 64] [--repeats 5] [--models cnn mlp] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.sharpness import data as digits  # noqa: E402  (the digits batch the SAM benchmark uses)
from experiments.common.models import SmallCNN  # noqa: E402
from experiments.common.small_models import MLP  # noqa: E402
from lossjax import diagnostics as D  # noqa: E402
from lossjax.losses.aace import aace_loss  # noqa: E402


def ce(z: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()


def build(name: str, x: jax.Array):
    """``(params, logits_fn(params, x))`` for the named model."""
    if name == "cnn":
        model = SmallCNN(width=32, num_classes=10)
        variables = model.init(jax.random.key(0), x[:2], train=False)
        stats = variables["batch_stats"]

        def logits(p, xb):
            out, _ = model.apply({"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"])
            return out

        return variables["params"], logits
    model = MLP(hidden=(128, 128), out=10)
    params = model.init(jax.random.key(0), x[:2].reshape(2, -1))["params"]
    return params, lambda p, xb: model.apply({"params": p}, xb.reshape(xb.shape[0], -1))["out"]


def measurements(logits, unroll: bool):
    loss = lambda p, b: ce(logits(p, b[0]), b[1])  # noqa: E731
    aace = lambda p, b: aace_loss(logits(p, b[0]), b[1]).mean()  # noqa: E731
    tx = optax.sgd(0.05, momentum=0.9)

    @jax.jit
    def train_step(p, s, b):
        g = jax.grad(loss)(p, b)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    key = jax.random.key(0)
    u = dict(unroll=unroll)
    fns = {
        "power iteration, 20 HVPs (tol=0)": jax.jit(
            lambda p, b: D.hessian_top_eigenvalue(loss, p, b, key, num_iters=20, tol=0.0, **u)[::2]),
        "Lanczos top-1, 20 steps (tol=0)": jax.jit(
            lambda p, b: D.hessian_lanczos(loss, p, b, key, k=1, num_iters=20, tol=0.0, **u).eigenvalues),
        "Hutchinson trace, 10 probes (one at a time)": jax.jit(
            lambda p, b: D.hessian_trace(loss, p, b, key, num_probes=10, **u).trace),
        "Hutchinson trace, 10 probes (vmapped)": jax.jit(
            lambda p, b: D.hessian_trace(loss, p, b, key, num_probes=10, probe_batch_size=10, **u).trace),
        "ε-sharpness, 5 ascent steps": jax.jit(
            lambda p, b: D.epsilon_sharpness(loss, p, b, rho=0.05, num_steps=5, **u).sharpness),
        "adaptive sharpness, 5 ascent steps": jax.jit(
            lambda p, b: D.adaptive_sharpness(loss, p, b, rho=0.5, num_steps=5, **u).sharpness),
        "‖∇CE‖ and ‖∇AACE‖": jax.jit(
            lambda p, b: D.gradient_norms({"ce": loss, "aace": aace}, p, b)),
    }
    loop_power = jax.jit(lambda p, b: D.hessian_top_eigenvalue(loss, p, b, key, num_iters=20, tol=0.0).eigenvalue)
    return tx, train_step, fns, loop_power


def block(x):
    return jax.block_until_ready(x)


def run(args, save=None) -> dict:
    xall, yall, src = digits(max(args.batches + [args.train_batch]))
    results = {"device": str(jax.devices()[0]), "jax": jax.__version__, "data": src,
               "platform": platform.platform(), "load_avg_start": os.getloadavg(), "models": {}}
    for name in args.models:
        unroll = name == "cnn" and not args.no_unroll
        params, logits = build(name, xall)
        n_params = int(sum(v.size for v in jax.tree.leaves(params)))
        tb = (xall[: args.train_batch], yall[: args.train_batch])
        tx, train_step, fns, loop_power = measurements(logits, unroll)
        state = tx.init(params)
        block(train_step(params, state, tb))  # compile
        rows = {}
        for bsz in args.batches:
            b = (xall[:bsz], yall[:bsz])
            extra, compile_s = {}, {}
            for label, f in fns.items():
                t0 = time.perf_counter()
                out = block(f(params, b))  # compile + first call
                compile_s[label] = time.perf_counter() - t0
                if label.startswith("power iteration"):
                    extra["power_eigenvalue"] = float(out[0])
                if label.startswith("Lanczos"):
                    extra["lanczos_eigenvalue"] = float(out[0])
            if unroll and bsz == args.batches[0]:  # the same estimate as a lax.while_loop, once
                block(loop_power(params, b))
                t0 = time.perf_counter()
                block(loop_power(params, b))
                extra["loop_power_ms"] = 1e3 * (time.perf_counter() - t0)
            times = {label: [] for label in fns}
            step_times = []
            for _ in range(args.repeats):
                for label, f in fns.items():
                    for _ in range(3):  # three training steps between measurements
                        t0 = time.perf_counter()
                        block(train_step(params, state, tb))
                        step_times.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    block(f(params, b))
                    times[label].append(time.perf_counter() - t0)
            step = statistics.median(step_times)
            rows[bsz] = {
                "unroll": unroll,
                "train_step_ms": 1e3 * step,
                "measure_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                "ratio": {k: statistics.median(v) / step for k, v in times.items()},
                "first_call_s": compile_s,
                **extra,
            }
            if "loop_power_ms" in extra:
                rows[bsz]["loop_power_ratio"] = extra["loop_power_ms"] / (1e3 * step)
            print(name, bsz, json.dumps(rows[bsz], ensure_ascii=False), flush=True)
            results["models"][name] = {"params": n_params, "by_batch": rows}
            results["load_avg_end"] = os.getloadavg()
            if save is not None:
                save(results)
    results["load_avg_end"] = os.getloadavg()
    return results


def write_md(res: dict, path: str, cmd: str) -> None:
    lines = [
        f"# Cost of sharpness measurements in training steps ({res['device']}, jax {res['jax']})",
        "",
        f"Command: `{cmd}`  ",
        f"Data: {res['data']}. One training step = jitted SGD-momentum step at batch "
        f"{res['train_batch']} (the digits recipe). Medians of {res['repeats']} jitted calls, "
        "interleaved with training steps. Load average (1/5/15 min) at start "
        f"{tuple(round(v, 1) for v in res['load_avg_start'])}, end "
        f"{tuple(round(v, 1) for v in res['load_avg_end'])} — a shared 2-core machine, so "
        "absolute times are noisy; the ratios are the result.",
        "",
    ]
    for name, m in res["models"].items():
        label = "SmallCNN (width 32, BatchNorm)" if name == "cnn" else "MLP 64-128-128-10"
        for bsz, row in m["by_batch"].items():
            lines += [
                f"## {label}, {m['params']:,} parameters, measured on a batch of {bsz}",
                "",
                f"Training step (batch {res['train_batch']}): {row['train_step_ms']:.2f} ms. At "
                f"initialisation power iteration returns {row['power_eigenvalue']:.4g} (largest |λ|), "
                f"Lanczos {row['lanczos_eigenvalue']:.4g} (largest λ).",
                "",
                f"Loops: {'`unroll=True` (straight-line)' if row['unroll'] else 'lax.while_loop / fori_loop'}.",
                "",
                "| measurement | median (ms) | training steps | first call incl. compile (s) |",
                "|---|---|---|---|",
            ]
            for k, v in row["measure_ms"].items():
                lines.append(f"| {k} | {v:.1f} | {row['ratio'][k]:.1f} | {row['first_call_s'][k]:.1f} |")
            if "loop_power_ms" in row:
                lines.append(f"| power iteration, 20 HVPs, **lax.while_loop** (one call) | "
                             f"{row['loop_power_ms']:.1f} | {row['loop_power_ratio']:.1f} | |")
            lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64])
    ap.add_argument("--models", nargs="+", default=["cnn", "mlp"], choices=["mlp", "cnn"])
    ap.add_argument("--no_unroll", action="store_true", help="CNN with lax loops too")
    ap.add_argument("--train_batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args()
    stem = os.path.join(args.out, f"sharpness_measure_{args.tag}")
    cmd = ("python benchmarks/sharpness_measure.py " + " ".join(sys.argv[1:])).strip()
    os.makedirs(args.out, exist_ok=True)

    def save(res: dict) -> None:  # after every (model, batch): a killed run keeps its rows
        res.update(train_batch=args.train_batch, repeats=args.repeats)
        with open(stem + ".json", "w") as f:
            json.dump(res, f, indent=1, ensure_ascii=False)
        write_md(res, stem + ".md", cmd)

    run(args, save)
    print("wrote", stem + ".md")


if __name__ == "__main__":
    main()
