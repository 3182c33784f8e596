"""Task code of the sharpness study: data, the SAM-family training loop, measurements, tables.

The declarative study (config, arms, claims, report template) is :mod:`experiments.sharpness_study`;
this module holds what it runs:

* :data:`KINDS` and :func:`parse_arm` / :func:`arm_label` / :func:`optim_config` — an arm is an
  optimizer kind of the SAM family (``kind`` at its paper's radius, or ``kind:rho``), built by
  :func:`experiments.common.optim.build_optimizer` as in the trainer;
* :func:`load_task` — digits, a fixed stratified training subset whose labels are corrupted per
  seed by :func:`experiments.tasks.noisy_labels.corrupt_labels`, the clean rest as test set;
* :class:`Measure`, :func:`make_epoch_fn`, :func:`train_arm`, :func:`time_kinds` — every
  (noise × seed) run of one arm trained together (``jax.vmap``, one compiled epoch per arm) and
  measured with :mod:`lossjax.diagnostics`;
* :func:`tables`, :func:`correlations`, :func:`claim_metrics`, :func:`mechanism_verdict`,
  :func:`sweep_verdicts`, :func:`cost_verdicts`, :func:`correlation_verdict`, :func:`plot` — the
  numbers, tables and computed verdicts the report template is filled with.

Epochs are 1-based in every record (``curves["epoch"]``; ``per_epoch`` lists start at epoch 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax.sharpness as lsh
from experiments.common.config import OptimConfig
from experiments.common.optim import build_optimizer
from experiments.common.small_models import epoch_keys, init_stacked, stratified_subset
from experiments.kit import stats
from experiments.kit.mlp import MLP
from experiments.tasks.noisy_labels import corrupt_labels
from lossjax import diagnostics as D
from lossjax.losses.aace import aace_loss

if TYPE_CHECKING:
    from experiments.sharpness_study import SharpnessStudyConfig

__all__ = ["KINDS", "NAMES", "PASSES", "parse_arm", "arm_label", "optim_config", "load_task", "Measure",
           "make_epoch_fn", "time_kinds", "train_arm", "tables", "correlations", "claim_metrics",
           "mechanism_verdict", "sweep_verdicts", "cost_verdicts", "correlation_verdict", "plot"]

KINDS = ("sgd", "sam", "asam", "aace_sam", "gsam", "saf", "mesa")
# forward/backward passes per training step (the nominal cost)
PASSES = {"sgd": "1 f+b", "sam": "2 f+b", "asam": "2 f+b", "aace_sam": "2 f+b", "gsam": "2 f+b", "saf": "1 f+b",
          "mesa": "1 f+b + 1 f"}
NAMES = {"sgd": "SGD", "sam": "SAM", "asam": "ASAM", "aace_sam": "AACE-SAM", "gsam": "GSAM", "saf": "SAF",
         "mesa": "MESA"}


def parse_arm(arm: str) -> tuple[str, float | None]:
    """``'sam'`` → ``('sam', None)`` (recommended ρ); ``'sam:0.1'`` → ``('sam', 0.1)``.

    Raises:
      ValueError: an unknown kind, a malformed or non-positive ρ, or a ρ for SGD/SAF/MESA.
    """
    kind, sep, rho = str(arm).partition(":")
    if kind not in KINDS:
        raise ValueError(f"`sharpness_study.arms`: unknown arm {arm!r}; kinds are {KINDS} (optionally 'kind:rho').")
    if not sep:
        return kind, None
    try:
        value = float(rho)
    except ValueError:
        raise ValueError(f"`sharpness_study.arms`: bad radius in {arm!r}.") from None
    if kind in ("sgd", "saf", "mesa") or not value > 0:
        raise ValueError(f"`sharpness_study.arms`: {arm!r} — a radius must be > 0 and only SAM-family arms take one.")
    return kind, value


def arm_label(arm: str, cfg: SharpnessStudyConfig) -> str:
    """``'sam:0.1'`` → ``'SAM ρ=0.1'``; recommended radii are written out too."""
    kind, rho = parse_arm(arm)
    default = {"sam": cfg.sam_rho, "asam": cfg.asam_rho, "aace_sam": cfg.aace_rho, "gsam": cfg.gsam_rho}
    if kind not in default:
        return NAMES[kind]
    return f"{NAMES[kind]} ρ={rho if rho is not None else default[kind]:g}"


def optim_config(arm: str, cfg: SharpnessStudyConfig) -> OptimConfig:
    """The trainer's :class:`OptimConfig` of ``arm`` (recommended ρ unless ``kind:rho``)."""
    kind, rho = parse_arm(arm)
    radius = {"sam": cfg.sam_rho, "asam": cfg.asam_rho, "aace_sam": cfg.aace_rho, "gsam": cfg.gsam_rho}
    lam = cfg.mesa_lam if kind == "mesa" else cfg.saf_lam
    return OptimConfig(name=kind, learning_rate=cfg.learning_rate, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                       rho=rho if rho is not None else radius.get(kind, cfg.sam_rho), eta=cfg.asam_eta,
                       gsam_alpha=cfg.gsam_alpha, gsam_rho_min=cfg.gsam_rho_min, saf_lam=lam,
                       saf_tau=cfg.saf_tau, saf_delay=cfg.saf_delay, saf_start=cfg.saf_start,
                       mesa_decay=cfg.mesa_decay)



