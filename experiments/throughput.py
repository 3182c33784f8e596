"""Measure training throughput (images/s) of configs on synthetic data of the dataset's shape.

Used to fill the "expected runtime" lines of ``configs/**.gin`` on a device where the real
datasets are not available. Example::

    python -m experiments.throughput --config configs/cifar10/sam.gin --steps 30 \\
        --out experiments/results/throughput.jsonl

The timed steps exclude compilation; data loading/augmentation (NumPy) is included, as in a
real run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import jax
import numpy as np

__all__ = ["measure", "main"]

_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100), "fashion_mnist": ((28, 28, 1), 10),
           "digits": ((8, 8, 1), 10), "synthetic": ((8, 8, 1), 4)}


def measure(config_file: str, *, steps: int = 20, warmup: int = 3, bindings: list[str] | None = None) -> dict:
    """Images/s and ms/step of the jitted train step of ``config_file`` (synthetic data)."""
    from experiments.common import augment as aug
    from experiments.common import steps as S
    from experiments.common.config import parse_config
    from experiments.common.data import synthetic_dataset
    from experiments.common.train import Trainer

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
    return {"config": config_file, "optimizer": cfg.optim.name, "model": cfg.model.name, "dtype": cfg.model.dtype,
            "batch_size": bs, "ms_per_step": 1e3 * dt, "images_per_s": bs / dt, "compile_s": compile_s,
            "num_params": tr.num_params, "device": jax.local_devices()[0].device_kind,
            "num_devices": len(jax.local_devices()), "steps": steps, "bindings": bindings or []}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.throughput")
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--binding", action="append", default=[])
    p.add_argument("--out", default=None, help="append one JSON line per config here")
    a = p.parse_args(argv)
    for c in a.config:
        r = measure(c, steps=a.steps, warmup=a.warmup, bindings=a.binding)
        print(json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
