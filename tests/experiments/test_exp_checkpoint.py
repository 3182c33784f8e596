"""Orbax checkpoints (keep-last-k + best, async), checkpoints of earlier versions, SIGTERM."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.common.checkpoint import CheckpointStore, load_params_numpy, read_checkpoint_meta
from experiments.common.config import DataConfig, ExperimentConfig, OptimConfig, TrainConfig
from experiments.common.data import synthetic_dataset
from experiments.common.models import ModelConfig
from experiments.common.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DS = synthetic_dataset(32, 16, image_shape=(6, 6, 1), num_classes=3, seed=0)


def _cfg(name="sgd", epochs=2):
    return ExperimentConfig(
        DataConfig(dataset="synthetic", batch_size=16, eval_batch_size=16, crop_pad=1, cutout=2),
        ModelConfig(name="cnn", width=4),
        OptimConfig(name=name, learning_rate=0.05, saf_start=0, saf_delay=1, mesa_decay=0.5),
        TrainConfig(epochs=epochs, seed=0, progress=False, plots=False),
    )


@pytest.mark.parametrize("async_save", [False, True])
def test_store_keeps_last_k_and_best(tmp_path, async_save):
    """keep=2 plus the best metric: after steps 1..5 with accuracies .5 .9 .6 .7 .8 the steps
    left are {2 (best), 4, 5}; with mode 'min' on a loss the best is the lowest."""
    rep = jax.sharding.NamedSharding(jax.make_mesh((1,), ("d",)), jax.sharding.PartitionSpec())
    store = CheckpointStore(str(tmp_path), keep=2, async_save=async_save)
    accs = [0.5, 0.9, 0.6, 0.7, 0.8]
    for step, a in enumerate(accs, 1):
        state = {"w": jnp.full((3,), float(step)), "n": jnp.asarray(step, jnp.int32)}
        store.save(step, state, {"epoch": step, "step_in_epoch": 0}, {"test_accuracy": a, "test_loss": 1 - a})
    store.save(6, {"w": jnp.full((3,), 6.0), "n": jnp.asarray(6, jnp.int32)}, {"epoch": 6, "step_in_epoch": 1})
    store.wait()
    assert sorted(store.all_steps()) == [2, 5, 6]  # 6 has no metrics (a mid-epoch save): latest-k only
    assert store.best_step() == 2
    state, meta = store.restore({"w": jnp.zeros(3), "n": jnp.zeros([], jnp.int32)}, rep)
    np.testing.assert_array_equal(np.asarray(state["w"]), [6.0, 6.0, 6.0])
    assert meta == {"epoch": 6, "step_in_epoch": 1}
    store.close()
    assert load_params_numpy(str(tmp_path), step=2)["w"].tolist() == [2.0, 2.0, 2.0]
    again = CheckpointStore(str(tmp_path), keep=2)  # a restarted run still knows (and keeps) the best
    assert again.best_step() == 2
    again.save(7, {"w": jnp.full((3,), 7.0), "n": jnp.asarray(7, jnp.int32)}, {}, {"test_accuracy": 0.1})
    assert sorted(again.all_steps()) == [2, 6, 7]
    again.close()
    low = CheckpointStore(str(tmp_path / "min"), keep=1, best_metric="test_loss", best_mode="min")
    for step, a in enumerate(accs, 1):
        low.save(step, {"w": jnp.full((1,), float(step))}, {}, {"test_accuracy": a, "test_loss": 1 - a})
    assert sorted(low.all_steps()) == [2, 5] and low.best_step() == 2
    low.close()
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(str(tmp_path / "x"), keep=0)


def _write_legacy(workdir, state, meta):
    """The format of earlier versions: one msgpack file {state: state dict, meta: JSON string}."""
    from flax import serialization

    host = jax.tree.map(np.asarray, jax.device_get(serialization.to_state_dict(state)))
    with open(os.path.join(workdir, "checkpoint.msgpack"), "wb") as f:
        f.write(serialization.msgpack_serialize({"state": host, "meta": json.dumps(meta)}))


def test_legacy_msgpack_checkpoint_resumes(tmp_path):
    """A workdir of an earlier version (checkpoint.msgpack, 0-based epochs in metrics.jsonl) is
    resumed and ends where an uninterrupted run ends; a corrupt one is refused clearly."""
    cfg = _cfg()
    full = Trainer(cfg, str(tmp_path / "full"), dataset=DS)
    full.run()
    wd = tmp_path / "old"
    hook = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, interrupt_after_steps=3))
    tr = Trainer(hook, str(wd), dataset=DS)
    with pytest.raises(KeyboardInterrupt):
        tr.run()
    meta = read_checkpoint_meta(str(wd))
    # Rewrite this workdir as an earlier version would have left it.
    old_meta = {k: meta[k] for k in ("epoch", "step_in_epoch", "accum", "wall_time_s", "config")}
    old_meta["last_record"] = dict(meta["last_record"], epoch=0)
    _write_legacy(str(wd), tr.state, old_meta)
    import shutil

    shutil.rmtree(wd / "checkpoints")
    (wd / "metrics.jsonl").write_text(json.dumps(old_meta["last_record"]) + "\n")
    resumed = Trainer(cfg, str(wd), dataset=DS)
    resumed.run()
    for a, b in zip(jax.tree.leaves(jax.device_get(full.state)), jax.tree.leaves(jax.device_get(resumed.state))):
        np.testing.assert_array_equal(a, b)
    assert [json.loads(x)["epoch"] for x in open(wd / "metrics.jsonl")] == [1, 2]
    assert (wd / "checkpoints").is_dir()  # new saves are orbax checkpoints

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.msgpack").write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match="legacy checkpoint .* unreadable"):
        Trainer(cfg, str(bad), dataset=DS).run()
    assert not (bad / "config.json").exists() and not (bad / "cmdline.txt").exists()


@pytest.mark.slow
def test_sigterm_saves_and_resumes(tmp_path):
    """SIGTERM (a scheduler's preemption notice) mid-run: the process finishes its step, writes
    a checkpoint, exits with 143; the same command resumes and completes the run."""
    wd = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.cifar", "--config", "configs/digits/sgd.gin", "--workdir", str(wd),
           "--config.train.epochs=4", "--config.data.n_train=128", "--config.data.n_test=64",
           "--config.data.eval_batch_size=64", "--config.model.width=4", "--config.train.plots=False",
           "--config.train.eval_every=100", "--no_tensorboard"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),  # the resume reuses the compiled step
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        # cmdline.txt is written once the run is accepted, after the signal handlers are set and
        # before the first step compiles (seconds), so the signal lands within the run.
        while not (wd / "cmdline.txt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 143, out[-3000:]
    assert "[SIGTERM]" in out and "checkpoint written" in out
    meta = read_checkpoint_meta(str(wd))
    done = meta["epoch"] * 2 + meta["step_in_epoch"]
    assert 1 <= done < 8
    logged = [json.loads(x)["epoch"] for x in open(wd / "metrics.jsonl")] if (wd / "metrics.jsonl").exists() else []
    assert logged == list(range(1, meta["epoch"] + 1))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[resume]" in r.stderr
    assert [json.loads(x)["epoch"] for x in open(wd / "metrics.jsonl")] == list(range(1, 5))
    assert int(load_params_numpy(str(wd))["step"]) == 8
