"""Smoke test of the regimes study (two tiny arms, one seed) and its metrics against independent oracles."""

import os

import gin
import numpy as np
import pytest

from experiments import regimes_study as S
from experiments.kit import cli
from experiments.tasks import regimes as R


def test_smoke_two_arms_report(tmp_path, smoke_args):
    args = smoke_args(S, "ordinal_rasch", "nlm_no_decay")
    res = S.run(args)["results"]
    o = res["ordinal_rasch"]["metrics"]
    assert 0 <= o["mae"][0] <= S.parse([args.configs[0]]).n_bins - 1 and 0 <= o["accuracy"][0] <= 1
    n = res["nlm_no_decay"]
    assert all(-1 <= c <= 1 for c in np.ravel(n["cos_curve"])) and np.asarray(n["cos_curve"]).shape == (1, 6)
    md = (tmp_path / "out" / "regimes.md").read_text()
    assert "| ordinal_rasch |" in md and "| nlm_no_decay |" in md
    # two claims use one arm each run here (nlm early vs late); every other claim needs a skipped arm
    assert md.count("not run here") == len(S.CLAIMS) - 1
    assert (tmp_path / "out" / "regimes.png").stat().st_size > 0


def test_config_rejects_a_loss_of_another_task():
    with pytest.raises(ValueError, match="regimes.loss"):
        S.parse([], ["regimes.task = 'gan'", "regimes.loss = 'rmt'"])
    with pytest.raises(ValueError, match="regimes.ema_decay"):
        S.parse([], ["regimes.ema_decay = 1.0"])


def test_every_arm_has_a_config_that_parses():
    for a in S.ARMS:
        cfg = S.parse([os.path.join(S.CONFIG_DIR, f"{a}.gin")])
        assert cfg.task == a.split("_")[0] and len(cfg.seeds) == 5
        gin.clear_config()
    tune = cli.parse_study_config([S.TUNE_CONFIG], (), S._GinTune)
    assert tune.criterion == "modes_covered" and not set(tune.seeds) & (set(range(5)) | set(range(1000, 1005)))


def test_gan_sample_metrics_against_a_direct_count():
    rng = np.random.default_rng(0)
    modes = R.gan_modes(8, 2.0)
    std = 0.05
    # 300 samples on modes 0-2 (tight), 100 far away, 3 on mode 3 (below the 1 % of 403 = 4.03
    # needed for coverage)
    s = np.concatenate([modes[rng.integers(0, 3, 300)] + 0.5 * std * rng.standard_normal((300, 2)),
                        rng.uniform(-0.5, 0.5, (100, 2)), modes[[3] * 3]])
    m = R.gan_sample_metrics(s, modes, std)
    assert m["hq_frac"] == pytest.approx(303 / 403)
    assert m["modes_covered"] == 3.0
    d = np.sqrt(((s[:, None] - modes[None]) ** 2).sum(-1)).min(1)
    assert m["hq_frac"] == pytest.approx(np.mean(d < 3 * std))


def test_rank_mae_and_ordinal_data():
    assert R.rank_mae(np.array([3, 0]), np.array([0, 0])) == 1.5
    cfg = S.RegimesConfig(task="ordinal", loss="rasch", n_train=4000, n_test=10)
    d = R.ordinal_data(cfg, 0)
    counts = np.bincount(d["y"], minlength=cfg.n_bins) / len(d["y"])
    np.testing.assert_allclose(counts, 1 / cfg.n_bins, atol=0.03)  # equally likely ranks
    # a linear probe on x orders the ranks: the rank's mean of the best linear score grows with the rank
    w = np.linalg.lstsq(d["x"], d["y"].astype(float), rcond=None)[0]
    means = [float((d["x"][d["y"] == k] @ w).mean()) for k in range(cfg.n_bins)]
    assert np.all(np.diff(means) > 0)
    assert np.array_equal(d["y"], R.ordinal_data(cfg, 0)["y"])  # deterministic


def test_unlearn_data_puts_the_forget_class_first():
    cfg = S.RegimesConfig(task="unlearn", loss="joint", forget_class=3)
    d = R.unlearn_data(cfg, 1)
    nf = int(d["nf"])
    assert nf > 100 and np.all(d["y"][:nf] == 3) and not np.any(d["y"][nf:] == 3)
    assert len(d["y"]) + len(d["yte"]) == 1797


