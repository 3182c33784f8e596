"""Regenerates the executed ``.ipynb`` files from the jupytext ``.py`` sources (full mode).

Usage: ``python notebooks/execute_notebooks.py [NN_name.py ...]`` (default: all ``0*.py``).
Needs jupytext, nbclient and an ipykernel named ``python3``. Runs with cwd = ``notebooks/``.
"""

import os
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main(names):
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.pop("LOSSJAX_SMOKE", None)
    for name in names or sorted(p.name for p in HERE.glob("0*.py")):
        src = HERE / name
        nb = jupytext.read(src)
        t = time.time()
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
        jupytext.write(nb, src.with_suffix(".ipynb"))
        print(f"{name}: executed in {time.time() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
