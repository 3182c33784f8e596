"""The linear-head family on 8 fake CPU devices (mesh data=4 x model=2): linear_ce_head, linear_kd_loss and
linear_dpo_loss, each batch-sharded and vocab-parallel (``vocab_axis='model'``), give the one-device value and
gradients (Explicit meshes; Auto meshes too for the head and KD). The checks run in ONE subprocess
(``_linear_head_sharded_checks.py``; the device count must be set before jax is imported)."""

from __future__ import annotations

import json
import os
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
