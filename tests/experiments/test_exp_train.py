"""One-epoch smoke runs per optimizer on tiny synthetic data, m-sharpness, resume, CLI."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from experiments.common.checkpoint import CheckpointStore, read_checkpoint_meta
from experiments.common.config import DataConfig, ExperimentConfig, OptimConfig, TrainConfig
from experiments.common.data import synthetic_dataset
from experiments.common.models import ModelConfig
from experiments.common.train import ResumeRefused, Trainer

DS = synthetic_dataset(32, 16, image_shape=(6, 6, 1), num_classes=3, seed=0)


def _cfg(name, epochs=2, **optim):
    o = dict(name=name, learning_rate=0.05, saf_start=0, saf_delay=1, mesa_decay=0.5)
    o.update(optim)
    return ExperimentConfig(
        DataConfig(dataset="synthetic", batch_size=16, eval_batch_size=16, crop_pad=1, cutout=2),
        ModelConfig(name="cnn", width=4),
        OptimConfig(**o),
        TrainConfig(epochs=epochs, seed=0, progress=False, plots=False),
    )


@pytest.mark.parametrize("name", ["sgd", "sam", "asam", "aace_sam", "gsam", "saf", "mesa"])
def test_smoke_each_optimizer(tmp_path, name):
    tr = Trainer(_cfg(name), str(tmp_path), dataset=DS)
    p0 = jax.device_get(tr.state.params)
    res = tr.run(argv=["test"])
    assert res["train_step_compiles"] == 1  # 4 steps over 2 epochs, one compilation
    assert tr.eval_step._cache_size() == 1
    recs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in recs] == [1, 2]  # the console's numbering
    for r in recs:
        for k in ("train_loss", "test_loss", "test_accuracy", "ascent_norm", "perturbation_norm", "lr"):
            assert np.isfinite(r[k]), (k, r)
    if name in ("sam", "asam", "aace_sam", "gsam"):
        assert recs[0]["perturbation_norm"] > 0
    if name == "sam":  # normalised: ||eps|| = rho
        assert recs[0]["perturbation_norm"] == pytest.approx(0.05, rel=1e-4)
    if name == "aace_sam":  # un-normalised: ||eps|| = rho * ||grad AACE||
        assert recs[0]["perturbation_norm"] == pytest.approx(0.05 * recs[0]["ascent_norm"], rel=1e-4)
    p1 = jax.device_get(tr.state.params)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)))
    for f in ("results.json", "config.json", "env.json", "cmdline.txt", "config.gin", "checkpoints", "tb"):
        assert (tmp_path / f).exists(), f
    store = CheckpointStore(str(tmp_path))
    assert store.latest_step() == 4 and set(store.all_steps()) <= {2, 4}  # keep 2 (+ best among them)
    store.close()
    if name == "saf":  # the buffer holds epoch-1 logits of every training example
        from lossjax.sharpness import find_saf_state

        st = find_saf_state(tr.state.opt_state)
        assert (np.asarray(st.epochs) == 1).sum(axis=1).tolist() == [1] * 32
    if name == "mesa":
        assert jax.tree.structure(tr.state.ema_batch_stats) == jax.tree.structure(tr.state.batch_stats)


def test_grouped_m_equals_batch_is_plain_sam(tmp_path):
    """m-sharpness with m = batch must equal the chained SAM transform (same step, same state)."""
    outs, recs = [], []
    for gs in (0, 16):  # epochs=2 shares the compiled plain step with the smoke test
        tr = Trainer(_cfg("aace_sam", epochs=2, group_size=gs), str(tmp_path / f"g{gs}"), dataset=DS)
        tr.run()
        assert tr.setup.kind == ("grouped" if gs else "sam")
        outs.append(jax.device_get((tr.state.params, tr.state.batch_stats)))
        recs.append([json.loads(x) for x in open(tmp_path / f"g{gs}" / "metrics.jsonl")])
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    for ra, rb in zip(*recs):
        assert ra["perturbation_norm"] == pytest.approx(rb["perturbation_norm"], rel=1e-4)


@pytest.mark.parametrize("name", ["aace_sam", "saf"])
def test_resume_equals_uninterrupted(tmp_path, name):
    cfg = _cfg(name, epochs=2)
    full = Trainer(cfg, str(tmp_path / "full"), dataset=DS)
    res_full = full.run()
    wd = str(tmp_path / "cut")
    hook = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, interrupt_after_steps=3))
    with pytest.raises(KeyboardInterrupt):  # stops mid-epoch 2 (2 steps per epoch); async save
        Trainer(hook, wd, dataset=DS, async_checkpoint=True).run()
    meta = read_checkpoint_meta(wd)
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 1)
    with pytest.raises(KeyboardInterrupt):  # a second interruption, after the resume, at an epoch end
        Trainer(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, interrupt_after_steps=1)), wd,
                dataset=DS).run()
    resumed = Trainer(cfg, wd, dataset=DS)
    res = resumed.run()
    for a, b in zip(jax.tree.leaves(jax.device_get(full.state)), jax.tree.leaves(jax.device_get(resumed.state))):
        np.testing.assert_array_equal(a, b)
    assert res["final_test_accuracy"] == res_full["final_test_accuracy"]
    drop = ("images_per_s", "epoch_time_s", "wall_time_s")
    ra = [{k: v for k, v in json.loads(x).items() if k not in drop} for x in open(tmp_path / "full" / "metrics.jsonl")]
    rb = [{k: v for k, v in json.loads(x).items() if k not in drop} for x in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["epoch"] for r in rb] == [1, 2]  # no duplicated epochs
    # Same states bit for bit (above); epoch sums may differ in the last float32 bit because a
    # resumed epoch adds its partial sums in a different order.
    assert [sorted(r) for r in ra] == [sorted(r) for r in rb]
    for x, y in zip(ra, rb):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-6), k


def test_resume_refuses_other_config(tmp_path):
    Trainer(_cfg("sgd"), str(tmp_path), dataset=DS).run(argv=["first", "command"])
    side = ("config.gin", "config.json", "cmdline.txt", "env.json", "metrics.jsonl", "results.json")
    before = {f: (tmp_path / f).read_bytes() for f in side}
    with pytest.raises(ResumeRefused, match="optim.name"):
        Trainer(_cfg("sam"), str(tmp_path), dataset=DS).run(argv=["refused", "command"])
    assert {f: (tmp_path / f).read_bytes() for f in side} == before  # the run's record is untouched
    assert (tmp_path / "cmdline.txt").read_text() == "first command\n"


def test_cli_digits_and_errors(tmp_path, capsys):
    from experiments.cifar import main

    wd = tmp_path / "run"
    rc = main(["--config", "configs/digits/sgd.gin", "--workdir", str(wd), "--config.train.epochs=1",
               "--config.data.n_train=128", "--config.data.n_test=100", "--config.train.progress=False",
               "--config.model.width=4"])
    assert rc == 0
    res = json.load(open(wd / "results.json"))
    assert res["dataset"] == "digits" and 0.0 <= res["final_test_accuracy"] <= 1.0
    assert "model.width = 4" in (wd / "config.gin").read_text()
    assert (wd / "curves.png").stat().st_size > 1000
    rc = main(["--config", "configs/cifar10/sgd.gin", "--data_dir", str(tmp_path / "nowhere"),
               "--workdir", str(tmp_path / "c10")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "Nothing is downloaded" in err
    assert main(["--config", "configs/digits/sgd.gin", "--config.optim.name=adamw"]) == 2


def test_tensorboard_and_console_lines(tmp_path, capsys):
    """TensorBoard events hold the metrics.jsonl values at the same (1-based) epochs; one console
    line per epoch with progress=False; no tqdm bar when stderr is not a terminal."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(_cfg("sgd"), str(tmp_path), dataset=DS).run()
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("epoch ")]
    assert [x.split()[1] for x in lines] == ["1/2", "2/2"], err
    assert "\r" not in err and "it/s" not in err
    recs = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "test/loss", "test/accuracy", "train/lr"} <= tags
    for key, tag in (("train_loss", "train/loss"), ("test_accuracy", "test/accuracy"), ("lr", "train/lr")):
        ev = acc.Scalars(tag)
        assert [e.step for e in ev] == [1, 2]
        np.testing.assert_allclose([e.value for e in ev], [r[key] for r in recs], rtol=1e-6)


def test_one_step_epochs_print_no_zero_throughput(tmp_path, capsys):
    """An epoch of one step has no timed step: images_per_s is null and the console says '-'
    (not 'img/s 0'); progress=True off a terminal shows no bar but still the epoch lines."""
    cfg = _cfg("sgd")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=True))
    Trainer(cfg, str(tmp_path), dataset=DS.subset(16, None)).run()
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("epoch ")]
    assert len(lines) == 2 and all("img/s -" in x for x in lines), err
    assert "\r" not in err
    recs = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [r["images_per_s"] for r in recs] == [None, None]
