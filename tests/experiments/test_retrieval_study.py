"""Smoke test of the retrieval study (two arms, tiny data) and its metrics against independent oracles;
also the shared arms runner (claims, resume, tables)."""

import json
import os

import numpy as np
import pytest

from experiments import arms
from experiments import retrieval_study as R
from experiments.kit import cli, report


def _args(tmp_path, configs, bindings):
    return cli.StudyArgs(configs=tuple(configs), custom=True, bindings=tuple(bindings), workdir=str(tmp_path / "runs"),
                         report_dir=str(tmp_path / "out"), progress=False,
                         provenance=report.provenance(["python", "-m", "experiments.retrieval_study", "--smoke"]))


def test_smoke_two_arms_report_and_resume(tmp_path):
    confs = [os.path.join(R.CONFIG_DIR, f"{a}.gin") for a in ("decoupled", "infonce")]
    study = R.run(_args(tmp_path, confs, R.SMOKE_BINDINGS))
    res = study["results"]
    assert set(res) == {"decoupled", "infonce"}
    for r in res.values():
        assert not r["skipped"]
        for m in R.METRICS:
            v = np.asarray(r["metrics"][m])
            assert v.shape == (2,) and np.all((v >= 0) & (v <= 1)), m
        assert np.asarray(r["p_at_1_curve"]).shape == (2, 2)
    out = tmp_path / "out"
    for f in ("retrieval_study.md", "retrieval_study.json", "retrieval_study.png"):
        assert (out / f).stat().st_size > 0
    md = (out / "retrieval_study.md").read_text()
    assert "Did the claim hold here?" in md and "| decoupled |" in md and "not run here" in md
    assert json.loads((out / "retrieval_study.json").read_text())["provenance"]["command"].endswith("--smoke")
    again = R.run(_args(tmp_path, confs, R.SMOKE_BINDINGS))  # finished runs are reloaded, not retrained
    assert all(r["skipped"] for r in again["results"].values())
    assert again["results"]["infonce"]["metrics"] == res["infonce"]["metrics"]
    with pytest.raises(ValueError, match="temperature"):
        R.run(_args(tmp_path, confs[:1], [*R.SMOKE_BINDINGS, "retrieval.temperature = 0.1"]))


def test_retrieval_metrics_hand_computed_and_sklearn_auc():
    from sklearn.metrics import roc_auc_score

    s = np.array([[0.9, 0.1, 0.5, 0.3, 0.2, 0.0], [0.0, 0.8, 0.7, 0.6, 0.5, 0.4]])
    rel = np.array([[2.0, 0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0, 0.0, 1.0]])
    m = R.retrieval_metrics(s, rel, k=2)
    assert m["p_at_1"] == 0.5  # row 0: top item positive; row 1: top item negative
    assert m["p_at_5"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["r_at_5"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # nDCG@2, gains 2^r - 1: row 0 ranks (3, 0) of ideal (3, 1); row 1 ranks (0, 7) of ideal (7, 1)
    d = 1 / np.log2(3)
    want = (3 / (3 + d) + 7 * d / (7 + d)) / 2
    assert m["ndcg_at_5"] == pytest.approx(want)
    assert m["global_auc"] == pytest.approx(roc_auc_score((rel > 0).ravel(), s.ravel()))


def test_data_ground_truth_and_config_errors():
    cfg = R.RetrievalConfig(n_train=50, n_test=10, num_labels=12, batch_size=16)
    d = R.make_data(cfg, 3)
    npos = (d["rel_train"] > 0).sum(1)
    assert npos.min() >= 1 and npos.max() <= 4
    assert set(np.unique(d["rel_train"])) <= {0.0, 1.0, 2.0, 3.0}
    assert np.array_equal(R.make_data(cfg, 3)["x_test"], d["x_test"])  # deterministic per seed
    with pytest.raises(ValueError, match="retrieval.loss"):
        R.RetrievalConfig(loss="nope")
    with pytest.raises(ValueError, match="num_labels"):
        R.RetrievalConfig(num_labels=5, topk=5)
    conf = os.path.join(R.CONFIG_DIR, "bce.gin")  # the CLI refuses, before training, with status 2
    assert R.main(["--config", conf, "--write_report"]) == 2
    assert R.main(["--config", conf, "--config.retrieval.loss=nope", "--no_progress"]) == 2


def test_claims_words_follow_the_paired_test():
    res = {"a": {"metrics": {"m": [0.9, 0.8, 0.85, 0.95]}}, "b": {"metrics": {"m": [0.5, 0.45, 0.52, 0.6]}}}
    claims = [arms.Claim("a beats b", "paper", "a", "b", "m"), arms.Claim("b beats a", "paper", "b", "a", "m"),
              arms.Claim("lower is better", "paper", "a", "b", "m", better="lower"),
              arms.Claim("missing", "paper", "a", "zzz", "m")]
    words = [r["word"] for r in arms.claim_results(res, claims)]
    assert words == ["held", "did not hold", "did not hold", "n/a"]
    noisy = {"a": {"metrics": {"m": [1.0, 0.0, 1.0, 0.0]}}, "b": {"metrics": {"m": [0.0, 1.0, 0.0, 1.0]}}}
    assert arms.claim_results(noisy, claims[:1])[0]["word"] == "not resolved"
    text = arms.claims_section(res, claims)
    assert text.count("**held**") == 1 and "not run here" in text
    table = arms.metrics_table(res, ["a", "b", "c"], ["m"])
    assert "| a | 0.875 ± 0.065 |" in table and "| c |" not in table
