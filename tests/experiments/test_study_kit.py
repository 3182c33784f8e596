"""The study kit (experiments/kit): statistics, finished runs, reports, the shared command line, the MLP.

Cheap tests (no training): every study's command line is checked for clean errors here; the
studies' own smoke tests exercise ``--smoke`` end to end.
"""

from __future__ import annotations

import importlib
import json
import math
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from experiments.kit import cli, report, runs, stats
from experiments.kit.mlp import MLP

STUDIES = ("grokking", "regression", "distill", "noisy_labels", "calibration", "digits_study")


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


# ------------------------------------------------------------------------------------- stats


@pytest.mark.parametrize("d", [[0.5, 1.5, 1.1, 0.9], [-2.0, -1.5, -2.2], [1.0, -1.0, 0.3, 0.1, -0.2]])
def test_paired_t_test_matches_scipy_ttest_rel(d):
    d = np.asarray(d)
    a = np.array([10.0, 11.0, 9.0, 10.5, 12.0])[: len(d)]
    oracle = sps.ttest_rel(a + d, a)  # the paired t-test on the two samples
    for better in ("higher", "lower"):
        t = stats.paired_t_test(d, better=better)
        assert t.t == pytest.approx(oracle.statistic, rel=1e-9)
        assert t.n == len(d) and t.mean == pytest.approx(d.mean()) and t.std == pytest.approx(d.std(ddof=1))
        if oracle.pvalue >= 0.05:
            assert t.verdict == "no significant difference"
        else:
            good = (d.mean() > 0) == (better == "higher")
            assert t.verdict == ("better" if good else "worse")


def test_paired_t_test_nadeau_bengio_and_edge_cases():
    d = np.array([1.0, 1.2, 0.8, 1.1, 0.9])
    t = stats.paired_t_test(d, test_over_train=1 / 3)
    assert t.t == pytest.approx(d.mean() / (d.std(ddof=1) * math.sqrt(1 / 5 + 1 / 3)))
    assert t.critical == pytest.approx(sps.t.ppf(0.975, 4))
    assert stats.paired_t_test([1.0]).verdict == "n/a"
    assert stats.paired_t_test(None).verdict == "n/a" and stats.paired_t_test(None).fmt() == "—"
    assert stats.paired_t_test([1.0, float("nan"), 2.0]).verdict == "n/a"  # NaN in, no verdict out
    assert stats.paired_t_test([2.0, 2.0, 2.0]).verdict == "better"  # zero spread, nonzero mean
    assert stats.paired_t_test([0.0, 0.0]).verdict == "no significant difference"
    with pytest.raises(ValueError, match="better"):
        stats.paired_t_test(d, better="up")
    with pytest.raises(ValueError, match="level"):
        stats.paired_t_test(d, level=1.5)
    assert [stats.claim_word(v) for v in stats.VERDICTS] == ["held", "did not hold", "not resolved", "n/a"]
    with pytest.raises(ValueError, match="verdict"):
        stats.claim_word("yes")


def test_study_verdict_helpers_share_the_kit_words():
    R = importlib.import_module("experiments.regression")
    D = importlib.import_module("experiments.distill")
    assert R.paired_verdict(np.array([-1.0, -1.1, -0.9])) == "better"  # lower RMSE is better
    assert D.paired_verdict(np.array([-1.0, -1.1, -0.9])) == "worse"  # lower accuracy is worse
    assert D.paired_verdict(None) == R.paired_verdict(np.array([1.0])) == "n/a"


# ------------------------------------------------------------------------------------- runs


def test_finished_run_contract(tmp_path):
    wd = str(tmp_path / "r")
    assert runs.finished_run(wd, {"lr": 0.1}) is None
    runs.write_run(wd, {"lr": 0.1, "hidden": (8, 8)}, {"acc": [0.5, 0.6]})
    assert runs.finished_run(wd, {"lr": 0.1, "hidden": (8, 8)})["acc"] == [0.5, 0.6]  # tuples == lists
    with pytest.raises(ValueError, match="lr: stored 0.1 vs now 0.2"):
        runs.finished_run(wd, {"lr": 0.2, "hidden": (8, 8)})
    with open(os.path.join(wd, "results.json"), "w") as f:
        f.write('{"config": ')  # torn write
    assert runs.finished_run(wd, {"lr": 0.1}) is None


# ------------------------------------------------------------------------------------- report


def test_report_records_command_commit_and_date(tmp_path):
    p = report.provenance(["python", "-m", "experiments.demo", "--config.a.b=it's"])
    assert p["command"] == "python -m experiments.demo '--config.a.b=it'\"'\"'s'"
    assert p["commit"] == "unknown" or len(p["commit"].split("+")[0]) == 40
    assert p["date"].endswith("UTC")
    assert report.git_commit(str(tmp_path)) == "unknown"  # not a git checkout
    drawn = []
    path = report.write_report(str(tmp_path / "out"), "demo", "# Title\n\nbody", {"x": 1}, drawn.append, p)
    lines = open(path).read().split("\n")
    assert lines[0] == "# Title" and lines[2] == report.provenance_line(p) and lines[-1] == "body"
    assert p["command"] in lines[2] and p["commit"] in lines[2]
    data = json.load(open(tmp_path / "out" / "demo.json"))
    assert data == {"x": 1, "provenance": p}
    assert drawn == [str(tmp_path / "out" / "demo.png")]
    # a hand-written preamble above the mark survives a rewrite; the generated part is replaced
    md = tmp_path / "out" / "demo.md"
    md.write_text(f"# Kept\n\nsetting text\n\n{report.MARK}\n\nold numbers\n")
    report.write_report(str(tmp_path / "out"), "demo", "new numbers", prov=p)
    assert md.read_text() == f"# Kept\n\nsetting text\n\n{report.MARK}\n\n{report.provenance_line(p)}\n\nnew numbers"


