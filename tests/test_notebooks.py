"""Executes every notebook (jupytext percent ``.py``) in smoke mode in a real kernel.

Each notebook asserts on its own fitted constants, so a notebook that runs but fits nonsense
fails here. Smoke mode: ``LOSSJAX_SMOKE=1`` (fewer widths, steps, starts and resamples), passed to
the kernel by ``notebooks/execute_notebooks.py``; the executed notebook, its figures and its result
JSON go to a temporary folder. The tests check that the figures are embedded in the executed
notebook (``image/png`` outputs, one per saved PNG at least), that the PNGs were still saved, and
that the committed notebooks, figures and results are byte-for-byte unchanged.
"""

import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(p.name for p in NOTEBOOKS.glob("0*_*.py"))


def _import(name):
    if str(NOTEBOOKS) not in sys.path:
        sys.path.insert(0, str(NOTEBOOKS))
    return importlib.import_module(name)


def _committed_digest() -> dict:
    files = [*NOTEBOOKS.glob("0*.ipynb"), *(NOTEBOOKS / "figures").glob("*"), *(NOTEBOOKS / "results").glob("*")]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(files) if f.is_file()}


def test_notebook_sources_are_present():
    assert SOURCES == [
        "01_scaling_laws_published.py",
        "02_scaling_laws_measured.py",
        "03_lr_annealing.py",
    ]


def test_smoke_settings_default_to_a_scratch_folder(monkeypatch):
    ex = _import("execute_notebooks")
    for k in ("LOSSJAX_FIGURES_DIR", "LOSSJAX_RESULTS_DIR"):
        monkeypatch.delenv(k, raising=False)
    env = ex.kernel_env(smoke=True, base={"MPLBACKEND": "Agg", "LOSSJAX_SMOKE": "0", "PATH": "x"})
    # the smoke flag reaches the kernel, the inline backend is not overridden, outputs go to scratch
    assert env["LOSSJAX_SMOKE"] == "1" and "MPLBACKEND" not in env and env["PATH"] == "x"
    assert Path(env["LOSSJAX_FIGURES_DIR"]).parent == ex.SMOKE_OUT
    full = ex.kernel_env(smoke=False, base={"LOSSJAX_SMOKE": "1", "LOSSJAX_FIGURES_DIR": "/tmp/a"})
    assert "LOSSJAX_SMOKE" not in full and "LOSSJAX_FIGURES_DIR" not in full
    # nbhelpers.settings(): smoke mode without explicit folders never points at the committed ones
    monkeypatch.setenv("LOSSJAX_SMOKE", "1")
    H = _import("nbhelpers")
    cfg = H.settings()
    assert cfg["smoke"] is True
    assert cfg["figures"] == H.SMOKE_SCRATCH / "figures" and cfg["results"] == H.SMOKE_SCRATCH / "results"
    assert NOTEBOOKS not in cfg["figures"].parents
    monkeypatch.setenv("LOSSJAX_SMOKE", "0")
    cfg = H.settings()
    assert cfg["smoke"] is False and cfg["figures"] == NOTEBOOKS / "figures"


@pytest.mark.slow
@pytest.mark.parametrize("name", SOURCES)
def test_notebook_executes_in_smoke_mode_with_inline_figures(name, tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("jupytext")
    ex = _import("execute_notebooks")
    before = _committed_digest()
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOSSJAX_")}
    base.pop("XLA_FLAGS", None)  # no fake multi-device setup for the notebooks
    base["MPLBACKEND"] = "Agg"  # as in CI: the executor must still embed the figures
    env = ex.kernel_env(smoke=True, out=tmp_path, base=base)
    nb = ex.execute_notebook(NOTEBOOKS / name, tmp_path / name.replace(".py", ".ipynb"), env=env, timeout=900)
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    saved = list((tmp_path / "figures").glob("*.png"))
    assert saved, "the notebook saved no figure"
    assert len(pngs) >= len(saved), f"{len(pngs)} inline figures for {len(saved)} saved PNGs"
    assert (tmp_path / name.replace(".py", ".ipynb")).exists()
    results = list((tmp_path / "results").glob("*_smoke.json"))
    assert len(results) == 1
    assert json.loads(results[0].read_text())["smoke"] is True
    assert _committed_digest() == before, "a smoke run changed committed notebooks, figures or results"
