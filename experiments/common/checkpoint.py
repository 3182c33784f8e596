"""Checkpoints: one msgpack file (flax.serialization) holding the state pytree and a JSON
metadata string, written atomically (temp file in the same directory, fsync, ``os.replace``).

A crash or Ctrl-C while writing leaves the previous checkpoint intact; a reader never sees a
half-written file. A human-readable copy of the metadata is written to ``checkpoint.json``
(informational only; the msgpack file is authoritative).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import numpy as np
from flax import serialization

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_meta", "atomic_write", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.msgpack"


def atomic_write(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(workdir: str, state: Any, meta: dict) -> str:
    """Serialise ``state`` (a pytree; device arrays are fetched) plus ``meta`` (JSON-able)."""
    host = jax.tree.map(np.asarray, jax.device_get(serialization.to_state_dict(state)))
    payload = {"state": host, "meta": json.dumps(meta)}
    path = os.path.join(workdir, CHECKPOINT_NAME)
    atomic_write(path, serialization.msgpack_serialize(payload))
    atomic_write(os.path.join(workdir, "checkpoint.json"), json.dumps(meta, indent=1))
    return path


def read_checkpoint_meta(workdir: str) -> dict | None:
    """The metadata of the workdir's checkpoint (None if there is none)."""
    path = os.path.join(workdir, CHECKPOINT_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            return json.loads(serialization.msgpack_restore(f.read())["meta"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"checkpoint {path} is unreadable ({e}). Use another --workdir or delete it.") from e


def load_checkpoint(workdir: str, template: Any) -> tuple[Any, dict] | None:
    """Restore ``(state, meta)`` shaped like ``template`` or return None if there is none.

    Raises:
      ValueError: the file exists but is corrupt or does not match ``template``.
    """
    path = os.path.join(workdir, CHECKPOINT_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            payload = serialization.msgpack_restore(f.read())
        meta = json.loads(payload["meta"])
        state = serialization.from_state_dict(template, payload["state"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"checkpoint {path} is unreadable or does not match this config ({e}). "
                         f"Use another --workdir or delete it.") from e
    bad = [(a.shape, np.shape(b)) for a, b in zip(jax.tree.leaves(template), jax.tree.leaves(state))
           if tuple(a.shape) != tuple(np.shape(b))]
    if bad:
        raise ValueError(f"checkpoint {path}: array shapes differ from this config's model/optimizer ({bad[:3]}).")
    return state, meta
