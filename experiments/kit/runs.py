"""The finished-run contract shared by the studies.

A run directory is *finished* when its ``results.json`` exists and records the run's config; a rerun
of the study then loads it instead of training again. A ``results.json`` recording a different config
is an error (use another ``--workdir``), never a silent reuse; a torn file (killed mid-write) counts
as unfinished. ``results.json`` is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from typing import Any

from experiments.common.metrics import write_json

__all__ = ["finished_run", "write_run", "normalise"]


def normalise(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def finished_run(workdir: str, config: dict) -> dict | None:
    """The stored results of ``workdir`` if it finished with ``config``, else None.

    Raises:
      ValueError: ``workdir/results.json`` exists but records a different config (the message
        lists the differing fields).

    Example:
      >>> import tempfile
      >>> d = tempfile.mkdtemp()
      >>> finished_run(d, {"lr": 0.1}) is None
      True
      >>> _ = write_run(d, {"lr": 0.1}, {"acc": 0.9})
      >>> finished_run(d, {"lr": 0.1})["acc"]
      0.9
    """
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            res = json.load(f)
        except json.JSONDecodeError:
            return None  # a torn write: redo the run
    old, new = normalise(res.get("config", {})), normalise(config)
    if old != new:
        diff = [f"{k}: stored {old.get(k)!r} vs now {new.get(k)!r}"
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        raise ValueError(f"workdir {workdir} holds a finished run of a different config ({'; '.join(diff)}). "
                         "Use another --workdir.")
    return res


def write_run(workdir: str, config: dict, results: dict) -> dict:
    """Write ``results.json`` (``results`` plus ``config``) atomically: the finished marker.
    Returns what was written."""
    out = dict(results, config=normalise(config))
    write_json(os.path.join(workdir, "results.json"), out)
    return out
