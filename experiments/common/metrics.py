"""Per-epoch metrics as JSON Lines, and the run's side files (env, command line, results)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.common.checkpoint import atomic_write

__all__ = ["read_jsonl", "append_jsonl", "reconcile_jsonl", "env_info", "write_json", "mean_std",
           "fmt_mean_std", "TensorBoardWriter", "TB_TAGS"]

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


def reconcile_jsonl(path: str, completed_epochs: int, last_record: dict | None, *, write: bool = True,
                    shift: int = 0) -> list[dict]:
    """Make the file hold exactly one record per completed epoch ``1..completed_epochs``.

    Records of epochs the checkpoint has not reached are dropped, duplicates keep the first,
    and the checkpoint's own copy of the last epoch's record is re-added if a kill came
    between writing the checkpoint and appending the line. Rewritten atomically (if ``write``).
    ``shift`` is added to the epoch numbers read (1 for the 0-based files of earlier versions).
    """
    recs = [dict(r, epoch=r["epoch"] + shift) if isinstance(r.get("epoch"), int) else r for r in read_jsonl(path)]
    seen: dict[int, dict] = {}
    for r in recs:
        e = r.get("epoch")
        if isinstance(e, int) and e <= completed_epochs and e not in seen:
            seen[e] = r
    if last_record is not None and last_record.get("epoch") not in seen and \
            last_record.get("epoch", completed_epochs + 1) <= completed_epochs:
        seen[last_record["epoch"]] = last_record
    ordered = [seen[e] for e in sorted(seen)]
    if write:
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
    from experiments.common import xla_cpu

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    devs = jax.local_devices()
    from importlib import metadata

    extra = {}
    for dist in ("orbax-checkpoint", "tensorboardX"):
        try:
            extra[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            extra[dist] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "lossjax": lossjax.__version__,
        "backend": jax.default_backend(),
        **extra,
        "process_count": jax.process_count(),
        "global_device_count": jax.device_count(),
        "devices": [str(d) for d in devs],
        "device_kind": devs[0].device_kind if devs else "",
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        **xla_cpu.describe(),  # active XLA_FLAGS and the YNNPACK-fusion decision of the runner
    }


# metrics.jsonl key -> TensorBoard tag
TB_TAGS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "test_loss": "test/loss",
           "test_accuracy": "test/accuracy", "ascent_norm": "train/ascent_norm",
           "perturbation_norm": "train/perturbation_norm", "lr": "train/lr", "images_per_s": "perf/images_per_s",
           "epoch_time_s": "perf/epoch_time_s"}


def _import_tensorboardx() -> Any:
    """``tensorboardX.SummaryWriter``, imported without PyTorch: tensorboardX probes for torch at
    import time (seconds of start-up when it is installed) only to accept torch tensors, which
    this runner never passes."""
    import sys

    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class TensorBoardWriter:
    """Per-epoch scalars as TensorBoard event files (``tensorboardX``), beside ``metrics.jsonl``.

    Each numeric field of a metrics record goes to its tag in :data:`TB_TAGS` with the record's
    ``epoch`` as the step, so TensorBoard's x axis is the epoch number of the console and of
    ``metrics.jsonl``. ``tensorboard --logdir <workdir>/tb`` shows the run.
    """

    def __init__(self, logdir: str) -> None:
        try:
            SummaryWriter = _import_tensorboardx()
        except ImportError as e:  # pragma: no cover - tensorboardX comes with the experiments extra
            raise ImportError("TensorBoard logging needs tensorboardX: pip install 'lossjax[experiments]' "
                              "(or pass --no_tensorboard).") from e
        self._w = SummaryWriter(logdir=logdir, flush_secs=30)

    def write(self, record: dict) -> None:
        step = int(record["epoch"])
        for k, tag in TB_TAGS.items():
            v = record.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._w.add_scalar(tag, float(v), step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


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
