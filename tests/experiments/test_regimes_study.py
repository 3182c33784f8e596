"""Smoke test of the regimes study (two tiny arms, one seed) and its metrics against independent oracles."""

import os

import gin
import numpy as np
import pytest

from experiments import regimes_study as S
from experiments.kit import cli, report
from experiments.tasks import regimes as R


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_smoke_two_arms_report(tmp_path):
    confs = [os.path.join(S.CONFIG_DIR, f"{a}.gin") for a in ("ordinal_rasch", "nlm_no_decay")]
    args = cli.StudyArgs(configs=tuple(confs), custom=True, bindings=S.SMOKE_BINDINGS, workdir=str(tmp_path / "runs"),
                         report_dir=str(tmp_path / "out"), progress=False,
                         provenance=report.provenance(["python", "-m", "experiments.regimes_study", "--smoke"]))
    res = S.run(args)["results"]
    o = res["ordinal_rasch"]["metrics"]
    assert 0 <= o["mae"][0] <= S.parse([confs[0]]).n_bins - 1 and 0 <= o["accuracy"][0] <= 1
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
