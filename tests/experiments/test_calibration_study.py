"""Smoke and unit tests of ``experiments.calibration`` (tiny base model, a few calibrator steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import calibration as cal
from experiments.common.config import parse_config
from experiments.common.data import load_digits_dataset


def test_ece_and_nll_by_hand():
    # confidences 0.9 (correct) and 0.6 (wrong): 3 bins separate them, ECE = (0.1 + 0.6)/2;
    # 2 bins pool them, ECE = |0.75 - 0.5| = 0.25
    probs = np.array([[0.9, 0.1], [0.4, 0.6]])
    labels = np.array([0, 0])
    assert cal.expected_calibration_error(probs, labels, num_bins=3) == pytest.approx(0.35)
    assert cal.expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.25)
    logits = np.log(probs)
    assert cal.nll(logits, labels) == pytest.approx(-(np.log(0.9) + np.log(0.4)) / 2, rel=1e-6)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(2000, 5)) * 2.0
    labels = np.array([rng.choice(5, p=np.exp(r) / np.exp(r).sum()) for r in true])
    cfg = cal.CalibrationConfig(fit_steps=400)
    params, curve = cal.fit_calibrator("ts_nll", true * 3.0, labels, None, cfg)  # over-confident x3
    t = float(np.asarray(cal._temperature(params, np.zeros((1, 0), np.float32), cfg.t_min, cfg.t_max))[0])
    assert t == pytest.approx(3.0, rel=0.1)
    assert curve[-1] < curve[0]


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="calibration.calibrators"):
        cal.CalibrationConfig(calibrators=("nope",))
    with pytest.raises(ValueError, match="t_min"):
        cal.CalibrationConfig(t_min=2.0)


def test_smoke_study_writes_report_and_resumes(tmp_path):
    exp = parse_config(["configs/calibration/digits.gin"],
                       ["train.epochs = 1", "train.progress = False", "model.width = 8"])
    cfg = cal.CalibrationConfig(seeds=(0,), val_size=100, n_test=100, fit_steps=20,
                                calibrators=("ts_nll", "ts_ca", "tx_ca"))
    full = load_digits_dataset()
    out = tmp_path / "out"
    s = cal.run_study(exp, cfg, str(tmp_path / "runs"), str(out), ds=full)
    for f in ("calibration.md", "calibration.json", "calibration.png"):
        assert (out / f).stat().st_size > 0
    sc = s["scores"]
    for c in ("none", *cfg.calibrators):
        for m in ("ece", "nll", "accuracy"):
            assert np.all(np.isfinite(sc[c]["test"][m])), (c, m)
    # temperature scaling cannot change the argmax: accuracy is unchanged
    assert sc["ts_nll"]["test"]["accuracy"] == sc["none"]["test"]["accuracy"]
    assert "TS (CA loss)" in (out / "calibration.md").read_text()
    assert "### Verdicts" in (out / "calibration.md").read_text()
    # a rerun skips the finished seed and reproduces its numbers
    done = json.loads((tmp_path / "runs" / "calib_s0" / "results.json").read_text())
    s2 = cal.run_study(exp, cfg, str(tmp_path / "runs"), None, ds=full)
    assert s2["scores"]["ts_ca"]["test"]["ece"] == s["scores"]["ts_ca"]["test"]["ece"]
    assert done["seed"] == 0


def test_verdicts_are_computed_from_the_numbers():
    ece = lambda *v: {"ece": list(v)}  # noqa: E731
    sc = {"ts_nll": {"test": ece(1.0, 1.2, 1.1), "test_noisy": ece(5.0, 6.0, 5.5)},
          "ts_ca": {"test": ece(3.0, 3.3, 3.1), "test_noisy": ece(5.1, 5.9, 5.4)}}
    v = cal.verdicts({"scores": sc})
    # clean: CA worse by +2.03 pp on every seed; shifted: no significant difference -> did not hold
    assert "TS (CA loss) vs TS (NLL)" in v and "+2.03 ± 0.06 pp (worse)" in v
    assert "(no significant difference)" in v and "→ **did not hold**" in v
    sc["ts_ca"]["test"] = ece(0.5, 0.6, 0.55)
    sc["ts_ca"]["test_noisy"] = ece(4.0, 5.0, 4.5)
    assert "→ **held**" in cal.verdicts({"scores": sc})
