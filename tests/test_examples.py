"""examples/sharded_lm_step.py runs on 8 fake CPU devices (mesh data=2 x fsdp=2 x model=2): the loss falls,
and every step's loss equals the same step on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_lm_step_learns_and_matches_one_device():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "sharded_lm_step.py"), "--mesh", "2,2,2", "--steps", "6",
           "--compare_single"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert res["devices"] == 8
    one = res["single_device"]
    for name in ("adamw", "sam"):
        losses = np.asarray(res[name])
        assert np.all(np.isfinite(losses))
        assert losses[-1] < losses[0] - 0.5, losses  # it learns the token rule
        np.testing.assert_allclose(losses, one[name], rtol=1e-5)  # same step on one device
        assert res[name + "_cls_grad_spec"] == "('model', 'fsdp')"  # the classifier keeps its sharding
    assert abs(res["adamw"][0] - res["sam"][0]) <= 1e-5 * abs(res["adamw"][0])  # same start; SAM then differs
    assert abs(res["adamw"][-1] - res["sam"][-1]) > 1e-4
