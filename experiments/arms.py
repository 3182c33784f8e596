"""Arms × seeds on small data: the shared runner of the retrieval, coverage and geometry studies.

A study of this kind declares

* a frozen, gin-registered config dataclass (one ``configs/<study>/<arm>.gin`` per arm; the arm's
  name is the file's stem),
* ``train(cfg) -> results``: trains every seed of one arm at once (``jax.vmap``) and returns
  per-seed metric lists (``{"metrics": {name: [S floats]}, ...}``); a ``train`` with a ``workdir``
  parameter is called as ``train(cfg, workdir=<the arm's directory>)`` (for its own logs),
* its :class:`Claim` list: "arm ``a`` beats arm ``b`` on ``metric``", each a sentence of a paper
  (:meth:`Claim.at` tests it at one setting of a grid, :func:`claims_table` across settings);
  single-seed studies use :class:`ThresholdClaim`, rankings :class:`RankClaim`.

:func:`run_arms` runs the arms (a finished run is reloaded, see :mod:`experiments.kit.runs`),
:func:`metrics_table` and :func:`claims_section` render the report, whose verdict words come from
:func:`experiments.kit.stats.paired_t_test` (paired over seeds) — never written by hand.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common.metrics import env_info, write_json
from experiments.kit import report, runs, stats

__all__ = ["Claim", "ThresholdClaim", "RankClaim", "run_arms", "run_study", "metrics_table", "claims_section",
           "claim_results", "claims_table", "threshold_results", "thresholds_section", "rank_sentence", "plot_panels"]


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim tested as a paired comparison over seeds.

    Attributes:
      text: the claim as the paper states it (paraphrased).
      source: paper and section / table.
      a: arm expected to win; b: the arm it is compared with.
      metric: key of ``results["metrics"]``.
      better: ``"higher"`` or ``"lower"`` (direction of a better ``metric``).
      test_over_train: ``n_test / n_train`` for repeated random splits (Nadeau–Bengio), else 0.
      metric_b: the metric of ``b`` when it differs from ``metric`` (e.g. the same arm measured
        early vs late in training).
    """

    text: str
    source: str
    a: str
    b: str
    metric: str
    better: str = "higher"
    test_over_train: float = 0.0
    metric_b: str | None = None

    def at(self, setting: str) -> Claim:
        """This claim at one setting of a grid: its metrics become ``"<metric>@<setting>"``.

        Example:
          >>> Claim("x", "p", "a", "b", "acc").at("sym40").metric
          'acc@sym40'
        """
        return dataclasses.replace(self, metric=f"{self.metric}@{setting}",
                                   metric_b=None if self.metric_b is None else f"{self.metric_b}@{setting}")


def _takes_workdir(fn: Callable) -> bool:
    try:
        p = inspect.signature(fn).parameters.get("workdir")
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def run_arms(configs: Sequence[str], bindings: Sequence[str], parse: Callable[[Sequence[str], Sequence[str]], Any],
             train: Callable[[Any], dict], workdir: str, *, progress: bool = True) -> tuple[dict, dict]:
    """Run every gin file of ``configs`` (``bindings`` after each) in ``workdir/<stem>``.

    Returns ``(results, configs)`` keyed by arm (the file's stem); a finished run is reloaded
    (``"skipped": True``). ``train`` is called as ``train(cfg, workdir=workdir/<stem>)`` when it has
    a ``workdir`` parameter, else ``train(cfg)``.

    Raises:
      ValueError: a finished run of a different config, or one of an older layout (its
        ``results.json`` lacks ``"metrics"``), is in the arm's directory.
    """
    with_wd = _takes_workdir(train)
    results: dict[str, dict] = {}
    cfgs: dict[str, dict] = {}
    for f in configs:
        arm = os.path.splitext(os.path.basename(f))[0]
        cfg = parse([f], bindings)
        conf = dataclasses.asdict(cfg)
        wd = os.path.join(workdir, arm)
        done = runs.finished_run(wd, conf, require=("metrics",))
        if done is not None:
            r = dict(done, skipped=True)
        else:
            os.makedirs(wd, exist_ok=True)
            write_json(os.path.join(wd, "env.json"), env_info())
            t0 = time.perf_counter()
            res = train(cfg, workdir=wd) if with_wd else train(cfg)
            res["wall_time_s"] = time.perf_counter() - t0
            bad = [k for k, v in res["metrics"].items() if not np.all(np.isfinite(v))]
            if bad and not getattr(cfg, "allow_nan", False):
                print(f"  warning: {arm}: non-finite {bad}", file=sys.stderr)
            r = dict(runs.write_run(wd, conf, res), skipped=False)
        results[arm], cfgs[arm] = r, conf
        if progress:
            how = "finished run, skipped" if r["skipped"] else f"{r['wall_time_s']:.1f} s"
            head = ", ".join(f"{k} {np.mean(v):.4f}" for k, v in list(r["metrics"].items())[:3])
            print(f"  {arm:18s} {head} ({how})", file=sys.stderr, flush=True)
    return results, cfgs


