"""Runs every notebook (jupytext percent ``.py``) in smoke mode as a plain subprocess.

Each notebook asserts on its own fitted constants, so a notebook that runs but fits nonsense
fails here. Smoke mode: ``LOSSJAX_SMOKE=1`` (fewer widths, steps, starts and resamples),
``MPLBACKEND=Agg``; figures and result JSON go to a temporary folder.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(p.name for p in NOTEBOOKS.glob("0*_*.py"))


def test_notebook_sources_are_present():
    assert SOURCES == [
        "01_scaling_laws_published.py",
        "02_scaling_laws_measured.py",
        "03_lr_annealing.py",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", SOURCES)
def test_notebook_runs_in_smoke_mode(name, tmp_path):
    env = dict(os.environ)
    env.update(
        LOSSJAX_SMOKE="1",
        MPLBACKEND="Agg",
        LOSSJAX_FIGURES_DIR=str(tmp_path / "figures"),
        LOSSJAX_RESULTS_DIR=str(tmp_path / "results"),
    )
    env.pop("XLA_FLAGS", None)  # no fake multi-device setup for the notebooks
    proc = subprocess.run(
        [sys.executable, str(NOTEBOOKS / name)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=900,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    figures = list((tmp_path / "figures").glob("*.png"))
    assert figures, "the notebook saved no figure"
    results = list((tmp_path / "results").glob("*_smoke.json"))
    assert len(results) == 1
    assert json.loads(results[0].read_text())["smoke"] is True
