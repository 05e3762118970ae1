"""The tiny protocol's search and final runs, made once per test session and shared by the tests of
the claims' protocols (test_protocol) and of the explanations' (test_explanations), which copy what
they change."""

from __future__ import annotations

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
