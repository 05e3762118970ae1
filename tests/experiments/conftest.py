"""The tiny protocol's search and final runs, made once per test session and shared by the tests of
the claims' protocols (test_protocol) and of the explanations' (test_explanations), which copy what
they change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments import protocol as P

TINY = Path(__file__).with_name("protocol_tiny.yaml")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """One search (tables written) and one set of final runs of the tiny protocol."""
    root = tmp_path_factory.mktemp("protocol")
    args = ["--runs-dir", str(root / "runs"), "--data-dir", str(root / "data")]
    args += ["--tables", str(root / "tables"), "--jobs", "1"]
    assert P.main(["tune", str(TINY), *args]) == 0
    assert P.main(["run", str(TINY), *args]) == 0
    return root, args


def copy_tiny(tiny, tmp_path: Path) -> dict:
    """The shared tiny runs and tables copied into ``tmp_path`` (a test changes its copy only), and
    the run settings that point at the copy."""
    root, _ = tiny
    shutil.copytree(root / "runs", tmp_path / "runs")
    shutil.copytree(root / "tables", tmp_path / "tables")
    return {
        "runs_dir": str(tmp_path / "runs"),
        "data_dir": str(tmp_path / "data"),
        "progress": False,
    }