# ---------------------------------------------------------------------------------------------
# data and measurement
# ---------------------------------------------------------------------------------------------


def load_task(cfg: SharpnessStudyConfig) -> dict:
    """Digits pixels in [0, 1]; the fixed split; one noisy label vector per (noise, seed) run."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)
    tr = stratified_subset(y, cfg.n_train, cfg.split_seed)
    te = np.setdiff1d(np.arange(len(y)), tr)
    if cfg.n_test:
        te = np.sort(np.random.default_rng(cfg.split_seed).permutation(te)[: cfg.n_test])
    runs = [(z, s) for z in cfg.noise for s in cfg.seeds]
    noisy = np.stack([corrupt_labels(y[tr], z, s, 10) for z, s in runs])
    return {"x": x[tr], "y_clean": y[tr], "y": noisy, "x_test": x[te], "y_test": y[te], "runs": runs}


class Measure:
    """The jitted, run-vmapped measurements (compiled once per study, shared by every arm)."""

    def __init__(self, model: MLP, cfg: SharpnessStudyConfig, x: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray):
        xtr = jnp.asarray(x)
        logits = lambda p, xx: model.apply({"params": p}, xx)["out"]  # noqa: E731
        ce = lambda p, y: optax.softmax_cross_entropy_with_integer_labels(logits(p, xtr), y).mean()  # noqa: E731
        aace = lambda p, y: aace_loss(logits(p, xtr), y).mean()  # noqa: E731

        def epoch_metrics(p: Any, y: jax.Array, key: jax.Array) -> dict:
            n = D.gradient_norms({"ce": ce, "aace": aace}, p, y)
            lz = D.hessian_lanczos(ce, p, y, key, k=1, num_iters=cfg.lanczos_iters, tol=1e-3)
            return {"train_loss": ce(p, y), "grad_ce": n["ce"], "grad_aace": n["aace"],
                    "top_eigenvalue": lz.eigenvalues[0]}

        def final_metrics(p: Any, y: jax.Array, key: jax.Array) -> dict:
            return D.sharpness_report(ce, p, y, key, ascent_loss_fn=aace, rho=cfg.eps_rho, asam_rho=cfg.asam_rho,
                                      asam_eta=cfg.asam_eta, num_steps=cfg.eps_steps,
                                      lanczos_iters=cfg.lanczos_iters, num_probes=cfg.trace_probes)

        xte, yte = jnp.asarray(x_test), jnp.asarray(y_test)
        self.epoch = jax.jit(jax.vmap(epoch_metrics))
        self.final = jax.jit(jax.vmap(final_metrics))
        self.test_acc = jax.jit(jax.vmap(lambda p: jnp.mean(jnp.argmax(logits(p, xte), -1) == yte)))



def _cos(a: Any, b: Any) -> jax.Array:
    return optax.tree.vdot(a, b) / jnp.maximum(optax.tree.norm(a) * optax.tree.norm(b), 1e-30)


def make_epoch_fn(model: MLP, setup: Any, x: np.ndarray, n: int, batch_size: int) -> Callable:
    """Jitted ``(params, opt_state, prev_dir, y, keys, epoch) -> (params, opt_state, prev_dir, logs)``
    vmapped over runs; ``logs`` = epoch means of the training loss, ‖ε‖ and the cosine between
    consecutive ascent directions (the first pass's gradient; for SGD its gradient)."""
    xtr = jnp.asarray(x)
    steps = n // batch_size
    logits = lambda p, xx: model.apply({"params": p}, xx)["out"]  # noqa: E731

    def one_run(params, opt_state, prev, y, key, epoch):
        perm = jax.random.permutation(jax.random.wrap_key_data(key), n)[: steps * batch_size]

        def body(carry, idx):
            p, o, prev = carry
            xb, yb = xtr[idx], y[idx]
            ce = lambda q: optax.softmax_cross_entropy_with_integer_labels(logits(q, xb), yb).mean()  # noqa: E731
            pert = jnp.zeros([], jnp.float32)
            if setup.kind == "sam":
                asc = (lambda q: aace_loss(logits(q, xb), yb).mean()) if setup.ascent == "aace" else ce
                loss, d = jax.value_and_grad(asc)(p)
                upd, o = setup.tx.update(d, o, p, grad_fn=jax.grad(ce))
                pert = lsh.find_sam_state(o).perturbation_norm
            else:
                targets = None
                if setup.kind == "saf":
                    targets = lsh.saf_targets(o, idx, epoch)
                elif setup.kind == "mesa":
                    targets = lsh.mesa_targets(o, logits(lsh.mesa_params(o), xb), epoch)

                def total(q):
                    z = logits(q, xb)
                    c = optax.softmax_cross_entropy_with_integer_labels(z, yb).mean()
                    return c + (targets.penalty(z) if targets is not None else 0.0), z

                (loss, z), d = jax.value_and_grad(total, has_aux=True)(p)
                extra = dict(logits=z, sample_idx=idx, epoch=epoch) if setup.kind == "saf" else {}
                upd, o = setup.tx.update(d, o, p, **extra)
            cos = _cos(d, prev)
            return (optax.apply_updates(p, upd), o, d), (loss, pert, cos)

        (params, opt_state, prev), (loss, pert, cos) = jax.lax.scan(
            body, (params, opt_state, prev), perm.reshape(steps, batch_size))
        return params, opt_state, prev, {"loss": loss.mean(), "perturbation_norm": pert.mean(),
                                         "direction_cos": cos[1:].mean()}

    return jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, 0, 0, None)))


