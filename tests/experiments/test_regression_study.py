"""Smoke test of the regression-as-classification study (tiny MLPs, a few epochs): files, shapes,
finite metrics, one compilation per loss, resume-skips-done, config validation and the CLI."""

import json
import os

import gin
import numpy as np
import pytest

from experiments import regression as R

TINY = [
    "regression.seeds = (0, 1)",
    "regression.hidden = (8,)",
    "regression.epochs = 2",
    "regression.num_bins = 11",
    "regression.n_train = 64",
    "regression.n_test = 50",
    "regression.batch_size = 16",
]
PLAN = (("diabetes", "diabetes", ()), ("hetero", "hetero", ()))


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_study_smoke_and_resume(tmp_path):
    wd, out = str(tmp_path / "runs"), str(tmp_path / "out")
    study = R.run_study(None, TINY, wd, out, progress=False, settings_plan=PLAN)
    for f in ("regression.md", "regression.json", "regression.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert set(study["tasks"]) == {"diabetes", "hetero"}
    for task, runs in study["tasks"].items():
        assert set(runs) == set(R.LOSSES)
        for m, r in runs.items():
            assert not r["skipped"] and r["task"] == task and r["loss"] == m
            rmse = np.asarray(r["final_test_rmse"])
            assert rmse.shape == (2,) and np.all(np.isfinite(rmse)) and np.all(rmse > 0)
            assert np.all(np.isfinite(r["final_train_loss"]))
            assert np.asarray(r["test_rmse_curve"]).shape == (2, 2)
            assert r["train_compiles"] == 1  # both epochs reuse one compilation
            assert r["v_min"] < r["v_max"]
            recs = [json.loads(line) for line in open(os.path.join(wd, task, m, "metrics.jsonl"))]
            assert [x["epoch"] for x in recs] == [0, 1]
        # the bin heads have num_bins outputs instead of 1: 10 more output units of (8 + 1) parameters
        assert runs["hl_gauss"]["num_params"] == runs["mse"]["num_params"] + 10 * 9
    # diabetes: 442 − 50 per split; RMSE in original units (targets 25..346, so far above 1)
    assert study["tasks"]["diabetes"]["mse"]["n_train"] == 392
    assert np.mean(study["tasks"]["diabetes"]["mse"]["final_test_rmse"]) > 10
    assert "final_test_rmse_to_mean" in study["tasks"]["hetero"]["hl_gauss"]
    md = open(os.path.join(out, "regression.md")).read()
    assert "| hl_gauss |" in md and "Did the claim hold here?" in md and "σ = 0.75" in md

    res_path = os.path.join(wd, "hetero", "hl_gauss", "results.json")
    mtime = os.path.getmtime(res_path)
    again = R.run_study(None, TINY, wd, None, progress=False, settings_plan=PLAN)
    assert all(r["skipped"] for runs in again["tasks"].values() for r in runs.values())
    assert os.path.getmtime(res_path) == mtime
    assert again["tasks"]["hetero"]["hl_gauss"]["final_test_rmse"] == study["tasks"]["hetero"]["hl_gauss"]["final_test_rmse"]

    # a different config in a finished workdir is an error, not a silent reuse
    cfg = R.parse_regression_config([os.path.join(R.CONFIG_DIR, "hetero_hl_gauss.gin")],
                                    TINY + ["regression.sigma_ratio = 2.0"])
    with pytest.raises(ValueError, match="sigma_ratio"):
        R.run_one(cfg, os.path.join(wd, "hetero", "hl_gauss"), progress=False)

    # CLI, one config, same workdir: the finished run is reused
    assert R.main(["--config", os.path.join(R.CONFIG_DIR, "hetero_mse.gin"), "--workdir", wd, "--no_progress",
                   *[f"--config.{b.replace(' = ', '=')}" for b in TINY]]) == 0


def test_data_and_support():
    cfg = R.parse_regression_config([os.path.join(R.CONFIG_DIR, "diabetes_mse.gin")], ["regression.seeds = (0, 1)"])
    d = R.make_task_data(cfg)
    assert d["x_train"].shape == (2, 332, 10) and d["x_test"].shape == (2, 110, 10)
    np.testing.assert_allclose(d["y_train"].mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(d["y_train"].std(1), 1.0, atol=1e-4)
    assert not np.array_equal(d["y_test"][0], d["y_test"][1])  # repeated random splits differ per seed
    lo, hi = R.support_bounds(d["y_train"], 0.1)
    span = d["y_train"].max() - d["y_train"].min()
    assert lo == pytest.approx(d["y_train"].min() - 0.1 * span) and hi == pytest.approx(d["y_train"].max() + 0.1 * span)


def test_paired_verdict():
    assert R.paired_verdict(np.array([-1.0, -1.1, -0.9])) == "beats"
    assert R.paired_verdict(np.array([1.0, 1.1, 0.9])) == "worse"
    assert R.paired_verdict(np.array([-1.0, 1.0, 0.1])) == "no significant difference"
    assert R.paired_verdict(np.array([1.0])) == "n/a"


def test_config_validation():
    with pytest.raises(ValueError, match="regression.loss"):
        R.RegressionConfig(loss="huber")
    with pytest.raises(ValueError, match="regression.task"):
        R.RegressionConfig(task="boston")
    with pytest.raises(ValueError, match="regression.num_bins"):
        R.RegressionConfig(num_bins=1)
    with pytest.raises(ValueError, match="regression.sigma_ratio"):
        R.RegressionConfig(sigma_ratio=0.0)
    with pytest.raises(ValueError, match="regression.batch_size"):
        R.RegressionConfig(task="hetero", n_train=10, batch_size=32)
    with pytest.raises(TypeError, match="regression.epochs"):
        R.RegressionConfig(epochs=1.5)
    with pytest.raises(ValueError, match="config file"):
        R.parse_regression_config(["/nonexistent/x.gin"])
    assert R.main(["--config.regression.loss=huber", "--config",
                   os.path.join(R.CONFIG_DIR, "hetero_mse.gin")]) == 2
