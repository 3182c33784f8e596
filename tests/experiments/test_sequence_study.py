"""Smoke test of the sequence study (two cheap arms, tiny) and its metrics against independent oracles
(scikit-learn, closed forms)."""

import dataclasses
import json
import os

import gin
import numpy as np
import pytest

from experiments import sequence_study as S
from experiments.kit import cli, tune
from experiments.tasks import sequence as T


def test_smoke_two_arms_report(tmp_path, smoke_args):
    args = smoke_args(S, "pref_dpo", "mia_ppl")
    res = S.run(args)["results"]
    m = {k: np.asarray(v) for k, v in res["pref_dpo"]["metrics"].items()}
    assert m["win_rate"].shape == (2,) and np.all((m["win_rate"] > 0) & (m["win_rate"] < 1))
    assert np.all(m["kl_to_ref"] >= 0)  # an exact KL of two softmax policies
    assert all(0.0 <= v <= 1.0 for v in res["mia_ppl"]["metrics"]["auroc"])
    md = (tmp_path / "out" / "sequence.md").read_text()
    assert "Preference optimisation" in md and "| pref_dpo |" in md and "| mia_ppl |" in md
    assert md.count("not run here") == len(S.CLAIMS)  # every claim needs an arm this smoke run skipped
    assert (tmp_path / "out" / "sequence.png").stat().st_size > 0


def test_every_arm_has_a_config_with_its_task_and_method():
    for task, group in S.GROUPS.items():
        for a in group:
            gin.clear_config()
            cfg = S.parse([os.path.join(S.CONFIG_DIR, f"{a}.gin")])
            assert cfg.task == task and cfg.method in S.METHODS[task]
    assert {c.a for c in S.CLAIMS} | {c.b for c in S.CLAIMS} <= set(S.ARMS)


def test_auroc_and_ndcg_match_sklearn():
    from sklearn.metrics import ndcg_score, roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.standard_normal(40) + 0.7, rng.standard_normal(60)
    pos[:5] = neg[:5]  # ties count one half
    y = np.r_[np.ones(40), np.zeros(60)]
    assert T.auroc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))
    s, g = rng.standard_normal((7, 12)), rng.integers(0, 4, (7, 12)).astype(float)
    g[:, 0] = 1.0  # no row without a relevant item
    assert T.ndcg_at_k(s, g, 5) == pytest.approx(ndcg_score(g, s, k=5))


def test_bigram_precision_is_clipped_and_position_free():
    ref = np.array([3, 1, 4, 1, 5])
    assert T.bigram_precision(ref, ref) == 1.0
    assert T.bigram_precision(np.array([9, 3, 1, 4, 1]), ref) == 0.75  # a one-token shift loses one bigram
    assert T.bigram_precision(np.array([3, 1, 3, 1, 3]), ref) == 0.25  # (3, 1) occurs once in ref: clipped
    assert T.bigram_precision(np.array([7]), ref) == 0.0


def test_aggregate_fit_is_the_least_squares_solution():
    # rho = 1: instance-level least squares of bag means on instances; rho = 0: regress bag means on
    # bag-mean features weighted by bag size (closed forms in NumPy)
    import jax

    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, 3))
    ids = np.repeat(np.arange(8), 3)
    yb = rng.standard_normal(8)
    with jax.enable_x64(True):
        quad = T._agg_quadratic(jax.numpy.asarray(x), jax.numpy.asarray(ids), jax.numpy.asarray(yb))
        th1, th0 = T._agg_fit(quad, 1.0), T._agg_fit(quad, 0.0)
    np.testing.assert_allclose(th1, np.linalg.lstsq(x, yb[ids], rcond=None)[0], rtol=1e-6, atol=1e-8)
    xb = x.reshape(8, 3, 3).mean(1)
    np.testing.assert_allclose(th0, np.linalg.lstsq(xb, yb, rcond=None)[0], rtol=1e-6, atol=1e-8)


def test_config_errors():
    with pytest.raises(ValueError, match="seq.method"):
        S.SequenceConfig(task="eisl", method="dpo")
    with pytest.raises(ValueError, match="seq.task"):
        S.SequenceConfig(task="nope")
    with pytest.raises(ValueError, match="seq.eisl_weight"):
        S.SequenceConfig(task="eisl", method="eisl_mix", eisl_weight=1.5)
    with pytest.raises(ValueError, match="seq.weight_decay"):
        S.SequenceConfig(task="csib", method="mse", weight_decay=-1.0)
    with pytest.raises(ValueError, match="seq.ref_smoothing"):
        S.SequenceConfig(task="dcpdd", method="dcpdd", ref_smoothing=0.0)


def test_searches_name_real_arms_and_fields():
    fields = {f.name for f in dataclasses.fields(S.SequenceConfig)}
    for srch in S.SEARCHES:
        assert srch.arm in S.ARMS and set(srch.grid) <= fields and set(srch.preferred) <= set(srch.grid)
    assert [p["beta"] for p in S.SEARCHES[-1].points()][:3] == [1e-3, 1e-3, 1e-3]  # first field slowest