def _setup(arm: str, cfg: SharpnessStudyConfig, task: dict) -> tuple[Callable, tuple, list[int]]:
    """The arm's jitted epoch function, its initial (params, opt_state, previous direction), seeds."""
    model = MLP(hidden=tuple(cfg.hidden), out=10)
    n = cfg.n_train
    setup = build_optimizer(optim_config(arm, cfg), steps_per_epoch=n // cfg.batch_size, epochs=cfg.epochs,
                            num_examples=n, num_classes=10)
    seeds = [s for _, s in task["runs"]]
    params = init_stacked(model, task["x"].shape[1], seeds)
    state = (params, jax.vmap(setup.tx.init)(params), jax.tree.map(jnp.zeros_like, params))
    key = (arm, cfg)  # the task is a pure function of cfg: reuse the compiled epoch (training, then timing)
    if key not in _EPOCH_FNS:
        _EPOCH_FNS[key] = make_epoch_fn(model, setup, task["x"], n, cfg.batch_size)
    return _EPOCH_FNS[key], state, seeds


_EPOCH_FNS: dict = {}


def time_kinds(cfg: SharpnessStudyConfig, task: dict) -> dict:
    """Seconds per training step of each optimizer kind in ``cfg.arms``, measured interleaved.

    Every kind's epoch function is compiled first; then ``timing_rounds`` rounds each time one
    epoch of every kind in turn (so a change of machine load hits all kinds alike), at an epoch
    where SAF's/MESA's trajectory term is active. Returns the median over rounds per kind."""
    kinds = list(dict.fromkeys(parse_arm(a)[0] for a in cfg.arms))
    y = jnp.asarray(task["y"])
    keys = epoch_keys([s for _, s in task["runs"]], 0, 3)
    epoch = np.int32(max(cfg.epochs - 1, 0))
    fns = {}
    for k in kinds:
        fn, state, _ = _setup(k, cfg, task)
        jax.block_until_ready(fn(*state, y, keys, epoch))
        fns[k] = (fn, state)
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    steps = cfg.n_train // cfg.batch_size
    for _ in range(cfg.timing_rounds):
        for k, (fn, state) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*state, y, keys, epoch))
            samples[k].append((time.perf_counter() - t0) / steps)
    return {"step_time_s": {k: float(np.median(v)) for k, v in samples.items()}, "samples": samples}


