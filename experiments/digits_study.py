"""SGD vs SAM vs AACE-SAM vs SAF vs MESA on the embedded digits data, 3 seeds each.

Usage::

    python -m experiments.digits_study                  # -> runs/digits_study/digits.md
    python -m experiments.digits_study --write_report   # ... and regenerate experiments/results/digits.md
    python -m experiments.digits_study --smoke          # SGD and SAM, one seed, one epoch
    python -m experiments.digits_study --config configs/digits/sam.gin --config.train.epochs=10

The flags are those of every study (:mod:`experiments.kit.cli`). Each arm is
``python -m experiments.cifar --config configs/digits/<opt>.gin`` with ``train.seed`` set
(workdirs ``<workdir>/<opt>_s<seed>``; finished runs are resumed, i.e. reused). Writes
``digits.md`` (mean ± std of the final-epoch test accuracy, best epoch, wall time, images/s, and
the paired t-test of every optimizer against SGD), ``digits.json`` (raw per-run numbers) and
``digits.png`` (test-accuracy curves).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from experiments.kit import cli, report, stats

__all__ = ["ARMS", "SEEDS", "run_study", "render_markdown", "main"]

ARMS = ("sgd", "sam", "aace_sam", "saf", "mesa")
SEEDS = (0, 1, 2)
CONFIG_DIR = os.path.join(report.ROOT, "configs", "digits")


def run_study(configs: list[str], seeds: list[int], runs_dir: str, out: str | None, bindings: list[str],
              prov: dict | None = None) -> dict:
    """Train every ``configs`` × ``seeds`` run (finished runs are reused) and write the report into
    ``out`` (if given). Returns ``{"table", "summary", "raw"}``."""
    from experiments.common.config import parse_config
    from experiments.common.metrics import read_jsonl
    from experiments.common.plots import plot_study
    from experiments.common.train import train_and_evaluate

    raw: dict[str, list[dict]] = {}
    curves: dict[str, list[list[float]]] = {}
    for f in configs:
        opt = os.path.splitext(os.path.basename(f))[0]
        for seed in seeds:
            cfg = parse_config([f], [f"train.seed = {seed}", "train.progress = False", *bindings])
            wd = os.path.join(runs_dir, f"{opt}_s{seed}")
            res = train_and_evaluate(cfg, wd, argv=["python -m experiments.digits_study", opt, str(seed)])
            recs = read_jsonl(os.path.join(wd, "metrics.jsonl"))
            res["test_accuracy_curve"] = [r["test_accuracy"] for r in recs if "test_accuracy" in r]
            raw.setdefault(opt, []).append(res)
            curves.setdefault(opt, []).append([100 * a for a in res["test_accuracy_curve"]])
            print(f"{opt:9s} seed {seed}: final {100 * res['final_test_accuracy']:.2f}%  "
                  f"wall {res['wall_time_s']:.1f}s", file=sys.stderr, flush=True)
    study = {"table": _table(raw), "raw": raw, "seeds": list(seeds),
             "summary": {o: {"final_mean": float(np.mean([100 * r["final_test_accuracy"] for r in rs])),
                             "final_std": float(np.std([100 * r["final_test_accuracy"] for r in rs], ddof=1))
                             if len(rs) > 1 else 0.0} for o, rs in raw.items()}}
    if out is not None:
        title = f"digits (1,297 train / 500 test), SmallCNN, {len(seeds)} seeds: mean ± std"
        report.write_report(out, "digits", render_markdown(study), {"raw": raw, "seeds": list(seeds)},
                            lambda path: plot_study(curves, path, title), prov)
    return study


def _table(raw: dict[str, list[dict]]) -> str:
    lines = ["| optimizer | final test acc (%) | best-epoch test acc (%) | wall time (s) | images/s | per-seed final |",
             "|---|---|---|---|---|---|"]
    for opt, rs in raw.items():
        fin = np.array([100 * r["final_test_accuracy"] for r in rs])
        best = np.array([100 * r["best_test_accuracy"] for r in rs])
        sd = (lambda a: a.std(ddof=1) if len(a) > 1 else 0.0)  # noqa: E731
        lines.append(f"| {opt} | {fin.mean():.2f} ± {sd(fin):.2f} | {best.mean():.2f} ± {sd(best):.2f} | "
                     f"{np.mean([r['wall_time_s'] for r in rs]):.1f} | "
                     f"{np.mean([r['images_per_s_median'] or 0 for r in rs]):.0f} | "
                     f"{', '.join(f'{v:.1f}' for v in fin)} |")
    return "\n".join(lines)


def verdicts(raw: dict[str, list[dict]]) -> str:
    """Each optimizer vs SGD: the paired t-test over seeds (same seed = same init and data order)
    of the final test accuracy, with its verdict word."""
    if "sgd" not in raw:
        return "* (no SGD baseline was run)"
    base = np.array([100 * r["final_test_accuracy"] for r in raw["sgd"]])
    out = []
    for opt, rs in raw.items():
        if opt == "sgd":
            continue
        d = np.array([100 * r["final_test_accuracy"] for r in rs]) - base
        t = stats.paired_t_test(d, better="higher")
        out.append(f"* **{opt} vs SGD:** Δ final test accuracy {t.fmt(2)} pp over {t.n} seeds → {t.verdict}.")
    if all(k in raw for k in ("aace_sam", "sam", "sgd")):
        m = {k: float(np.mean([100 * r["final_test_accuracy"] for r in raw[k]])) for k in ("aace_sam", "sam", "sgd")}
        held = m["aace_sam"] >= m["sam"] >= m["sgd"]
        out.append(f"* **AACE-SAM ≥ SAM ≥ SGD (mean final test accuracy):** {m['aace_sam']:.2f} / {m['sam']:.2f} / "
                   f"{m['sgd']:.2f} % → the ordering **{'held' if held else 'did not hold'}** here.")
    return "\n".join(out)


def render_markdown(study: dict, title: bool = True) -> str:
    """The report: table, figure and the computed verdicts (``title``: start with a heading;
    :func:`experiments.kit.report.write_report` drops it below a kept hand-written preamble)."""
    head = f"# Sharpness-aware optimizers on digits (SmallCNN, {len(study['seeds'])} seed(s))\n\n" if title else ""
    return (head + "Regenerate: `python -m experiments.digits_study --write_report` (arms `configs/digits/"
            "{sgd,sam,aace_sam,saf,mesa}.gin`, seeds 0, 1, 2; finished runs under `runs/digits_study/` are reused).\n\n"
            f"### Results ({len(study['seeds'])} seed(s); mean ± sample std; \"final\" = after the last epoch, "
            "\"best\" = best epoch)\n\n"
            f"{study['table']}\n\n![test accuracy](digits.png)\n\n"
            "### Verdicts (paired two-sided t-test at 5 % over seeds, computed from the numbers above)\n\n"
            f"{verdicts(study['raw'])}\n")


def _run(a: cli.StudyArgs) -> dict:
    seeds = (0,) if a.smoke else SEEDS
    configs = list(a.configs)
    if a.smoke and not a.custom:
        configs = configs[:2]
    return run_study(configs, list(seeds), a.workdir, a.report_dir, list(a.bindings), a.provenance)


STUDY = cli.Study(
    name="digits_study", description=__doc__.split("\n\n")[0], run=_run,
    print_results=lambda s: print(s["table"]),
    default_configs=tuple(os.path.join(CONFIG_DIR, f"{o}.gin") for o in ARMS),
    smoke_bindings=("train.epochs = 1", "data.n_train = 256", "data.n_test = 128", "train.checkpoint = False",
                    "train.plots = False"))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
