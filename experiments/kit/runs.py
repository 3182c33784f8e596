"""The finished-run contract shared by the studies.

A run directory is *finished* when its ``results.json`` exists and records the run's config; a rerun
of the study then loads it instead of training again. A ``results.json`` recording a different config
is an error (use another ``--workdir``), never a silent reuse; so is one written by an older layout of
the study (``require`` names the keys the current layout stores); a torn file (killed mid-write)
counts as unfinished. ``results.json`` is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from experiments.common.metrics import write_json

__all__ = ["finished_run", "write_run", "normalise"]


def normalise(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def finished_run(workdir: str, config: dict, *, require: Sequence[str] = ()) -> dict | None:
    """The stored results of ``workdir`` if it finished with ``config``, else None.

    Args:
      workdir: the run's directory.
      config: the run's config (compared with the stored one after a JSON round trip).
      require: keys every finished run of the current layout stores (e.g. ``("metrics",)``); a
        finished run lacking one was written by an older layout of the study.

    Raises:
      ValueError: ``workdir/results.json`` exists but lacks a key of ``require`` (checked first:
        the message says "older layout"), or records a different config (the message lists the
        differing fields).

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
    missing = [k for k in require if k not in res]
    if missing:
        raise ValueError(f"workdir {workdir} holds a finished run of an older layout of this study (its results.json "
                         f"lacks {', '.join(repr(k) for k in missing)}). Use another --workdir (or delete it).")
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
