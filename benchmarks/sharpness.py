"""Step-time cost of the sharpness-aware transforms relative to plain SGD, in one run.

Small CNN on digits-sized input (8×8×1, batch 128, 10 classes; sklearn ``load_digits`` when
available, random data otherwise). Each method's full train step (forward/backward passes,
optimizer update, parameter update) is one jitted function; after warm-up we time ``--steps``
steps each, interleaving the methods round-robin so that machine-load drift hits all of them
alike, and report the median step time and its ratio to SGD.

Targets (SAF paper Tables 1 and 3; docs/design/sam_family.md §3): two-pass SAM/ASAM/AACE-SAM ≥ 2.0× (floor),
target ≤ 2.1×; SAF ≤ 1.05×; MESA ≤ 1.25×.

Usage: ``python benchmarks/sharpness.py [--steps 200] [--batch 128] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax import sharpness as S
from lossjax.losses.aace import aace_loss
from lossjax.losses.trajectory import trajectory_kl_loss  # noqa: F401  (used via penalty)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


def ce(z, y):
    return optax.softmax_cross_entropy_with_integer_labels(z, y)


def data(batch: int):
    try:
        from sklearn.datasets import load_digits

        d = load_digits()
        reps = -(-batch // len(d.target))  # tile when batch > 1797
        x = (np.tile(d.images, (reps, 1, 1))[:batch] / 16.0).astype(np.float32)[..., None]
        y = np.tile(d.target, reps)[:batch].astype(np.int32)
        src = "sklearn load_digits"
    except Exception:  # noqa: BLE001
        rng = np.random.default_rng(0)
        x = rng.random((batch, 8, 8, 1), np.float32)
        y = rng.integers(0, 10, batch).astype(np.int32)
        src = "random"
    return jnp.asarray(x), jnp.asarray(y), src


def make_steps(model, n_examples):
    apply = model.apply
    base = lambda: optax.sgd(0.05, momentum=0.9)  # noqa: E731
    steps = {}

    def two_pass(tx, ascent):
        @jax.jit
        def step(params, state, x, y, idx, epoch):
            loss = lambda p: ce(apply(p, x), y).mean()  # noqa: E731
            asc = (lambda p: aace_loss(apply(p, x), y).mean()) if ascent == "aace" else loss
            g = jax.grad(asc)(params)
            u, state = tx.update(g, state, params, grad_fn=jax.grad(loss))
            return optax.apply_updates(params, u), state

        return tx, step

    tx = base()

    @jax.jit
    def sgd_step(params, state, x, y, idx, epoch):
        g = jax.grad(lambda p: ce(apply(p, x), y).mean())(params)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    steps["sgd"] = (tx, sgd_step)
    steps["sam"] = two_pass(optax.chain(S.sam(0.05), base()), "ce")
    steps["asam"] = two_pass(optax.chain(S.asam(0.5), base()), "ce")
    steps["aace_sam"] = two_pass(optax.chain(S.aace_sam(0.2), base()), "aace")

    saf_tx = optax.chain(
        S.saf(0.3, 5.0, delay_epochs=2, start_epoch=0, num_examples=n_examples, num_classes=10), base()
    )

    @jax.jit
    def saf_step(params, state, x, y, idx, epoch):
        t = S.saf_targets(state, idx, epoch)

        def loss(p):
            z = apply(p, x)
            return ce(z, y).mean() + t.penalty(z), z

        (_, z), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, state = saf_tx.update(g, state, params, logits=z, sample_idx=idx, epoch=epoch)
        return optax.apply_updates(params, u), state

    steps["saf"] = (saf_tx, saf_step)
    mesa_tx = optax.chain(base(), S.mesa(0.8, 5.0, start_epoch=0))

    @jax.jit
    def mesa_step(params, state, x, y, idx, epoch):
        t = S.mesa_targets(state, apply(S.mesa_params(state), x), epoch)

        def loss(p):
            z = apply(p, x)
            return ce(z, y).mean() + t.penalty(z)

        g = jax.grad(loss)(params)
        u, state = mesa_tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    steps["mesa"] = (mesa_tx, mesa_step)
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    x, y, src = data(args.batch)
    idx = jnp.arange(args.batch, dtype=jnp.int32)
    epoch = jnp.asarray(3, jnp.int32)
    model = CNN()
    params0 = model.init(jax.random.key(0), x)
    steps = make_steps(model, args.batch)
    carry = {}
    for name, (tx, fn) in steps.items():
        p, s = params0, tx.init(params0)
        for _ in range(args.warmup):
            p, s = fn(p, s, x, y, idx, epoch)
        jax.block_until_ready(p)
        carry[name] = (p, s)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.steps):
        for name, (_tx, fn) in steps.items():
            p, s = carry[name]
            t0 = time.perf_counter()
            p, s = fn(p, s, x, y, idx, epoch)
            jax.block_until_ready((p, s))
            times[name].append(time.perf_counter() - t0)
            carry[name] = (p, s)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: med[k] / med["sgd"] for k in med}
    targets = {"sam": 2.1, "asam": 2.1, "aace_sam": 2.1, "saf": 1.05, "mesa": 1.25}
    res = {
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "data": src,
        "batch": args.batch,
        "steps_timed": args.steps,
        "median_step_ms": {k: round(v * 1e3, 4) for k, v in med.items()},
        "ratio_to_sgd": {k: round(v, 3) for k, v in ratio.items()},
        "target_ratio": targets,
        "meets_target": {k: bool(ratio[k] <= t) for k, t in targets.items()},
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "sharpness" + (f"_{args.tag}" if args.tag else ""))
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    lines = [
        f"# Sharpness-aware step cost vs SGD ({res['platform']}: {res['device']}, jax {res['jax']})",
        "",
        f"Small CNN, 8×8×1 input ({src}), batch {args.batch}, median of {args.steps} jitted steps after "
        f"{args.warmup} warm-up steps, methods interleaved round-robin.",
        "",
        "| method | median step (ms) | ratio to SGD | target | meets |",
        "|---|---|---|---|---|",
    ]
    for k in steps:
        tgt = targets.get(k)
        lines.append(
            f"| {k} | {med[k] * 1e3:.3f} | {ratio[k]:.3f} | {'' if tgt is None else f'≤ {tgt}'} | "
            f"{'' if tgt is None else ('yes' if ratio[k] <= tgt else 'no')} |"
        )
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
