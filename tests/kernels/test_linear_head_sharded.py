"""The linear-head family on 8 fake CPU devices (mesh data=4 x model=2): linear_ce_head, linear_kd_loss and
linear_dpo_loss, each batch-sharded and vocab-parallel (``vocab_axis='model'``), give the one-device value and
gradients (Explicit meshes; Auto meshes too for the head and KD). So do linear_sequence_logprob,
linear_orpo_loss, linear_spo_loss and linear_kto_loss (its KL pass through the policy and reference heads, and
the precomputed-reference variant) vocab-parallel on the batch-sharded Explicit mesh, KTO also batch-sharded
only, and the vocab-parallel program never all-gathers a classifier. The checks run in ONE subprocess
(``_linear_head_sharded_checks.py``; the device count must be set before jax is imported)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_linear_head_sharded_checks.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT_JSON ")][-1]
    return json.loads(line[len("RESULT_JSON "):])


def test_every_case_matches_one_device(result):
    assert result["devices"] == 8
    names = {r["case"] for r in result["cases"]}
    fams = ("head", "head_vp", "kd", "kd_vp")
    assert names == {f"{m}_{f}" for m in ("explicit", "auto") for f in fams} | {"explicit_dpo", "explicit_dpo_vp"}
    for r in result["cases"]:
        assert "error" not in r, r
        assert r["finite"] and r["rel"] <= 2e-6, r


def test_shardings_of_the_gradients(result):
    by = {r["case"]: r for r in result["cases"]}
    for f in ("head", "kd"):
        assert by[f"explicit_{f}"]["de_spec"] == "P('data', None, None)"  # dE keeps the row sharding
    for f in ("head_vp", "kd_vp", "dpo_vp"):
        assert by[f"explicit_{f}"]["dc_spec"] == "P('model', None)"  # dC stays split over the vocabulary
        if f != "dpo_vp":
            assert by[f"auto_{f}"]["dc_spec"] in ("P('model',)", "P('model', None)")


PREF = ("seqlp", "orpo", "spo", "kto", "kto_pre")
V, D, DT = 64, 16, 12  # the checks' vocabulary and the policy / reference widths


def _shape(s):
    return tuple(int(x) for x in re.findall(r"\d+", s.split("[", 1)[1]))


def test_preference_losses_match_one_device(result):
    by = {r["case"]: r for r in result["preference"]}
    assert set(by) == {f"explicit_{k}_vp" for k in PREF} | {"explicit_kto", "explicit_kto_pre"}
    for r in by.values():
        assert "error" not in r, r
        assert r["finite"] and r["grad_nonzero"] and r["rel"] <= 1e-5, r
        assert r["dc_spec"] == "P('model', None)", r  # dC stays split over the vocabulary
        lead = "P(None, 'data', None, None)" if r["case"].split("_")[1] in ("orpo", "spo") else "P('data', None, None)"
        assert r["de_spec"] == lead, r  # dE keeps the batch sharding


def test_kto_kl_pass_reaches_the_value(result):
    # float64 batch estimates of the reference point: clamped at 0, a broken KL pass could not change the loss
    z0 = result["kto_reference_points"]
    assert z0["kto"] > 1.0 and z0["kto_pre"] > 1.0, z0


def test_vocab_parallel_preference_never_gathers_a_classifier(result):
    by = {r["case"]: r for r in result["preference"]}
    for k in PREF:
        gathers = [_shape(s) for s in by[f"explicit_{k}_vp"]["all_gathers"]]
        assert not [s for s in gathers if s[:1] == (V,) or s[-1:] in ((D,), (DT,))], (k, gathers)
    # the check can fail: batch-sharded only, the program gathers the vocab-sharded policy and reference heads
    ctrl = [_shape(s) for s in by["explicit_kto"]["all_gathers"]]
    assert (V, D) in ctrl and (V, DT) in ctrl, ctrl
