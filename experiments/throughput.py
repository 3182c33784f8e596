"""Measure training throughput (images/s) of configs on synthetic data of the dataset's shape.

Used to fill the "expected runtime" lines of ``configs/**.gin`` on a device where the real
datasets are not available. Example::

    python -m experiments.throughput --config configs/cifar10/sam.gin --steps 30 \\
        --out experiments/results/throughput.jsonl

The timed steps exclude compilation; data loading/augmentation (NumPy) is included, as in a
real run. Like ``experiments.cifar``, the benchmark adds XLA's YNNPACK fusions to ``XLA_FLAGS``
on CPU unless ``--no_ynn`` (see ``experiments/common/xla_cpu.py``). ``--compare_ynn R`` measures
both settings in ``R`` alternating rounds of fresh processes (so both see the same machine load)
and prints each round's ratio of step times (with / without)::

    python -m experiments.throughput --config configs/digits/sgd.gin --config configs/digits/sam.gin \
        --compare_ynn 3 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import numpy as np

__all__ = ["measure", "compare_ynn", "main"]

_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100), "fashion_mnist": ((28, 28, 1), 10),
           "digits": ((8, 8, 1), 10), "synthetic": ((8, 8, 1), 4)}


def measure(config_file: str, *, steps: int = 20, warmup: int = 3, bindings: list[str] | None = None) -> dict:
    """Images/s and ms/step of the jitted train step of ``config_file`` (synthetic data)."""
    import jax

    from experiments.common import augment as aug
    from experiments.common import steps as S
    from experiments.common.config import parse_config
    from experiments.common.data import synthetic_dataset
    from experiments.common.train import Trainer
    from experiments.common.xla_cpu import describe

    cfg = parse_config([config_file], bindings or [])
    shape, classes = _SHAPES[cfg.data.dataset]
    bs = cfg.data.batch_size
    ds = synthetic_dataset(bs * (steps + warmup), 2 * bs, image_shape=shape, num_classes=classes)
    with tempfile.TemporaryDirectory() as wd:
        tr = Trainer(cfg, wd, dataset=ds)
        t0 = time.perf_counter()
        times = []
        for i in range(steps + warmup):
            b = aug.train_batch(ds.x_train, ds.y_train, batch_size=bs, seed=0, epoch=0, step=i, augment=tr.augment)
            batch = S.put_batch({"x": b.x, "y": b.y, "idx": b.idx, "epoch": np.int32(6)}, tr.batch_sharding,
                                tr.replicated)
            tr.state, m = tr.train_step(tr.state, batch)
            jax.block_until_ready(tr.state)
            times.append(time.perf_counter())
            if i == 0:
                compile_s = times[0] - t0
        dt = (times[-1] - times[warmup - 1]) / steps
        per_step = np.diff(times[warmup - 1:])  # min/median resist a loaded machine better than the mean
    return {"config": config_file, "optimizer": cfg.optim.name, "model": cfg.model.name, "dtype": cfg.model.dtype,
            "batch_size": bs, "ms_per_step": 1e3 * dt, "images_per_s": bs / dt,
            "ms_per_step_median": 1e3 * float(np.median(per_step)), "ms_per_step_min": 1e3 * float(per_step.min()),
            "compile_s": compile_s,
            "num_params": tr.num_params, "device": jax.local_devices()[0].device_kind,
            "num_devices": len(jax.local_devices()), "steps": steps, "bindings": bindings or [],
            "ynn_fusion": describe()["ynn_fusion"]}


def _child_env(ynn: bool) -> dict:
    from experiments.common.xla_cpu import YNN_FLAG, ynn_value

    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    if ynn_value(flags) is not None:  # measure the policy's two arms, not the user's value
        flags = " ".join(t for t in flags.split() if not t.startswith(YNN_FLAG))
    env["XLA_FLAGS"] = flags
    env.pop("LOSSJAX_YNN", None)
    return env


def compare_ynn(configs: list[str], *, rounds: int = 3, steps: int = 20, warmup: int = 3,
                bindings: list[str] | None = None, timeout: float = 3600.0) -> Iterator[dict]:
    """Step times with and without YNNPACK fusions in ``rounds`` alternating rounds.

    Each round runs one fresh process per setting (order swapped every round) measuring all
    ``configs``; yields, as each round ends, one record per config with ``ms_off``, ``ms_on`` (mean
    step times), ``ratio = ms_on / ms_off`` (below 1: the fusions are faster) and the same ratio
    of the median (``ratio_median``) and fastest (``ratio_min``) steps.
    """
    for r in range(rounds):
        res: dict[bool, list[dict]] = {}
        for ynn in ((False, True) if r % 2 == 0 else (True, False)):
            cmd = [sys.executable, "-m", "experiments.throughput", "--steps", str(steps), "--warmup", str(warmup)]
            for c in configs:
                cmd += ["--config", c]
            for b in bindings or []:
                cmd += ["--gin_binding", b]
            if not ynn:
                cmd.append("--no_ynn")
            p = subprocess.run(cmd, env=_child_env(ynn), capture_output=True, text=True, timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"throughput child failed ({p.returncode}): {p.stderr[-2000:]}")
            res[ynn] = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        for off, on in zip(res[False], res[True], strict=True):
            assert off["ynn_fusion"] is None and on["ynn_fusion"], (off, on)
            yield {"round": r, "config": off["config"], "optimizer": off["optimizer"], "model": off["model"],
                   "batch_size": off["batch_size"], "bindings": off["bindings"], "ms_off": off["ms_per_step"],
                   "ms_on": on["ms_per_step"], "ratio": on["ms_per_step"] / off["ms_per_step"],
                   "ratio_median": on["ms_per_step_median"] / off["ms_per_step_median"],
                   "ratio_min": on["ms_per_step_min"] / off["ms_per_step_min"],
                   "ms_min_off": off["ms_per_step_min"], "ms_min_on": on["ms_per_step_min"],
                   "compile_s_off": off["compile_s"], "compile_s_on": on["compile_s"]}


def main(argv: list[str] | None = None, *, configure_xla: bool = False) -> int:
    """Command-line entry point (``configure_xla``: apply the XLA:CPU flag policy, as the command
    line does; in-process callers keep their process's XLA settings)."""
    p = argparse.ArgumentParser(prog="python -m experiments.throughput")
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--gin_binding", action="append", default=[], metavar="BINDING", help="raw gin binding")
    p.add_argument("--binding", action="append", default=[], help=argparse.SUPPRESS)  # deprecated alias
    p.add_argument("--no_ynn", action="store_true", help="do not add XLA's YNNPACK fusions to XLA_FLAGS")
    p.add_argument("--compare_ynn", type=int, default=0, metavar="R",
                   help="measure with and without YNNPACK fusions in R alternating rounds (fresh processes)")
    p.add_argument("--out", default=None, help="append one JSON line per config (per round) here")
    a = p.parse_args(argv)
    if a.binding:
        print("warning: --binding is deprecated; use --gin_binding", file=sys.stderr)
    bindings = a.gin_binding + a.binding
    if a.compare_ynn:
        recs = compare_ynn(a.config, rounds=a.compare_ynn, steps=a.steps, warmup=a.warmup, bindings=bindings)
    else:
        if configure_xla:
            from experiments.common import xla_cpu

            xla_cpu.configure(disable=a.no_ynn)
        recs = (measure(c, steps=a.steps, warmup=a.warmup, bindings=bindings) for c in a.config)
    for r in recs:
        print(json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(configure_xla=True))
