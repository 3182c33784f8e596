"""GPU benchmark and correctness run for lossjax.kernels (spec kernels.md §9.2-9.5).

One command on an H100 (from the repository root)::

    XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=. python3 benchmarks/kernels_gpu.py --out benchmarks/results

(writes ``kernels_gpu_h100_run.json/.md``; the curated, annotated H100 numbers are in ``kernels_gpu_h100.md``)

Parts (``--parts``, comma separated; default all): ``check`` (compiled Pallas vs a float64 NumPy reference
and vs XLA full logits), ``tune`` (forward / backward block sweep), ``ce`` (Pallas vs XLA full logits vs
chunked, bf16, fwd and fwd+bwd, memory_analysis temp), ``peak`` (fresh-subprocess peak memory at the Gemma 2
shape), ``softmax`` (two-pass softmax vs jax.nn.softmax, GB/s), ``tune_bwd`` (optional). Writes ``kernels_gpu_<tag>.json`` and
``.md`` (tables only). Times are medians of ``--iters`` calls after warm-up, ``block_until_ready`` around each call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

PEAK_BF16_TFLOPS = 989.4  # H100 SXM dense bf16 (spec §9.4)
PEAK_HBM_GBS = 3350.0


def _env():
    import jax

    info = {"jax": jax.__version__, "python": platform.python_version(), "device": str(jax.devices()[0].device_kind)}
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except Exception:
        pass
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu",
             "--format=csv"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as err:
        info["nvidia_smi"] = repr(err)
    return info


def _timeit(f, *args, iters=20, warm=3):
    import jax

    jax.block_until_ready(f(*args))
    for _ in range(warm):
        jax.block_until_ready(f(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    ts = np.asarray(ts) * 1e3
    return {"median_ms": float(np.median(ts)), "p10_ms": float(np.percentile(ts, 10)),
            "p90_ms": float(np.percentile(ts, 90)), "min_ms": float(ts.min())}


def _data(n, d, v, dtype, seed=0, ignore_frac=0.0):
    import jax
    import jax.numpy as jnp

    k = jax.random.split(jax.random.key(seed), 4)
    scale = d ** -0.25
    # drawn directly in the target dtype, so that no f32 copy of C inflates the peak-memory readings
    e = jax.random.normal(k[0], (n, d), dtype) * jnp.asarray(scale, dtype)
    c = jax.random.normal(k[1], (v, d), dtype) * jnp.asarray(scale, dtype)
    t = jax.random.randint(k[2], (n,), 0, v, jnp.int32)
    if ignore_frac:
        t = jnp.where(jax.random.uniform(k[3], (n,)) < ignore_frac, -100, t)
    return e, c, t


def _ref64(e, c, t, softcap=None, smooth=0.0, bias=None, z_loss=0.0):
    """float64 NumPy loss (mean over valid), dE, dC and lse."""
    e = np.asarray(e, np.float64)
    c = np.asarray(c, np.float64)
    t = np.asarray(t)
    a = e @ c.T
    if bias is not None:
        a = a + np.asarray(bias, np.float64)
    z = softcap * np.tanh(a / softcap) if softcap else a
    mx = z.max(1, keepdims=True)
    lse = (mx + np.log(np.exp(z - mx).sum(1, keepdims=True)))[:, 0]
    valid = t != -100
    n = max(valid.sum(), 1)
    v = c.shape[0]
    ts = np.where(valid, t, 0)
    zt = z[np.arange(len(t)), ts]
    nll = lse - (1 - smooth) * zt - smooth / v * z.sum(1) + z_loss * lse ** 2
    loss = np.where(valid, nll, 0).sum() / n
    p = np.exp(z - lse[:, None])
    oh = np.zeros_like(z)
    oh[np.arange(len(t)), ts] = 1.0
    g = valid[:, None] / n
    grad = g * ((1 + 2 * z_loss * lse[:, None]) * p - (1 - smooth) * oh - smooth / v)
    if softcap:
        grad = grad * (1 - (z / softcap) ** 2)
    return loss, grad @ c, grad.T @ e, lse


def _rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def part_check(res):
    import jax
    import jax.numpy as jnp

    from lossjax.kernels import linear_cross_entropy as lce

    rows = []
    cases = [
        dict(n=1000, d=256, v=5000, dtype="float32", softcap=None, smooth=0.0, ig=0.2),
        dict(n=1000, d=192, v=4099, dtype="float32", softcap=5.0, smooth=0.1, ig=0.2),
        dict(n=777, d=2304, v=32000, dtype="bfloat16", softcap=30.0, smooth=0.0, ig=0.2),
        dict(n=1024, d=2048, v=50000, dtype="bfloat16", softcap=None, smooth=0.0, ig=0.0),
    ]
    if os.environ.get("LOSSJAX_SMOKE"):
        cases = [dict(cs, n=40, d=64, v=300) for cs in cases]
    for cs in cases:
        dt = getattr(jnp, cs["dtype"])
        e, c, t = _data(cs["n"], cs["d"], cs["v"], dt, seed=1, ignore_frac=cs["ig"])
        if cs["dtype"] == "float32":
            e = e * 3.0
        loss64, de64, dc64, lse64 = _ref64(np.asarray(e, np.float32), np.asarray(c, np.float32), t,
                                           cs["softcap"], cs["smooth"], z_loss=1e-3)
        for impl in ("pallas", "chunked", "naive"):
            def f(e, c, impl=impl):
                loss, lse = lce(e, c, t, impl=impl, softcap=cs["softcap"], label_smoothing=cs["smooth"],
                                z_loss=1e-3, return_lse=True)
                return loss.astype(jnp.float32), lse
            (loss, lse), vjp = jax.vjp(jax.jit(f), e, c)
            de, dc = vjp((jnp.ones((), jnp.float32), jnp.zeros_like(lse)))
            row = dict(cs, impl=impl, loss_rel=_rel(loss, loss64), lse_rel=_rel(lse, lse64),
                       dE_rel=_rel(de, de64), dC_rel=_rel(dc, dc64), finite=bool(np.isfinite(np.asarray(de, np.float32)).all()),
                       out_dtypes=[str(loss.dtype), str(de.dtype), str(dc.dtype), str(lse.dtype)])
            rows.append(row)
            print("check", {k: (round(v, 8) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    # all-ignored batch
    e, c, t = _data(64, 128, 1000, jnp.bfloat16)
    t = jnp.full_like(t, -100)
    val, (de, dc) = jax.jit(jax.value_and_grad(lambda e, c: lce(e, c, t, impl="pallas").astype(jnp.float32),
                                               argnums=(0, 1)))(e, c)
    rows.append(dict(case="all_ignored", loss=float(val), max_abs_grad=float(max(jnp.abs(de.astype(jnp.float32)).max(),
                                                                                  jnp.abs(dc.astype(jnp.float32)).max()))))
    print("check all-ignored", rows[-1], flush=True)
    res["check"] = rows


def _ce_fns(impl, t, softcap, **kw):
    import jax
    import jax.numpy as jnp

    from lossjax.kernels import linear_cross_entropy as lce

    if impl == "xla":
        import optax

        def loss(e, c):
            z = jnp.dot(e, c.T, preferred_element_type=jnp.float32)
            if softcap:
                z = softcap * jnp.tanh(z / softcap)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, t))
    else:
        def loss(e, c):
            return lce(e, c, t, impl=impl, softcap=softcap, **kw).astype(jnp.float32)
    return jax.jit(loss), jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def part_tune(res, iters):
    import jax.numpy as jnp

    n, d, v = (8192, 4096, 32768) if not os.environ.get("LOSSJAX_SMOKE") else (128, 64, 512)
    e, c, t = _data(n, d, v, jnp.bfloat16)
    flops = 2 * n * d * v
    rows = []
    fwd_cfgs = [(64, 128, 64, 4, 3), (128, 128, 64, 8, 3), (128, 128, 32, 4, 4), (128, 256, 64, 8, 3),
                (64, 256, 64, 8, 3), (128, 128, 64, 4, 4), (256, 128, 64, 8, 3)]
    for bn, bv, bd, w, s in fwd_cfgs:
        fwd, _ = _ce_fns("pallas", t, None, block_n=bn, block_v=bv, block_d=bd, num_warps=w, num_stages=s)
        try:
            r = _timeit(fwd, e, c, iters=iters)
            r.update(tflops=flops / r["median_ms"] / 1e9)
        except Exception as err:
            r = {"error": repr(err)[:300]}
        r.update(kind="fwd", bn=bn, bv=bv, bd=bd, warps=w, stages=s, n=n, d=d, v=v)
        rows.append(r)
        print("tune", r, flush=True)
    res["tune"] = rows
    ok = [r for r in rows if "tflops" in r]
    if ok:
        res["best_fwd"] = max(ok, key=lambda r: r["tflops"])


def part_tune_bwd(res, iters):
    import jax.numpy as jnp

    n, d, v = (8192, 4096, 32768) if not os.environ.get("LOSSJAX_SMOKE") else (128, 64, 512)
    e, c, t = _data(n, d, v, jnp.bfloat16)
    flops = 8 * n * d * v
    best = res.get("best_fwd", {})
    rows = []
    for chunk, bn, w, s in [(8192, 64, 4, 3), (16384, 64, 4, 3), (8192, 128, 8, 3)]:
        # block_n is shared by fwd and the G kernel; keep the forward's best bv/bd.
        _, fb = _ce_fns("pallas", t, None, block_n=bn, block_v=best.get("bv", 128), block_d=best.get("bd", 64),
                        num_warps=w, num_stages=s, bwd_chunk=chunk)
        try:
            r = _timeit(fb, e, c, iters=iters)
            r.update(tflops=flops / r["median_ms"] / 1e9)
        except Exception as err:
            r = {"error": repr(err)[:300]}
        r.update(kind="fwd+bwd", chunk=chunk, bn=bn, warps=w, stages=s, n=n, d=d, v=v)
        rows.append(r)
        print("tune", r, flush=True)
    res["tune_bwd"] = rows
    ok = [r for r in rows if "tflops" in r]
    if ok:
        res["best_bwd"] = max(ok, key=lambda r: r["tflops"])


def _best_kw(res):
    b = res.get("best_fwd") or {}
    kw = dict(block_n=b.get("bn", 64), block_v=b.get("bv", 128), block_d=b.get("bd", 64),
              num_warps=b.get("warps", 4), num_stages=b.get("stages", 3))
    bb = res.get("best_bwd") or {}
    if bb:
        kw.update(bwd_chunk=bb["chunk"])
    return kw


def _compiled(f, *args):
    comp = f.lower(*args).compile()
    try:
        temp = comp.memory_analysis().temp_size_in_bytes
    except Exception:
        temp = None
    return comp, temp


CE_SHAPES = [(8192, 4096, 32768, None), (8192, 4096, 131072, None), (8192, 2304, 256000, 30.0)]
if os.environ.get("LOSSJAX_BIG"):
    CE_SHAPES.append((16384, 4096, 262144, None))


def part_ce(res, iters):
    import jax
    import jax.numpy as jnp

    kw = _best_kw(res)
    rows = []
    shapes = CE_SHAPES if not os.environ.get("LOSSJAX_SMOKE") else [(128, 64, 1000, None), (64, 32, 600, 30.0)]
    for n, d, v, sc in shapes:
        e, c, t = _data(n, d, v, jnp.bfloat16, seed=2)
        ref = None
        for impl, ikw in (("xla", {}), ("pallas", kw), ("chunked", {"block_v": 8192})):
            fwd, fb = _ce_fns(impl, t, sc, **ikw)
            for mode, f, fl in (("fwd", fwd, 2), ("fwd+bwd", fb, 8)):
                row = dict(impl=impl, n=n, d=d, v=v, softcap=sc, mode=mode, dtype="bfloat16")
                try:
                    comp, temp = _compiled(f, e, c)
                    row["temp_MiB"] = None if temp is None else temp / 2 ** 20
                    out = comp(e, c)
                    r = _timeit(comp, e, c, iters=iters if n * v < 2 ** 31 else max(5, iters // 2))
                    row.update(r)
                    row["tflops"] = fl * n * d * v / r["median_ms"] / 1e9
                    row["pct_peak"] = 100 * row["tflops"] / PEAK_BF16_TFLOPS
                    if mode == "fwd+bwd":
                        loss, (de, dc) = out
                        if impl == "xla":
                            ref = (loss, de, dc)
                        elif ref is not None:
                            row["loss_rel_vs_xla"] = _rel(loss, ref[0])
                            row["dE_rel_vs_xla"] = _rel(jnp.asarray(de, jnp.float32), jnp.asarray(ref[1], jnp.float32))
                            row["dC_rel_vs_xla"] = _rel(jnp.asarray(dc, jnp.float32), jnp.asarray(ref[2], jnp.float32))
                        del de, dc
                    del out, comp
                except Exception as err:
                    row["error"] = repr(err)[:400]
                rows.append(row)
                print("ce", {k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items()}, flush=True)
        del e, c, t, ref
    res["ce"] = rows


def _worker(spec):
    """Fresh-process peak memory: prints JSON {before, peak} bytes for one (impl, shape, mode)."""
    import jax
    import jax.numpy as jnp

    impl, n, d, v, sc, mode, kwjson = spec.split("|")
    n, d, v = int(n), int(d), int(v)
    sc = None if sc == "None" else float(sc)
    kw = json.loads(kwjson)
    e, c, t = _data(n, d, v, jnp.bfloat16, seed=3)
    jax.block_until_ready((e, c, t))
    fwd, fb = _ce_fns(impl, t, sc, **kw)
    f = fwd if mode == "fwd" else fb
    comp, temp = _compiled(f, e, c)
    stats0 = jax.devices()[0].memory_stats()
    before = stats0["bytes_in_use"]
    out = comp(e, c)
    jax.block_until_ready(out)
    stats = jax.devices()[0].memory_stats()
    print("WORKER" + json.dumps(dict(before=before, peak=stats["peak_bytes_in_use"], temp=temp,
                                     peak_before=stats0["peak_bytes_in_use"])), flush=True)


def part_peak(res, iters):
    kw = _best_kw(res)
    n, d, v, sc = (8192, 2304, 256000, 30.0) if not os.environ.get("LOSSJAX_SMOKE") else (64, 32, 600, 30.0)
    rows = []
    grads = (n + v) * d * 2
    inputs = (n + v) * d * 2 + 4 * n
    for impl, ikw in (("pallas", kw), ("chunked", {"block_v": 8192}), ("xla", {})):
        for mode in ("fwd", "fwd+bwd"):
            spec = "|".join([impl, str(n), str(d), str(v), str(sc), mode, json.dumps(ikw)])
            p = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True,
                               timeout=240, env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
            row = dict(impl=impl, n=n, d=d, v=v, softcap=sc, mode=mode)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("WORKER")]
            if line:
                w = json.loads(line[0][6:])
                row.update(w)
                extra = w["peak"] - w["before"]
                if mode == "fwd+bwd":
                    extra -= grads
                row["extra_MiB_beyond_inputs_and_grads"] = extra / 2 ** 20
                row["inputs_MiB"] = inputs / 2 ** 20
            else:
                row["error"] = (p.stderr or "")[-600:]
            rows.append(row)
            print("peak", row, flush=True)
    res["peak"] = rows


def part_softmax(res, iters):
    import jax
    import jax.numpy as jnp

    from lossjax.kernels.softmax import two_pass_softmax

    rows = []
    shapes = [(4096, 32768), (4096, 262144), (1024, 1048576)]
    if os.environ.get("LOSSJAX_SMOKE"):
        shapes = [(16, 4099)]
    if os.environ.get("LOSSJAX_SOFTMAX_QUICK"):
        shapes = [(4096, 262144)]
    for r_, v_ in shapes:
        for dt in (jnp.float32, jnp.bfloat16):
            x = jax.random.normal(jax.random.key(5), (r_, v_), jnp.float32).astype(dt) * 4
            nbytes = x.size * x.dtype.itemsize
            y0 = jax.nn.softmax(x.astype(jnp.float32), axis=-1)
            cands = {
                "copy(x*1)": jax.jit(lambda x: x * jnp.asarray(1, x.dtype)),
                "jax.nn.softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
                "three_pass_jnp": jax.jit(lambda x: (lambda x32: jnp.exp(x32 - x32.max(-1, keepdims=True)) /
                                                     jnp.exp(x32 - x32.max(-1, keepdims=True)).sum(-1, keepdims=True))(x.astype(jnp.float32)).astype(x.dtype)),
                "two_pass_pallas_online": jax.jit(lambda x: two_pass_softmax(x, impl="pallas", state="online")),
                "two_pass_pallas_online_b4x2048w8": jax.jit(lambda x: two_pass_softmax(x, impl="pallas", state="online", block_rows=4, block_cols=2048, num_warps=8)),
                "two_pass_pallas_extexp": jax.jit(lambda x: two_pass_softmax(x, impl="pallas", state="extexp")),
                "two_pass_jax_online": jax.jit(lambda x: two_pass_softmax(x, impl="jax", state="online")),
            }
            for name, f in cands.items():
                row = dict(impl=name, rows=r_, v=v_, dtype=str(jnp.dtype(dt)))
                try:
                    y = f(x)
                    if not name.startswith("copy"):
                        row["max_abs_err_vs_f32_xla"] = float(jnp.max(jnp.abs(y.astype(jnp.float32) - y0)))
                    del y
                    r = _timeit(f, x, iters=iters)
                    row.update(r)
                    row["GBs_min_traffic(1R+1W)"] = 2 * nbytes / r["median_ms"] / 1e6
                    row["GBs_two_pass_traffic(2R+1W)"] = 3 * nbytes / r["median_ms"] / 1e6
                except Exception as err:
                    row["error"] = repr(err)[:400]
                rows.append(row)
                print("softmax", {k: (round(x_, 4) if isinstance(x_, float) else x_) for k, x_ in row.items()}, flush=True)
            del x, y0
    res["softmax"] = rows


def _markdown(res):
    """Plain Markdown tables of every part in ``res`` (one table per part, union of keys as columns)."""
    lines = [f"# lossjax.kernels GPU run on {res['env'].get('device')}", "", f"env: `{res['env']}`", ""]
    for part, rows in res.items():
        if not isinstance(rows, list) or not rows:
            continue
        cols = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        lines += [f"## {part}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = []
            for k in cols:
                x = r.get(k, "")
                cells.append(f"{x:.4g}" if isinstance(x, float) else str(x))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="check,tune,ce,peak,softmax")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tag", default="h100_run", help="output name: kernels_gpu_<tag>.json/.md")
    ap.add_argument("--worker", default=None)
    args = ap.parse_args()
    if args.worker:
        sys.path.insert(0, os.getcwd())
        _worker(args.worker)
        return
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    res = {"env": _env()}
    print(res["env"], flush=True)
    parts = args.parts.split(",")
    t0 = time.time()
    for p in parts:
        globals()[f"part_{p}"](res, *( [args.iters] if p not in ("check",) else []))
        print(f"== part {p} done at {time.time() - t0:.1f}s", flush=True)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"kernels_gpu_{args.tag}.json"), "w") as fh:
            json.dump(res, fh, indent=1)
        with open(os.path.join(args.out, f"kernels_gpu_{args.tag}.md"), "w") as fh:
            fh.write(_markdown(res))


if __name__ == "__main__":
    main()
