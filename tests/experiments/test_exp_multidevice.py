"""The data-parallel step on 8 (fake CPU) devices equals the single-device step."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    assert len(jax.devices()) == 8, jax.devices()
    from experiments.common import augment as aug, steps as S
    from experiments.common.config import DataConfig, ExperimentConfig, OptimConfig, TrainConfig
    from experiments.common.data import synthetic_dataset
    from experiments.common.models import ModelConfig
    from experiments.common.train import Trainer
    import tempfile

    ds = synthetic_dataset(32, 16, image_shape=(6, 6, 1), num_classes=3, seed=1)
    for name in ("aace_sam",):
        cfg = ExperimentConfig(DataConfig(dataset="synthetic", batch_size=16, eval_batch_size=16, crop_pad=1),
                               ModelConfig(name="cnn", width=4), OptimConfig(name=name, saf_start=-1, saf_delay=1),
                               TrainConfig(epochs=1, progress=False, plots=False))
        outs = []
        for devs in (jax.devices()[:1], jax.devices()):
            tr = Trainer(cfg, tempfile.mkdtemp(), dataset=ds, devices=devs)
            ms = []
            for step in range(2):
                b = aug.train_batch(ds.x_train, ds.y_train, batch_size=16, seed=0, epoch=0, step=step,
                                    augment=tr.augment)
                batch = S.put_batch({"x": b.x, "y": b.y, "idx": b.idx, "epoch": np.int32(0)}, tr.batch_sharding,
                                    tr.replicated)
                tr.state, m = tr.train_step(tr.state, batch)
                ms.append(m)
            x_sharding = batch["x"].sharding
            outs.append((jax.device_get(tr.state), jax.device_get(ms), tr.mesh.devices.size, x_sharding))
        (s1, m1, n1, _), (s8, m8, n8, sh8) = outs
        assert (n1, n8) == (1, 8)
        assert len(sh8.device_set) == 8 and not sh8.is_fully_replicated
        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m8)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        print("OK", name)
""")


def test_eight_devices_equal_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("OK") == 1
