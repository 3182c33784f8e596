"""Smoke and unit tests of ``experiments.grokking`` (tiny modulus, a few full-batch steps)."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import grokking as gk

_TINY = ["grokking.modulus = 11", "grokking.hidden = 16", "grokking.steps = 6", "grokking.log_every = 3"]


def _tiny(**kw) -> gk.GrokkingConfig:
    base = dict(modulus=11, hidden=16, depth=2, steps=6, log_every=3)
    base.update(kw)
    return gk.GrokkingConfig(**base)


def test_data_split_labels_and_determinism():
    cfg = _tiny()
    d = gk.make_data(cfg)
    assert d["x_train"].shape == (48, 2) and d["x_test"].shape == (121 - 48, 2)
    np.testing.assert_array_equal(d["y_train"], (d["x_train"][:, 0] + d["x_train"][:, 1]) % 11)
    pairs = {tuple(r) for r in np.concatenate([d["x_train"], d["x_test"]])}
    assert len(pairs) == 121  # every pair exactly once
    np.testing.assert_array_equal(d["x_train"], gk.make_data(cfg)["x_train"])


def test_mlp_equals_dense_on_concatenated_one_hot():
    cfg = _tiny(logit_scale=2.0)
    params = gk.init_params(cfg)
    x = jnp.array([[0, 3], [10, 10], [5, 1]])
    onehot = jnp.concatenate([jax.nn.one_hot(x[:, 0], 11), jax.nn.one_hot(x[:, 1], 11)], -1)
    h = jax.nn.relu(onehot @ params["emb"] + params["b0"])
    h = jax.nn.relu(h @ params["w1"] + params["b1"])
    ref = 2.0 * (h @ params["out"] + params["bout"])
    np.testing.assert_allclose(gk.apply_mlp(params, x, cfg), ref, rtol=1e-5, atol=1e-5)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="grokking.loss"):
        _tiny(loss="mse")
    with pytest.raises(ValueError, match="grokking.dtype"):
        _tiny(dtype="bfloat16")
    with pytest.raises(ValueError, match="grokking.steps"):
        _tiny(steps=7, log_every=3)
    with pytest.raises(ValueError, match="grokking.train_fraction"):
        _tiny(train_fraction=1.0)
    with pytest.raises(TypeError, match="grokking.hidden"):
        _tiny(hidden=1.5)


def test_every_arm_config_parses():
    for arm in gk.ARMS:
        cfg = gk.parse_grokking_config([os.path.join(gk.CONFIG_DIR, f"{arm}.gin")])
        assert cfg.name == arm and cfg.modulus == 113 and cfg.train_fraction == 0.4
    assert gk.parse_grokking_config([os.path.join(gk.CONFIG_DIR, "softmax_f64.gin")]).dtype == "float64"
    assert gk.parse_grokking_config([os.path.join(gk.CONFIG_DIR, "orthograd.gin")]).orthograd


def test_study_smoke_writes_files_and_resumes(tmp_path):
    work, out = str(tmp_path / "runs"), str(tmp_path / "out")
    study = gk.run_study(None, _TINY, work, out, progress=False)
    assert set(study["runs"]) == set(gk.ARMS)
    for arm, r in study["runs"].items():
        assert not r["skipped"]
        recs = [json.loads(line) for line in open(os.path.join(work, arm, "metrics.jsonl"))]
        assert [x["step"] for x in recs] == [0, 3, 6]
        for x in recs:
            for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy",
                      "softmax_collapse_fraction", "zero_loss_fraction"):
                assert math.isfinite(x[k]), (arm, k)
            assert 0.0 <= x["softmax_collapse_fraction"] <= 1.0
        assert recs[-1]["train_loss"] != recs[0]["train_loss"]  # it trained
        assert os.path.exists(os.path.join(work, arm, "results.json"))
    # the arms start from the same parameters; the float64 arm really ran in float64
    r0 = {a: study["runs"][a]["records"][0]["train_loss"] for a in ("softmax", "softmax_f64", "softmax_wd")}
    assert abs(r0["softmax"] - r0["softmax_f64"]) < 1e-5 and r0["softmax"] == r0["softmax_wd"]
    assert not jax.config.jax_enable_x64  # the x64 context did not leak
    for f in ("grokking.md", "grokking.json", "grokking.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    md = open(os.path.join(out, "grokking.md")).read()
    assert "| arm |" in md and ("held" in md or "did not hold" in md)
    again = gk.run_study(None, _TINY, work, None, progress=False)
    assert all(r["skipped"] for r in again["runs"].values())
    with pytest.raises(ValueError, match="different config"):
        gk.run_study([os.path.join(gk.CONFIG_DIR, "softmax.gin")], [*_TINY, "grokking.seed = 3"], work, None,
                     progress=False)


def test_float64_keeps_collapse_away():
    logits = jnp.array([[0.0, -17.0, -20.0]])
    assert float(jax.numpy.asarray(gk.lossjax.losses.softmax_collapse_fraction(logits))) == 1.0
    with jax.enable_x64(True):
        l64 = jnp.array([[0.0, -17.0, -20.0]], dtype=jnp.float64)
        assert float(gk.lossjax.losses.softmax_collapse_fraction(l64)) == 0.0
        cfg = _tiny(dtype="float64")
        assert gk.per_example_loss(cfg, l64, jnp.array([0])).dtype == jnp.float64


def test_main_bad_override_returns_2(tmp_path, capsys):
    rc = gk.main(["--config", os.path.join(gk.CONFIG_DIR, "softmax.gin"), "--workdir", str(tmp_path),
                  "--config.grokking.loss=mse"])
    assert rc == 2 and "grokking.loss" in capsys.readouterr().err
