"""Small helpers shared by the loss-paper studies: the command lines (``study_parser`` +
``parse_study_config`` for ``experiments.noisy_labels`` and ``experiments.calibration``,
``arms_study_main`` for ``grokking``, ``regression`` and ``distill``), resumable result files, a
flax MLP, chunked evaluation and table formatting.

Both studies read their own gin selector (``noisy_labels`` / ``calibration``) next to the
common ``data``/``model``/``optim``/``train`` selectors, so a study config is parsed with
:func:`experiments.common.config.parse_config` and then the study's own configurable is
called on the same gin state (:func:`parse_study_config`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.common.config import ExperimentConfig, parse_config, split_overrides
from experiments.common.metrics import fmt_mean_std, mean_std, write_json  # noqa: F401 (re-exported)
from experiments.common.small_models import finished_run as load_done  # noqa: F401 (re-exported)

__all__ = ["MLP", "study_parser", "parse_study_config", "arms_study_main", "load_done", "save_done", "mean_std",
           "fmt_mean_std", "chunked_apply", "ROOT"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MLP(nn.Module):
    """Flatten, then ``depth`` × (Dense(hidden) → ReLU), then Dense(num_classes).

    Accepts (and ignores) ``train`` so it is called like the BatchNorm models.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> m = MLP(hidden=8, depth=1, num_classes=3)
        >>> v = m.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
        >>> m.apply(v, jnp.zeros((2, 8, 8, 1))).shape
        (2, 3)
    """

    hidden: int = 256
    depth: int = 2
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


def study_parser(prog: str, description: str, default_config: str) -> argparse.ArgumentParser:
    """The common command line of a study: ``--config`` (repeatable), ``--data_dir``,
    ``--workdir``, ``--out``, ``--gin_binding``; ``--config.<sel>.<param>=v`` is split off
    beforehand by :func:`split_overrides`."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                epilog="Overrides: --config.<selector>.<param>=<value>.")
    p.add_argument("--config", action="append", default=[], metavar="FILE.gin",
                   help=f"gin config file (repeatable; default {default_config}: the full study)")
    p.add_argument("--gin_binding", action="append", default=[], metavar="BINDING", help="raw gin binding")
    p.add_argument("--data_dir", default=None, help="local dataset directory (never downloads)")
    p.add_argument("--workdir", default=None, help="directory of the per-run results (resumable)")
    p.add_argument("--out", default=None, help="report directory (default experiments/results)")
    return p


def parse_study_config(argv: Sequence[str], parser: argparse.ArgumentParser, default_config: str,
                       make_study: Callable[[], Any], data_dir_binding: str | None = None,
                       ) -> tuple[ExperimentConfig, Any, argparse.Namespace]:
    """Parse a study's command line into ``(ExperimentConfig, study config, args)``.

    ``make_study`` is the study's gin configurable (called after the files and bindings are
    parsed). ``--data_dir`` becomes ``data.data_dir`` and, if given, ``data_dir_binding`` too.

    Raises:
      ValueError: a malformed override, config file or field value (the message names it).
    """
    bindings, rest = split_overrides(list(argv))
    args = parser.parse_args(rest)
    files = args.config or [os.path.join(ROOT, default_config)]
    if args.data_dir:
        bindings.append(f"data.data_dir = {args.data_dir!r}")
        if data_dir_binding:
            bindings.append(f"{data_dir_binding} = {args.data_dir!r}")
    exp = parse_config(files, list(args.gin_binding) + bindings)
    try:
        study = make_study()
    except TypeError as e:  # gin wraps a bad field type in a TypeError
        raise ValueError(str(e)) from e
    return exp, study, args


def arms_study_main(argv: Sequence[str], *, name: str, description: str,
                    run_study: Callable[..., dict], print_results: Callable[[dict], None]) -> int:
    """Command line of the studies built from arms (``grokking``, ``regression``, ``distill``).

    ``python -m experiments.<name> [--config ARM.gin ...] [--workdir W] [--out O] [--no_progress]
    [--config.<name>.<field>=v ...]``: without ``--config`` the full study runs and writes its report to
    ``--out``; with ``--config`` only those arms run (no report). ``run_study(configs, bindings, workdir,
    out, progress=...)`` does the work and ``print_results(study)`` prints its tables.

    Returns the exit status: 0, or 2 after printing ``error: ...`` for a malformed override, config file
    or field value.

    Example:
      >>> def run(configs, bindings, workdir, out, progress):
      ...     return {"bindings": bindings, "wall_time_s": 0.0}
      >>> arms_study_main(["--config.demo.seed=3", "--no_progress"], name="demo", description="",
      ...                 run_study=run, print_results=lambda study: print(study["bindings"]))
      ['demo.seed = 3']
      wall time 0.0 s
      0
    """
    try:
        bindings, rest = split_overrides(list(argv))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description,
                                epilog=f"Overrides: --config.{name}.<field>=<value>.")
    p.add_argument("--config", action="append", default=[], metavar="FILE.gin",
                   help="run only these arms (default: the full study, which also writes the report)")
    p.add_argument("--workdir", default=os.path.join("runs", name), help="runs directory")
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"), help="report directory (full study)")
    p.add_argument("--no_progress", action="store_true", help="no progress lines")
    a = p.parse_args(rest)
    try:
        study = run_study(a.config or None, bindings, a.workdir, None if a.config else a.out,
                          progress=not a.no_progress)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_results(study)
    print(f"wall time {study['wall_time_s']:.1f} s")
    return 0


def save_done(workdir: str, results: dict) -> None:
    """Write ``results.json`` atomically (the marker that the run is finished)."""
    write_json(os.path.join(workdir, "results.json"), results)


def chunked_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chunk: int) -> jax.Array:
    """``fn`` over the leading axis of ``x`` in chunks of ``chunk`` rows (inside jit: a
    ``lax.map`` over a zero-padded ``[n_chunks, chunk, ...]`` view); returns ``fn``'s rows for
    the ``len(x)`` real inputs only."""
    n = x.shape[0]
    c = max(1, min(chunk, n))
    n_chunks = -(-n // c)
    pad = n_chunks * c - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    out = jax.lax.map(fn, xp.reshape(n_chunks, c, *x.shape[1:]))
    out = out.reshape(n_chunks * c, *out.shape[2:])
    return out[:n]
