"""Train and evaluate one image-classification run from gin configs.

Usage::

    python -m experiments.cifar --config configs/digits/aace_sam.gin
    python -m experiments.cifar --config configs/cifar10/aace_sam.gin --data_dir ~/data \\
        --workdir runs/c10_aace --config.train.epochs=10 --config.optim.rho=0.1

``--config`` may be repeated (later files override earlier ones); ``--config.<selector>.<param>=
<value>`` becomes the gin binding ``<selector>.<param> = <value>``; ``--gin_binding "a.b = 1"``
passes a raw binding. On CPU, XLA's YNNPACK fusions are added to ``XLA_FLAGS`` unless
``--no_ynn`` or ``LOSSJAX_YNN=0`` (a value already in ``XLA_FLAGS`` is kept; recorded in
``env.json``; see ``experiments/results/throughput_cpu.md``). Rerunning with the same
``--workdir`` resumes from its checkpoint (also after Ctrl-C or SIGTERM, which write one
mid-epoch; exit codes 130 and 143).

Several processes (one global batch and mesh over all their devices; see the README, "Many
processes")::

    python -m experiments.cifar --config configs/digits/sgd.gin --workdir runs/mp \
        --coordinator_address 127.0.0.1:12345 --num_processes 2 --process_id 0 &
    python -m experiments.cifar --config configs/digits/sgd.gin --workdir runs/mp \
        --coordinator_address 127.0.0.1:12345 --num_processes 2 --process_id 1

or the environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``; ``--distributed`` lets ``jax.distributed.initialize`` detect a cluster
(SLURM, Open MPI, Kubernetes, Cloud TPU).
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.cifar", description=__doc__.split("\n\n")[0],
                                epilog="Overrides: --config.<selector>.<param>=<value> (selectors: data, model, "
                                       "optim, train).")
    p.add_argument("--config", action="append", default=[], metavar="FILE.gin", help="gin config file (repeatable)")
    p.add_argument("--gin_binding", action="append", default=[], metavar="BINDING", help="raw gin binding")
    p.add_argument("--data_dir", default=None, help="local dataset directory (never downloads)")
    p.add_argument("--workdir", default=None, help="output directory (default runs/<config>_s<seed>)")
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--keep_checkpoints", type=int, default=2, metavar="K",
                   help="keep the last K epoch checkpoints (plus the best test accuracy); default 2")
    g.add_argument("--async_checkpoint", action="store_true", help="write checkpoints in the background")
    g.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard event files (tb/)")
    x = p.add_argument_group("XLA:CPU")
    x.add_argument("--no_ynn", action="store_true",
                   help="do not add --xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce to XLA_FLAGS "
                        "(added by default; also LOSSJAX_YNN=0; a value in your XLA_FLAGS is always kept)")
    m = p.add_argument_group("several processes (jax.distributed)")
    m.add_argument("--coordinator_address", default=None, metavar="HOST:PORT",
                   help="process 0's address (or JAX_COORDINATOR_ADDRESS)")
    m.add_argument("--num_processes", type=int, default=None, help="number of processes (or JAX_NUM_PROCESSES)")
    m.add_argument("--process_id", type=int, default=None, help="this process's id (or JAX_PROCESS_ID)")
    m.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() with cluster auto-detection")
    return p


def main(argv: list[str] | None = None, *, configure_xla: bool = False) -> int:
    """Command-line entry point; returns the exit code. ``configure_xla`` applies the XLA:CPU
    flag policy of ``experiments/common/xla_cpu.py`` (YNNPACK fusions unless ``--no_ynn``); the
    command line does, in-process callers (tests, notebooks) keep their process's XLA settings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from experiments.common.config import parse_config, split_overrides

    bindings, rest = split_overrides(argv)
    args = _parser().parse_args(rest)
    if args.keep_checkpoints < 1:
        print(f"error: --keep_checkpoints must be >= 1, got {args.keep_checkpoints}", file=sys.stderr)
        return 2
    if configure_xla:
        from experiments.common import xla_cpu

        xla_cpu.configure(disable=args.no_ynn)  # before JAX creates its backends; recorded in env.json
    from experiments.common import distributed

    try:
        distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                               auto=args.distributed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.data_dir:
        bindings.append(f"data.data_dir = {args.data_dir!r}")
    try:
        cfg = parse_config(args.config, list(args.gin_binding) + bindings)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir
    if workdir is None:
        stem = os.path.splitext(os.path.basename(args.config[-1]))[0] if args.config else "default"
        parent = os.path.basename(os.path.dirname(args.config[-1])) if args.config else cfg.data.dataset
        workdir = os.path.join("runs", f"{parent}_{stem}_s{cfg.train.seed}")
    from experiments.common.data import DataError
    from experiments.common.train import Preempted, ResumeRefused, train_and_evaluate

    try:
        res = train_and_evaluate(cfg, workdir, argv=["python -m experiments.cifar", *argv],
                                 keep_checkpoints=args.keep_checkpoints, async_checkpoint=args.async_checkpoint,
                                 tensorboard=not args.no_tensorboard)
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    except ResumeRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted:
        return 143
    except KeyboardInterrupt:
        return 130
    if distributed.process_count() > 1 and not distributed.is_primary():
        return 0
    acc = res["final_test_accuracy"]
    print(f"{cfg.optim.name} on {cfg.data.dataset}/{cfg.model.name}: final test accuracy "
          f"{100 * acc:.2f}% (best {100 * res['best_test_accuracy']:.2f}%), {res['wall_time_s']:.1f} s, "
          f"{res['images_per_s_median'] or 0:.0f} img/s -> {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(configure_xla=True))
