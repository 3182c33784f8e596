"""Hyper-parameter search on validation data, shared by the studies.

A study declares, per searched arm, a :class:`Search` — its grid, the selection criteria, the values
preferred on a tie (the paper's or the released code's) and where they come from — and supplies a
validation function ``validate(cfg, points) -> {metric: array [point, seed]}`` that never touches a
test point. :func:`run_searches` scores every grid point of every searched arm of the given gin files
(optionally cached per arm in the workdir, :mod:`experiments.kit.runs`), selects one point with
:func:`select` and records whether the arm's gin file (plus bindings) holds it; :func:`enforce` refuses
a full-study run whose gin files disagree with the search (a warning with ``--smoke``);
:func:`points_table` and :func:`grid_section` render a search as Markdown and :func:`gin_lines` says what
to put in the gin files. ``--tune`` (:mod:`experiments.kit.cli`) runs only a study's searches.

The record of one searched arm (a plain dict, stored in a report's JSON)::

    {"grid": {field: [values]}, "points": [{field: value}], "criteria": [[metric, "higher"|"lower"]],
     "val": {metric: [[per seed] per point]}, "val_mean": {metric: [per point]}, "selected": index,
     "configured": {field: value in the gin file}, "matches": bool, "preferred": {field: value},
     "source": str, "seeds": [validation seeds], "wall_time_s": float, "skipped": bool}
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from experiments.kit import runs

__all__ = ["Search", "StudySearch", "select", "selection", "search_arm", "run_searches", "enforce", "gin_lines",
           "points_table", "grid_section"]

BETTER = ("higher", "lower")


@dataclasses.dataclass(frozen=True)
class Search:
    """The validation grid of one arm.

    Attributes:
      arm: the arm (gin file stem); its gin file should hold the selected values.
      grid: ``{field: values}`` of the study's config; every combination is tried, the first field
        varying slowest (an empty grid scores the arm's own config: an arm without a knob, for reference).
      criteria: ``((metric, "higher" | "lower"), ...)`` applied lexicographically to the validation
        means (the second breaks exact ties of the first, ...).
      preferred: values preferred on an exact tie of every criterion (the paper's / released code's);
        the point sharing most of them wins, then the first in grid order.
      source: where ``preferred`` comes from (shown in the report).
      fixed: config fields replaced for the validation runs (e.g. ``{"seeds": validation seeds}``).
    """

    arm: str
    grid: Mapping[str, Sequence]
    criteria: tuple[tuple[str, str], ...]
    preferred: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.criteria or any(b not in BETTER for _, b in self.criteria):
            raise ValueError(f"Search {self.arm}: criteria must be (metric, 'higher'|'lower') pairs, got "
                             f"{self.criteria!r}.")
        if not set(self.preferred) <= set(self.grid) or set(self.fixed) & set(self.grid):
            raise ValueError(f"Search {self.arm}: preferred fields must be grid fields and fixed ones must not be.")
        for k, v in self.grid.items():
            if not len(v) or len(set(v)) != len(v):
                raise ValueError(f"Search {self.arm}: grid field {k!r} must be distinct and non-empty, got {v!r}.")

    def points(self) -> list[dict]:
        """Every combination of ``grid``, the first field varying slowest.

        Example:
          >>> Search("a", {"x": (1, 2), "y": (3, 4)}, (("acc", "higher"),)).points()[:3]
          [{'x': 1, 'y': 3}, {'x': 1, 'y': 4}, {'x': 2, 'y': 3}]
        """
        keys = list(self.grid)
        return [dict(zip(keys, v)) for v in itertools.product(*(self.grid[k] for k in keys))]


@dataclasses.dataclass(frozen=True)
class StudySearch:
    """A study's search hook (:attr:`experiments.kit.cli.Study.search`).

    Attributes:
      run: ``run(StudyArgs) -> {arm: record}`` (usually a call of :func:`run_searches`).
      render: the Markdown ``--tune`` prints (:func:`points_table` or :func:`grid_section`).
      selector: the gin selector of the searched fields (for :func:`gin_lines`).
    """

    run: Callable[[Any], dict]
    render: Callable[[dict], str]
    selector: str


def select(means: Mapping[str, Sequence[float]], criteria: Sequence[Sequence[str]],
           points: Sequence[Mapping] | None = None, preferred: Mapping | None = None) -> int:
    """Index of the selected point from the validation ``means`` (``{metric: [per point]}``): the best
    mean of the first criterion, exact ties broken by the next criterion, then by the point sharing most
    values with ``preferred``, then by grid order. A non-finite mean never wins.

    Example (hand-worked: points 0 and 2 tie on ``modes``; 2 has the higher ``hq``):
      >>> m = {"modes": [4.0, 3.0, 4.0], "hq": [0.2, 0.9, 0.5], "dist": [0.3, float("nan"), 0.3]}
      >>> select(m, [("modes", "higher"), ("hq", "higher")])
      2
      >>> select(m, [("dist", "lower")]), select(m, [("dist", "lower")], [{"a": 1}, {"a": 2}, {"a": 3}], {"a": 3})
      (0, 2)
    """
    for _, b in criteria:
        if b not in BETTER:
            raise ValueError(f"a criterion's direction must be one of {BETTER}, got {b!r}.")
    n = len(means[criteria[0][0]])
    points, preferred = points or [{}] * n, preferred or {}

    def key(i: int) -> tuple:
        ks = []
        for metric, better in criteria:
            m = float(means[metric][i])
            ks.append((-m if better == "higher" else m) if np.isfinite(m) else math.inf)
        return (*ks, -sum(points[i].get(k, object()) == v for k, v in preferred.items()), i)

    return min(range(n), key=key)


def selection(record: Mapping) -> dict:
    """The selected point of a search record."""
    return record["points"][record["selected"]]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def search_arm(search: Search, cfg: Any, validate: Callable[[Any, list[dict]], Mapping[str, Any]],
               cache_dir: str | None = None) -> dict:
    """Score every point of ``search`` with ``validate(cfg', points)`` (``cfg'``: ``cfg`` with
    ``search.fixed``) and select one; the record is described in the module docstring.

    With ``cache_dir`` the validation scores are stored there (:func:`experiments.kit.runs.write_run`,
    keyed by ``cfg'`` without the grid fields, plus the grid) and a finished search is reloaded
    (``skipped``); the selection is always redone, so changing the criteria needs no rerun.

    Raises:
      ValueError: ``validate`` returned an array whose first axis is not the number of points, or
        lacks a criterion's metric; a stored search of a different config (see :mod:`experiments.kit.runs`).
    """
    vcfg = dataclasses.replace(cfg, **search.fixed) if search.fixed else cfg
    pts = search.points()
    key = {"config": {k: v for k, v in dataclasses.asdict(vcfg).items() if k not in search.grid},
           "grid": {k: list(v) for k, v in search.grid.items()}}
    done = runs.finished_run(cache_dir, key, require=("val",)) if cache_dir else None
    if done is None:
        t0 = time.perf_counter()
        val = {m: np.asarray(v, dtype=float) for m, v in validate(vcfg, pts).items()}
        bad = [m for m, v in val.items() if v.ndim != 2 or v.shape[0] != len(pts)]
        if bad:
            raise ValueError(f"{search.arm}: validation metrics {bad} are not [point, seed] arrays of "
                             f"{len(pts)} points.")
        done = {"val": {m: v.tolist() for m, v in val.items()}, "wall_time_s": time.perf_counter() - t0}
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            runs.write_run(cache_dir, key, done)
        skipped = False
    else:
        skipped = True
    missing = [m for m, _ in search.criteria if m not in done["val"]]
    if missing:
        raise ValueError(f"{search.arm}: the validation function returned no {missing}.")
    means = {m: np.mean(np.asarray(v, dtype=float), axis=1).tolist() for m, v in done["val"].items()}
    best = select(means, search.criteria, pts, search.preferred)
    configured = {k: getattr(cfg, k) for k in search.grid}
    return {"grid": {k: list(v) for k, v in search.grid.items()}, "points": pts,
            "criteria": [list(c) for c in search.criteria], "val": done["val"], "val_mean": means, "selected": best,
            "configured": configured, "matches": all(_same(configured[k], v) for k, v in pts[best].items()),
            "preferred": dict(search.preferred), "source": search.source,
            "seeds": [int(s) for s in getattr(vcfg, "seeds", ())], "wall_time_s": done["wall_time_s"],
            "skipped": skipped}


def run_searches(configs: Sequence[str], bindings: Sequence[str], *, parse: Callable[..., Any],
                 search_for: Callable[[str, Any], Search | None],
                 validate: Callable[[Any, list[dict]], Mapping[str, Any]], workdir: str | None = None,
                 cache: str | None = None, progress: bool = True) -> dict:
    """:func:`search_arm` for every arm of ``configs`` (gin files, parsed with ``bindings``) that
    ``search_for(arm, cfg)`` gives a :class:`Search`; ``{arm: record}`` in the order of ``configs``.

    Args:
      parse: ``parse(files, bindings) -> cfg`` (the study's config parser).
      search_for: the arm's search, or None (not searched).
      validate: ``validate(cfg, points) -> {metric: array [point, seed]}`` on validation data only.
      workdir, cache: with both, each arm's search is cached in ``<workdir>/<cache>/<arm>``.
      progress: one line per arm on stderr.
    """
    out = {}
    for f in configs:
        arm = os.path.splitext(os.path.basename(f))[0]
        cfg = parse([f], bindings)
        search = search_for(arm, cfg)
        if search is None:
            continue
        cdir = os.path.join(workdir, cache, arm) if workdir and cache else None
        r = out[arm] = search_arm(search, cfg, validate, cdir)
        if progress:
            metric = r["criteria"][0][0]
            sel = ", ".join(f"{k} = {v:g}" for k, v in selection(r).items()) or "(no knob)"
            how = "finished search, skipped" if r["skipped"] else f"{r['wall_time_s']:.1f} s"
            print(f"  tune {arm:14s} validation {metric} {r['val_mean'][metric][r['selected']]:.4f} at {sel} "
                  f"({how})", file=sys.stderr, flush=True)
    return out


def gin_lines(records: Mapping[str, Mapping], selector: str) -> list[str]:
    """What to put in each searched arm's gin file (arms without a knob are left out).

    Example:
      >>> gin_lines({"a": {"points": [{"lr": 0.1, "wd": 0.0}], "selected": 0}}, "seq")
      ['a.gin: seq.lr = 0.1; seq.wd = 0.0']
    """
    return [f"{arm}.gin: " + "; ".join(f"{selector}.{k} = {v!r}" for k, v in selection(r).items())
            for arm, r in records.items() if selection(r)]


def enforce(records: Mapping[str, Mapping], selector: str, *, refuse: bool) -> None:
    """Refuse (``refuse``: ValueError) or warn on stderr when a searched arm's gin file does not hold the
    selected values; the message gives the lines to put in the gin files."""
    stale = [a for a, r in records.items() if not r["matches"]]
    if not stale:
        return
    lines = gin_lines({a: records[a] for a in stale}, selector)
    if refuse:
        raise ValueError(f"the validation search selected other values than the gin files of {stale}; set\n  "
                         + "\n  ".join(lines))
    for a, line in zip(stale, lines):
        print(f"  warning: {a}: its gin file sets {records[a]['configured']}, the validation search selects "
              f"{selection(records[a])} ({line})", file=sys.stderr, flush=True)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def points_table(records: Mapping[str, Mapping], metrics: Sequence[str], fields: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None) -> str:
    """Markdown: one row per arm and grid point, mean ± std (ddof 1) over the validation seeds of each
    of ``metrics``, the selected point marked. ``fields`` (default: every grid field, in first-seen order)
    are the point columns (``labels`` renames their headers); a field an arm does not search shows "–".

    Example:
      >>> r = {"points": [{"lr": 0.1}, {"lr": 1.0}], "selected": 1, "val": {"acc": [[0.5, 0.7], [0.8, 0.8]]}}
      >>> print(points_table({"a": r}, ["acc"]))
      | arm | lr | acc | selected |
      |---|---|---|---|
      | a | 0.1 | 0.600 ± 0.141 |  |
      | a | 1 | 0.800 ± 0.000 | **yes** |
    """
    labels = labels or {}
    fields = list(fields) if fields is not None else list(dict.fromkeys(k for r in records.values()
                                                                         for p in r["points"] for k in p))
    lines = ["| arm | " + " | ".join([*(labels.get(f, f) for f in fields), *metrics]) + " | selected |",
             "|" + "---|" * (len(fields) + len(metrics) + 2)]
    for arm, r in records.items():
        for i, p in enumerate(r["points"]):
            cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"
                     for v in (r["val"][m][i] for m in metrics)]
            lines.append(f"| {arm} | " + " | ".join([*(_fmt(p[f]) if f in p else "–" for f in fields), *cells])
                         + f" | {'**yes**' if i == r['selected'] else ''} |")
    return "\n".join(lines)


def grid_section(records: Mapping[str, Mapping], source_label: str = "paper") -> str:
    """Markdown: per searched arm, the validation mean of its first criterion over the grid (a column for
    one field, a matrix for two, one row per point for more; the selection in bold), the selection and
    whether the gin file holds it.

    Example:
      >>> r = {"grid": {"a": [1, 2]}, "points": [{"a": 1}, {"a": 2}], "criteria": [["auc", "higher"]],
      ...      "val_mean": {"auc": [0.5, 0.75]}, "selected": 1, "matches": True, "source": "code"}
      >>> print(grid_section({"x": r}))
      **x** — validation auc (higher is better); paper: code.
      <BLANKLINE>
      | a | auc |
      |---|---|
      | 1 | 0.500 |
      | 2 | **0.750** |
      <BLANKLINE>
      Selected: a = 2 (the gin file holds these values).
    """
    out = []
    for arm, t in records.items():
        metric, better = t["criteria"][0]
        keys, means = list(t["grid"]), t["val_mean"][metric]

        def cell(i: int, t=t, means=means) -> str:
            m = f"{means[i]:.3f}"
            return f"**{m}**" if i == t["selected"] else m

        head = f"**{arm}** — validation {metric} ({better} is better); {source_label}: {t['source']}."
        if not keys:
            out += [f"{head} Validation {metric} {means[0]:.3f}.", ""]
            continue
        index = {tuple(p[k] for k in keys): i for i, p in enumerate(t["points"])}
        if len(keys) == 2:
            r, c = keys
            rows = [f"| {r} \\ {c} | " + " | ".join(_fmt(v) for v in t["grid"][c]) + " |",
                    "|---|" + "---|" * len(t["grid"][c])]
            rows += [f"| {_fmt(a)} | " + " | ".join(cell(index[(a, b)]) for b in t["grid"][c]) + " |"
                     for a in t["grid"][r]]
        else:
            rows = ["| " + " | ".join([*keys, metric]) + " |", "|" + "---|" * (len(keys) + 1)]
            rows += [f"| {' | '.join(_fmt(p[k]) for k in keys)} | {cell(i)} |" for i, p in enumerate(t["points"])]
        chosen = ", ".join(f"{k} = {_fmt(v)}" for k, v in selection(t).items())
        ok = ("the gin file holds these values" if t["matches"] else
              f"**the gin file sets {t['configured']} instead: the test rows above do not use the selection**")
        out += [head, "", *rows, "", f"Selected: {chosen} ({ok}).", ""]
    return "\n".join(out).rstrip()