def test_energy_distance_against_scipy_in_one_dimension():
    # in 1-D, 2E|X-Y| - E|X-X'| - E|Y-Y'| = 2 ∫ (F - G)^2 and scipy returns the square root of that
    from scipy.stats import energy_distance

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(40), 0.5 + 2.0 * rng.standard_normal(30)
    pad = lambda a: np.stack([a, np.zeros_like(a)], -1)  # noqa: E731
    assert R.energy_distance(pad(x), pad(y)) == pytest.approx(energy_distance(x, y) ** 2, rel=1e-9)
    assert R.energy_distance(pad(x), pad(y)) == pytest.approx(R.energy_distance(pad(y), pad(x)))


def test_criteria_select_modes_then_hq_or_energy_distance():
    from experiments.kit import tune

    means = {"modes_covered": [4.0, 4.0, 4.0, 2.0], "hq_frac": [0.5, 0.6, 0.6, 0.9],
             "energy_dist": [0.3, 0.1, np.nan, 0.05]}
    assert tune.select(means, S.CRITERIA["modes_covered"]) == 1  # modes tie: higher hq, then the earlier one
    assert tune.select(means, S.CRITERIA["energy_dist"]) == 3
    with pytest.raises(ValueError, match="criterion"):
        S.GanTuneConfig(criterion="fid")


def test_gan_search_grid_matches_the_arm_path_and_seeds_must_be_disjoint(tmp_path):
    from experiments.kit import tune

    cfg = S.parse([os.path.join(S.CONFIG_DIR, "gan_sgan_dragan.gin")], S.SMOKE_BINDINGS)
    with pytest.raises(ValueError, match="disjoint"):
        S.gan_search("gan_sgan_dragan", cfg, S.GanTuneConfig(seeds=(0, 100)))
    assert S.gan_search("nlm_decay", S.RegimesConfig(task="nlm"), S.GanTuneConfig()) is None
    srch = S.gan_search("gan_sgan_dragan", cfg, S.GanTuneConfig(seeds=(100, 101), learning_rates=(1e-4, 1e-3),
                                                                  gp_weights=(0.1, 1.0)))
    assert [(p["learning_rate"], p["gp_weight"]) for p in srch.points()] == [(1e-4, 0.1), (1e-3, 0.1),
                                                                            (1e-4, 1.0), (1e-3, 1.0)]
    t = tune.search_arm(srch, cfg, R.gan_validation, str(tmp_path / "c"))
    assert t["seeds"] == [100, 101] and all(np.shape(v) == (4, 2) for v in t["val"].values())
    assert t["selected"] == tune.select(t["val_mean"], S.CRITERIA["modes_covered"])
    # a grid point trained inside the vmapped search equals the arm trained alone with that setting
    import dataclasses

    alone = R.train_task(dataclasses.replace(cfg, seeds=(101,), learning_rate=1e-3, gp_weight=1.0))["metrics"]
    for k, v in alone.items():
        assert t["val"][k][3][1] == pytest.approx(v[0], abs=1e-6)


def test_run_refuses_gan_configs_that_disagree_with_the_search(tmp_path, monkeypatch):
    rec = {"points": [{"learning_rate": 0.0003}], "selected": 0, "matches": False, "skipped": True,
           "configured": {"learning_rate": 0.001}, "wall_time_s": 0.0}
    monkeypatch.setattr(S, "search", lambda *a, **k: {"gan_sgan": rec})
    args = cli.StudyArgs(configs=(os.path.join(S.CONFIG_DIR, "gan_sgan.gin"),), custom=False, bindings=(),
                         workdir=str(tmp_path), report_dir=None, progress=False)
    with pytest.raises(ValueError, match=r"gan_sgan.gin: regimes.learning_rate = 0.0003"):
        S.run(args)
    assert S.main(["--tune", "--write_report"]) == 2


def _selected_rows(md: str) -> dict:
    """``{arm: (learning_rate, gp_weight)}`` of the rows marked selected in a report's search table."""
    rows = [r.split("|")[1:-1] for r in md.splitlines() if r.startswith("| gan_") and r.endswith("**yes** |")]
    return {c[0].strip(): (float(c[1]), 0.0 if c[2].strip() == "–" else float(c[2])) for c in rows}


def test_gan_configs_hold_the_selected_values_of_the_committed_report():
    path = os.path.join(S.ROOT, "experiments", "results", "regimes.md")
    sel = _selected_rows(open(path).read())
    assert set(sel) == {a for a in S.ARMS if a.startswith("gan_")}
    for arm, (lr, gp) in sel.items():
        cfg = S.parse([os.path.join(S.CONFIG_DIR, f"{arm}.gin")])
        assert (cfg.learning_rate, cfg.gp_weight) == pytest.approx((lr, gp))
        gin.clear_config()
