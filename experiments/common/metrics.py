"""Per-epoch metrics as JSON Lines, and the run's side files (env, command line, results)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

from experiments.common.checkpoint import atomic_write

__all__ = ["read_jsonl", "append_jsonl", "reconcile_jsonl", "env_info", "write_json", "mean_std",
           "fmt_mean_std"]

METRICS_NAME = "metrics.jsonl"


def read_jsonl(path: str) -> list[dict]:
    """Records of a JSONL file (a truncated last line, from a kill mid-write, is skipped)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def append_jsonl(path: str, record: dict) -> None:
    """Append one record and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def reconcile_jsonl(path: str, completed_epochs: int, last_record: dict | None) -> list[dict]:
    """Make the file hold exactly one record per completed epoch ``0..completed_epochs-1``.

    Records of epochs the checkpoint has not reached are dropped, duplicates keep the first,
    and the checkpoint's own copy of the last epoch's record is re-added if a kill came
    between writing the checkpoint and appending the line. Rewritten atomically.
    """
    recs = read_jsonl(path)
    seen: dict[int, dict] = {}
    for r in recs:
        e = r.get("epoch")
        if isinstance(e, int) and e < completed_epochs and e not in seen:
            seen[e] = r
    if last_record is not None and last_record.get("epoch") not in seen and \
            last_record.get("epoch", completed_epochs) < completed_epochs:
        seen[last_record["epoch"]] = last_record
    ordered = [seen[e] for e in sorted(seen)]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in ordered))
    return ordered


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def env_info() -> dict:
    """Versions, devices, host and git commit."""
    import flax
    import jax
    import optax

    import lossjax

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    devs = jax.local_devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "lossjax": lossjax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devs],
        "device_kind": devs[0].device_kind if devs else "",
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of ``values``.

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("`values` must not be empty.")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def fmt_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``"m ± s"`` of ``values`` with ``digits`` decimals (see :func:`mean_std`).

    Example:
        >>> fmt_mean_std([1.0, 2.0, 3.0], digits=1)
        '2.0 ± 1.0'
    """
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"