def test_select_prefers_the_paper_value_on_ties_only():
    pts = [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]
    m = {"auroc": [0.6, 0.6, 0.5]}
    assert tune.select(m, [("auroc", "higher")], pts, {"a": 2.0}) == 1
    assert tune.select(m, [("auroc", "higher")], pts, {}) == 0
    assert tune.select(m, [("auroc", "lower")], pts, {"a": 1.0}) == 2


def test_dcpdd_validation_is_disjoint_from_the_test_candidates():
    cfg = S.SequenceConfig(task="dcpdd", method="dcpdd", seeds=(0,), n_train=24, n_test=24)
    plain, with_val = T._dcpdd_seed(cfg, 0), T._dcpdd_seed(cfg, 0, validation=True)
    for k in ("lp", "ids", "member", "ref_counts"):  # the test side is that of a run without validation
        np.testing.assert_array_equal(plain[k], with_val[k])
    test_rows = {tuple(r) for r in plain["ids"]}
    assert not any(tuple(r) in test_rows for r in with_val["val_ids"])
    assert with_val["val_member"].sum() == 12 and with_val["val_lp"].shape == (24, 30)
    val = T.dcpdd_validation(cfg, [{"upper_bound": 0.03}, {"upper_bound": 2.0, "ref_smoothing": 10.0}])
    assert val.shape == (2, 1) and np.all((val >= 0) & (val <= 1))


def test_csib_validation_never_reads_the_test_points(monkeypatch):
    orig = T._csib_data

    def poisoned(cfg, seed):  # NaN test points: any use of them would make the RMSE NaN
        d = orig(cfg, seed)
        return {**d, "x_test": np.full_like(d["x_test"], np.nan), "y_test": np.full_like(d["y_test"], np.nan)}

    monkeypatch.setattr(T, "_csib_data", poisoned)
    cfg = S.SequenceConfig(task="csib", method="csib", seeds=(0, 1), steps=3, n_train=16, n_test=8)
    grid = [{"beta": 0.1, "sigma": 0.5}, {"beta": 1.0, "sigma": 0.25, "steps": 2}, {"weight_decay": 0.01}]
    val = T.csib_validation(cfg, grid)
    assert val.shape == (3, 2) and np.all(np.isfinite(val)) and np.all(val > 0)


def _args(configs, bindings, workdir="unused"):
    return cli.StudyArgs(configs=tuple(configs), custom=True, bindings=tuple(bindings), workdir=workdir,
                         report_dir=None, progress=False)


def test_search_reports_selection_and_mismatch(tmp_path, capsys):
    conf = os.path.join(S.CONFIG_DIR, "mia_dcpdd.gin")
    smoke = (*S.SMOKE_BINDINGS, "seq.upper_bound = 2.0")
    t = S.search(_args([conf, os.path.join(S.CONFIG_DIR, "pref_dpo.gin")], smoke))
    assert list(t) == ["mia_dcpdd"]  # arms without a search are skipped
    r = t["mia_dcpdd"]
    val = r["val"]["auroc"]
    assert len(val) == 28 and len(val[0]) == 2 and r["configured"]["upper_bound"] == 2.0
    assert r["val_mean"]["auroc"][r["selected"]] == max(r["val_mean"]["auroc"])
    md = tune.grid_section(t)
    assert "| upper_bound \\ ref_smoothing |" in md and md.count("**") >= 4
    assert r["matches"] or "the test rows above do not use the selection" in md
    if not r["matches"]:
        tune.enforce(t, "seq", refuse=False)
        assert "warning: mia_dcpdd" in capsys.readouterr().err
        with pytest.raises(ValueError, match="mia_dcpdd.gin: seq.upper_bound"):
            tune.enforce(t, "seq", refuse=True)


def test_tune_cli(tmp_path, capsys):
    confs = ["--config", os.path.join(S.CONFIG_DIR, "mia_ppl.gin")]
    assert S.main(["--tune", "--write_report"]) == 2
    assert S.main(["--tune", "--smoke", "--no_progress", "--workdir", str(tmp_path), *confs]) == 0
    t = json.loads((tmp_path / "tune.json").read_text())
    assert t["tuning"]["mia_ppl"]["points"] == [{}] and "--tune" in t["provenance"]["command"]
    assert "**mia_ppl** — validation auroc" in capsys.readouterr().out


def test_gin_files_hold_the_selected_values_of_the_committed_report():
    md = open(os.path.join(S.ROOT, "experiments", "results", "sequence.md")).read()
    for srch in S.SEARCHES[1:]:
        block = md.split(f"**{srch.arm}** — validation")[1]
        line = next(x for x in block.splitlines() if x.startswith("Selected: "))
        assert "the gin file holds these values" in line
        chosen = dict(kv.split(" = ") for kv in line[len("Selected: "):line.index(" (")].split(", "))
        cfg = S.parse([os.path.join(S.CONFIG_DIR, f"{srch.arm}.gin")])
        assert {k: float(v) for k, v in chosen.items()} == pytest.approx({k: getattr(cfg, k) for k in chosen})
        gin.clear_config()
