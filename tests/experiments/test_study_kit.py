"""The study kit (experiments/kit): statistics, finished runs, reports, the shared command line, the MLP.

Cheap tests (no training): every study's command line is checked for clean errors here; the
studies' own smoke tests exercise ``--smoke`` end to end.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from experiments import arms
from experiments.kit import cli, report, runs, stats, tune
from experiments.kit.mlp import MLP

STUDIES = ("grokking", "regression", "distill", "noisy_labels", "calibration", "digits_study", "sharpness_study")


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


# ------------------------------------------------------------------------------------- epochs


def test_run_epochs_is_the_epoch_loop_and_refuses_a_nonfinite_loss():
    import optax

    from experiments.common import small_models as sm

    seeds, n = [0, 1], 6
    data = {"x": jnp.asarray(np.random.default_rng(0).normal(size=(2, n, 3)), jnp.float32)}
    tx = optax.sgd(0.1)
    params0 = jnp.ones((2, 3))

    def loss_fn(p, batch, step):
        return jnp.mean((batch["x"] @ p) ** 2)

    epoch = sm.make_epoch_fn(loss_fn, tx, n=n, batch_size=2)
    seen = []
    params, _, curve = sm.run_epochs(epoch, params0, jax.vmap(tx.init)(params0), data, seeds, 3, 3, what="toy",
                                     after_epoch=lambda e, p: seen.append((e, np.asarray(p).copy())))
    # the loop written out: same keys, same step counters
    p, o, want = params0, jax.vmap(tx.init)(params0), []
    for e in range(3):
        p, o, loss = epoch(p, o, data, sm.epoch_keys(seeds, e), jnp.int32(3 * e))
        want.append(np.asarray(loss).tolist())
        np.testing.assert_array_equal(seen[e][1], p)
    assert [e for e, _ in seen] == [0, 1, 2] and curve == want
    np.testing.assert_array_equal(params, p)
    bad = sm.make_epoch_fn(lambda q, batch, step: jnp.where(step >= 4, jnp.nan, 0.0) * jnp.sum(q), tx, n=n,
                           batch_size=2)
    with pytest.raises(FloatingPointError, match="toy: non-finite"):
        sm.run_epochs(bad, params0, jax.vmap(tx.init)(params0), data, seeds, 2, 3, what="toy")


# ------------------------------------------------------------------------------------- arms: runner


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1


def _parse(files, bindings):
    return _Cfg(lr=float(bindings[0]) if bindings else 0.1)


def test_run_arms_passes_the_arms_workdir_to_a_train_that_takes_one(tmp_path):
    seen = []

    def train_wd(cfg, workdir, *, scale=1.0):
        seen.append(workdir)
        open(os.path.join(workdir, "log.txt"), "w").write("x")
        return {"metrics": {"acc": [scale * cfg.lr, 0.2]}}

    res, cfgs = arms.run_arms(["c/a.gin", "c/b.gin"], [], _parse, functools.partial(train_wd, scale=2.0),
                              str(tmp_path), progress=False)
    assert seen == [str(tmp_path / "a"), str(tmp_path / "b")] and (tmp_path / "b" / "log.txt").exists()
    assert res["a"]["metrics"]["acc"] == [0.2, 0.2] and cfgs["a"] == {"lr": 0.1} and not res["a"]["skipped"]
    # a train without a workdir parameter is called with the config only (the kit's original contract)
    res2, _ = arms.run_arms(["c/d.gin"], [], _parse, lambda cfg: {"metrics": {"acc": [cfg.lr]}}, str(tmp_path),
                            progress=False)
    assert res2["d"]["metrics"]["acc"] == [0.1]
    again, _ = arms.run_arms(["c/a.gin"], [], _parse, train_wd, str(tmp_path), progress=False)
    assert again["a"]["skipped"] and seen == [str(tmp_path / "a"), str(tmp_path / "b")]  # reloaded, not rerun


def test_a_finished_run_of_an_older_layout_is_refused_before_training(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps({"config": {"lr": 9.0}, "acc": [0.5]}))  # no "metrics"
    calls = []
    with pytest.raises(ValueError, match=r"older layout.*'metrics'"):  # checked before the config comparison
        arms.run_arms(["c/a.gin"], [], _parse, lambda cfg: calls.append(cfg), str(tmp_path), progress=False)
    assert calls == []
    with pytest.raises(ValueError, match=r"lacks 'metrics', 'curve'"):
        runs.finished_run(str(tmp_path / "a"), {"lr": 9.0}, require=("metrics", "curve"))
    assert runs.finished_run(str(tmp_path / "a"), {"lr": 9.0})["acc"] == [0.5]  # no requirement: as before


# ------------------------------------------------------------------------------------- arms: claims


def _res(**arms_values):
    return {a: {"metrics": dict(m)} for a, m in arms_values.items()}


def test_claim_at_a_setting_and_the_claims_table_across_settings():
    c = arms.Claim("K: k beats n", "Paper 2020, §3", "k", "n", "acc", metric_b="acc_b")
    assert (c.at("s1").metric, c.at("s1").metric_b) == ("acc@s1", "acc_b@s1")
    assert arms.Claim("x", "p", "a", "b", "m").at("z").metric_b is None
    # per-seed values: k − n = +5.0, +5.2, +4.8 (mean 5, sd 0.2) in s1; +1, −1, +0.5 in s2; −3, −3.1, −2.9 in s3
    s1 = _res(k={"acc": [85.0, 87.2, 85.8]}, n={"acc": [80.0, 82.0, 81.0]})
    s2 = _res(k={"acc": [91.0, 90.0, 92.5]}, n={"acc": [90.0, 91.0, 92.0]})
    s3 = _res(k={"acc": [77.0, 78.9, 78.1]}, n={"acc": [80.0, 82.0, 81.0]})
    claims = [arms.Claim("K: k beats n", "P", "k", "n", "acc"), arms.Claim("M: m beats n", "Q", "m", "n", "acc")]
    text = arms.claims_table([(100, s1), (300, s2)], claims, setting_label=lambda n: f"n = {n}", unit=" pp")
    lines = text.split("\n")
    assert lines[0] == "| claim | Δ at n = 100 | held? (n = 100) | Δ at n = 300 | held? (n = 300) |"
    assert lines[2] == "| K: k beats n (P) | +5.00 ± 0.20 pp | better | +0.17 ± 1.04 pp | no significant difference |"
    assert lines[3] == "| M: m beats n (Q) | n/a | n/a | n/a | n/a |"  # arm m was not run
    assert "* **K: held in part** (n = 100: better, n = 300: no significant difference)." in lines
    assert lines[-1] == "* **M: not shown** — no significant difference at this scale (n = 100: n/a, n = 300: n/a)."
    assert arms.claims_table([("a", s1)], claims[:1], note="").split("\n")[-1] == "* **K: held** in every setting."
    rev = arms.claims_table([("a", s1), ("b", s3)], claims[:1], scale=0.1, digits=3)
    assert "| +0.500 ± 0.020 | better | -0.300 ± 0.010 | worse |" in rev
    assert "* **K: held in part** (a: better, b: worse)." in rev
    assert "**K: did not hold**" in arms.claims_table([("b", s3)], claims[:1])


def test_threshold_claims_for_single_seed_studies():
    T = arms.ThresholdClaim
    s = {"a": {"acc": 0.95, "sc": 0.2, "none": None}, "b": {"acc": 0.5, "sc": 0.6}}
    claims = [T("a groks", "P1", (("a", "acc", ">=", 0.9),)),
              T("a collapses less than b", "P2", (("a", "sc", "<", ("b", "sc")), ("b", "acc", ">", 0.5))),
              T("c groks", "P3", (("c", "acc", ">=", 0.9),)),
              T("undefined", "P4", (("a", "none", "<=", 1.0),))]
    r = arms.threshold_results(s, claims)
    assert [x["word"] for x in r] == ["held", "did not hold", "n/a", "n/a"]  # 0.5 > 0.5 fails; c missing; None
    assert r[1]["evidence"] == "`a` sc 0.200 < `b` sc 0.600; `b` acc 0.500 > 0.5"
    sec = arms.thresholds_section(s, claims).split("\n")
    assert sec[0] == "* **a groks** (P1). Tested as `a` acc 0.950 ≥ 0.9: **held** here."
    assert sec[2] == "* **c groks** (P3): not run here (an arm it needs is missing)."
    assert "`a` none n/a ≤ 1" in sec[3] and "**n/a**" in sec[3]
    nan = arms.threshold_results({"a": {"x": float("nan")}}, [T("t", "s", (("a", "x", ">", 0.0),))])
    assert nan[0]["word"] == "n/a"
    with pytest.raises(ValueError, match="conditions"):
        T("x", "y", (("a", "k", "==", 1.0),))
    with pytest.raises(ValueError, match="conditions"):
        T("x", "y", (("a", "k", ">="),))


def test_rank_claim_sentence():
    ranks = {"ce": 2.5, "gce": 1.0, "ldr:l2": 3.0, "mae": 4.5}
    c = arms.RankClaim("LDR near-best", "Zhu 2023", ("ldr",), top=3)
    assert arms.rank_sentence(ranks, c, str.upper, noun="losses") == (
        "* **LDR near-best** (Zhu 2023): LDR:L2 3.0 of 4 losses; best GCE (1.0); top 3: GCE, CE, LDR:L2 "
        "→ **held** here.")
    assert arms.rank_sentence(ranks, dataclasses.replace(c, top=2)).endswith("top 2: gce, ce → **did not hold** here.")
    assert arms.rank_sentence(ranks, dataclasses.replace(c, arms=("sce",))) is None  # no claimed arm ran
    assert arms.rank_sentence({"ldr": 1.0}, c) is None  # nothing to rank against
    with pytest.raises(ValueError, match="top"):
        arms.RankClaim("x", "y", ("a",), top=0)


# ------------------------------------------------------------------------------------- arms: tables, plots


def test_metrics_table_digits_per_metric_and_bold_best():
    r = _res(a={"acc": [0.5, 0.7], "nll": [1.0, 1.2]}, b={"acc": [0.9, 0.9], "nll": [2.0, 2.0]},
             c={"acc": [0.9, 0.9]})
    # default call: unchanged layout (3 decimals, sample std, "–" for a missing metric, absent arms skipped)
    assert arms.metrics_table(r, ["a", "b", "c", "zz"], ["acc", "nll"]).split("\n") == [
        "| arm | acc | nll |", "|---|---|---|", "| a | 0.600 ± 0.141 | 1.100 ± 0.141 |",
        "| b | 0.900 ± 0.000 | 2.000 ± 0.000 |", "| c | 0.900 ± 0.000 | – |"]
    t = arms.metrics_table(r, ["a", "b", "c"], ["acc", "nll"], {"acc": 1}, best={"acc": "higher", "nll": "lower"})
    assert t.split("\n")[2:] == ["| a | 0.6 ± 0.1 | **1.100 ± 0.141** |", "| b | **0.9 ± 0.0** | 2.000 ± 0.000 |",
                                 "| c | **0.9 ± 0.0** | – |"]  # a tie is bold in both rows
    assert "**" not in arms.metrics_table(r, ["a"], ["acc"], 2)
    with pytest.raises(ValueError, match="best"):
        arms.metrics_table(r, ["a"], ["acc"], best={"acc": "up"})


def test_plot_panels_labels_and_limits(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    panels = [("bar", "ece", {"a": [1.0, 2.0], "b": [3.0, 3.5]}, {"ylabel": "ECE (%)", "ylim": (0.0, 5.0)}),
              ("curve", "rmse", {"a": [[3.0, 2.0, 1.0]]}, {"ylabel": "RMSE", "xlabel": "step"}),
              ("bar", "plain", {"a": [1.0, 1.2]})]
    arms.plot_panels(str(tmp_path / "p.png"), panels)
    ax = figs[0].axes
    assert (tmp_path / "p.png").exists()
    assert (ax[0].get_ylabel(), ax[0].get_ylim()) == ("ECE (%)", (0.0, 5.0))
    assert (ax[1].get_ylabel(), ax[1].get_xlabel()) == ("RMSE", "step") and ax[2].get_ylabel() == ""
    monkeypatch.undo()
    for f in figs:
        plt.close(f)
    with pytest.raises(ValueError, match="options"):
        arms.plot_panels(str(tmp_path / "q.png"), [("bar", "t", {"a": [1.0]}, {"color": "r"})])
    with pytest.raises(ValueError, match="panels"):
        arms.plot_panels(str(tmp_path / "q.png"), [("pie", "t", {"a": [1.0]})])


# ------------------------------------------------------------------------------------- report, stats helpers


def test_write_report_drops_the_generated_title_below_a_kept_preamble(tmp_path):
    p = report.provenance(["python", "-m", "x"])
    out = str(tmp_path)
    report.write_report(out, "d", "# Generated title\n\nbody", prov=p)  # no preamble: the title stays
    assert open(tmp_path / "d.md").read() == f"# Generated title\n\n{report.provenance_line(p)}\n\nbody"
    (tmp_path / "d.md").write_text(f"# Mine\n\ntext\n\n{report.MARK}\n\nold\n")
    report.write_report(out, "d", "# Generated title\n\n## Results\n\nbody", prov=p)
    kept = f"# Mine\n\ntext\n\n{report.MARK}\n\n{report.provenance_line(p)}\n\n"
    assert open(tmp_path / "d.md").read() == kept + "## Results\n\nbody"
    report.write_report(out, "d", "## Results\n\nbody", prov=p)  # no level-1 title: nothing is dropped
    assert open(tmp_path / "d.md").read() == kept + "## Results\n\nbody"


def test_rounded_keeps_structure_and_rounds_floats():
    obj = {"a": [math.pi, 2, (1 / 3, "s")], "b": {"c": np.float64(123456.789)}, "n": float("nan"), "t": True}
    r = report.rounded(obj, 4)
    assert r["a"] == [3.142, 2, [0.3333, "s"]] and r["b"] == {"c": 123500.0} and r["t"] is True
    assert math.isnan(r["n"]) and report.rounded(float("inf")) == float("inf")
    assert json.loads(json.dumps(report.rounded(obj))) is not None


def test_spearman_matches_a_restatement_on_ranks():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    y = np.array([2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0])

    def ranks(v):  # average ranks of ties, 1-based
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        return np.array([r[v == e].mean() for e in v])

    rho = np.corrcoef(ranks(x), ranks(y))[0, 1]
    t = rho * math.sqrt((len(x) - 2) / (1 - rho**2))
    r, p = stats.spearman(x, y)
    assert r == pytest.approx(rho, rel=1e-12) and p == pytest.approx(2 * sps.t.sf(abs(t), len(x) - 2), rel=1e-9)
    assert stats.spearman([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same length"):
        stats.spearman([1.0, 2.0], [1.0])


# --- kit.tune: validation search --------------------------------------------------------------------


def test_select_hand_worked_table_lexicographic_ties_and_non_finite():
    # point:        0     1     2     3     4
    # acc mean:    0.8   0.9   0.9   0.9   nan
    # loss mean:   0.1   0.4   0.3   0.3   0.0
    # highest acc: 1, 2, 3 tie (0.9); lowest loss among them: 2, 3 tie (0.3); no preference: grid order -> 2;
    # preferring a = 3 (point 3's value) -> 3; the NaN point never wins even with the best loss
    means = {"acc": [0.8, 0.9, 0.9, 0.9, math.nan], "loss": [0.1, 0.4, 0.3, 0.3, 0.0]}
    pts = [{"a": i} for i in range(5)]
    crit = [("acc", "higher"), ("loss", "lower")]
    assert tune.select(means, crit, pts) == 2
    assert tune.select(means, crit, pts, {"a": 3}) == 3
    assert tune.select(means, [("loss", "lower")], pts) == 4  # only a NaN *mean* is excluded
    assert tune.select(means, [("acc", "lower")], pts) == 0
    with pytest.raises(ValueError, match="direction"):
        tune.select(means, [("acc", "up")])
    with pytest.raises(ValueError, match="preferred"):
        tune.Search("x", {"a": (1,)}, (("acc", "higher"),), preferred={"b": 1})


@dataclasses.dataclass(frozen=True)
class _TuneCfg:
    lr: float = 0.1
    wd: float = 0.0
    seeds: tuple = (0, 1)
    steps: int = 10


def _val_fn(calls):
    def validate(cfg, points):  # acc peaks at lr = 0.3 whatever wd; per-seed noise-free
        calls.append((cfg.seeds, len(points)))
        acc = [[1.0 - abs(p["lr"] - 0.3) + 0.0 * s for s in cfg.seeds] for p in points]
        return {"acc": np.asarray(acc)}
    return validate


def test_search_arm_selects_caches_and_reports_the_gin_file(tmp_path):
    srch = tune.Search("a", {"wd": (0.0, 0.1), "lr": (0.1, 0.3)}, (("acc", "higher"),), {"wd": 0.1}, "paper",
                       fixed={"seeds": (7, 8, 9)})
    calls: list = []
    r = tune.search_arm(srch, _TuneCfg(), _val_fn(calls), str(tmp_path / "a"))
    # points: (0, .1) (0, .3) (.1, .1) (.1, .3); lr = .3 ties across wd; the preferred wd = .1 wins
    assert tune.selection(r) == {"wd": 0.1, "lr": 0.3} and r["seeds"] == [7, 8, 9] and calls == [((7, 8, 9), 4)]
    assert not r["matches"] and r["configured"] == {"wd": 0.0, "lr": 0.1} and not r["skipped"]
    again = tune.search_arm(dataclasses.replace(srch, criteria=(("acc", "lower"),)), _TuneCfg(lr=0.3, wd=0.1),
                            _val_fn(calls), str(tmp_path / "a"))
    assert again["skipped"] and len(calls) == 1  # reloaded; the selection is redone with the new criteria
    assert tune.selection(again) == {"wd": 0.1, "lr": 0.1}  # lr = .1 ties across wd: preferred wd = .1
    with pytest.raises(ValueError, match="different config"):  # another validation problem, same cache
        tune.search_arm(srch, _TuneCfg(steps=5), _val_fn(calls), str(tmp_path / "a"))
    assert tune.gin_lines({"a": r}, "demo") == ["a.gin: demo.wd = 0.1; demo.lr = 0.3"]
    assert "| a | 0 | 0.1 | 0.800 ± 0.000 |  |" in tune.points_table({"a": r}, ["acc"])
    assert "| wd \\ lr | 0.1 | 0.3 |" in tune.grid_section({"a": r}) and "instead" in tune.grid_section({"a": r})


def _demo_study(tmp_path, calls):
    def parse(files, bindings):
        return _TuneCfg(lr=0.3 if "good" in files[0] else 0.1)

    srch = tune.Search("x", {"lr": (0.1, 0.3)}, (("acc", "higher"),))

    def search(args):
        return tune.run_searches(args.configs, args.bindings, parse=parse,
                                 search_for=lambda arm, cfg: srch if arm != "skip" else None,
                                 validate=_val_fn(calls), workdir=args.workdir, cache="c", progress=args.progress)

    def run(args):
        recs = search(args)
        tune.enforce(recs, "demo", refuse=not args.smoke)
        return {"tuning": recs}

    return cli.Study("demo", "", run=run, print_results=lambda s: None, default_configs=("good.gin", "skip.gin"),
                     search=tune.StudySearch(search, tune.grid_section, "demo"))


def test_tune_cli_runs_only_the_search_and_refuses_write_report(tmp_path, capsys):
    calls: list = []
    study = _demo_study(tmp_path, calls)
    wd = str(tmp_path / "w")
    assert cli.study_main(study, ["--tune", "--no_progress", "--workdir", wd, "--config", "bad.gin"]) == 0
    out, err = capsys.readouterr()
    assert "Selected: lr = 0.3" in out and "bad.gin: demo.lr = 0.3" in out and "warning: bad" in err
    assert json.load(open(os.path.join(wd, "tune.json")))["tuning"]["bad"]["matches"] is False
    assert os.path.exists(os.path.join(wd, "c", "bad", "results.json"))
    assert cli.study_main(study, ["--tune", "--write_report"]) == 2
    assert "cannot be combined with --write_report" in capsys.readouterr().err
    assert "--tune" in cli.build_parser(study).format_help()
    # the full run refuses a gin file that disagrees (outside --smoke) and passes one that agrees
    assert cli.study_main(study, ["--no_progress", "--workdir", wd, "--config", "bad.gin"]) == 2
    assert "bad.gin: demo.lr = 0.3" in capsys.readouterr().err
    assert cli.study_main(study, ["--no_progress", "--workdir", wd, "--smoke", "--config", "bad.gin"]) == 0
    assert cli.study_main(study, ["--no_progress", "--workdir", wd]) == 0  # good.gin matches; skip.gin unsearched
    no_search = dataclasses.replace(study, search=None)
    assert cli.study_main(no_search, ["--tune"]) == 2
    assert "has no hyper-parameter search" in capsys.readouterr().err
