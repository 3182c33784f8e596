"""Smoke test of the distillation study (tiny MLPs, a few epochs): files, shapes, finite
metrics, one compilation per method, resume-skips-done, config validation and the CLI."""

import json
import os

import gin
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import distill as D

TINY = [
    "distill.seeds = (0, 1)",
    "distill.n_train = 20",
    "distill.student_hidden = (8,)",
    "distill.epochs = 3",
    "distill.batch_size = 10",
    "distill.teacher_hidden = (16,)",
    "distill.teacher_epochs = 2",
    "distill.teacher_n_train = 200",
]
PLAN = (("main", ()),)  # one setting keeps the test under ~20 s (each method compiles once)


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_study_smoke_and_resume(tmp_path):
    wd, out = str(tmp_path / "runs"), str(tmp_path / "out")
    study = D.run_study(None, TINY, wd, out, progress=False, settings_plan=PLAN)
    for f in ("distill.md", "distill.json", "distill.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert set(study["settings"]) == {"main"}
    for label, n in (("main", 20),):
        runs = study["settings"][label]
        assert set(runs) == set(D.METHODS)
        for m, r in runs.items():
            assert r["n_train"] == n and not r["skipped"]
            acc = np.asarray(r["final_test_accuracy"])
            assert acc.shape == (2,) and np.all((acc >= 0) & (acc <= 1))
            assert np.all(np.isfinite(r["final_train_loss"])) and np.all(np.isfinite(r["final_test_nll"]))
            assert np.asarray(r["test_accuracy_curve"]).shape == (2, 3)
            assert r["train_compiles"] == 1  # 3 epochs, one compilation per method
            recs = [json.loads(line) for line in open(os.path.join(wd, f"n{n}", m, "metrics.jsonl"))]
            assert [x["epoch"] for x in recs] == [0, 1, 2]
    # the USKD student carries the extra weak head (10·(8+1) parameters)
    assert study["settings"]["main"]["uskd"]["num_params"] == study["settings"]["main"]["none"]["num_params"] + 90
    tdirs = [d for d in os.listdir(wd) if d.startswith("teacher_")]
    assert len(tdirs) == 1  # trained once, shared by all methods
    z = np.load(os.path.join(wd, tdirs[0], "logits.npz"))
    assert z["logits_train"].shape == (2, 1297, 10) and z["logits_test"].shape == (2, 500, 10)
    md = open(os.path.join(out, "distill.md")).read()
    assert "| kd |" in md and "held?" in md and "n_train = 20" in md

    kd_res = os.path.join(wd, "n20", "kd", "results.json")
    mtime = os.path.getmtime(kd_res)
    again = D.run_study(None, TINY, wd, None, progress=False, settings_plan=PLAN)
    assert all(r["skipped"] for runs in again["settings"].values() for r in runs.values())
    assert os.path.getmtime(kd_res) == mtime
    assert again["settings"]["main"]["kd"]["final_test_accuracy"] == study["settings"]["main"]["kd"]["final_test_accuracy"]

    # a different config in a finished workdir is an error, not a silent reuse
    cfg = D.parse_distill_config([os.path.join(D.CONFIG_DIR, "kd.gin")], TINY + ["distill.kd_alpha = 0.5"])
    with pytest.raises(ValueError, match="kd_alpha"):
        D.run_method(cfg, os.path.join(wd, "n20", "kd"), D.load_features(), None, progress=False)

    # CLI, one config, same workdir: the finished run is reused
    assert D.main(["--config", os.path.join(D.CONFIG_DIR, "none.gin"), "--workdir", wd, "--no_progress",
                   *[f"--config.{b.replace(' = ', '=')}" for b in TINY]]) == 0


def test_config_validation():
    with pytest.raises(ValueError, match="distill.method"):
        D.DistillConfig(method="bogus")
    with pytest.raises(ValueError, match="distill.kd_alpha"):
        D.DistillConfig(kd_alpha=1.5)
    with pytest.raises(ValueError, match="distill.batch_size"):
        D.DistillConfig(n_train=10, batch_size=20)
    with pytest.raises(TypeError, match="distill.epochs"):
        D.DistillConfig(epochs=2.5)
    cfg = D.parse_distill_config([os.path.join(D.CONFIG_DIR, "dkd.gin")])
    assert cfg.method == "dkd" and cfg.dkd_beta == 8.0 and cfg.n_train == 100


def test_kd_objective_reduces_to_ce_at_alpha_zero():
    from experiments.common import small_models as sm

    cfg = D.DistillConfig(method="kd", kd_alpha=0.0)
    model = sm.MLP((4,), 10)
    params = sm.init_stacked(model, 64, [0])
    p0 = {k: {n: v[0] for n, v in layer.items()} for k, layer in params.items()}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 64)), jnp.float32)
    y = jnp.arange(5) % 10
    batch = {"x": x, "y": y, "t": jnp.zeros((5, 10))}
    got = D.student_loss_fn(cfg, model, 10)(p0, batch, jnp.int32(0))
    want = optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p0}, x)["out"], y).mean()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_paired_verdict_and_subset():
    assert D.paired_verdict(np.array([5.0, 5.2, 4.8])) == "yes"
    assert D.paired_verdict(np.array([-5.0, -5.2, -4.8])) == "no (reversed)"
    assert D.paired_verdict(np.array([1.0, -1.0, 0.4])) == "not resolved"
    assert D.paired_verdict(np.array([1.0])) == "n/a"
    from experiments.common.small_models import stratified_subset

    y = np.repeat(np.arange(10), 20)
    idx = stratified_subset(y, 35, seed=3)
    assert len(idx) == 35 and len(set(idx)) == 35
    counts = np.bincount(y[idx], minlength=10)
    assert counts.min() == 3 and counts.max() == 4
    np.testing.assert_array_equal(idx, stratified_subset(y, 35, seed=3))
    with pytest.raises(ValueError, match="`n`"):
        stratified_subset(y, 0, seed=0)
