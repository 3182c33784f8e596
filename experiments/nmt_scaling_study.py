"""NMT encoder/decoder scaling: the bivariate law L(N_enc, N_dec) of Ghorbani et al. on a toy translation task.

Usage::

    python -m experiments.nmt_scaling_study                  # all arms -> runs/nmt_scaling_study/
    python -m experiments.nmt_scaling_study --write_report   # ... and experiments/results/nmt_scaling.md
    python -m experiments.nmt_scaling_study --smoke          # tiny (seconds)

A toy stand-in for B. Ghorbani et al., "Scaling Laws for Neural Machine Translation" (arXiv:2109.07740,
ICLR 2022), who fit ``L(N_e, N_d) = β (N̄e/N_e)^{p_e} (N̄d/N_d)^{p_d} + L∞`` to Transformer NMT models
whose encoder and decoder depths vary independently. Here the "translation" is a fixed synthetic map
of 8-token sentences over 16 symbols (permutation + context-dependent substitution + a source-dependent
swap of adjacent tokens, :mod:`experiments.tasks.nmt_scaling`), fresh sentences every step, and the
model is an attention-free encoder (embedding + MLP over the flattened source → a 32-number code) and
decoder (MLP predicting each target token from the code and its position). Arms: a 3 × 3 grid of
encoder widths × decoder widths (``e<W>_d<W>``), each trained for the same number of steps with 3
seeds (``jax.vmap``); held-out per-token cross-entropy. Per seed, the bivariate law
(:func:`lossjax.scaling.nmt_bivariate_law`, fitted with :func:`lossjax.scaling.fit_scaling_law`) is
fitted to the 9 cells; leave-one-out (LOO) errors compare it with a univariate law in the total size.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import gin
import numpy as np

from experiments import arms
from experiments.common.metrics import env_info
from experiments.common.typecheck import check_field_types
from experiments.kit import cli, report
from experiments.tasks.nmt_scaling import FIT_METRICS, fit_metrics, make_translation_map, param_counts, train, translate

__all__ = ["NMTScalingConfig", "ARMS", "CLAIMS", "THRESHOLD_CLAIMS", "MAPE_THRESHOLD", "make_translation_map",
           "translate", "param_counts", "train", "fit_grid", "run", "STUDY", "main"]

ENC_WIDTHS = (8, 32, 128)
DEC_WIDTHS = (8, 32, 128)
ARMS = tuple(f"e{e}_d{d}" for e in ENC_WIDTHS for d in DEC_WIDTHS)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs", "nmt_scaling_study")
SMOKE_BINDINGS = ("nmt.seeds = (0,)", "nmt.steps = 30", "nmt.n_test = 128", "nmt.batch_size = 32")
MAPE_THRESHOLD = 3.0  # percent; fixed before the run


@dataclasses.dataclass(frozen=True)
class NMTScalingConfig:
    """One grid cell of the NMT scaling study (gin selector ``nmt``); see the module docstring."""

    enc_width: int = 32
    dec_width: int = 32
    seeds: tuple[int, ...] = (0, 1, 2)
    vocab: int = 16
    length: int = 8
    embed_dim: int = 8
    code_dim: int = 32
    steps: int = 800
    batch_size: int = 64
    learning_rate: float = 0.01
    n_test: int = 4096

    def __post_init__(self) -> None:
        check_field_types(self, "nmt")
        for f in ("enc_width", "dec_width", "embed_dim", "code_dim", "steps", "batch_size", "n_test"):
            if getattr(self, f) < 1:
                raise ValueError(f"`nmt.{f}` must be >= 1, got {getattr(self, f)}.")
        if self.vocab < 2 or self.length < 2:
            raise ValueError(f"`nmt.vocab` and `nmt.length` must be >= 2, got {self.vocab}, {self.length}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`nmt.seeds` must be distinct and non-empty, got {self.seeds!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"`nmt.learning_rate` must be > 0, got {self.learning_rate}.")


_Gin = gin.external_configurable(NMTScalingConfig, name="nmt")


def parse(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> NMTScalingConfig:
    """Parse gin ``files`` then ``bindings`` into a :class:`NMTScalingConfig`."""
    return cli.parse_study_config(files, bindings, _Gin)


_SRC = "Ghorbani et al., arXiv:2109.07740 (ICLR 2022)"
# Claims over seeds on the per-seed fits (pseudo-arm "fit", metrics of FIT_METRICS).
CLAIMS = (
    arms.Claim("Separate encoder and decoder exponents matter: the bivariate law predicts held-out grid cells "
               "better (lower leave-one-out MAPE) than a power law in the total parameter count",
               f"{_SRC}, abstract (i): total size alone is not sufficient", "fit", "fit", "loo_mape_bivariate",
               better="lower", metric_b="loo_mape_total"),
    arms.Claim("Decoder scaling is more effective than encoder scaling: p_dec > p_enc",
               f"{_SRC}, abstract (ii) and Sec. 3", "fit", "fit", "p_dec", metric_b="p_enc"),
)
THRESHOLD_CLAIMS = (
    arms.ThresholdClaim("The bivariate power law captures more than 99 % of the variation of the loss over the "
                        "grid: in-sample R² > 0.99 (worst seed)", f"{_SRC}, Eq. (2), Fig. 2",
                        (("fit", "r2_worst", ">", 0.99),)),
    arms.ThresholdClaim(f"The bivariate power law predicts held-out grid cells: leave-one-out MAPE below "
                        f"{MAPE_THRESHOLD:g} % (worst seed)", f"{_SRC}, abstract (i): accurate predictions",
                        (("fit", "loo_mape_bivariate_worst", "<", MAPE_THRESHOLD),)),
    arms.ThresholdClaim("The fitted exponents are positive (both halves help), so an optimal split "
                        "N_e/(N_e+N_d) = p_e/(p_e+p_d) exists strictly inside (0, 1) (every seed)",
                        f"{_SRC}, abstract (ii): optimal encoder/decoder allocation",
                        (("fit", "p_enc_min", ">", 0.0), ("fit", "p_dec_min", ">", 0.0))),
)


def fit_grid(results: dict, *, max_iter: int = 300) -> dict:
    """Per seed, :func:`experiments.tasks.nmt_scaling.fit_metrics` on the arms present in ``results``
    (at least 5 cells); ``{"metrics": {name: [S]}, "per_seed": [...], "arms": [...]}``."""
    names = [a for a in ARMS if a in results]
    if len(names) < 5:
        raise ValueError(f"`results`: the law needs at least 5 grid cells, got {len(names)}.")
    ne = np.array([results[a]["n_enc"] for a in names], float)
    nd = np.array([results[a]["n_dec"] for a in names], float)
    ce = np.array([results[a]["metrics"]["test_ce"] for a in names], float)  # [cells, S]
    per_seed = [fit_metrics(ne, nd, ce[:, s], max_iter=max_iter) for s in range(ce.shape[1])]
    return {"arms": names, "n_enc": ne.tolist(), "n_dec": nd.tolist(), "per_seed": per_seed,
            "metrics": {k: [p[k] for p in per_seed] for k in FIT_METRICS}}


def _summary(fits: dict) -> dict:
    m = fits["metrics"]
    return {"fit": {"loo_mape_bivariate_worst": float(np.max(m["loo_mape_bivariate"])),
                    "r2_worst": float(np.min(m["r2"])),
                    "p_enc_min": float(np.min(m["p_enc"])), "p_dec_min": float(np.min(m["p_dec"]))}}


_CAVEATS = """Scale and caveats. This is a toy stand-in, not a replication: the paper trains Transformer
encoder–decoders of 10⁸–10⁹ parameters (encoder and decoder depth varied) on large translation corpora;
here an attention-free MLP encoder–decoder of 10³–10⁴ parameters learns a synthetic, deterministic map of
8-token sentences, and width (not depth) varies. Every cell is trained for the same number of steps on
fresh data, so "loss" mixes capacity and optimisation speed. The encoder's code (32 numbers) is a fixed
bottleneck for every cell, and the narrowest decoder (width 8 before a 16-way output) is a hard bottleneck
of its own: where it binds, a wider encoder does not help (see "Interaction"), an interaction that the
separable law cannot express — this, not noise, is why the fit is poor; it also makes the decoder exponent
an artefact of this architecture as much as a property of the task. 9 points per fit for 4 parameters
leave little room: the leave-one-out MAPE is the honest measure of fit quality. The R² threshold (0.99) is
the paper's "more than 99 % of the variation"; the MAPE threshold (3 %) was fixed before the run. Only the
functional form of the law is tested — the paper's fitted constants are not used (the project does not
have them). The paired claims are tested over 3 seeds (3 independent fits), so only large, consistent
differences can show as significant."""


def _interaction(results: dict) -> str:
    """One generated sentence: the encoder's gain at the narrowest and at the widest decoder. The
    separable law makes the gains' ratio ``(L_small - L∞)/(L_big - L∞)`` the same for every decoder."""
    def ce(e: int, d: int) -> float:
        a = f"e{e}_d{d}"
        return float(np.mean(results[a]["metrics"]["test_ce"])) if a in results else float("nan")

    e0, e1, d0, d1 = ENC_WIDTHS[0], ENC_WIDTHS[-1], DEC_WIDTHS[0], DEC_WIDTHS[-1]
    return (f"Interaction: widening the encoder from {e0} to {e1} changes the held-out CE by "
            f"{ce(e1, d0) - ce(e0, d0):+.3f} nats at decoder width {d0} and by {ce(e1, d1) - ce(e0, d1):+.3f} at "
            f"decoder width {d1}; a separable law with L∞ = 0 would give the same relative change at both, "
            f"measured {100 * (ce(e1, d0) / ce(e0, d0) - 1):+.0f} % vs {100 * (ce(e1, d1) / ce(e0, d1) - 1):+.0f} %.")


