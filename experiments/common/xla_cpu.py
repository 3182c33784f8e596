"""XLA:CPU flag policy of the runner: YNNPACK fusions on by default.

XLA's CPU backend can hand dot products, element-wise ops and reductions to YNNPACK
(``--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce``). On the project's 2-core CPU
this made the training steps of the runner faster with equal numerics (measured in
``experiments/results/throughput_cpu.md``), so :func:`configure` adds it to ``XLA_FLAGS``
unless

* the user's ``XLA_FLAGS`` already sets ``--xla_cpu_experimental_ynn_fusion_type`` (kept as is),
* ``--no_ynn`` was passed (``disable=True``), or
* the environment variable ``LOSSJAX_YNN`` is ``0``/``false``/``off``/``no``.

The flag only changes XLA:CPU compilations; GPU/TPU programs are unaffected. ``XLA_FLAGS`` is
read once, when JAX creates its backends, so :func:`configure` must run before the first
computation; called later it changes nothing and says so. The decision is recorded in each
run's ``env.json`` (keys ``xla_flags`` and ``ynn_fusion``, see :func:`describe`).

Example::

    from experiments.common import xla_cpu
    rec = xla_cpu.configure()          # before any JAX computation
    rec["ynn_fusion"]                  # 'dot,eltwise,reduce' (or None when off)
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, MutableMapping

__all__ = ["YNN_FLAG", "YNN_VALUE", "ENV_VAR", "decide", "configure", "describe", "ynn_value"]

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_VALUE = "dot,eltwise,reduce"
ENV_VAR = "LOSSJAX_YNN"
_OFF = ("0", "false", "off", "no")


def ynn_value(xla_flags: str) -> str | None:
    """Value of ``--xla_cpu_experimental_ynn_fusion_type`` in an ``XLA_FLAGS`` string (last one
    wins, as in XLA's parser); ``None`` when absent.

    Example: ``ynn_value("--a=1 --xla_cpu_experimental_ynn_fusion_type=dot")`` is ``'dot'``.
    """
    value = None
    for tok in shlex.split(xla_flags or ""):
        if tok == YNN_FLAG:
            value = ""
        elif tok.startswith(YNN_FLAG + "="):
            value = tok[len(YNN_FLAG) + 1:]
    return value


def decide(environ: Mapping[str, str], *, disable: bool = False) -> tuple[str, str]:
    """``(XLA_FLAGS to use, reason)`` under the policy of this module; pure (reads ``environ`` only).

    ``reason`` is one of ``'default'`` (flag added), ``'user XLA_FLAGS'`` (the user's setting is
    kept), ``'--no_ynn'`` or ``'LOSSJAX_YNN=<value>'`` (not added).

    Example: ``decide({})`` is ``('--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',
    'default')``.
    """
    flags = environ.get("XLA_FLAGS", "")
    if ynn_value(flags) is not None:
        return flags, "user XLA_FLAGS"
    if disable:
        return flags, "--no_ynn"
    env = environ.get(ENV_VAR)
    if env is not None and env.strip().lower() in _OFF:
        return flags, f"{ENV_VAR}={env}"
    return (f"{flags} {YNN_FLAG}={YNN_VALUE}".strip(), "default")


def _backends_initialised() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # noqa: BLE001  # private API moved: assume the worst
        return True


def configure(*, disable: bool = False, environ: MutableMapping[str, str] | None = None) -> dict:
    """Apply :func:`decide` to ``os.environ`` (or ``environ``) and return :func:`describe`'s record
    plus ``ynn_reason`` and ``ynn_applied`` (``False`` when JAX's backends already existed, so the
    new ``XLA_FLAGS`` could not take effect in this process; the environment is then left alone).
    """
    env = os.environ if environ is None else environ
    flags, reason = decide(env, disable=disable)
    applied = True
    if flags != env.get("XLA_FLAGS", ""):
        if environ is None and _backends_initialised():
            applied = False
        else:
            env["XLA_FLAGS"] = flags
    rec = describe(env)
    rec.update(ynn_reason=reason, ynn_applied=applied)
    if environ is None:
        _LAST.clear()
        _LAST.update(ynn_reason=reason, ynn_applied=applied)
    return rec


_LAST: dict = {}


def describe(environ: Mapping[str, str] | None = None) -> dict:
    """``{'xla_flags': ..., 'ynn_fusion': ...}`` of the current process (for ``env.json``), plus
    the reason recorded by the last :func:`configure` call of this process, if any."""
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    rec = {"xla_flags": flags, "ynn_fusion": ynn_value(flags) or None}
    if environ is None:
        rec.update(_LAST)
    return rec