def run_study(args: Any, parse: Callable[[Sequence[str], Sequence[str]], Any], train: Callable[[Any], dict],
              name: str, render: Callable[[dict], str], panels: Callable[[dict], Sequence[tuple]], *,
              extra_json: Callable[[dict], Mapping] | None = None, drop: Sequence[str] = ("skipped",),
              extra_wall_time_s: float = 0.0, **study: Any) -> dict:
    """The ``run`` of an arms study (:func:`experiments.kit.cli.study_main` passes ``args``).

    :func:`run_arms` over ``args.configs``; with ``args.report_dir`` the report ``name``: the Markdown
    ``render(results)``, the JSON ``{"arms": results without the keys in drop, "configs", **extra_json(results),
    "env"}`` and the figure of the non-empty ``panels(results)`` (:func:`plot_panels`).

    Returns ``{"results", "configs", **study, "wall_time_s"}`` (the arms' training time plus
    ``extra_wall_time_s``, e.g. a hyper-parameter search run before them).
    """
    results, cfgs = run_arms(args.configs, args.bindings, parse, train, args.workdir, progress=args.progress)
    out = {"results": results, "configs": cfgs, **study,
           "wall_time_s": extra_wall_time_s + sum(r.get("wall_time_s", 0.0) for r in results.values())}
    if args.report_dir:
        raw = {a: {k: v for k, v in r.items() if k not in drop} for a, r in results.items()}
        figs = [q for q in panels(results) if q[2]]
        report.write_report(args.report_dir, name, render(results),
                            {"arms": raw, "configs": cfgs, **(extra_json(results) if extra_json else {}),
                             "env": env_info()},
                            lambda p: plot_panels(p, figs), args.provenance)
    return out


def _ms(v: Sequence[float], digits: int) -> str:
    a = np.asarray(v, dtype=float)
    sd = a.std(ddof=1) if a.size > 1 else 0.0
    return f"{a.mean():.{digits}f} ± {sd:.{digits}f}"


def metrics_table(results: dict, arms: Sequence[str], metrics: Sequence[str], digits: int | Mapping[str, int] = 3,
                  *, best: Mapping[str, str] | None = None) -> str:
    """Markdown table: one row per arm present in ``results``, ``mean ± std`` over seeds.

    Args:
      digits: decimals of every metric, or ``{metric: decimals}`` (3 for a metric not named).
      best: ``{metric: "higher" | "lower"}``: the best mean of those columns (ties included) in bold.

    Example:
      >>> r = {"a": {"metrics": {"acc": [0.5, 0.7], "nll": [1.0, 1.0]}}, "b": {"metrics": {"acc": [0.9, 0.9]}}}
      >>> print(metrics_table(r, ["a", "b"], ["acc", "nll"], {"acc": 1}, best={"acc": "higher"}))
      | arm | acc | nll |
      |---|---|---|
      | a | 0.6 ± 0.1 | 1.000 ± 0.000 |
      | b | **0.9 ± 0.0** | – |
    """
    best = dict(best or {})
    for k, v in best.items():
        if v not in ("higher", "lower"):
            raise ValueError(f"`best` must map metrics to 'higher' or 'lower', got {k!r}: {v!r}.")
    dig = (lambda k: digits) if isinstance(digits, int) else (lambda k: digits.get(k, 3))
    rows = [a for a in arms if a in results]
    top = {}
    for k in best:
        means = [float(np.mean(results[a]["metrics"][k])) for a in rows if k in results[a]["metrics"]]
        means = [m for m in means if np.isfinite(m)]
        if means:
            top[k] = max(means) if best[k] == "higher" else min(means)

    def cell(m: dict, k: str) -> str:
        if k not in m:
            return "–"
        text = _ms(m[k], dig(k))
        return f"**{text}**" if k in top and float(np.mean(m[k])) == top[k] else text

    lines = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for a in rows:
        m = results[a]["metrics"]
        lines.append(f"| {a} | " + " | ".join(cell(m, k) for k in metrics) + " |")
    return "\n".join(lines)


