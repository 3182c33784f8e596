"""Sharded linear cross-entropy checks on 8 fake CPU devices; run as a script by
``test_kernels_linear_ce_sharded.py`` (the device count must be set before jax is imported).

Prints one JSON object: per case the relative errors of value and gradients against the single-device
f32 result of the same impl and against the float64 oracle, the gradients' shardings, the all-gather
shapes of compiled vocab-parallel programs, and per-device temp memory as the model axis grows.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before jax is imported; importing this module (pytest collection) changes nothing
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _kernels_oracle import make_data, ref_linear_ce, rel  # noqa: E402

from lossjax.kernels import ChunkedConfig, PallasConfig, linear_cross_entropy  # noqa: E402

N, D = 32, 16
V = 203  # divisible by neither 2, 4 nor 8: the vocab-parallel path pads and masks (options "all", "shift")
V_EVEN = 200  # an array sharded over V needs V divisible by the axis size (options "plain", "smooth")
B, T = 4, 8
CONFIGS = {"chunked": ChunkedConfig(block_v=64), "pallas": PallasConfig(block_n=16, block_v=64), "naive": None}
OPTION_SETS = {
    "plain": dict(),
    "all": dict(bias=True, softcap=5.0, label_smoothing=0.1, z_loss=1e-3, return_lse=True, reduction="none"),
    "shift": dict(shift=2, reduction="sum", softcap=3.0),
    "smooth": dict(label_smoothing=0.2, reduction="mean"),
    "filter": dict(filter_eps=0.01),  # gradient filtering changes the gradients: no float64 comparison
}


def _mesh(shape, names, explicit):
    at = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh(shape, names, axis_types=(at,) * len(names))


def _vocab(opts) -> int:
    return V if (opts.get("bias") or opts.get("shift")) else V_EVEN


def _data(opts):
    e, c, t, b = make_data(N, D, _vocab(opts), seed=3)
    if opts.get("shift"):
        e, t = e.reshape(B, T, D), t.reshape(B, T)
    return e, c, t, b


def _fn(impl, opts, vocab_axis=None):
    kw = {k: v for k, v in opts.items() if k != "bias"}
    use_bias = bool(opts.get("bias"))
    cot = np.random.default_rng(1).standard_normal(N).astype(np.float32)

    def loss(e, c, b, t):
        out = linear_cross_entropy(e, c, t, bias=b if use_bias else None, impl=impl, config=CONFIGS[impl],
                                   vocab_axis=vocab_axis, **kw)
        if kw.get("return_lse"):
            out, lse = out
            out = out + 0.25 * lse  # the lse output is differentiable: include it in the check
        if kw.get("reduction") == "none":
            return jnp.sum(out * cot.reshape(out.shape))
        return out

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2) if use_bias else (0, 1)))


def _oracle(opts):
    e, c, t, b = _data(opts)
    e2, t2 = e.reshape(-1, D), t.reshape(-1)
    if opts.get("shift"):
        k = opts["shift"]
        t2 = np.concatenate([t[:, k:], np.full((B, k), -100, np.int32)], axis=1).reshape(-1)
    cot = np.random.default_rng(1).standard_normal(N)
    red = opts.get("reduction", "mean")
    kw = dict(bias=b if opts.get("bias") else None, softcap=opts.get("softcap"),
              smooth=opts.get("label_smoothing", 0.0), z_loss=opts.get("z_loss", 0.0), reduction=red, cot=cot)
    loss, lse, de, dc, db = ref_linear_ce(e2, c, t2, **kw)
    if opts.get("return_lse"):  # + 0.25 * lse on every row (ignored rows included), as in _fn
        loss = loss + 0.25 * lse
        p = np.exp(_logits(e2, c, kw["bias"], kw["softcap"]) - lse[:, None])
        gz = (0.25 * cot)[:, None] * p
        if kw["softcap"]:
            gz = gz * (1 - (_logits(e2, c, kw["bias"], kw["softcap"]) / kw["softcap"]) ** 2)
        de, dc, db = de + gz @ c.astype(np.float64), dc + gz.T @ e2.astype(np.float64), db + gz.sum(0)
    if red == "none":
        loss = float(np.sum(loss * cot))
    return loss, de.reshape(e.shape), dc, db


def _logits(e, c, bias, softcap):
    a = e.astype(np.float64) @ c.T.astype(np.float64)
    if bias is not None:
        a = a + bias
    return softcap * np.tanh(a / softcap) if softcap else a


def _put(x, mesh, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))


def _spec_str(x):
    return str(tuple(x.sharding.spec)) if hasattr(x.sharding, "spec") else "?"


def _gathers(hlo: str) -> list:
    """Result shapes of every all-gather in a compiled HLO text."""
    return [m.group(1) for m in re.finditer(r"= (\w+\[[\d,]*\])[^=\n]*? all-gather(?:-start)?\(", hlo)]


def _run_case(name, impl, opts_name, mesh, e_spec, c_spec, vocab_axis=None, want_hlo=False):
    opts = OPTION_SETS[opts_name]
    e, c, t, b = _data(opts)
    t_spec = P(*tuple(e_spec)[:-1])
    args = [_put(e, mesh, e_spec), _put(c, mesh, c_spec)]
    if opts.get("bias"):
        args.append(_put(b, mesh, P(c_spec[0])))
    else:
        args.append(None)
    args.append(_put(t, mesh, t_spec))
    fn = _fn(impl, opts, vocab_axis)
    compiled = fn.lower(*args).compile()
    val, grads = compiled(*args)
    ref_val, ref_grads = SINGLE[(impl, opts_name)]
    o_val, o_de, o_dc, o_db = ORACLE["plain" if opts_name == "filter" else opts_name]
    oracle_grads = [] if "filter_eps" in opts else [rel(g, r) for g, r in zip(grads, (o_de, o_dc, o_db))]
    row = dict(case=name, impl=impl, options=opts_name, explicit=bool(mesh.axis_types[0] == AxisType.Explicit),
               vocab_axis=vocab_axis, e_spec=str(tuple(e_spec)), c_spec=str(tuple(c_spec)),
               rel_single=max(rel(val, ref_val), *(rel(g, r) for g, r in zip(grads, ref_grads))),
               rel_f64=max([rel(val, o_val)] + oracle_grads),
               dc_spec=_spec_str(grads[1]), finite=bool(np.isfinite(float(val))))
    if want_hlo:
        row["all_gathers"] = _gathers(compiled.as_text())
    if name == "vp_explicit_smooth":  # the label rule under jit: an out-of-range target gives NaN loss and grads
        bad = np.array(t)
        bad[5] = V_EVEN + 3
        bval, bgrads = compiled(*args[:-1], _put(bad, mesh, t_spec))
        row["bad_target_nan"] = bool(np.isnan(float(bval)) and np.isnan(np.asarray(bgrads[0])[5]).all()
                                     and np.isnan(np.asarray(bgrads[1])).any())
        row["bad_target_other_rows_finite"] = bool(np.isfinite(np.asarray(bgrads[0])[np.arange(N) != 5]).all())
    return row


def _temp_by_model_axis(block_v):
    """fwd+bwd temp bytes per device of the vocab-parallel path at fixed N, D, V, model axis 1/2/4/8."""
    n, d, v = 256, 64, 4096
    out = {}
    for m in (1, 2, 4, 8):
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:m]), ("model",), axis_types=(AxisType.Explicit,))
        e = jax.ShapeDtypeStruct((n, d), jnp.float32, sharding=NamedSharding(mesh, P(None, None)))
        c = jax.ShapeDtypeStruct((v, d), jnp.float32, sharding=NamedSharding(mesh, P("model", None)))
        t = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=NamedSharding(mesh, P(None)))

        def f(e, c, t):
            return jax.value_and_grad(lambda e, c: linear_cross_entropy(
                e, c, t, vocab_axis="model", config=ChunkedConfig(block_v=block_v)), argnums=(0, 1))(e, c)

        stats = jax.jit(f).lower(e, c, t).compile().memory_analysis()
        out[m] = None if stats is None else int(stats.temp_size_in_bytes)
    return out


def main():
    global SINGLE, ORACLE
    ORACLE = {k: _oracle(o) for k, o in OPTION_SETS.items() if k != "filter"}
    SINGLE = {}
    for impl, opts_name in (("chunked", "plain"), ("naive", "plain"), ("pallas", "plain"), ("chunked", "all"),
                            ("chunked", "shift"), ("chunked", "smooth"), ("chunked", "filter")):
        opts = OPTION_SETS[opts_name]
        e, c, t, b = _data(opts)
        val, grads = _fn(impl, opts)(e, c, b if opts.get("bias") else None, t)
        SINGLE[(impl, opts_name)] = (np.asarray(val), [np.asarray(g) for g in grads])
    ex2, au2 = _mesh((2, 4), ("data", "model"), True), _mesh((2, 4), ("data", "model"), False)
    ex3, au3 = _mesh((2, 2, 2), ("data", "fsdp", "model"), True), _mesh((2, 2, 2), ("data", "fsdp", "model"), False)
    two = ("data", "fsdp")
    cases = [
        # any impl, batch sharded; classifier replicated / FSDP over D / vocab-sharded; D-sharded embeddings
        ("ex_chunked_repl", "chunked", "plain", ex2, P("data", None), P(None, None)),
        ("ex_chunked_tp_vocab", "chunked", "plain", ex2, P("data", "model"), P("model", None)),
        ("ex_chunked_2axis_fsdp", "chunked", "plain", ex3, P(two, None), P(None, "fsdp")),
        ("ex_chunked_filter", "chunked", "filter", ex2, P("data", None), P(None, None)),
        ("ex_naive_fsdp", "naive", "plain", ex2, P("data", None), P(None, "data")),
        ("ex_pallas_repl", "pallas", "plain", ex2, P("data", None), P(None, None)),
        ("au_chunked_vocab", "chunked", "plain", au2, P("data", None), P("model", None)),
        ("au_naive_2axis_fsdp", "naive", "plain", au3, P(two, None), P(None, "fsdp")),
        ("au_pallas_tp_vocab", "pallas", "plain", au2, P("data", "model"), P("model", None)),
        # vocab-parallel
        ("vp_explicit_all", "chunked", "all", ex2, P("data", None), P(None, None), "model"),
        ("vp_auto_all", "chunked", "all", au2, P("data", None), P(None, None), "model"),
        ("vp_explicit_shift_2axis", "chunked", "shift", ex3, P(two, None, None), P(None, "fsdp"), "model"),
        ("vp_explicit_smooth", "chunked", "smooth", ex2, P("data", None), P("model", None), "model"),
    ]
    rows = []
    for case in cases:
        name, impl, opts_name, mesh, e_spec, c_spec, *va = case
        try:
            rows.append(_run_case(name, impl, opts_name, mesh, e_spec, c_spec, *(va or [None]),
                                  want_hlo=name.startswith("vp_") or name == "au_chunked_vocab"))
        except Exception as err:  # reported, and failed by the test
            rows.append(dict(case=name, error=f"{type(err).__name__}: {err}"[:2000]))
    temps = {"tile_covers_shard": _temp_by_model_axis(4096), "tile_1024": _temp_by_model_axis(1024)}
    print("RESULT_JSON " + json.dumps(dict(cases=rows, temp_by_model_axis=temps, temp_shape=[256, 64, 4096])))


if __name__ == "__main__":
    main()
