"""Smoke and unit tests of ``experiments.noisy_labels`` and its task module (tiny digits subset, a few epochs)."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import noisy_labels as nl
from experiments.tasks import noisy_labels as task


def _tiny(**kw) -> nl.NoisyLabelsConfig:
    base = dict(n_train=96, n_test=40, hidden=16, depth=1, epochs=2, batch_size=32, seeds=(0, 1),
                losses=("ce", "aldr_kl"), noise=("sym0", "sym40", "asym40"), tgce_warmup=1,
                progress=False)
    base.update(kw)
    return nl.NoisyLabelsConfig(**base)


def test_parse_noise():
    assert task.parse_noise("sym40") == ("sym", 0.4)
    assert task.parse_noise("asym0") == ("asym", 0.0)
    for bad in ("sym", "sym100", "uniform20", "sym-1"):
        with pytest.raises(ValueError, match="noise setting"):
            task.parse_noise(bad)


def test_symmetric_noise_rate_other_class_and_determinism():
    y = np.arange(20000) % 10
    z = task.corrupt_labels(y, "sym40", 3, 10)
    flipped = z != y
    assert abs(flipped.mean() - 0.4) < 0.02  # every flip is to a *different* class
    # the replacement class is uniform over the 9 others
    d = (z[flipped] - y[flipped]) % 10
    counts = np.bincount(d, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()
    np.testing.assert_array_equal(z, task.corrupt_labels(y, "sym40", 3, 10))
    assert (z != task.corrupt_labels(y, "sym40", 4, 10)).any()
    np.testing.assert_array_equal(task.corrupt_labels(y, "sym0", 3, 10), y)


def test_asymmetric_noise_follows_the_map():
    y = np.arange(20000) % 10
    amap = task.ASYM_MAPS["digits"]
    z = task.corrupt_labels(y, "asym40", 0, 10, amap)
    for c in range(10):
        zc = z[y == c]
        if c in amap:
            assert set(np.unique(zc)) == {c, amap[c]}
            assert abs((zc != c).mean() - 0.4) < 0.04
        else:
            assert (zc == c).all()
    with pytest.raises(ValueError, match="asym_map"):
        task.corrupt_labels(y, "asym40", 0, 10)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="noisy_labels.losses"):
        nl.NoisyLabelsConfig(losses=("ce", "focal"))
    with pytest.raises(ValueError, match="noisy_labels.noise"):
        nl.NoisyLabelsConfig(dataset="cifar100", noise=("asym40",))
    with pytest.raises(ValueError, match="noisy_labels.aldr_alpha"):
        nl.NoisyLabelsConfig(aldr_alpha=1.0)
    with pytest.raises(TypeError, match="noisy_labels.epochs"):
        nl.NoisyLabelsConfig(epochs=2.5)


def test_every_loss_is_finite_and_only_aldr_updates_lambda():
    cfg = nl.NoisyLabelsConfig()
    x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    y = jnp.array([0, 1])
    lam = jnp.full((2,), 10.0)
    for name in task.LOSSES:
        loss, new = task.make_loss(name, cfg)(x, y, lam, jnp.int32(50))
        assert loss.shape == (2,) and bool(jnp.all(jnp.isfinite(loss))), name
        if name == "aldr_kl":
            assert bool(jnp.all(new < 10.0)) and bool(jnp.all(new >= 5.0))
        else:
            np.testing.assert_array_equal(new, lam)
    # truncated GCE is plain GCE during warm-up, constant (p_y <= k) after it
    t = task.make_loss("tgce", cfg)
    g = task.make_loss("gce", cfg)(x, y, lam, jnp.int32(0))[0]
    np.testing.assert_allclose(t(x, y, lam, jnp.int32(0))[0], g, rtol=1e-6)
    assert float(t(x, y, lam, jnp.int32(cfg.tgce_warmup))[0][1]) < float(g[1])


def test_smoke_study_writes_report_and_resumes(tmp_path):
    cfg = _tiny()
    wd, out = str(tmp_path / "runs"), str(tmp_path / "out")
    s = nl.run_study(cfg, wd, out)
    for f in ("noisy_labels.md", "noisy_labels.json", "noisy_labels.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    for loss in cfg.losses:
        res = json.load(open(os.path.join(wd, loss, "results.json")))
        assert len(res["runs"]) == len(cfg.seeds) * len(cfg.noise)
        assert res["epoch_compiles"] == 1  # all seeds x noise settings in one compiled function
        for r in res["runs"]:
            assert len(r["test_accuracy_curve"]) == cfg.epochs
            assert 0.0 <= r["final_test_accuracy"] <= 1.0 and np.isfinite(r["final_train_loss"])
        recs = [json.loads(line) for line in open(os.path.join(wd, loss, "metrics.jsonl")).read().splitlines()]
        assert len(recs) == cfg.epochs and len(recs[0]["test_accuracy"]) == 6
        # epochs are 1-based, as on the console and in the trainer's metrics.jsonl
        assert [r["epoch"] for r in recs] == list(range(1, cfg.epochs + 1))
        assert [r["test_accuracy"] for r in recs] == [[r["test_accuracy_curve"][e] for r in res["runs"]]
                                                     for e in range(cfg.epochs)]
    # the noise draw is shared by every loss and the realised rate is recorded
    rates = s["realised_noise_rate"]
    assert rates["sym0"] == [0.0, 0.0] and all(0.2 < v < 0.6 for v in rates["sym40"])
    md = open(os.path.join(out, "noisy_labels.md")).read()
    assert "| CE |" in md and "ALDR-KL" in md and "asym40" in md
    assert "### Verdicts" in md and "Generated by `" in md and "at commit `" in md
    assert "{" not in md and "}" not in md  # every placeholder of the template was filled
    assert md.startswith("# Noisy labels (digits)\n\n_Generated by `")
    # a hand-written preamble above the mark is kept (no second title); the generated part is rewritten
    with open(os.path.join(out, "noisy_labels.md"), "w") as f:
        f.write(f"# Kept title\n\nhand-written setting\n\n{nl.report.MARK}\n\nstale numbers\n")
    # rerun: every loss is skipped (results.json untouched) and the numbers are identical
    mtimes = {l: os.path.getmtime(os.path.join(wd, l, "results.json")) for l in cfg.losses}
    s2 = nl.run_study(cfg, wd, out)
    assert s2["final_test_accuracy"] == s["final_test_accuracy"]
    md2 = open(os.path.join(out, "noisy_labels.md")).read()
    assert md2.startswith("# Kept title\n\nhand-written setting\n\n") and "stale numbers" not in md2
    assert md2.count("# ") == md.count("# ") and md2.split(nl.report.MARK)[1].lstrip().startswith("_Generated by")
    assert mtimes == {l: os.path.getmtime(os.path.join(wd, l, "results.json")) for l in cfg.losses}
    # a changed config never reuses stale runs
    with pytest.raises(ValueError, match="different config"):
        nl.run_study(_tiny(learning_rate=3e-3), wd, None)


def test_cli_with_overrides(tmp_path):
    rc = nl.main(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                  "--config.noisy_labels.n_train=64", "--config.noisy_labels.n_test=32",
                  "--config.noisy_labels.hidden=8", "--config.noisy_labels.epochs=1",
                  "--config.noisy_labels.batch_size=32", "--config.noisy_labels.seeds=(0,)",
                  "--config.noisy_labels.losses=('mae',)", "--config.noisy_labels.noise=('sym20',)",
                  "--config.noisy_labels.progress=False"])
    assert rc == 0
    assert os.path.exists(tmp_path / "w" / "mae" / "results.json")
    assert nl.main(["--config.noisy_labels.losses=('nope',)"]) == 2
    assert nl.main(["--config.noisy_labels.dataset='cifar10'", "--workdir", str(tmp_path / "c"),
                    "--out", str(tmp_path / "o")]) == 2  # no --data_dir: a clear data error


def test_verdicts_are_computed_from_the_numbers():
    # hand-made accuracies: ALDR-KL last everywhere (rank 3 of 3 -> in the top three -> held with 3
    # losses; with a 4th, better loss it drops out -> did not hold); GCE beats CE on every seed.
    acc = {"ce": {"sym0": [0.9, 0.91, 0.92], "sym40": [0.60, 0.62, 0.61]},
           "gce": {"sym0": [0.95, 0.96, 0.97], "sym40": [0.90, 0.91, 0.905]},
           "aldr_kl": {"sym0": [0.5, 0.5, 0.5], "sym40": [0.5, 0.52, 0.5]}}
    v = nl.verdicts({"final_test_accuracy": acc})
    assert "ALDR-KL 3.0 of 3 losses" in v and "→ **held**" in v
    assert "significantly better than CE (paired t-test at 5 % over seeds): sym40 1 of 2;" in v
    assert "| GCE | +29.5 ± 0.5 (better) |" in v and "| ALDR-KL | -10.3 ± 0.6 (worse) |" in v
    acc["mae"] = {"sym0": [0.8, 0.8, 0.8], "sym40": [0.8, 0.8, 0.8]}
    assert "→ **did not hold**" in nl.verdicts({"final_test_accuracy": acc})


def test_arms_and_claims_are_declared_consistently():
    assert tuple(nl.ARMS) == task.LOSSES == nl.NoisyLabelsConfig().losses
    assert nl.loss_label("aldr_kl:none") == "ALDR-KL [norm none]"
    assert {c.a for c in nl.CLAIMS} == set(task.LOSSES) - {"ce"} and {c.b for c in nl.CLAIMS} == {"ce"}
    for c in (*nl.CLAIMS, nl.RANK_CLAIM):
        assert any(str(y) in c.source for y in range(2015, 2025)), c  # each claim cites a paper (venue, year)
    assert set(nl.RANK_CLAIM.arms) <= set(nl.ARMS)
    # an ablation of LDR variants alone tests no claim
    acc = {"ldr_kl:none": {"sym40": [0.5, 0.6]}, "aldr_kl:none": {"sym40": [0.6, 0.7]}}
    assert nl.verdicts({"final_test_accuracy": acc}).startswith("* (no claim applies")
