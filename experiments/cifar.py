"""Train and evaluate one image-classification run from gin configs.

Usage::

    python -m experiments.cifar --config configs/digits/aace_sam.gin
    python -m experiments.cifar --config configs/cifar10/aace_sam.gin --data_dir ~/data \\
        --workdir runs/c10_aace --config.train.epochs=10 --config.optim.rho=0.1

``--config`` may be repeated (later files override earlier ones); ``--config.<selector>.<param>=
<value>`` becomes the gin binding ``<selector>.<param> = <value>``; ``--gin_binding "a.b = 1"``
passes a raw binding. Rerunning with the same ``--workdir`` resumes from its checkpoint.
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
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from experiments.common.config import parse_config, split_overrides

    bindings, rest = split_overrides(argv)
    args = _parser().parse_args(rest)
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
    from experiments.common.train import train_and_evaluate

    try:
        res = train_and_evaluate(cfg, workdir, argv=["python -m experiments.cifar", *argv])
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    acc = res["final_test_accuracy"]
    print(f"{cfg.optim.name} on {cfg.data.dataset}/{cfg.model.name}: final test accuracy "
          f"{100 * acc:.2f}% (best {100 * res['best_test_accuracy']:.2f}%), {res['wall_time_s']:.1f} s, "
          f"{res['images_per_s_median'] or 0:.0f} img/s -> {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
