"""One command line and one gin parser for every study.

``python -m experiments.<study>`` accepts the flags of ``python -m experiments.cifar`` plus the
study ones::

    --config FILE.gin          gin file, repeatable (default: the study's full set of arms/configs)
    --gin_binding 'a.b = 1'    raw gin binding, repeatable
    --config.<sel>.<param>=v   becomes the gin binding ``<sel>.<param> = v``
    --data_dir DIR             local dataset directory (never downloads)
    --workdir DIR              runs directory (default ``runs/<study>``; ``runs/<study>_smoke`` with --smoke)
    --smoke                    the study's smoke bindings first (tiny and fast; same code path)
    --write_report             regenerate the committed report in ``experiments/results/``
    --out DIR                  report directory (default: the workdir; ``experiments/results`` with
                               --write_report)
    --no_progress              no progress lines
    --tune                     only the study's hyper-parameter search on validation data
                               (:mod:`experiments.kit.tune`): prints it with the lines to put in the
                               gin files and writes ``<workdir>/tune.json``; no arm, no report

Bindings apply in this order (later wins): smoke bindings, ``--gin_binding``, ``--config.*``,
``--data_dir``. A malformed file or binding, an unknown selector or a bad field value prints
``error: ...`` (naming the file or override) and exits with status 2; a missing dataset prints
``data error: ...`` (status 2); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments.common.config import ExperimentConfig, make_config, parse_gin_config, split_overrides
from experiments.common.metrics import write_json
from experiments.kit import tune as kit_tune
from experiments.kit.report import RESULTS_DIR, provenance

__all__ = ["Study", "StudyArgs", "parse_study_config", "parse_with_experiment", "build_parser", "study_main"]


def parse_study_config(files: Sequence[str], bindings: Sequence[str], make: Callable[[], Any]) -> Any:
    """Parse gin ``files`` then ``bindings`` (later wins) and return ``make()`` (the study's
    gin-configurable config class).

    Raises:
      ValueError: an unreadable or malformed file (including ``tokenize.TokenError``), a bad
        binding, an unknown selector or parameter, or a bad field value; the message names the
        file or says it was an override.

    Example:
      >>> import dataclasses, gin
      >>> @dataclasses.dataclass(frozen=True)
      ... class Demo:
      ...     seed: int = 0
      >>> make = gin.external_configurable(Demo, name="demo_doc")
      >>> parse_study_config([], ["demo_doc.seed = 3"], make).seed
      3
    """
    try:
        return parse_gin_config(files, bindings, make)
    except TypeError as e:  # gin wraps a wrong field type (check_field_types) in a TypeError
        raise ValueError(str(e)) from e


def parse_with_experiment(files: Sequence[str], bindings: Sequence[str], make: Callable[[], Any]
                          ) -> tuple[ExperimentConfig, Any]:
    """Like :func:`parse_study_config`, returning ``(ExperimentConfig, study config)`` read from the
    same gin state (for studies that also use the trainer's ``data``/``model``/``optim``/``train``)."""
    return parse_study_config(files, bindings, lambda: (make_config(), make()))


@dataclasses.dataclass(frozen=True)
class StudyArgs:
    """What a study's ``run`` receives from the command line.

    Attributes:
      configs: gin files to run (``--config`` files, else the study's defaults).
      custom: whether ``--config`` was given.
      bindings: gin bindings for every config, in order (smoke, raw, overrides, data_dir).
      workdir: runs directory.
      default_workdir: ``--workdir`` was not given (``workdir`` is ``runs/<study>[_smoke]``).
      report_dir: where the report goes (None: no report).
      smoke: ``--smoke``.
      progress: print progress lines.
      provenance: command, commit and date for the report.
      tune: ``--tune`` (only the study's search runs).
    """

    configs: tuple[str, ...]
    custom: bool
    bindings: tuple[str, ...]
    workdir: str
    report_dir: str | None
    default_workdir: bool = True
    smoke: bool = False
    progress: bool = True
    provenance: dict = dataclasses.field(default_factory=dict)
    tune: bool = False


@dataclasses.dataclass(frozen=True)
class Study:
    """A study as the command line sees it.

    Attributes:
      name: ``python -m experiments.<name>``; default workdir ``runs/<name>``.
      description: one line for ``--help``.
      run: ``run(StudyArgs) -> study dict``; writes the report into ``report_dir`` when given.
      print_results: prints the study's headline table.
      default_configs: the gin files of the full study.
      smoke_bindings: bindings that make every config tiny (``--smoke``).
      data_dir_bindings: bindings set to ``--data_dir``.
      report_needs_all: the report needs the full set of configs (arms studies): with ``--config``
        no report is written and ``--write_report`` is refused.
      search: the study's hyper-parameter search on validation data (``--tune``; see
        :mod:`experiments.kit.tune`), or None.
    """

    name: str
    description: str
    run: Callable[[StudyArgs], dict]
    print_results: Callable[[dict], None]
    default_configs: tuple[str, ...]
    smoke_bindings: tuple[str, ...] = ()
    data_dir_bindings: tuple[str, ...] = ("data.data_dir",)
    report_needs_all: bool = False
    search: kit_tune.StudySearch | None = None


def build_parser(study: Study) -> argparse.ArgumentParser:
    """The argparse parser of ``study`` (``--config.*`` overrides are split off beforehand)."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{study.name}", description=study.description,
                                epilog="Overrides: --config.<selector>.<param>=<value>.")
    p.add_argument("--config", action="append", default=[], metavar="FILE.gin",
                   help="gin config file (repeatable; default: the full study)")
    p.add_argument("--gin_binding", action="append", default=[], metavar="BINDING", help="raw gin binding")
    p.add_argument("--data_dir", default=None, help="local dataset directory (never downloads)")
    p.add_argument("--workdir", default=None, help=f"runs directory (default runs/{study.name})")
    p.add_argument("--smoke", action="store_true", help="tiny, fast version of every run (same code path)")
    p.add_argument("--write_report", action="store_true",
                   help="regenerate the committed report in experiments/results/")
    p.add_argument("--out", default=None, help="report directory (default: the workdir)")
    p.add_argument("--no_progress", action="store_true", help="no progress lines")
    p.add_argument("--tune", action="store_true",
                   help="only the hyper-parameter search on validation data: print it and the lines to put in "
                        "the gin files, write <workdir>/tune.json (no arm, no report)")
    return p


def _resolve(study: Study, argv: Sequence[str]) -> StudyArgs:
    overrides, rest = split_overrides(list(argv))
    a = build_parser(study).parse_args(rest)
    if a.tune and a.write_report:
        raise ValueError("--tune runs only the validation search; it cannot be combined with --write_report.")
    if a.tune and study.search is None:
        raise ValueError(f"--tune: experiments.{study.name} has no hyper-parameter search.")
    if a.write_report and a.smoke:
        raise ValueError("--write_report regenerates the committed report; it cannot be combined with --smoke.")
    if a.write_report and a.config and study.report_needs_all:
        raise ValueError("--write_report needs the full study (no --config).")
    bindings = [*(study.smoke_bindings if a.smoke else ()), *a.gin_binding, *overrides]
    if a.data_dir:
        if not study.data_dir_bindings:
            raise ValueError(f"--data_dir: experiments.{study.name} reads no dataset files (its data ships with "
                             "the software or is synthetic).")
        bindings += [f"{b} = {a.data_dir!r}" for b in study.data_dir_bindings]
    workdir = a.workdir or os.path.join("runs", study.name + ("_smoke" if a.smoke else ""))
    if a.config and study.report_needs_all:
        report_dir = None
    else:
        report_dir = a.out or (RESULTS_DIR if a.write_report else workdir)
    return StudyArgs(configs=tuple(a.config or study.default_configs), custom=bool(a.config),
                     bindings=tuple(bindings), workdir=workdir, report_dir=report_dir,
                     default_workdir=a.workdir is None, smoke=a.smoke,
                     progress=not a.no_progress, tune=a.tune,
                     provenance=provenance(["python", "-m", f"experiments.{study.name}", *argv]))


def study_main(study: Study, argv: Sequence[str] | None = None) -> int:
    """Run ``study`` from the command line ``argv`` (default ``sys.argv[1:]``); returns the exit
    status (0, 2 after ``error: ...``/``data error: ...``, 130 on Ctrl-C).

    Example:
      >>> demo = Study("demo", "", run=lambda a: {"bindings": a.bindings, "report": a.report_dir},
      ...              print_results=lambda s: print(s["bindings"], s["report"]), default_configs=(),
      ...              smoke_bindings=("demo.steps = 2",))
      >>> study_main(demo, ["--smoke", "--config.demo.seed=3", "--no_progress"])
      ('demo.steps = 2', 'demo.seed = 3') runs/demo_smoke
      0
      >>> study_main(demo, ["--smoke", "--write_report"])
      2
      >>> study_main(demo, ["--tune"])  # demo has no search
      2
    """
    from experiments.common.data import DataError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _resolve(study, argv)
        if args.tune:
            return _tune_only(study, args)
        result = study.run(args)
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    study.print_results(result)
    where = f" -> report in {args.report_dir}" if args.report_dir else ""
    if isinstance(result, dict) and "wall_time_s" in result:
        print(f"wall time {result['wall_time_s']:.1f} s{where}", file=sys.stderr)
    return 0


def _tune_only(study: Study, args: StudyArgs) -> int:
    """``--tune``: run ``study.search`` alone, write ``<workdir>/tune.json``, print the search and the lines
    to put in the gin files (a gin file that disagrees is a warning here, never an error)."""
    t0 = time.perf_counter()
    records = study.search.run(args)
    kit_tune.enforce(records, study.search.selector, refuse=False)
    path = os.path.join(args.workdir, "tune.json")
    write_json(path, {"tuning": records, "provenance": args.provenance})
    print(study.search.render(records))
    lines = kit_tune.gin_lines(records, study.search.selector)
    if lines:
        print("\nselected (put in the gin files):\n" + "\n".join(lines))
    print(f"wall time {time.perf_counter() - t0:.1f} s -> search in {path}", file=sys.stderr)
    return 0
