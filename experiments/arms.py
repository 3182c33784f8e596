"""Arms × seeds on small data: the shared runner of the retrieval, coverage and geometry studies.

A study of this kind declares

* a frozen, gin-registered config dataclass (one ``configs/<study>/<arm>.gin`` per arm; the arm's
  name is the file's stem),
* ``train(cfg) -> results``: trains every seed of one arm at once (``jax.vmap``) and returns
  per-seed metric lists (``{"metrics": {name: [S floats]}, ...}``),
* its :class:`Claim` list: "arm ``a`` beats arm ``b`` on ``metric``", each a sentence of a paper.

:func:`run_arms` runs the arms (a finished run is reloaded, see :mod:`experiments.kit.runs`),
:func:`metrics_table` and :func:`claims_section` render the report, whose verdict words come from
:func:`experiments.kit.stats.paired_t_test` (paired over seeds) — never written by hand.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from experiments.common.metrics import env_info, write_json
from experiments.kit import runs, stats

__all__ = ["Claim", "run_arms", "metrics_table", "claims_section", "claim_results", "plot_panels"]


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


def run_arms(configs: Sequence[str], bindings: Sequence[str], parse: Callable[[Sequence[str], Sequence[str]], Any],
             train: Callable[[Any], dict], workdir: str, *, progress: bool = True) -> tuple[dict, dict]:
    """Run every gin file of ``configs`` (``bindings`` after each) in ``workdir/<stem>``.

    Returns ``(results, configs)`` keyed by arm (the file's stem); a finished run is reloaded
    (``"skipped": True``), a finished run of a different config raises ``ValueError``.
    """
    results: dict[str, dict] = {}
    cfgs: dict[str, dict] = {}
    for f in configs:
        arm = os.path.splitext(os.path.basename(f))[0]
        cfg = parse([f], bindings)
        conf = dataclasses.asdict(cfg)
        wd = os.path.join(workdir, arm)
        done = runs.finished_run(wd, conf)
        if done is not None:
            r = dict(done, skipped=True)
        else:
            os.makedirs(wd, exist_ok=True)
            write_json(os.path.join(wd, "env.json"), env_info())
            t0 = time.perf_counter()
            res = train(cfg)
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


def _ms(v: Sequence[float], digits: int) -> str:
    a = np.asarray(v, dtype=float)
    sd = a.std(ddof=1) if a.size > 1 else 0.0
    return f"{a.mean():.{digits}f} ± {sd:.{digits}f}"


def metrics_table(results: dict, arms: Sequence[str], metrics: Sequence[str], digits: int = 3) -> str:
    """Markdown table: one row per arm present in ``results``, ``mean ± std`` over seeds."""
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for a in arms:
        if a in results:
            m = results[a]["metrics"]
            lines.append(f"| {a} | " + " | ".join(_ms(m[k], digits) if k in m else "–" for k in metrics) + " |")
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


def plot_panels(path: str, panels: Sequence[tuple[str, str, dict]]) -> None:
    """One figure; each panel is ``("bar", title, {arm: per-seed values})`` or
    ``("curve", title, {arm: [S, T] values})`` (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (kind, title, data) in zip(axes[0], panels):
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
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
