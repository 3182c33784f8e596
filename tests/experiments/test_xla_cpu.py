"""The runner's XLA:CPU flag policy (YNNPACK fusions on by default) and its record in env.json."""

import json
import os
import subprocess
import sys

import pytest

from experiments.common import xla_cpu as X

FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ynn_value_parses_last_occurrence():
    assert X.ynn_value("") is None
    assert X.ynn_value("--xla_force_host_platform_device_count=8") is None
    assert X.ynn_value("--xla_cpu_experimental_ynn_fusion_type=dot --a=1") == "dot"
    assert X.ynn_value(f"{FLAG} --xla_cpu_experimental_ynn_fusion_type=") == ""  # later one wins (off)
    assert X.ynn_value("--xla_cpu_experimental_ynn_fusion_type_other=1") is None


@pytest.mark.parametrize(
    "environ, disable, flags, reason",
    [
        ({}, False, FLAG, "default"),
        ({"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, False,
         "--xla_force_host_platform_device_count=8 " + FLAG, "default"),  # other flags kept, ours appended
        ({"LOSSJAX_YNN": "1"}, False, FLAG, "default"),
        ({}, True, "", "--no_ynn"),
        ({"LOSSJAX_YNN": "0"}, False, "", "LOSSJAX_YNN=0"),
        ({"LOSSJAX_YNN": "Off", "XLA_FLAGS": "--a=1"}, False, "--a=1", "LOSSJAX_YNN=Off"),
        # the user's own value always wins, also over --no_ynn
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}, True,
         "--xla_cpu_experimental_ynn_fusion_type=dot", "user XLA_FLAGS"),
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}, False,
         "--xla_cpu_experimental_ynn_fusion_type=", "user XLA_FLAGS"),
    ],
)
def test_decide(environ, disable, flags, reason):
    assert X.decide(environ, disable=disable) == (flags, reason)


def test_configure_on_a_mapping_and_describe():
    env = {"XLA_FLAGS": "--a=1"}
    rec = X.configure(environ=env)
    assert env["XLA_FLAGS"] == "--a=1 " + FLAG
    assert rec == {"xla_flags": "--a=1 " + FLAG, "ynn_fusion": "dot,eltwise,reduce", "ynn_reason": "default",
                   "ynn_applied": True}
    env = {"LOSSJAX_YNN": "false"}
    assert X.configure(environ=env)["ynn_fusion"] is None and "XLA_FLAGS" not in env


def test_configure_too_late_changes_nothing(monkeypatch):
    import jax

    jax.devices()  # backends exist: a new XLA_FLAGS could not take effect any more
    monkeypatch.setenv("XLA_FLAGS", "--a=1")
    monkeypatch.delenv("LOSSJAX_YNN", raising=False)
    rec = X.configure()
    assert rec["ynn_applied"] is False and rec["ynn_reason"] == "default"
    assert os.environ["XLA_FLAGS"] == "--a=1" and rec["ynn_fusion"] is None  # the truth of this process
    X._LAST.clear()


def test_cli_applies_flag_and_env_json_records_it(tmp_path):
    """A fresh `python -m experiments.cifar` run compiles with the flag (XLA would abort on an unknown
    flag) and records it; the user's XLA_FLAGS value is kept."""
    env = dict(os.environ)
    env.pop("LOSSJAX_YNN", None)
    env["XLA_FLAGS"] = ""
    wd = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.cifar", "--config", "configs/digits/sgd.gin", "--workdir", str(wd),
           "--config.train.epochs=1", "--config.data.n_train=64", "--config.data.n_test=64",
           "--config.train.progress=False", "--config.train.plots=False", "--config.model.width=4",
           "--no_tensorboard"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    info = json.load(open(wd / "env.json"))
    assert info["xla_flags"] == FLAG and info["ynn_fusion"] == "dot,eltwise,reduce"
    assert info["ynn_reason"] == "default" and info["ynn_applied"] is True
    assert 0.0 <= json.load(open(wd / "results.json"))["final_test_accuracy"] <= 1.0


def test_throughput_child_env_and_binding_alias(monkeypatch, capsys):
    from experiments import throughput as T

    monkeypatch.setenv("XLA_FLAGS", f"--a=1 {FLAG}")
    monkeypatch.setenv("LOSSJAX_YNN", "0")
    env = T._child_env(True)  # the A/B children measure the policy's arms, not the user's setting
    assert env["XLA_FLAGS"] == "--a=1" and "LOSSJAX_YNN" not in env
    seen = []
    monkeypatch.setattr(T, "measure", lambda c, **kw: seen.append((c, kw["bindings"])) or {"config": c})
    assert T.main(["--config", "x.gin", "--gin_binding", "a.b = 1", "--binding", "c.d = 2"]) == 0
    assert seen == [("x.gin", ["a.b = 1", "c.d = 2"])]
    assert "--binding is deprecated" in capsys.readouterr().err
    assert os.environ["XLA_FLAGS"] == f"--a=1 {FLAG}"  # in-process main leaves XLA_FLAGS alone
