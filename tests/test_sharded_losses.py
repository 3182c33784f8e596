"""Every ``lossjax.losses`` function on a batch sharded over 8 fake CPU devices.

For each case of the API sweep (``tests/test_api_sweep.py::CASES``, which covers every public
loss) the value and the gradient with the batch sharded over ``'data'`` — on an Auto mesh and on
an Explicit mesh (``jax.make_mesh``'s default axis type) — must equal the single-device result;
``reduce_loss(..., 'mean', where)`` over a masked, sharded batch must equal the single-device mean.

The device count must be set before jax is imported, so the checks run in ONE subprocess (this
file run as a script, ``XLA_FLAGS=--xla_force_host_platform_device_count=8``) with a timeout; the
subprocess is killed if it outlives it. One case per public function (not every variant); each
function is one compiled program per mesh kind (value, gradient and, for a few, the masked
``reduce_loss`` mean), lowered in order and compiled in worker threads.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_DEV = 8
TIMEOUT_S = 1200

# (case, mesh kind) pairs that do not run sharded yet, with the reason (the test fails when one
# of them starts to run, so this table only shrinks). Empty: everything runs.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE]), JAX_PLATFORMS="cpu")
    # compile time dominates and the single-device reference is compiled with the same flags,
    # so the backend's code optimisation is switched off (about 25% less compile time)
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={N_DEV} --xla_backend_optimization_level=0 "
        "--xla_llvm_disable_expensive_passes=true"
    )
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT_JSON ")][-1]
    return json.loads(line[len("RESULT_JSON ") :])


def test_device_count(result):
    assert result["devices"] == N_DEV


def test_every_case_runs_sharded(result):
    errors = {
        (r["case"], r["mesh"]): r["error"]
        for r in result["rows"]
        if "error" in r and (r["case"], r["mesh"]) not in KNOWN_FAILURES
    }
    assert not errors, errors
    runs = {(r["case"], r["mesh"]) for r in result["rows"] if "error" not in r}
    fixed = sorted(k for k in KNOWN_FAILURES if k in runs)
    assert not fixed, f"{fixed} run sharded now: remove them from KNOWN_FAILURES"


@pytest.mark.parametrize("mesh", ["auto", "explicit"])
def test_sharded_equals_single_device(result, mesh):
    rows = [r for r in result["rows"] if r["mesh"] == mesh and "error" not in r]
    assert len(rows) >= 50, len(rows)
    bad = {r["case"]: (r["value_err"], r["grad_err"]) for r in rows if not r["ok"]}
    assert not bad, bad


def test_reduce_loss_mean_over_masked_sharded_batch(result):
    red = result["reduce"]
    assert red, "no reduce_loss rows"
    for r in red:
        assert r["ok"], r


# --------------------------------------------------------------------------------------------
# the subprocess
# --------------------------------------------------------------------------------------------


def _main() -> None:  # pragma: no cover - runs in the subprocess
    import jax
    import jax.numpy as jnp
    import numpy as np
    import test_api_sweep as S
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import lossjax.losses as L

    b = N_DEV
    assert len(jax.devices()) == N_DEV, jax.devices()
    rng = np.random.default_rng(0)
    y = jnp.asarray(np.asarray(S.LABELS[:b]))
    w_np = np.ones(b, bool)
    w_np[[2, 5]] = False
    w = jnp.asarray(w_np)

    # one case per public name (variants of the same function add compile time, not coverage)
    names = [n for n in S.CASES if "[" not in n]
    inputs = {
        name: jnp.asarray((rng.normal(size=(b,) + S.CASES[name].shape) * 1.5).astype(np.float32))
        for name in S.CASES
    }
    reduce_names = {"comp_sum_loss", "normalized_cross_entropy_loss", "kd_loss", "dpo_loss"}

    def make(name):
        """``(x, y, w) -> (per-example value, its gradient[, reduce_loss mean, its gradient])``:
        everything checked for one function is one compiled program."""
        case = S.CASES[name]

        def fn(x, y, w):
            def total(x):
                out = case.call(x, y, w if case.where else None)
                return jnp.sum(out), out

            (_, out), g = jax.value_and_grad(total, has_aux=True)(x)
            if name not in reduce_names:
                return out, g
            m, gm = jax.value_and_grad(lambda x: L.reduce_loss(case.call(x, y, w), "mean", where=w))(x)
            return out, g, m, gm

        return fn

    meshes = {
        kind: jax.make_mesh((N_DEV,), ("data",), axis_types=(at,))
        for kind, at in (("auto", AxisType.Auto), ("explicit", AxisType.Explicit))
    }

    def lower(name, kind):
        args = (inputs[name], y, w)
        if kind == "single":
            return jax.jit(make(name)).lower(*args), args
        mesh = meshes[kind]
        with jax.set_mesh(mesh):
            put = tuple(
                jax.device_put(a, NamedSharding(mesh, P("data", *([None] * (a.ndim - 1))))) for a in args
            )
            return jax.jit(make(name)).lower(*put), put

    def err_str(err):
        return f"{type(err).__name__}: {str(err)[:300]}"

    # Compile time dominates: trace/lower here (Python) while XLA compiles earlier programs in
    # worker threads (the compiler releases the GIL), one program per (function, mesh kind).
    results, futures = {}, {}
    with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        for name in names:
            for kind in ("single", *meshes):
                try:
                    lowered, args = lower(name, kind)
                except Exception as err:  # noqa: BLE001 - reported per case
                    results[name, kind] = err
                    continue
                futures[name, kind] = (pool.submit(lowered.compile), args)
        for key, (fut, args) in futures.items():
            try:
                results[key] = jax.tree.map(np.asarray, fut.result()(*args))
            except Exception as err:  # noqa: BLE001 - reported per case
                results[key] = err

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        a, b = np.nan_to_num(a), np.nan_to_num(b)
        # relative to the array's scale: a sharded reduction may reorder float32 sums
        return float(np.max(np.abs(a - b), initial=0.0) / (np.max(np.abs(b), initial=0.0) + 1e-6))

    rows, reduce_rows = [], []
    for name in names:
        ref = results[name, "single"]
        if isinstance(ref, Exception):
            rows.append(dict(case=name, mesh="single", error=err_str(ref)))
            continue
        for kind in meshes:
            out = results[name, kind]
            if isinstance(out, Exception):
                rows.append(dict(case=name, mesh=kind, error=err_str(out)))
                if name in reduce_names:
                    reduce_rows.append(dict(case=name, mesh=kind, ok=False, error=err_str(out)))
                continue
            ve, ge = rel(out[0], ref[0]), rel(out[1], ref[1])
            tol = 1e-4 if name in ("soft_topk_loss", "aldr_kl_loss") else 2e-5
            rows.append(dict(case=name, mesh=kind, value_err=ve, grad_err=ge, ok=ve <= tol and ge <= tol))
            if name in reduce_names:
                ve, ge = rel(out[2], ref[2]), rel(out[3], ref[3])
                reduce_rows.append(
                    dict(case=name, mesh=kind, value_err=ve, grad_err=ge, ok=ve <= 2e-5 and ge <= 2e-5)
                )
    print("RESULT_JSON " + json.dumps(dict(devices=len(jax.devices()), rows=rows, reduce=reduce_rows)))


if __name__ == "__main__":
    _main()