def claim_results(results: dict, claims: Sequence[Claim]) -> list[dict]:
    """Each claim with its paired test: ``{"claim", "test": PairedTest, "word", "a", "b"}`` (a
    claim whose arms are missing gets word ``"n/a"``)."""
    out = []
    for c in claims:
        if c.a in results and c.b in results:
            a = np.asarray(results[c.a]["metrics"][c.metric], dtype=float)
            b = np.asarray(results[c.b]["metrics"][c.metric_b or c.metric], dtype=float)
            t = stats.paired_t_test(a - b, better=c.better, test_over_train=c.test_over_train)
            out.append({"claim": c, "test": t, "word": stats.claim_word(t.verdict), "a": a.mean(), "b": b.mean()})
        else:
            out.append({"claim": c, "test": stats.paired_t_test(None), "word": "n/a", "a": np.nan, "b": np.nan})
    return out


def claims_section(results: dict, claims: Sequence[Claim], digits: int = 3) -> str:
    """One generated sentence per claim: the numbers, the paired t-test and held / did not hold /
    not resolved."""
    lines = []
    for r in claim_results(results, claims):
        c, t = r["claim"], r["test"]
        if r["word"] == "n/a" and t.n == 0:
            lines.append(f"* **{c.text}** ({c.source}): not run here (arm `{c.a}` or `{c.b}` missing).")
            continue
        arrow = "higher" if c.better == "higher" else "lower"
        tt = f"t = {t.t:.2f}, critical {t.critical:.2f}" if np.isfinite(t.t) else "t undefined"
        lines.append(
            f"* **{c.text}** ({c.source}). Tested as `{c.a}` {c.metric} vs `{c.b}` {c.metric_b or c.metric} "
            f"({arrow} is better): "
            f"{r['a']:.{digits}f} vs {r['b']:.{digits}f}, paired Δ {t.fmt(digits)} over {t.n} seeds ({tt}). "
            f"Did the claim hold here? **{r['word']}**.")
    return "\n".join(lines)


def claims_table(settings: Sequence[tuple[Any, dict]], claims: Sequence[Claim], *,
                 setting_label: Callable[[Any], str] = str, scale: float = 1.0, unit: str = "", digits: int = 2,
                 note: str | None = None) -> str:
    """The claims across settings ``[(setting, results)]`` (one :func:`run_arms` result per setting):
    per setting the paired Δ (``scale`` × mean ± std over seeds, ``unit`` appended) and the paired
    t-test's verdict (:data:`experiments.kit.stats.VERDICTS`), then a note and one summary line per
    claim — held in every setting / held in part / did not hold (significantly reversed somewhere) /
    not shown. A claim's name in the summary is its text up to the first ":".

    Example:
      >>> r = {"a": {"metrics": {"acc": [2.0, 2.1, 2.2]}}, "b": {"metrics": {"acc": [1.0, 1.0, 1.0]}}}
      >>> print(claims_table([("s1", r)], [Claim("A: a beats b", "p", "a", "b", "acc")], note="")
      ...       .split(chr(10))[2])
      | A: a beats b (p) | +1.10 ± 0.10 | better |
    """
    labels = [setting_label(s) for s, _ in settings]
    tests = [claim_results(res, claims) for _, res in settings]  # [setting][claim]
    lines = ["| claim | " + " | ".join(f"Δ at {n} | held? ({n})" for n in labels) + " |",
             "|---|" + "---|---|" * len(labels)]

    def delta(t: stats.PairedTest) -> str:
        if t.n == 0:
            return "n/a"
        return f"{'+' if t.mean >= 0 else ''}{scale * t.mean:.{digits}f} ± {scale * t.std:.{digits}f}{unit}"

    summary = []
    for i, c in enumerate(claims):
        ts = [tests[s][i]["test"] for s in range(len(labels))]
        lines.append(f"| {c.text} ({c.source}) | " + " | ".join(f"{delta(t)} | {t.verdict}" for t in ts) + " |")
        v = [t.verdict for t in ts]
        per = ", ".join(f"{n}: {x}" for n, x in zip(labels, v))
        name = c.text.split(":")[0]
        if all(x == "better" for x in v):
            summary.append(f"**{name}: held** in every setting.")
        elif "better" in v:
            summary.append(f"**{name}: held in part** ({per}).")
        elif "worse" in v:
            summary.append(f"**{name}: did not hold** (significantly reversed in at least one setting: {per}).")
        else:
            means = ", ".join(f"{n}: {delta(t)}" for n, t in zip(labels, ts))
            summary.append(f"**{name}: not shown** — no significant difference at this scale ({means}).")
    if note is None:
        note = ("Δ: mean ± std over seeds of the paired per-seed difference (first arm minus the second). "
                "\"held?\": paired two-sided t-test at 5 % — *better* = significant gain, *worse* = significant "
                "loss, *no significant difference* = neither.")
    lines += ["", note, ""] if note else [""]
    return "\n".join(lines + [f"* {x}" for x in summary])


