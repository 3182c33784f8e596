"""`python -m experiments.cifar` on 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1).

The 2-process run is stopped mid-epoch (checkpoint written by both processes through orbax),
resumed by 2 new processes, and its final parameters must equal, bit for bit, those of an
uninterrupted run of 1 process x 4 devices (same global mesh, batch and program), and those of
1 device within float tolerance.

Bit equality needs the two layouts to run the same arithmetic, which on XLA:CPU means two
things besides the program (measured with jax 0.10.2):

* the same collectives: the 1-process reference also starts ``jax.distributed`` (one process,
  gloo), because XLA's in-process all-reduce sums the 4 partial gradients in another order than
  gloo does (last-bit differences, ~1e-8);
* the same intra-op thread pool: XLA:CPU sizes it ``max(NPROC or the core count, local device
  count)`` and Eigen splits a convolution by the pool's thread count, so a process with 4 devices
  and one with 2 convolve differently in the last bit. Every process here gets ``NPROC=4``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from experiments.common.checkpoint import load_params_numpy, read_checkpoint_meta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300  # seconds per phase; every started process is killed in `finally`

ARGS = ["--config", "configs/digits/sgd.gin", "--config.train.epochs=2", "--config.data.n_train=128",
        "--config.data.n_test=100", "--config.data.eval_batch_size=100", "--config.model.width=4",
        "--config.train.plots=False", "--config.train.progress=False", "--no_tensorboard"]

REFERENCE = textwrap.dedent("""
    import sys, jax
    from experiments.cifar import main
    from experiments.common.config import parse_config
    from experiments.common.train import Trainer
    args, wd4, wd1, port = sys.argv[1:-3], sys.argv[-3], sys.argv[-2], sys.argv[-1]
    dist = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "1", "--process_id", "0"]
    # As `python -m experiments.cifar` does: XLA:CPU flags of the runner; 1 process on jax.distributed (gloo).
    assert main(args + ["--workdir", wd4] + dist, configure_xla=True) == 0
    assert len(jax.devices()) == 4 and jax.process_count() == 1, jax.devices()
    bindings = [a[len("--config."):].replace("=", " = ", 1) for a in args if a.startswith("--config.")]
    cfg = parse_config(["configs/digits/sgd.gin"], bindings)
    Trainer(cfg, wd1, devices=jax.devices()[:1], tensorboard=False).run(argv=["1 device"])
""")


def _env(n_devices: int, cache: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
               NPROC="4")  # XLA:CPU intra-op pool of 4 threads in every process (see the module docstring)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def _run_two_processes(workdir: str, extra: list[str], cache: str, log: str) -> list[tuple[int, str]]:
    port = _free_port()
    procs, outs = [], []
    try:
        for pid in range(2):
            f = open(f"{log}.{pid}", "w")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "experiments.cifar", *ARGS, *extra, "--workdir", workdir,
                 "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(pid)],
                cwd=ROOT, env=_env(2, cache), stdout=f, stderr=subprocess.STDOUT, start_new_session=True))
            f.close()
        for pid, p in enumerate(procs):
            rc = p.wait(timeout=TIMEOUT)
            outs.append((rc, open(f"{log}.{pid}").read()))
    finally:
        _kill(procs)
    return outs


@pytest.mark.slow
def test_two_processes_equal_one_process_and_resume(tmp_path):
    cache = str(tmp_path / "jax_cache")
    mp = str(tmp_path / "mp")
    # 1) 2 processes, stopped after 3 steps (mid-epoch 2 of 2; 2 steps per epoch).
    outs = _run_two_processes(mp, ["--config.train.interrupt_after_steps=3"], cache, str(tmp_path / "a"))
    assert [rc for rc, _ in outs] == [130, 130], outs
    meta = read_checkpoint_meta(mp)
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 1)
    assert [json.loads(x)["epoch"] for x in open(os.path.join(mp, "metrics.jsonl"))] == [1]
    # 2) 2 new processes resume from that checkpoint.
    outs = _run_two_processes(mp, [], cache, str(tmp_path / "b"))
    assert [rc for rc, _ in outs] == [0, 0], outs
    assert "[resume]" in outs[0][1] and "epoch   2/2" in outs[0][1]
    assert "epoch" not in outs[1][1].replace("epochs", "")  # only process 0 prints and writes
    res = json.load(open(os.path.join(mp, "results.json")))
    assert (res["num_processes"], res["num_devices"]) == (2, 4)
    assert [json.loads(x)["epoch"] for x in open(os.path.join(mp, "metrics.jsonl"))] == [1, 2]
    # 3) references: 1 process x 4 devices (uninterrupted), and 1 device.
    wd4, wd1 = str(tmp_path / "p1d4"), str(tmp_path / "p1d1")
    proc = subprocess.Popen([sys.executable, "-c", REFERENCE, *ARGS, wd4, wd1, str(_free_port())], cwd=ROOT,
                            env=_env(4, cache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        _kill([proc])
    assert proc.returncode == 0, out[-4000:]
    s_mp, s4, s1 = (load_params_numpy(w) for w in (mp, wd4, wd1))
    assert int(s_mp["step"]) == int(s4["step"]) == 4
    leaves_mp, leaves4, leaves1 = (jax.tree.leaves(s) for s in (s_mp, s4, s1))
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(s_mp)]
    assert len(leaves_mp) == len(leaves4) == len(leaves1) > 2
    # Same mesh, batch, program, collectives and thread pool: the same bits, though the 2-process
    # run was killed after 3 steps and resumed from its orbax checkpoint.
    for path, a, b in zip(paths, leaves_mp, leaves4):
        np.testing.assert_array_equal(a, b, err_msg=path)
    for a, b in zip(leaves_mp, leaves1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    r4 = [json.loads(x) for x in open(os.path.join(wd4, "metrics.jsonl"))]
    rmp = [json.loads(x) for x in open(os.path.join(mp, "metrics.jsonl"))]
    assert [r["test_accuracy"] for r in r4] == [r["test_accuracy"] for r in rmp]
