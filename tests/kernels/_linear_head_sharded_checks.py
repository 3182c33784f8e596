"""The linear-head family on 8 fake CPU devices; run as a script by ``test_linear_head_sharded.py``.

Prints ``RESULT_JSON {...}``: per case the largest relative difference of the value and the gradients
against the same function on one device, the gradients' shardings, and for the preference losses the
all-gather shapes of the compiled program and the float64 KTO reference points (which must be > 0, or the
KL pass would not reach the value).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sharded_checks import _gathers  # noqa: E402

from lossjax.kernels import (  # noqa: E402
    ChunkedConfig,
    linear_ce_head,
    linear_dpo_loss,
    linear_kd_loss,
    linear_kto_loss,
    linear_orpo_loss,
    linear_sequence_logprob,
    linear_spo_loss,
)

B, T, D, DT, V, K = 8, 4, 16, 12, 64, 3
CFG = ChunkedConfig(block_v=24)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _data():
    rng = np.random.default_rng(0)

    def f(*s):
        return rng.standard_normal(s).astype(np.float32)

    t = rng.integers(0, V, (B, T)).astype(np.int32)
    t[1, 2] = -100
    m = np.ones((2, B // 2, T), bool)
    m[:, :, 0] = False
    return dict(e=f(B, T, D), c=f(V, D) / 2, et=f(B, T, DT), ct=f(V, DT) / 2, t=t,
                ep=f(2, B // 2, T, D), m=m, y=rng.integers(0, V, (2, B // 2, T)).astype(np.int32))


def _fns(x):
    ref = jnp.full((2, B // 2), -20.0)

    def head(e, c, vocab_axis=None):
        out = linear_ce_head(e, c, x["t"], z_loss=1e-3, shift=1, softcap=4.0, temperature=1.5, config=CFG,
                             vocab_axis=vocab_axis)
        return out.loss + 0.1 * jnp.sum(out.entropy) + 0.01 * jnp.sum(out.argmax)  # argmax: exact ints

    def head_vp(e, c):
        return head(e, c, "model")

    def kd(e, c, vocab_axis=None):
        return linear_kd_loss(e, c, x["et"], x["ct"], divergence="jsd", temperature=2.0, config=CFG,
                              vocab_axis=vocab_axis)

    def dpo(e, c, vocab_axis=None):
        return jnp.sum(linear_dpo_loss(e, c, x["y"], x["m"], ref_logps=ref, config=CFG, vocab_axis=vocab_axis))

    def kd_vp(e, c):
        return kd(e, c, "model")

    def dpo_vp(e, c):
        return dpo(e, c, "model")

    return {"head": (head, "e"), "head_vp": (head_vp, "e"), "kd": (kd, "e"), "kd_vp": (kd_vp, "e"),
            "dpo": (dpo, "ep"), "dpo_vp": (dpo_vp, "ep")}


def _pref_data(x):
    """Batches of the preference losses: [B, T] examples (SeqLP, KTO) and [2, B // 2, T] pairs (SPO, ORPO)."""
    rng = np.random.default_rng(1)

    def f(*s):
        return rng.standard_normal(s).astype(np.float32)

    m = np.ones((B, T), bool)
    m[:, 0] = False  # prompt
    m[3, -1] = False  # padding
    pm = np.ones((2, B // 2, T), bool)
    pm[:, :, 0] = False
    pm[1, 2, -2:] = False
    q_ekl = f(B, T, D)
    # the KL pairs' tokens are the policy's argmax and the reference is near uniform there, so the batch
    # estimate of the reference point is clearly > 0 and the KL pass reaches the value
    q_tkl = np.argmax(q_ekl @ x["c"].T, axis=-1).astype(np.int32)
    where = np.ones(B, bool)
    where[5] = False
    return dict(q_t=rng.integers(0, V, (B, T)).astype(np.int32), q_m=m, q_w=f(B), q_et=f(B, T, DT),
                q_ct=x["ct"], q_des=np.arange(B) % 3 != 1, q_where=where, q_ekl=q_ekl, q_tkl=q_tkl,
                q_mkl=np.ones((B, T), bool), q_etkl=0.1 * f(B, T, DT), q_r=-6.0 + f(B),
                q_rkl=-4.0 + 0.3 * f(B), p_y=rng.integers(0, V, (2, B // 2, T)).astype(np.int32), p_m=pm,
                p_et=f(2, B // 2, T, DT), p_dl=f(B // 2, K), p_dlab=rng.integers(0, K, B // 2).astype(np.int32),
                p_w=f(B // 2), p_e=f(2, B // 2, T, D))


def _pref_fns():
    """Each preference loss, per-example outputs weighted by random cotangents; ``a`` holds the batch."""

    def seqlp(e, c, a, **kw):
        lp = linear_sequence_logprob(e, c, a["q_t"], a["q_m"], average=True, softcap=4.0, **kw)
        return jnp.sum(lp * a["q_w"])

    def orpo(e, c, a, **kw):
        out = linear_orpo_loss(e, c, a["p_y"], a["p_m"], lam=0.5, **kw)
        return jnp.sum(out * a["p_w"])

    def spo(e, c, a, **kw):  # the reference as hidden states + classifier
        out = linear_spo_loss(e, c, a["p_y"], a["p_dl"], a["p_dlab"], a["p_m"], ref_embeddings=a["p_et"],
                              ref_classifier=a["q_ct"], beta=0.2, label_smoothing=0.1, ssl_weight=0.3, **kw)
        return jnp.sum(out * a["p_w"])

    def kto(e, c, a, **kw):  # reference model's hidden states, KL pass through both heads
        out = linear_kto_loss(e, c, a["q_t"], a["q_des"], a["q_m"], ref_embeddings=a["q_et"],
                              ref_classifier=a["q_ct"], kl_embeddings=a["q_ekl"], kl_tokens=a["q_tkl"],
                              kl_mask=a["q_mkl"], ref_kl_embeddings=a["q_etkl"], beta=0.1, desirable_weight=1.5,
                              undesirable_weight=0.7, where=a["q_where"], **kw)
        return jnp.sum(out * a["q_w"])

    def kto_pre(e, c, a, **kw):  # precomputed reference log-probs, KL pass through the policy head
        out = linear_kto_loss(e, c, a["q_t"], a["q_des"], a["q_m"], ref_logps=a["q_r"], kl_embeddings=a["q_ekl"],
                              kl_tokens=a["q_tkl"], kl_mask=a["q_mkl"], ref_kl_logps=a["q_rkl"], beta=0.5,
                              average=True, **kw)
        return jnp.sum(out * a["q_w"])

    keys = {"seqlp": ("q_t", "q_m", "q_w"), "orpo": ("p_y", "p_m", "p_w"),
            "spo": ("p_y", "p_dl", "p_dlab", "p_m", "p_et", "q_ct", "p_w"),
            "kto": ("q_t", "q_des", "q_m", "q_et", "q_ct", "q_ekl", "q_tkl", "q_mkl", "q_etkl", "q_where", "q_w"),
            "kto_pre": ("q_t", "q_des", "q_m", "q_r", "q_ekl", "q_tkl", "q_mkl", "q_rkl", "q_w")}
    ek = {"seqlp": "q_e", "orpo": "p_e", "spo": "p_e", "kto": "q_e", "kto_pre": "q_e"}
    fns = {"seqlp": seqlp, "orpo": orpo, "spo": spo, "kto": kto, "kto_pre": kto_pre}
    return {k: (fn, ek[k], keys[k]) for k, fn in fns.items()}


def _pref_spec(key, c_spec):
    if key == "q_ct":
        return c_spec  # the reference classifier is laid out like the policy's
    if key in ("p_e", "p_et", "p_y", "p_m"):
        return P(None, "data")  # [2, B // 2, ...]: the pairs over 'data'
    return P("data")


def _log_softmax64(e, c):
    z = np.asarray(e, np.float64) @ np.asarray(c, np.float64).T
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kto_reference_points(x, a):
    """The KL batch estimates max(0, mean_kept[kl_pol - kl_ref]) of the two KTO cases, in float64."""

    def lp(e, c, t, m, average):
        tok = np.take_along_axis(_log_softmax64(e, c), t[..., None], -1)[..., 0]
        s = np.sum(np.where(m, tok, 0.0), -1)
        return s / np.maximum(m.sum(-1), 1) if average else s

    kl_pol = lp(a["q_ekl"], x["c"], a["q_tkl"], a["q_mkl"], False)
    kl_ref = lp(a["q_etkl"], a["q_ct"], a["q_tkl"], a["q_mkl"], False)
    kl_pol_avg = lp(a["q_ekl"], x["c"], a["q_tkl"], a["q_mkl"], True)
    keep = a["q_where"]
    return dict(kto=max(0.0, float(np.mean((kl_pol - kl_ref)[keep]))),
                kto_pre=max(0.0, float(np.mean(kl_pol_avg - a["q_rkl"]))))


def _pref_program(names, **kw):
    """One program: value and (d embeddings, d classifier) of each named preference loss (one jit, not five)."""
    fns = _pref_fns()

    def run(c, a):
        return {k: jax.value_and_grad(functools.partial(fns[k][0], **kw), argnums=(0, 1))(a[fns[k][1]], c, a)
                for k in names}

    return jax.jit(run)


# vocab-parallel: every preference loss; batch-sharded only: KTO (its KL pass and the reference classifier on
# the row-sharded path; the other losses share DPO's linear_sequence_logprob path, case explicit_dpo)
PREF_MODES = {"_vp": (("seqlp", "orpo", "spo", "kto", "kto_pre"), "model"), "": (("kto", "kto_pre"), None)}


def _pref_cases(x, mesh):
    a_np = _pref_data(x)
    a_np["q_e"] = x["e"]
    names = PREF_MODES["_vp"][0]
    single = _pref_program(names, config=CFG)(x["c"], a_np)
    csp = P("model", None)  # vocab-sharded classifiers: without vocab_axis the program gathers them
    c = jax.device_put(x["c"], NamedSharding(mesh, csp))
    a = {k: jax.device_put(v, NamedSharding(mesh, _pref_spec(k, csp))) for k, v in a_np.items()}
    cases = []
    for suffix, (names, vocab_axis) in PREF_MODES.items():
        try:
            with jax.set_mesh(mesh):
                compiled = _pref_program(names, config=CFG, vocab_axis=vocab_axis).lower(c, a).compile()
                out = compiled(c, a)
            gathers = _gathers(compiled.as_text())
        except Exception as err:  # reported, asserted on by the test
            cases += [dict(case=f"explicit_{k}{suffix}", error=f"{type(err).__name__}: {err}"[:600]) for k in names]
            continue
        for k in names:
            (val, (de, dc)), (sv, (sde, sdc)) = out[k], single[k]
            cases.append(dict(case=f"explicit_{k}{suffix}", rel=max(_rel(val, sv), _rel(de, sde), _rel(dc, sdc)),
                              finite=bool(np.isfinite(val)), grad_nonzero=bool(np.any(np.asarray(sdc) != 0)),
                              dc_spec=str(dc.sharding.spec), de_spec=str(de.sharding.spec), all_gathers=gathers))
    return cases, _kto_reference_points(x, a_np)


def main():
    x = _data()
    fns = _fns(x)
    single = {k: jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x[ek], x["c"])
              for k, (f, ek) in fns.items() if not k.endswith("_vp")}
    for k in ("head", "kd", "dpo"):
        single[k + "_vp"] = single[k]  # vocab-parallel vs one device
    cases = []
    for mode in ("explicit", "auto"):
        at = AxisType.Explicit if mode == "explicit" else AxisType.Auto
        mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(at, at))
        for name, (f, ek) in fns.items():
            if mode == "auto" and name.startswith("dpo"):
                continue  # linear_cross_entropy's own sharded tests cover its Auto-mesh paths
            case = f"{mode}_{name}"
            try:
                lead = P(None, "data") if ek == "ep" else P("data")
                csp = P("model", None) if name.endswith("_vp") else P(None, None)
                e = jax.device_put(x[ek], NamedSharding(mesh, lead))
                c = jax.device_put(x["c"], NamedSharding(mesh, csp))
                with jax.set_mesh(mesh):
                    val, (de, dc) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(e, c)
                sv, (sde, sdc) = single[name]
                cases.append(dict(case=case, rel=max(_rel(val, sv), _rel(de, sde), _rel(dc, sdc)),
                                  finite=bool(np.isfinite(val)), dc_spec=str(dc.sharding.spec),
                                  de_spec=str(de.sharding.spec)))
            except Exception as err:  # reported, asserted on by the test
                cases.append(dict(case=case, error=f"{type(err).__name__}: {err}"[:600]))
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    pref, z0 = _pref_cases(x, mesh)
    print("RESULT_JSON " + json.dumps(dict(devices=jax.device_count(), cases=cases, preference=pref,
                                           kto_reference_points=z0)))


if __name__ == "__main__":
    main()