_OPS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    ">=": ("≥", lambda a, b: a >= b), ">": (">", lambda a, b: a > b),
    "<=": ("≤", lambda a, b: a <= b), "<": ("<", lambda a, b: a < b)}


@dataclasses.dataclass(frozen=True)
class ThresholdClaim:
    """A claim tested on one seed (no paired test applies): it holds when every condition holds.

    A condition ``(arm, key, op, rhs)`` compares ``summaries[arm][key]`` with ``rhs``, a number or
    ``(other arm, key)``; ``op`` is one of ``">="``, ``">"``, ``"<="``, ``"<"``.
    """

    text: str
    source: str
    conditions: tuple[tuple[str, str, str, Any], ...]

    def __post_init__(self) -> None:
        for c in self.conditions:
            if len(c) != 4 or c[2] not in _OPS:
                raise ValueError(f"`conditions`: each must be (arm, key, op in {tuple(_OPS)}, rhs), got {c!r}.")


def threshold_results(summaries: dict[str, dict], claims: Sequence[ThresholdClaim], digits: int = 3) -> list[dict]:
    """Each claim with its evidence: ``{"claim", "word", "evidence"}``; ``word`` is ``held`` /
    ``did not hold``, or ``n/a`` when an arm it needs is missing from ``summaries`` (or a number
    it compares is None or NaN).

    Example:
      >>> c = ThresholdClaim("x groks", "paper", (("x", "best_test_accuracy", ">=", 0.9),))
      >>> r = threshold_results({"x": {"best_test_accuracy": 0.5}}, [c])[0]
      >>> r["word"], r["evidence"]
      ('did not hold', '`x` best_test_accuracy 0.500 ≥ 0.9')
      >>> threshold_results({}, [c])[0]["word"]
      'n/a'
    """
    out = []
    for c in claims:
        needed = {a for a, *_ in c.conditions} | {r[0] for *_, r in c.conditions if isinstance(r, tuple)}
        if not needed <= set(summaries):
            out.append({"claim": c, "word": "n/a", "evidence": ""})
            continue
        ok, ev, undefined = True, [], False
        for arm, key, op, rhs in c.conditions:
            a = summaries[arm][key]
            if isinstance(rhs, tuple):
                b = summaries[rhs[0]][rhs[1]]
                what = f"`{rhs[0]}` {rhs[1]} " + ("n/a" if b is None else f"{b:.{digits}f}")
            else:
                b, what = rhs, f"{rhs:g}"
            if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
                undefined = True
            else:
                ok = ok and _OPS[op][1](a, b)
            ev.append(f"`{arm}` {key} " + ("n/a" if a is None else f"{a:.{digits}f}") + f" {_OPS[op][0]} {what}")
        word = "n/a" if undefined else "held" if ok else "did not hold"
        out.append({"claim": c, "word": word, "evidence": "; ".join(ev)})
    return out


