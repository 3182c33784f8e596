"""Executes the jupytext ``.py`` notebook sources into ``.ipynb`` files with their figures inline.

Usage::

    python notebooks/execute_notebooks.py [NN_name.py ...]          # full mode: the committed files
    python notebooks/execute_notebooks.py --smoke [--out DIR] [...]  # smoke mode: a scratch folder

Default: every ``0*.py``. Needs jupytext, nbclient and an ipykernel named ``python3``; the kernel
runs with cwd = ``notebooks/``.

* The kernel draws with the inline backend (``MPLBACKEND`` is removed from its environment and
  each notebook starts with ``%matplotlib inline``), so every figure is embedded in the executed
  notebook as an ``image/png`` output; the notebooks still save their PNG files.
* Full mode writes ``notebooks/NN_name.ipynb`` and the notebooks write ``notebooks/figures`` and
  ``notebooks/results``.
* Smoke mode (``--smoke`` or ``LOSSJAX_SMOKE=1`` in the environment, which is passed on to the
  kernel) writes the executed notebooks, figures and results under ``--out`` (default: a scratch
  folder in the system temp directory) and never touches the committed files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMOKE_OUT = Path(tempfile.gettempdir()) / "lossjax_notebooks_smoke"

__all__ = ["kernel_env", "execute_notebook", "main"]


def _is_smoke(env: dict) -> bool:
    return env.get("LOSSJAX_SMOKE", "0") not in ("", "0", "false", "False")


def kernel_env(*, smoke: bool, out: Path | None = None, base: dict | None = None) -> dict:
    """The kernel's environment: ``base`` (default ``os.environ``) without ``MPLBACKEND`` (so the
    inline backend is used), ``LOSSJAX_SMOKE`` set (smoke) or removed (full), and in smoke mode
    ``LOSSJAX_FIGURES_DIR``/``LOSSJAX_RESULTS_DIR`` under ``out``."""
    env = dict(os.environ if base is None else base)
    env.pop("MPLBACKEND", None)
    if smoke:
        out = Path(out or SMOKE_OUT)
        env["LOSSJAX_SMOKE"] = "1"
        env.setdefault("LOSSJAX_FIGURES_DIR", str(out / "figures"))
        env.setdefault("LOSSJAX_RESULTS_DIR", str(out / "results"))
    else:
        for k in ("LOSSJAX_SMOKE", "LOSSJAX_FIGURES_DIR", "LOSSJAX_RESULTS_DIR"):
            env.pop(k, None)
    return env


def execute_notebook(src: Path, dest: Path, *, env: dict, timeout: int = 1800):
    """Execute the jupytext source ``src`` in a fresh ``python3`` kernel (cwd ``notebooks/``)
    with environment ``env``; write the executed notebook to ``dest`` and return it."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(src)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute(env=env)
    dest.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dest)
    return nb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python notebooks/execute_notebooks.py", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="notebook sources (default: every 0*.py)")
    p.add_argument("--smoke", action="store_true", help="smoke mode (also on when LOSSJAX_SMOKE is set)")
    p.add_argument("--out", default=None, help=f"smoke-mode output folder (default {SMOKE_OUT})")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    smoke = a.smoke or _is_smoke(os.environ)
    out = Path(a.out) if a.out else SMOKE_OUT
    env = kernel_env(smoke=smoke, out=out)
    for name in a.names or sorted(q.name for q in HERE.glob("0*.py")):
        src = HERE / Path(name).name
        dest = (out / src.name).with_suffix(".ipynb") if smoke else src.with_suffix(".ipynb")
        t = time.time()
        execute_notebook(src, dest, env=env)
        print(f"{src.name}: executed in {time.time() - t:.1f} s -> {dest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
