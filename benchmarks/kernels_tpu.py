"""TPU benchmark and correctness run for the Pallas Mosaic-TPU kernels (docs/design/kernels_tpu.md).

One command on a TPU VM (from the repository root)::

    PYTHONPATH=. python3 benchmarks/kernels_tpu.py --out benchmarks/results

It writes ``kernels_tpu_<chip>.json/.md`` after every row (a run cut short keeps what it measured) and
stops starting rows once ``--budget_s`` (default 900 s) is spent. No TPU timing exists yet: the first run
on a TPU produces the first table.

Parts (``--parts``, comma separated; default ``check,tune,ce,softmax``):

* ``check``: the compiled TPU kernels vs a float64 NumPy reference (loss, LSE, dE, dC, db) with every
  option on, and an all-ignored batch.
* ``tune``: forward and fwd+bwd tile sweep (block_n x block_v) at (8192, 4096, 32768); ``ce`` uses the best.
* ``ce``: XLA full logits (optax) vs the pure-JAX chunked path vs the TPU kernels, bf16, fwd and fwd+bwd:
  median ms, effective TFLOP/s (2NDV forward, 8NDV fwd+bwd nominal) and % of the chip's bf16 peak,
  ``memory_analysis`` temp MiB, gradient error against XLA.
* ``softmax``: two-pass softmax kernel vs ``jax.nn.softmax``, effective GB/s (3 x bytes) and % of HBM peak.

Peaks come from ``pltpu.get_tpu_info()`` (per TensorCore, times the cores of the device). Times are medians
of ``--iters`` calls after two warm-ups, ``block_until_ready`` around each. ``LOSSJAX_SMOKE=1`` shrinks
every shape so the script runs on CPU (kernels in interpret mode) as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

SMOKE = bool(os.environ.get("LOSSJAX_SMOKE"))
SHAPES = ((4096, 2048, 32768), (8192, 4096, 32768), (8192, 4096, 131072), (8192, 2304, 256000),
          (16384, 4096, 131072))
SMOKE_SHAPES = ((24, 32, 300),)
TUNE_SHAPE = (8192, 4096, 32768)
TUNE_TILES = ((256, 256), (256, 512), (512, 512), (512, 1024), (1024, 512), (1024, 1024))
SOFTMAX_SHAPES = ((4096, 32768), (4096, 131072), (1024, 1048576))


def _peaks():
    """(bf16 TFLOP/s, HBM GB/s, chip) of the default device; NaN off-TPU."""
    import jax
    from jax.experimental.pallas import tpu as pltpu

    if jax.default_backend() != "tpu":
        return float("nan"), float("nan"), "cpu"
    info = pltpu.get_tpu_info()
    cores = max(1, int(getattr(info, "num_cores", 1)))
    return (info.bf16_ops_per_second * cores / 1e12, info.mem_bw_bytes_per_second * cores / 1e9,
            str(info.chip_version.value))


def _time(fn, args, iters):
    import jax

    for _ in range(2):
        jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def _temp_mib(fn, args):
    try:
        return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # pragma: no cover - backend without memory_analysis
        return float("nan")


def _rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _losses(tconf):
    """(name -> loss(e, c, t)) for the three implementations, mean over valid rows, bf16-safe."""
    import jax.numpy as jnp
    import optax

    from lossjax.kernels.linear_ce_chunked import chunked_nll_lse
    from lossjax.kernels.linear_ce_common import LinearCEConfig
    from lossjax.kernels.linear_ce_tpu import tpu_rows

    def mean(nll, t):
        return jnp.sum(nll) / jnp.maximum(jnp.sum(t != -100), 1)

    def xla(e, c, t):
        z = jnp.dot(e, c.T, preferred_element_type=jnp.float32)
        return mean(jnp.where(t != -100, optax.softmax_cross_entropy_with_integer_labels(z, jnp.maximum(t, 0)), 0.0), t)

    def chunked(e, c, t):
        return mean(chunked_nll_lse(e, c, None, t, LinearCEConfig(block_v=8192))[0], t)

    def tpu(e, c, t):
        return mean(tpu_rows(e, c, None, t, LinearCEConfig(), tconf)[0], t)

    return {"xla": xla, "chunked": chunked, "tpu": tpu}


def _data(n, d, v, dtype, seed=0):
    import jax
    import jax.numpy as jnp

    k = jax.random.split(jax.random.key(seed), 3)
    e = (jax.random.normal(k[0], (n, d)) / d ** 0.25).astype(dtype)
    c = (jax.random.normal(k[1], (v, d)) / d ** 0.25).astype(dtype)
    t = jax.random.randint(k[2], (n,), 0, v).astype(jnp.int32)
    return e, c, jnp.where(jnp.arange(n) % 10 == 0, -100, t)


def part_check(res, emit):
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "kernels"))
    from _kernels_oracle import make_data, ref_linear_ce

    from lossjax.kernels.linear_ce_common import LinearCEConfig
    from lossjax.kernels.linear_ce_tpu import TpuConfig, tpu_rows

    n, d, v = (37, 32, 300) if SMOKE else (1000, 256, 5000)
    cfg = LinearCEConfig(softcap=5.0, label_smoothing=0.1)
    tconf = TpuConfig(block_n=16, block_v=128) if SMOKE else TpuConfig(block_n=256, block_v=512)

    @jax.jit
    def run(e, c, b, t):
        def f(e, c, b):
            nll, lse = tpu_rows(e, c, b, t, cfg, tconf)
            per = nll + jnp.where(t != -100, 1e-2 * lse * lse, 0.0)
            return jnp.sum(per), (per, lse)

        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(e, c, b)

    for case in ("all_options_f32", "all_ignored"):
        e, c, t, b = make_data(n, d, v, seed=1)
        if case == "all_ignored":
            t = np.full_like(t, -100)
        (val, (per, lse)), (de, dc, db) = run(e, c, b, t)
        row = {"case": case, "N": n, "D": d, "V": v}
        if case == "all_ignored":
            row.update(loss=float(val), max_abs_grad=float(max(jnp.max(jnp.abs(g)) for g in (de, dc, db))))
        else:
            ref = ref_linear_ce(e, c, t, bias=b, softcap=5.0, smooth=0.1, z_loss=1e-2, reduction="none",
                                cot=np.ones(n))
            row.update(loss_rel=_rel(per, ref[0]), lse_rel=_rel(lse, ref[1]), dE_rel=_rel(de, ref[2]),
                       dC_rel=_rel(dc, ref[3]), db_rel=_rel(db, ref[4]))
        emit("check", row)


def _ce_rows(emit, part, shape, impls, tconf, iters, peak_tf):
    import jax
    import jax.numpy as jnp

    n, d, v = shape
    e, c, t = _data(n, d, v, jnp.bfloat16)
    fns = _losses(tconf)
    grads = {}
    for name in impls:
        for mode in ("fwd", "fwd+bwd"):
            if _time_left() <= 0:
                emit(part, {"impl": name, "mode": mode, "N": n, "D": d, "V": v, "skipped": "time budget"})
                continue
            f = fns[name] if mode == "fwd" else jax.value_and_grad(fns[name], argnums=(0, 1))
            fj = jax.jit(f)
            row = {"impl": name, "mode": mode, "N": n, "D": d, "V": v, "block_n": tconf.block_n,
                   "block_v": tconf.block_v}
            try:
                ms = _time(fj, (e, c, t), iters)
                flops = (2 if mode == "fwd" else 8) * n * d * v
                row.update(ms=ms, tflops=flops / ms / 1e9, pct_peak=100 * flops / ms / 1e9 / peak_tf,
                           temp_mib=_temp_mib(fj, (e, c, t)))
                if mode == "fwd+bwd":
                    grads[name] = fj(e, c, t)[1]
                    if name != "xla" and "xla" in grads:
                        row["dE_rel_vs_xla"] = _rel(grads[name][0], grads["xla"][0])
                        row["dC_rel_vs_xla"] = _rel(grads[name][1], grads["xla"][1])
            except Exception as err:  # e.g. XLA full logits out of memory: a result worth recording
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            emit(part, row)


_DEADLINE = [float("inf")]


def _time_left():
    return _DEADLINE[0] - time.time()


def part_tune(res, emit, iters, peak_tf):
    from lossjax.kernels.linear_ce_tpu import TpuConfig

    shape = (24, 32, 300) if SMOKE else TUNE_SHAPE
    tiles = ((16, 128),) if SMOKE else TUNE_TILES
    for bn, bv in tiles:
        _ce_rows(emit, "tune", shape, ("tpu",), TpuConfig(block_n=bn, block_v=bv), iters, peak_tf)


def _best_tiles(res):
    from lossjax.kernels.linear_ce_tpu import TpuConfig

    ok = [r for r in res.get("tune", []) if r.get("mode") == "fwd+bwd" and "ms" in r]
    if not ok:
        return TpuConfig()
    best = min(ok, key=lambda r: r["ms"])
    return TpuConfig(block_n=best["block_n"], block_v=best["block_v"])


def part_ce(res, emit, iters, peak_tf):
    for shape in SMOKE_SHAPES if SMOKE else SHAPES:
        _ce_rows(emit, "ce", shape, ("xla", "chunked", "tpu"), _best_tiles(res), iters, peak_tf)


def part_softmax(res, emit, iters, peak_bw):
    import jax
    import jax.numpy as jnp

    from lossjax.kernels.softmax_tpu import two_pass_softmax_tpu

    for r, v in ((13, 300),) if SMOKE else SOFTMAX_SHAPES:
        for dtype in (jnp.float32, jnp.bfloat16):
            x = jax.random.normal(jax.random.key(0), (r, v)).astype(dtype)
            ref = jax.nn.softmax(x.astype(jnp.float32), axis=-1)
            for name, fn in (("tpu_two_pass", two_pass_softmax_tpu), ("jax.nn.softmax", jax.nn.softmax)):
                row = {"impl": name, "R": r, "V": v, "dtype": jnp.dtype(dtype).name}
                if _time_left() <= 0:
                    emit("softmax", dict(row, skipped="time budget"))
                    continue
                fj = jax.jit(fn)
                ms = _time(fj, (x,), iters)
                gbs = 3 * x.size * x.dtype.itemsize / ms / 1e6
                row.update(ms=ms, gbs=gbs, pct_peak=100 * gbs / peak_bw,
                           max_abs_err=float(jnp.max(jnp.abs(fj(x).astype(jnp.float32) - ref))))
                emit("softmax", row)


def _markdown(res):
    out = [f"# TPU kernels: {res['env']['chip']} ({res['env']['device']})", "",
           "```", json.dumps(res["env"]), "```"]
    for part in ("check", "tune", "ce", "softmax"):
        rows = res.get(part)
        if not rows:
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out += ["", f"## {part}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--parts", default="check,tune,ce,softmax")
    ap.add_argument("--iters", type=int, default=3 if SMOKE else 20)
    ap.add_argument("--budget_s", type=float, default=900.0)
    ap.add_argument("--tag", default=None, help="file name suffix (default: the chip, e.g. v5e)")
    args = ap.parse_args(argv)

    import jax

    peak_tf, peak_bw, chip = _peaks()
    env = {"jax": jax.__version__, "python": platform.python_version(), "backend": jax.default_backend(),
           "device": str(jax.devices()[0].device_kind), "chip": chip, "peak_bf16_tflops": peak_tf,
           "peak_hbm_gbs": peak_bw, "smoke": SMOKE}
    res = {"env": env}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"kernels_tpu_{args.tag or chip}")

    def save():
        with open(stem + ".json", "w") as fh:
            json.dump(res, fh, indent=1)
        with open(stem + ".md", "w") as fh:
            fh.write(_markdown(res))

    def emit(part, row):
        res.setdefault(part, []).append(row)
        print(part, {k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items()}, flush=True)
        save()

    _DEADLINE[0] = time.time() + args.budget_s
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        res.setdefault(p, [])
        if p == "check":
            part_check(res, emit)
        elif p == "tune":
            part_tune(res, emit, args.iters, peak_tf)
        elif p == "ce":
            part_ce(res, emit, args.iters, peak_tf)
        elif p == "softmax":
            part_softmax(res, emit, args.iters, peak_bw)
        else:
            raise SystemExit(f"unknown part {p!r}")
    save()
    print("wrote", stem + ".json", stem + ".md")


if __name__ == "__main__":
    main()
