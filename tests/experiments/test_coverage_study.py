"""Smoke test of the coverage study (one pass@N arm, one imbalanced arm, tiny) and its metrics against
independent oracles (scikit-learn, closed forms)."""


import numpy as np
import pytest

from experiments import coverage_study as C


def test_smoke_two_arms_report(tmp_path, smoke_args):
    args = smoke_args(C, "passn_dco", "imb_anyloss_f1")
    res = C.run(args)["results"]
    p = res["passn_dco"]
    assert p["n_train"] == 64 and np.asarray(p["pass_n_curve"]).shape == (2, 4)
    m = {k: np.asarray(v) for k, v in p["metrics"].items()}
    # pass@16 >= pass@1 = mean p_y, and the early value is the curve's epoch `early_epoch`
    assert np.all(m["pass_n"] >= m["pass_1"]) and np.all((m["pass_1"] > 0) & (m["pass_n"] <= 1))
    np.testing.assert_allclose(m["pass_n_early"], np.asarray(p["pass_n_curve"])[:, 1])
    np.testing.assert_allclose(m["pass_n"], np.asarray(p["pass_n_curve"])[:, -1], rtol=1e-6)
    imb = res["imb_anyloss_f1"]
    assert 0.05 < imb["positive_rate_test"] < 0.2
    assert all(0 <= v <= 1 for k in C.IMB_METRICS for v in imb["metrics"][k])
    md = (tmp_path / "out" / "coverage_study.md").read_text()
    assert "pass@N of a small generator" in md and "| passn_dco |" in md
    assert md.count("not run here") == len(C.CLAIMS)  # every claim needs an arm this smoke run skipped
    assert (tmp_path / "out" / "coverage_study.png").stat().st_size > 0


def test_pass_at_n_is_the_probability_of_one_success_in_n_draws():
    rng = np.random.default_rng(0)
    p = np.array([0.05, 0.3, 0.9])
    draws = rng.random((200_000, 3, 16)) < p[None, :, None]
    mc = draws.any(-1).mean(0)
    np.testing.assert_allclose([C.pass_at_n(q[None], 16) for q in p], mc, atol=4e-3)
    assert C.pass_at_n(p, 1) == pytest.approx(p.mean())


def test_binary_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.1).astype(int)
    logits = rng.standard_normal(300) + 2.0 * y - 1.0
    m = C.binary_metrics(logits, y)
    pred = (logits > 0).astype(int)
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))


def test_data_and_config_errors():
    cfg = C.CoverageConfig(task="imbalanced", loss="bce", n_train=1258, n_test=540)
    d = C.make_imbalanced_data(cfg, 0)
    assert len(d["y_train"]) + len(d["y_test"]) == 1797
    assert abs(d["y_train"].mean() - d["y_test"].mean()) < 0.01  # stratified
    assert 0.09 < d["y_test"].mean() < 0.11  # 174 eights of 1,797
    q = C.make_passn_data(C.CoverageConfig(n_train=2000, n_test=2000, label_noise=0.5), 0)
    clean = C.make_passn_data(C.CoverageConfig(n_train=2000, n_test=2000, label_noise=0.0), 0)
    flipped = (q["y_train"] != clean["y_train"]).mean()
    assert flipped == pytest.approx(0.5 * 0.9, abs=0.04)  # a flip draws the old label 1 time in 10
    np.testing.assert_array_equal(q["y_test"], clean["y_test"])  # test answers stay clean
    with pytest.raises(ValueError, match="coverage.loss"):
        C.CoverageConfig(task="passn", loss="bce")
    with pytest.raises(ValueError, match="early_epoch"):
        C.CoverageConfig(epochs=3, early_epoch=4)
