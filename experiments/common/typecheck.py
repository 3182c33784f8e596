"""Field type checks for the frozen config dataclasses (gin values are untyped)."""

from __future__ import annotations

import dataclasses
import typing

__all__ = ["check_field_types"]


def check_field_types(obj: object, selector: str) -> None:
    """Raise ``TypeError`` naming ``<selector>.<field>`` when a value has the wrong type.

    ``int`` values are accepted (and converted) for ``float`` fields; ``bool`` is not an ``int``
    here; lists are accepted (and converted) for ``tuple`` fields.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        want = hints.get(f.name)
        v = getattr(obj, f.name)
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            object.__setattr__(obj, f.name, float(v))
            continue
        if want is tuple and isinstance(v, list):
            object.__setattr__(obj, f.name, tuple(v))
            continue
        ok = True
        if want is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif want in (float, str, bool, tuple):
            ok = isinstance(v, want)
        if not ok:
            raise TypeError(f"`{selector}.{f.name}` must be a {want.__name__}, got {v!r} ({type(v).__name__}).")