def render(results: dict, fits: dict) -> str:
    """The report's Markdown (tables and generated verdicts)."""
    n = len(next(iter(results.values()))["seeds"])
    names = [a for a in ARMS if a in results]
    rows = ["| arm | N_enc | N_dec | test CE (nats/token) | test token accuracy |", "|---|---|---|---|---|"]
    for a in names:
        r = results[a]
        ce, acc = np.asarray(r["metrics"]["test_ce"]), np.asarray(r["metrics"]["test_acc"])
        rows.append(f"| {a} | {r['n_enc']} | {r['n_dec']} | {ce.mean():.4f} ± {ce.std(ddof=1) if n > 1 else 0:.4f} "
                    f"| {acc.mean():.3f} |")
    fm = {k: np.asarray(v, float) for k, v in fits["metrics"].items()}

    def ms(k: str, d: int = 3) -> str:
        v = fm[k]
        return f"{v.mean():.{d}f} ± {v.std(ddof=1) if v.size > 1 else 0:.{d}f}"

    pred = np.mean([p["pred"] for p in fits["per_seed"]], axis=0)
    loo = np.mean([p["loo_pred"] for p in fits["per_seed"]], axis=0)
    obs = np.array([np.mean(results[a]["metrics"]["test_ce"]) for a in names])
    fit_rows = ["| arm | observed CE | fit (all 9) | LOO prediction |", "|---|---|---|---|"]
    fit_rows += [f"| {a} | {o:.4f} | {p:.4f} | {q:.4f} |" for a, o, p, q in zip(names, obs, pred, loo)]
    par = ", ".join(f"{k} = {np.mean([p[k] for p in fits['per_seed']]):.4g}"
                    for k in ("beta", "p_enc", "p_dec", "l_inf"))
    return "\n".join([
        "# NMT scaling law L(N_enc, N_dec) on a toy translation task", "",
        f"{n} seeds, mean ± std over seeds. See `experiments/nmt_scaling_study.py` for the task and model.", "",
        "## The encoder × decoder grid", "", "\n".join(rows), "",
        "## Fits of L = β (N̄e/N_e)^p_e (N̄d/N_d)^p_d + L∞ (one per seed)", "",
        "| quantity | mean ± std over seeds |", "|---|---|",
        f"| p_enc | {ms('p_enc')} |", f"| p_dec | {ms('p_dec')} |",
        f"| optimal encoder share p_e/(p_e+p_d) | {ms('split_ratio')} |",
        f"| in-sample R² | {ms('r2', 4)} |", f"| in-sample MAPE (%) | {ms('mape_in', 2)} |",
        f"| leave-one-out MAPE, bivariate law (%) | {ms('loo_mape_bivariate', 2)} |",
        f"| leave-one-out MAPE, power law in N_e + N_d (%) | {ms('loo_mape_total', 2)} |", "",
        f"Mean fitted parameters (references N̄ = the grid's geometric-mean sizes): {par}.", "",
        "Per cell (seed means of the per-seed fits):", "", "\n".join(fit_rows), "",
        _interaction(results), "",
        "## Claims tested", "", arms.claims_section({"fit": fits}, CLAIMS), "",
        arms.thresholds_section(_summary(fits), THRESHOLD_CLAIMS), "", _CAVEATS, ""])


