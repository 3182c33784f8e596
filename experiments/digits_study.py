"""SGD vs SAM vs AACE-SAM vs SAF vs MESA on the embedded digits data, 3 seeds each.

    python -m experiments.digits_study [--optimizers sgd sam aace_sam saf mesa] [--seeds 0 1 2]
                                       [--runs_dir runs/digits_study] [--out experiments/results]

Each run is ``python -m experiments.cifar --config configs/digits/<opt>.gin`` with
``train.seed`` set (workdirs under ``--runs_dir``; finished runs are resumed, i.e. reused).
Writes ``digits.md`` (mean ± std of the final-epoch test accuracy, best epoch, wall time,
images/s), ``digits.json`` (raw per-run numbers) and ``digits.png`` (test-accuracy curves).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

__all__ = ["run_study", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_study(optimizers: list[str], seeds: list[int], runs_dir: str, out: str, bindings: list[str]) -> dict:
    from experiments.common.config import parse_config
    from experiments.common.metrics import read_jsonl, write_json
    from experiments.common.plots import plot_study
    from experiments.common.train import train_and_evaluate

    raw: dict[str, list[dict]] = {}
    curves: dict[str, list[list[float]]] = {}
    for opt in optimizers:
        for seed in seeds:
            cfg = parse_config([os.path.join(ROOT, "configs", "digits", f"{opt}.gin")],
                               [f"train.seed = {seed}", "train.progress = False", *bindings])
            wd = os.path.join(runs_dir, f"{opt}_s{seed}")
            res = train_and_evaluate(cfg, wd, argv=["python -m experiments.digits_study", opt, str(seed)])
            recs = read_jsonl(os.path.join(wd, "metrics.jsonl"))
            res["test_accuracy_curve"] = [r["test_accuracy"] for r in recs]
            raw.setdefault(opt, []).append(res)
            curves.setdefault(opt, []).append([100 * a for a in res["test_accuracy_curve"]])
            print(f"{opt:9s} seed {seed}: final {100 * res['final_test_accuracy']:.2f}%  "
                  f"wall {res['wall_time_s']:.1f}s", file=sys.stderr, flush=True)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "digits.json"), raw)
    plot_study(curves, os.path.join(out, "digits.png"),
               f"digits (1,297 train / 500 test), SmallCNN, {len(seeds)} seeds: mean ± std")
    rows = []
    for opt, rs in raw.items():
        fin = np.array([100 * r["final_test_accuracy"] for r in rs])
        best = np.array([100 * r["best_test_accuracy"] for r in rs])
        wall = np.array([r["wall_time_s"] for r in rs])
        ips = np.array([r["images_per_s_median"] for r in rs])
        rows.append((opt, fin.mean(), fin.std(ddof=1) if len(fin) > 1 else 0.0, best.mean(),
                     best.std(ddof=1) if len(best) > 1 else 0.0, wall.mean(), ips.mean(), fin))
    lines = ["| optimizer | final test acc (%) | best-epoch test acc (%) | wall time (s) | images/s | per-seed final |",
             "|---|---|---|---|---|---|"]
    for opt, fm, fs, bm, bs, w, i, fin in rows:
        lines.append(f"| {opt} | {fm:.2f} ± {fs:.2f} | {bm:.2f} ± {bs:.2f} | {w:.1f} | {i:.0f} | "
                     f"{', '.join(f'{v:.1f}' for v in fin)} |")
    table = "\n".join(lines)
    summary = {opt: {"final_mean": fm, "final_std": fs} for opt, fm, fs, *_ in rows}
    return {"table": table, "summary": summary, "raw": raw}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.digits_study")
    p.add_argument("--optimizers", nargs="+", default=["sgd", "sam", "aace_sam", "saf", "mesa"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs_dir", default=os.path.join("runs", "digits_study"))
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"))
    p.add_argument("--binding", action="append", default=[])
    a = p.parse_args(argv)
    r = run_study(a.optimizers, a.seeds, a.runs_dir, a.out, a.binding)
    print(r["table"])
    with open(os.path.join(a.out, "digits_table.md"), "w") as f:
        f.write(r["table"] + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