def train_arm(arm: str, cfg: SharpnessStudyConfig, task: dict, measure: Measure) -> dict:
    """Train every (noise, seed) run of ``arm`` together; returns the per-run curves and finals."""
    epoch_fn, (params, opt_state, prev), seeds = _setup(arm, cfg, task)
    steps = cfg.n_train // cfg.batch_size
    y = jnp.asarray(task["y"])
    curves: dict[str, list] = {k: [] for k in ("epoch", "grad_ce", "grad_aace", "top_eigenvalue", "train_loss")}
    per_epoch: dict[str, list] = {"test_accuracy": [], "perturbation_norm": [], "direction_cos": [], "loss": []}
    times = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        keys = epoch_keys(seeds, epoch, 0)
        params, opt_state, prev, logs = epoch_fn(params, opt_state, prev, y, keys, np.int32(epoch))
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
        for k in ("perturbation_norm", "direction_cos", "loss"):
            per_epoch[k].append(np.asarray(logs[k]).tolist())
        per_epoch["test_accuracy"].append(np.asarray(measure.test_acc(params)).tolist())
        if (epoch + 1) % cfg.measure_every == 0 or epoch + 1 == cfg.epochs:
            m = jax.device_get(measure.epoch(params, y, epoch_keys(seeds, epoch, 1)))
            curves["epoch"].append(epoch + 1)
            for k in m:
                curves[k].append(np.asarray(m[k]).tolist())
    final = jax.device_get(measure.final(params, y, epoch_keys(seeds, 0, 2)))
    final = {k: np.asarray(v).tolist() for k, v in final.items()}
    return {"arm": arm, "runs": [list(r) for r in task["runs"]], "curves": curves, "per_epoch": per_epoch,
            "final": final, "final_test_accuracy": per_epoch["test_accuracy"][-1],
            "step_time_s": float(np.median(times[1:] if len(times) > 1 else times)) / steps,
            "first_epoch_s": times[0], "steps_per_epoch": steps}


def _by_noise(res: dict, values: list, z: str) -> np.ndarray:
    return np.asarray([v for (zz, _), v in zip(res["runs"], values) if zz == z], float)


def _final(res: dict, key: str, z: str) -> np.ndarray:
    if key == "test_accuracy":
        return 100 * _by_noise(res, res["final_test_accuracy"], z)
    return _by_noise(res, res["final"][key], z)


def _curve(res: dict, group: str, key: str, z: str) -> np.ndarray:
    """``[epochs, seeds]`` of a per-epoch or per-measurement curve, for noise ``z``."""
    return np.stack([_by_noise(res, row, z) for row in res[group][key]])


def _time(s: dict, arm: str) -> float:
    return s["timing"]["step_time_s"][parse_arm(arm)[0]]


