"""Shared fixtures of the experiment tests: a clean gin state around every test, and the arguments of a
study's smoke run."""

import os
from collections.abc import Callable
from types import ModuleType

import gin
import pytest

from experiments.kit import cli, report


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture
def smoke_args(tmp_path) -> Callable[..., cli.StudyArgs]:
    """``smoke_args(study, *arms)``: the :class:`experiments.kit.cli.StudyArgs` of ``python -m
    experiments.<study> --smoke --config <arm>.gin ...`` with runs in ``tmp_path/runs`` and the report in
    ``tmp_path/out`` (``study``: the study module, with ``CONFIG_DIR`` and ``SMOKE_BINDINGS``)."""

    def make(study: ModuleType, *arms: str) -> cli.StudyArgs:
        return cli.StudyArgs(
            configs=tuple(os.path.join(study.CONFIG_DIR, f"{a}.gin") for a in arms), custom=True,
            bindings=study.SMOKE_BINDINGS, workdir=str(tmp_path / "runs"), report_dir=str(tmp_path / "out"),
            progress=False, provenance=report.provenance(["python", "-m", study.__name__, "--smoke"]))

    return make
