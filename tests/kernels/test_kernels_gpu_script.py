"""The GPU benchmark script (``benchmarks/kernels_gpu.py``) runs end to end: smoke shapes on CPU.

The script is only run for real on a lent GPU; this keeps it ready to run in one command there
(parts, budget handling, result files, the targets table), with Pallas in interpret mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "kernels_gpu.py")


def _run(tmp_path, *args):
    env = dict(os.environ, LOSSJAX_SMOKE="1", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path), "--tag", "smoke", *args],
                       capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(tmp_path / "kernels_gpu_smoke.json") as fh:
        return json.load(fh), (tmp_path / "kernels_gpu_smoke.md").read_text()


def test_gpu_script_smoke_run_writes_checked_rows_and_targets(tmp_path):
    res, md = _run(tmp_path, "--parts", "check,tune,ce,targets", "--iters", "1")
    checks = [r for r in res["check"] if "loss_rel" in r]
    assert {r["impl"] for r in checks} == {"pallas,fwd_loop=nested", "pallas,fwd_loop=flat", "chunked"}
    for r in checks:  # bf16 inputs against float64
        assert r["loss_rel"] < 1e-2 and r["lse_rel"] < 1e-5 and r["dE_rel"] < 2e-2 and r["dC_rel"] < 2e-2, r
    ignored = [r for r in res["check"] if r.get("case") == "all_ignored"]
    assert len(ignored) == 2 and all(r["loss"] == 0.0 and r["max_abs_grad"] == 0.0 for r in ignored)
    assert not [r for part in ("check", "tune", "ce") for r in res[part] if "error" in r]
    ce = res["ce"]
    assert {(r["impl"], r["mode"]) for r in ce} >= {("pallas", "fwd"), ("pallas", "fwd+bwd"), ("xla", "fwd"),
                                                    ("xla", "fwd+bwd"), ("chunked", "fwd"), ("chunked", "fwd+bwd")}
    pallas_grads = [r for r in ce if r["impl"] == "pallas" and r["mode"] == "fwd+bwd"]
    assert all(r["dE_rel_vs_xla"] < 2e-2 and r["dC_rel_vs_xla"] < 2e-2 for r in pallas_grads)
    targets = {r["target"] for r in res["targets"]}
    assert "Pallas fwd >= 60% of bf16 peak" in targets and "(must) Pallas fwd >= 1.0x chunked speed" in targets
    assert all(r["verdict"] in ("pass", "MISS", "n/a") for r in res["targets"])
    assert md.index("## targets") < md.index("## check")


def test_gpu_script_budget_skips_rows_but_still_writes(tmp_path):
    res, _ = _run(tmp_path, "--parts", "tune,ce,targets", "--budget_s", "0")
    assert res["tune"] and all(r.get("skipped") == "time budget" for r in res["tune"])
    assert all(r.get("skipped") == "time budget" for r in res["ce"])
    assert res["targets"] == []