def run(args: cli.StudyArgs) -> dict:
    """The study's ``run`` for :func:`experiments.kit.cli.study_main`."""
    results, cfgs = arms.run_arms(args.configs, args.bindings, parse, train, args.workdir, progress=args.progress)
    study = {"results": results, "configs": cfgs,
             "wall_time_s": sum(r.get("wall_time_s", 0.0) for r in results.values())}
    if len([a for a in ARMS if a in results]) >= 5:
        study["fits"] = fit_grid(results)
    if args.report_dir and "fits" in study:
        fits = study["fits"]
        raw = {a: {k: v for k, v in r.items() if k != "skipped"} for a, r in results.items()}
        panels = [("bar", "held-out CE per cell", {a: results[a]["metrics"]["test_ce"] for a in fits["arms"]},
                   {"ylabel": "nats / token"}),
                  ("bar", "fitted exponents", {"p_enc": fits["metrics"]["p_enc"], "p_dec": fits["metrics"]["p_dec"]}),
                  ("bar", "leave-one-out MAPE (%)", {"bivariate": fits["metrics"]["loo_mape_bivariate"],
                                                     "total N": fits["metrics"]["loo_mape_total"]})]
        report.write_report(args.report_dir, "nmt_scaling", render(results, fits),
                            {"arms": raw, "configs": cfgs, "fits": fits, "env": env_info()},
                            lambda p: arms.plot_panels(p, panels), args.provenance)
    return study


def _print(study: dict) -> None:
    if "fits" in study:
        m = study["fits"]["metrics"]
        for k in FIT_METRICS:
            print(f"{k:22s} {np.mean(m[k]):.4f} ± {np.std(m[k]):.4f}")


STUDY = cli.Study(name="nmt_scaling_study", description=__doc__.splitlines()[0], run=run, print_results=_print,
                  default_configs=tuple(os.path.join(CONFIG_DIR, f"{a}.gin") for a in ARMS),
                  smoke_bindings=SMOKE_BINDINGS, data_dir_bindings=(), report_needs_all=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.nmt_scaling_study`` (flags of :mod:`experiments.kit.cli`)."""
    return cli.study_main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