# ------------------------------------------------------------------------------------- command line


def _study(name):
    return importlib.import_module(f"experiments.{name}")


@pytest.mark.parametrize("name", STUDIES)
def test_malformed_gin_gives_a_clean_error_in_every_study(name, tmp_path, capsys):
    bad = tmp_path / "bad.gin"
    bad.write_text(f"{name}.seeds = (0, 1\n")  # unclosed parenthesis: gin raises tokenize.TokenError
    rc = _study(name).main(["--config", str(bad), "--workdir", str(tmp_path / "w"), "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "bad.gin" in err and "Traceback" not in err
    rc = _study(name).main(["--config", str(tmp_path / "missing.gin"), "--workdir", str(tmp_path / "w")])
    assert rc == 2 and "missing.gin" in capsys.readouterr().err


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_has_the_common_flags_and_defaults(name):
    study = _study(name).STUDY
    assert study.name == name
    a = cli._resolve(study, [])
    assert a.workdir == os.path.join("runs", name) and a.report_dir in (a.workdir, None) and a.default_workdir
    assert a.provenance["command"] == f"python -m experiments.{name}"
    s = cli._resolve(study, ["--smoke", "--gin_binding", "x.y = 1", "--config.a.b=2"])
    assert s.workdir == os.path.join("runs", f"{name}_smoke") and s.smoke
    assert s.bindings[: len(study.smoke_bindings)] == study.smoke_bindings  # smoke first: the user's win
    assert s.bindings[len(study.smoke_bindings):] == ("x.y = 1", "a.b = 2")
    if study.data_dir_bindings:
        d = cli._resolve(study, ["--data_dir", "/d"])
        assert d.bindings == tuple(f"{b} = '/d'" for b in study.data_dir_bindings)
    else:
        with pytest.raises(ValueError, match="--data_dir"):
            cli._resolve(study, ["--data_dir", "/d"])
    assert study.smoke_bindings, "every study declares its --smoke bindings"
    w = cli._resolve(study, ["--write_report"])
    assert w.report_dir == report.RESULTS_DIR and not w.smoke
    assert cli._resolve(study, ["--out", "/o"]).report_dir == "/o"
    with pytest.raises(ValueError, match="--smoke"):
        cli._resolve(study, ["--smoke", "--write_report"])


def test_arms_studies_write_no_report_for_a_subset_of_arms():
    gk = _study("grokking")
    a = cli._resolve(gk.STUDY, ["--config", "configs/grokking/softmax.gin"])
    assert a.report_dir is None and a.configs == ("configs/grokking/softmax.gin",) and a.custom
    with pytest.raises(ValueError, match="full study"):
        cli._resolve(gk.STUDY, ["--config", "configs/grokking/softmax.gin", "--write_report"])


def test_study_main_reports_errors_with_status_2(capsys):
    def boom(a):
        raise ValueError("bad thing")

    s = cli.Study("demo", "", run=boom, print_results=print, default_configs=())
    assert cli.study_main(s, ["--no_progress"]) == 2 and "error: bad thing" in capsys.readouterr().err
    assert cli.study_main(s, ["--config.demo=1"]) == 2  # malformed override: no <selector>.<param>
    assert "expected --config.<selector>.<param>" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- MLP


def test_mlp_is_relu_layers_then_heads():
    m = MLP(hidden=(5, 4), out=3, aux_out=2)
    x = jax.random.normal(jax.random.key(1), (6, 2, 3))  # flattened to [6, 6]
    v = m.init(jax.random.key(0), x)
    p = v["params"]
    assert set(p) == {"dense_0", "dense_1", "head", "aux_head"}
    h = x.reshape(6, -1)
    for name in ("dense_0", "dense_1"):
        h = jnp.maximum(h @ p[name]["kernel"] + p[name]["bias"], 0.0)
    y = m.apply(v, x, train=True)
    np.testing.assert_allclose(y["features"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["out"], h @ p["head"]["kernel"] + p["head"]["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["aux"], h @ p["aux_head"]["kernel"] + p["aux_head"]["bias"], rtol=1e-5, atol=1e-6)
    assert "aux" not in MLP(hidden=(4,), out=3).apply(MLP(hidden=(4,), out=3).init(jax.random.key(0), x), x)


def test_every_studys_smoke_bindings_make_a_valid_config():
    from experiments.common.config import parse_config

    gk, R, D, nl, cal = (_study(n) for n in ("grokking", "regression", "distill", "noisy_labels", "calibration"))
    g = gk.parse_grokking_config([gk.STUDY.default_configs[0]], gk.STUDY.smoke_bindings)
    assert g.modulus == 11 and g.steps == 6
    r = R.parse_regression_config([os.path.join(R.CONFIG_DIR, "diabetes_mse.gin")], R.STUDY.smoke_bindings)
    assert r.epochs == 2 and r.seeds == (0, 1)
    d = D.parse_distill_config([os.path.join(D.CONFIG_DIR, "kd.gin")], D.STUDY.smoke_bindings)
    assert d.epochs == 3 and d.method == "kd"
    n = cli.parse_study_config(nl.STUDY.default_configs, nl.STUDY.smoke_bindings, nl._GinNoisyLabels)
    assert n.epochs == 2 and n.losses == ("ce", "gce", "aldr_kl") and n.name == "noisy_labels"
    exp, c = cli.parse_with_experiment(cal.STUDY.default_configs, cal.STUDY.smoke_bindings, cal._GinCalibration)
    assert exp.train.epochs == 1 and c.seeds == (0,) and exp.data.dataset == "digits"
    ds = _study("digits_study").STUDY
    assert parse_config([ds.default_configs[0]], ds.smoke_bindings).train.epochs == 1