def _rel_time(s: dict, arm: str) -> float:
    t = s["timing"]["step_time_s"]
    return _time(s, arm) / t["sgd"] if "sgd" in t else float("nan")


def _pick(s: dict, kind: str) -> str | None:
    return next((a for a in s["arms"] if parse_arm(a) == (kind, None)), None)


def tables(s: dict) -> dict:
    """One Markdown table per noise setting: accuracy, sharpness, cost, paired test vs SGD."""
    out = {}
    sgd = _pick(s, "sgd")
    for z in s["config"]["noise"]:
        rows = ["| arm | clean test acc (%) | vs SGD (paired) | λ_max | Hessian trace | ε-sharpness (ρ "
                f"{s['config']['eps_rho']:g}) | time/step (ms) | × SGD | passes/step |",
                "|---|---|---|---|---|---|---|---|---|"]
        for a, res in s["arms"].items():
            acc = _final(res, "test_accuracy", z)
            vs = "—"
            if sgd and a != sgd:
                t = stats.paired_t_test(acc - _final(s["arms"][sgd], "test_accuracy", z))
                vs = f"{t.fmt(2)} ({t.verdict})"
            cells = [f"{acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f}", vs]
            for k in ("top_eigenvalue", "trace", "eps_sharpness"):
                v = _final(res, k, z)
                cells.append(f"{v.mean():.3g} ± {v.std(ddof=1) if len(v) > 1 else 0:.2g}")
            cells += [f"{1e3 * _time(s, a):.2f}", f"{_rel_time(s, a):.2f}", PASSES[parse_arm(a)[0]]]
            rows.append(f"| {s['labels'][a]} | " + " | ".join(cells) + " |")
        out[z] = "\n".join(rows)
    return out


def _claim(s: dict, a: str | None, b: str | None, z: str, key: str, better: str) -> tuple[str, stats.PairedTest]:
    if a is None or b is None:
        return "n/a", stats.paired_t_test(None)
    t = stats.paired_t_test(_final(s["arms"][a], key, z) - _final(s["arms"][b], key, z), better=better)
    return stats.claim_word(t.verdict), t


def correlations(s: dict) -> dict:
    """Spearman ρ (and p) of each final sharpness measure with test accuracy over every run, per noise setting."""
    out = {}
    for z in s["config"]["noise"]:
        acc = np.concatenate([_final(r, "test_accuracy", z) for r in s["arms"].values()])
        out[z] = {k: stats.spearman(np.concatenate([_final(r, k, z) for r in s["arms"].values()]), acc)
                  for k in ("top_eigenvalue", "trace", "eps_sharpness")}
    return out


def claim_metrics(s: dict) -> dict:
    """``{arm: {"metrics": {"<key>@<noise>": per-seed values}}}`` of the final numbers (test
    accuracy in %, λ_max, trace, ε-sharpness): the form :func:`experiments.arms.claim_results` tests."""
    keys = ("test_accuracy", "top_eigenvalue", "trace", "eps_sharpness")
    return {a: {"metrics": {f"{k}@{z}": _final(r, k, z).tolist() for k in keys for z in s["config"]["noise"]}}
            for a, r in s["arms"].items()}


