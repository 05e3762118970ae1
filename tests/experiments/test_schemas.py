"""Tables the report reads are checked against their declared schemas: a verdict flipped by hand, a
NaN that would drop a test from the Holm family, a duplicated row or unpaired seeds stop the report
with the file named (issue 24's "records and tables taken on trust")."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.analyse.schemas import TableError, read_table
from experiments.analyse.verdicts import INCONCLUSIVE, REPRODUCED, decide
from experiments.report import document as report
from tests.conftest import ROOT

TABLES = ROOT / "results" / "tables"


@pytest.fixture
def tables(tmp_path) -> Path:
    out = tmp_path / "tables"
    out.mkdir()
    for name in ("verdicts.csv", "paired_batch_size.csv", "protocol_runs.csv"):
        shutil.copy(TABLES / name, out / name)
    return out


def edit(path: Path, change) -> None:
    df = pd.read_csv(path)
    changed = change(df)  # a new frame, or None where df was changed in place
    (df if changed is None else changed).to_csv(path, index=False)


def first_tested(df: pd.DataFrame) -> int:
    return int(np.flatnonzero(df["part_verdict"] != "not comparable")[0])


def test_the_committed_tables_pass_their_schemas(tables):
    for path in sorted(tables.glob("*.csv")):
        assert len(read_table(path)) > 0


def flip(df):
    i = first_tested(df)
    df.loc[i, "part_verdict"] = (
        "reversed" if df.loc[i, "part_verdict"] != "reversed" else REPRODUCED
    )


def nan_holm(df):
    df.loc[first_tested(df), "p_holm"] = np.nan


def duplicate(df):
    df.loc[len(df)] = df.loc[first_tested(df)]


def claim_flip(df):
    df.loc[first_tested(df), "verdict"] = "partly reproduced"


def holm_edit(df):
    df.loc[first_tested(df), "p_holm"] = 0.001  # smaller than Holm gives


@pytest.mark.parametrize(
    "change, said",
    [
        (flip, "by the rule"),
        (nan_holm, "p_holm is missing or not finite"),
        (duplicate, "duplicate rows"),
        (claim_flip, "its parts give"),
        (holm_edit, "not Holm's adjustment"),
        (lambda df: df.drop(columns="p_tost"), "missing column(s) ['p_tost']"),
    ],
)
def test_a_verdicts_table_that_does_not_add_up_is_refused(tables, change, said):
    edit(tables / "verdicts.csv", change)
    with pytest.raises(TableError, match=f"verdicts.csv: .*{re.escape(said)}"):
        read_table(tables / "verdicts.csv")


def test_unpaired_seeds_and_rates_out_of_range_are_refused(tables):
    edit(tables / "paired_batch_size.csv", lambda df: df.drop(index=0))
    with pytest.raises(TableError, match="not paired"):
        read_table(tables / "paired_batch_size.csv")
    edit(tables / "protocol_runs.csv", lambda df: df.__setitem__("test_error", 7.5))
    with pytest.raises(TableError, match="test_error holds values outside"):
        read_table(tables / "protocol_runs.csv")


def test_the_report_stops_in_one_line_on_a_flipped_verdict(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "tables", results / "tables")
    edit(results / "tables" / "verdicts.csv", flip)
    with pytest.raises(SystemExit, match=r"^error: .*verdicts.csv: .*by the rule"):
        report.main(["--results", str(results)])
    assert not (results / "REPORT.md").exists()


def test_the_rule_itself():
    assert decide(0.01, 0.5, "greater", 0.9, 0.05) == REPRODUCED
    assert decide(0.01, -0.5, "greater", 0.9, 0.05) == "reversed"
    assert decide(0.01, -0.5, "less", 0.9, 0.05) == REPRODUCED
    assert decide(0.2, 0.1, "greater", 0.01, 0.05) == "not reproduced"
    assert decide(0.2, 0.1, "greater", 0.2, 0.05) == INCONCLUSIVE