def thresholds_section(summaries: dict[str, dict], claims: Sequence[ThresholdClaim], digits: int = 3) -> str:
    """One generated line per :class:`ThresholdClaim`: the claim, its source, the numbers compared
    and the verdict."""
    lines = []
    for r in threshold_results(summaries, claims, digits):
        c = r["claim"]
        if not r["evidence"]:
            lines.append(f"* **{c.text}** ({c.source}): not run here (an arm it needs is missing).")
        else:
            lines.append(f"* **{c.text}** ({c.source}). Tested as {r['evidence']}: **{r['word']}** here.")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class RankClaim:
    """"One of ``arms`` (or a variant ``<arm>:<anything>``) is among the ``top`` arms by mean rank"."""

    text: str
    source: str
    arms: tuple[str, ...]
    top: int = 3

    def __post_init__(self) -> None:
        if self.top < 1:
            raise ValueError(f"`top` must be >= 1, got {self.top}.")


def rank_sentence(ranks: Mapping[str, float], claim: RankClaim, label: Callable[[str], str] = str,
                  digits: int = 1, noun: str = "arms") -> str | None:
    """The report's sentence of ``claim`` given each arm's mean rank (1 = best) and its verdict, or
    None when it does not apply (no claimed arm, or only claimed arms, were ranked).

    Example:
      >>> rank_sentence({"ce": 2.0, "gce": 1.0, "mae": 3.0}, RankClaim("GCE ranks first", "p", ("gce",), top=1))
      '* **GCE ranks first** (p): gce 1.0 of 3 arms; best gce (1.0); top 1: gce → **held** here.'
    """
    order = sorted(ranks, key=ranks.get)
    mine = [a for a in order if a.split(":")[0] in claim.arms]
    if not mine or len(mine) == len(order):
        return None
    top = order[: claim.top]
    held = mine[0] in top
    return (f"* **{claim.text}** ({claim.source}): " + ", ".join(f"{label(a)} {ranks[a]:.{digits}f}" for a in mine)
            + f" of {len(order)} {noun}; best {label(order[0])} ({ranks[order[0]]:.{digits}f}); top {claim.top}: "
            + ", ".join(label(a) for a in top) + f" → **{'held' if held else 'did not hold'}** here.")


def plot_panels(path: str, panels: Sequence[tuple]) -> None:
    """One figure; each panel is ``("bar", title, {arm: per-seed values})`` or
    ``("curve", title, {arm: [S, T] values})`` (mean ± std over seeds), optionally with a fourth
    element ``{"ylabel": str, "ylim": (low, high), "xlabel": str}`` (a curve's x label defaults to
    "epoch"; a bar panel's y limits to a range around the bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for p in panels:
        if len(p) not in (3, 4) or p[0] not in ("bar", "curve"):
            raise ValueError(f"`panels`: each must be ('bar' | 'curve', title, data[, options]), got {p!r:.80}.")
        if len(p) == 4 and not set(p[3]) <= {"ylabel", "ylim", "xlabel"}:
            raise ValueError(f"`panels`: unknown options {sorted(set(p[3]) - {'ylabel', 'ylim', 'xlabel'})}.")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        kind, title, data = panel[:3]
        opts = panel[3] if len(panel) == 4 else {}
        names = list(data)
        if kind == "bar":
            vals = [np.asarray(data[k], float) for k in names]
            ax.bar(range(len(names)), [v.mean() for v in vals], yerr=[v.std() for v in vals], capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
            lo = min(v.mean() - v.std() for v in vals)
            hi = max(v.mean() + v.std() for v in vals)
            ax.set_ylim(max(0.0, lo - 0.3 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
        else:
            for k in names:
                a = np.asarray(data[k], float)
                mu, sd = a.mean(0), a.std(0)
                x = np.arange(1, a.shape[1] + 1)
                ax.plot(x, mu, label=k)
                ax.fill_between(x, mu - sd, mu + sd, alpha=0.2)
            ax.legend(fontsize=8)
            ax.set_xlabel("epoch")
        if "xlabel" in opts:
            ax.set_xlabel(opts["xlabel"])
        if "ylabel" in opts:
            ax.set_ylabel(opts["ylabel"])
        if "ylim" in opts:
            ax.set_ylim(*opts["ylim"])
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