def mechanism_verdict(s: dict, z: str) -> str | None:
    """AACE's argument (Ratchatorn & Tanaka, ICIP 2024, Sec. 1-2) at noise ``z``: under SAM ‖∇CE‖
    vanishes and the ascent direction loses consistency; under AACE-SAM ‖∇AACE‖ does not vanish.
    None without both the ``sam`` and ``aace_sam`` arms."""
    sam, aace = _pick(s, "sam"), _pick(s, "aace_sam")
    if not (sam and aace):
        return None
    g_sam = _curve(s["arms"][sam], "curves", "grad_ce", z)
    g_aace = _curve(s["arms"][aace], "curves", "grad_aace", z)
    fall = g_sam[-1] / g_sam.max(axis=0)
    grow, keep = g_aace[-1] / g_aace[0], g_aace[-1] / g_aace.max(axis=0)
    i30 = int(0.3 * len(g_aace))
    late_growth = g_aace[-1] / g_aace[i30]
    ep30 = s["arms"][aace]["curves"]["epoch"][i30]
    e = len(s["arms"][sam]["per_epoch"]["direction_cos"])
    early, late = slice(max(1, e // 10), max(2, 3 * e // 10)), slice(max(0, 8 * e // 10), e)
    c_sam = _curve(s["arms"][sam], "per_epoch", "direction_cos", z)
    c_aace = _curve(s["arms"][aace], "per_epoch", "direction_cos", z)
    t_fade = stats.paired_t_test(c_sam[early].mean(0) - c_sam[late].mean(0))
    t_cons = stats.paired_t_test(c_aace[late].mean(0) - c_sam[late].mean(0))
    p_aace = _curve(s["arms"][aace], "per_epoch", "perturbation_norm", z)
    return (
        f"* AACE's mechanism: under SAM, ‖∇CE‖ on the training set ended at {fall.mean():.3f}× its peak "
        f"(mean over seeds) → ∇CE vanishing **{'held' if fall.mean() < 0.1 else 'did not hold'}** "
        f"(threshold 0.1×). Under AACE-SAM, ‖∇AACE‖ ended at {grow.mean():.2f}× its first measured value "
        f"and {keep.mean():.2f}× its peak → ∇AACE does not vanish "
        f"**{'held' if np.all(keep >= 0.5) else 'did not hold'}** (every seed ≥ 0.5× its peak); from epoch "
        f"{ep30} to the end it changed by {late_growth.mean():.2f}× → ∇AACE still growing late in training "
        f"**{'held' if np.all(late_growth > 1) else 'did not hold'}** (every seed > 1×); "
        f"AACE-SAM's applied ‖ε‖ went from {p_aace[0].mean():.3g} (epoch 1) to "
        f"{p_aace[-1].mean():.3g} (last epoch), SAM's is ρ by construction. Cosine between consecutive SAM "
        f"ascent directions, early (epochs {early.start + 1}–{early.stop}) minus late (last "
        f"{e - late.start}): {t_fade.fmt(3)} → SAM's direction becomes less consistent late "
        f"**{stats.claim_word(t_fade.verdict)}**; late-phase cosine AACE-SAM minus SAM: {t_cons.fmt(3)} → "
        f"AACE keeps a more consistent direction **{stats.claim_word(t_cons.verdict)}**.")


def sweep_verdicts(s: dict, z: str) -> list[str]:
    """For SAM and AACE-SAM with several radii: does the best radius (picked on the test set, an
    oracle) beat SGD?"""
    sgd, out = _pick(s, "sgd"), []
    for kind in ("sam", "aace_sam"):
        sweep = [a for a in s["arms"] if parse_arm(a)[0] == kind]
        if len(sweep) > 1 and sgd:
            best = max(sweep, key=lambda a: _final(s["arms"][a], "test_accuracy", z).mean())
            w, t = _claim(s, best, sgd, z, "test_accuracy", "higher")
            out.append(f"* Best {NAMES[kind]} of the ρ sweep (picked on the test set: an oracle, optimistic) is "
                       f"{s['labels'][best]}: − SGD {t.fmt(2)} pp → beats SGD **{w}**.")
    return out


def cost_verdicts(s: dict, z: str, max_rel_time: float = 1.25) -> list[str]:
    """SAF and MESA reach SAM's flatness at SGD's cost (Du et al., NeurIPS 2022, Tables 1 and 3):
    significantly flatter (λ_max) than SGD, not significantly sharper than SAM, and at most
    ``max_rel_time`` × SGD's time per step."""
    sgd, sam, out = _pick(s, "sgd"), _pick(s, "sam"), []
    for kind in ("saf", "mesa"):
        a = _pick(s, kind)
        if a is None or sam is None or sgd is None:
            continue
        wf, tf = _claim(s, a, sgd, z, "top_eigenvalue", "lower")
        ws, ts = _claim(s, a, sam, z, "top_eigenvalue", "lower")
        flat = wf == "held" and ws != "did not hold"
        rel = _rel_time(s, a)
        out.append(f"* {NAMES[kind]} reaches SAM's flatness at SGD's cost: λ_max {NAMES[kind]} − SGD "
                   f"{tf.fmt(3)} (flatter than SGD **{wf}**), {NAMES[kind]} − SAM {ts.fmt(3)} (not sharper than "
                   f"SAM: {'yes' if ws != 'did not hold' else 'no'}); time per step {rel:.2f}× SGD's "
                   f"(SAM {_rel_time(s, sam):.2f}×) → **{'held' if flat and rel <= max_rel_time else 'did not hold'}** "
                   "(criteria: significantly flatter than SGD, not significantly sharper than SAM, "
                   f"≤ {max_rel_time:g}× SGD's time per step).")
    return out


def correlation_verdict(s: dict, z: str) -> str:
    """Spearman rank correlation of each final sharpness measure with test accuracy over all runs."""
    corr = correlations(s)[z]
    return ("* Sharpness vs generalisation over all runs (Spearman rank correlation with test accuracy; "
            "negative = sharper generalises worse): "
            + ", ".join(f"{k.replace('_', ' ')} ρ_s = {r:+.2f} (p = {p:.2g})" for k, (r, p) in corr.items()) + ".")


def plot(s: dict, path: str) -> None:
    """``path``: the mechanism curves (rows = noise settings, epochs 1-based); ``<path>_scatter.png``: final
    sharpness vs accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = s["config"]["noise"]
    arms = [a for a in (_pick(s, k) for k in ("sgd", "sam", "aace_sam")) if a]
    panels = [("curves", "grad_ce", "‖∇CE‖"), ("curves", "grad_aace", "‖∇AACE‖"),
              ("per_epoch", "perturbation_norm", "applied ‖ε‖"), ("per_epoch", "direction_cos", "cos(d_t, d_{t−1})"),
              ("curves", "top_eigenvalue", "λ_max")]
    palette = list(plt.cm.tab10.colors) + list(plt.cm.Dark2.colors)
    colors = {a: palette[i % len(palette)] for i, a in enumerate(s["arms"])}
    fig, axes = plt.subplots(len(noise), len(panels), figsize=(4 * len(panels), 3.2 * len(noise)), squeeze=False)
    for i, z in enumerate(noise):
        for j, (group, key, title) in enumerate(panels):
            ax = axes[i, j]
            for a in arms:
                r = s["arms"][a]
                c = _curve(r, group, key, z)
                ep = r["curves"]["epoch"] if group == "curves" else list(range(1, len(c) + 1))
                if key == "perturbation_norm" and parse_arm(a)[0] == "sgd":
                    continue
                ax.plot(ep, c.mean(1), label=s["labels"][a], color=colors[a])
                ax.fill_between(ep, c.min(1), c.max(1), alpha=0.2, color=colors[a])
            if key != "direction_cos":
                ax.set_yscale("log")
            ax.set_title(f"{z}: {title}")
            ax.set_xlabel("epoch")
        axes[i, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    keys = [("top_eigenvalue", "final λ_max"), ("trace", "final Hessian trace"), ("eps_sharpness", "ε-sharpness")]
    fig, axes = plt.subplots(len(noise), len(keys), figsize=(4.5 * len(keys), 3.6 * len(noise)), squeeze=False)
    corr = correlations(s)
    for i, z in enumerate(noise):
        for j, (k, title) in enumerate(keys):
            ax = axes[i, j]
            for a, r in s["arms"].items():
                ax.scatter(_final(r, k, z), _final(r, "test_accuracy", z), s=16, color=colors[a],
                           marker="o" if parse_arm(a)[1] is None else "^", label=s["labels"][a])
            ax.set_xlabel(title)
            ax.set_ylabel("clean test accuracy (%)")
            ax.set_title(f"{z}: Spearman {corr[z][k][0]:+.2f}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(path[: -len(".png")] + "_scatter.png", dpi=90)
    plt.close(fig)

