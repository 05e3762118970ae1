"""The declared shape of every table that the report reads, checked when it is read.

A table written by the analysis and read back by the report passes through a file a person can
edit. Each schema names its columns and their kinds, the columns that identify a row (no
duplicates), the numbers that must be present, and for paired tables that every seed has both arms.
The verdicts table is checked further: its Holm p-values must follow from its raw ones over the
family it states, and every verdict from its numbers by the one rule (``verdicts.decide``), so a
verdict edited by hand, a NaN that would drop a test from the family or a duplicated row is an
error, not a sentence in the report. (pandera would express the column checks; the rule checks are
the project's own, and a small schema keeps the report free of a validation framework.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.verdicts import NOT_COMPARABLE, combine_parts, decide, holm

TOLERANCE = 1e-9  # p-values read back from CSV: 17 significant digits, compared loosely


class TableError(ValueError):
    """A table that does not have its declared shape or whose numbers contradict it."""


@dataclass(frozen=True)
class Schema:
    """Columns by kind (number, integer, text, flag), the key that identifies a row, and the
    numbers no row may lack (``required``) or that rows meeting ``when`` may not lack."""

    columns: dict[str, str]
    key: tuple[str, ...]
    required: tuple[str, ...] = ()
    required_when: tuple[Callable[[pd.DataFrame], pd.Series], tuple[str, ...]] | None = None
    checks: tuple[Callable[[pd.DataFrame], str | None], ...] = field(default_factory=tuple)


def _kind_ok(series: pd.Series, kind: str) -> bool:
    present = series.dropna()
    if kind == "text":
        return True
    if kind == "flag":
        return present.isin([True, False, "True", "False"]).all()
    if not pd.api.types.is_numeric_dtype(present) or pd.api.types.is_bool_dtype(present):
        return len(present) == 0
    if kind == "integer":
        return bool(np.all(np.mod(present.to_numpy(dtype=float), 1) == 0))
    return True


def validate(df: pd.DataFrame, schema: Schema, where: str) -> pd.DataFrame:
    """``df`` if it has ``schema``'s shape, else TableError naming ``where`` and the problem."""

    def fail(msg: str) -> None:
        raise TableError(f"{where}: {msg}")

    if missing := [c for c in schema.columns if c not in df.columns]:
        fail(f"missing column(s) {missing}")
    for column, kind in schema.columns.items():
        if not _kind_ok(df[column], kind):
            fail(f"column {column} holds values that are not of kind {kind}")
    if (dups := df.duplicated(list(schema.key), keep=False)).any():
        first = df.loc[dups, list(schema.key)].iloc[0].to_dict()
        fail(f"duplicate rows for {first}")
    need = [(c, pd.Series(True, index=df.index)) for c in schema.required]
    if schema.required_when is not None:
        when, columns = schema.required_when
        need += [(c, when(df)) for c in columns]
    for column, rows in need:
        values = pd.to_numeric(df.loc[rows, column], errors="coerce")
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            bad = df.loc[rows].loc[~np.isfinite(values.to_numpy(dtype=float)), list(schema.key)]
            fail(f"{column} is missing or not finite for {bad.iloc[0].to_dict()}")
    for check in schema.checks:
        if problem := check(df):
            fail(problem)
    return df


# --- the verdicts table: Holm and the rule re-applied ----------------------------------------------


def _tested(df: pd.DataFrame) -> pd.Series:
    return df["part_verdict"] != NOT_COMPARABLE


def _family(df: pd.DataFrame) -> str | None:
    tested = df[_tested(df)]
    sizes = set(df["family_size"].dropna().astype(int))
    if sizes != {len(tested)}:
        return f"family_size says {sorted(sizes)} but {len(tested)} rows were tested"
    adjusted = holm(tested["p_raw"].to_numpy(dtype=float))
    off = np.abs(adjusted - tested["p_holm"].to_numpy(dtype=float)) > TOLERANCE
    if off.any():
        row = tested.iloc[int(np.argmax(off))]
        return (
            f"p_holm {row.p_holm:.6g} of {row.protocol}/{row.comparison} ({row.part}) is not "
            f"Holm's adjustment of the family's raw p-values"
        )
    return None


def _alpha(rule: str) -> float:
    try:
        return float(json.loads(rule).get("alpha", 0.05))
    except (TypeError, ValueError, AttributeError):
        return 0.05


def _rule(df: pd.DataFrame) -> str | None:
    for r in df[_tested(df)].itertuples():
        follows = decide(r.p_holm, r.mean_diff, r.direction, r.p_tost, _alpha(r.rule))
        if follows != r.part_verdict:
            return (
                f"{r.protocol}/{r.comparison} ({r.part}) says {r.part_verdict!r} but its numbers "
                f"give {follows!r} by the rule"
            )
    for (protocol, comparison), rows in df.groupby(["protocol", "comparison"], sort=False):
        parts = dict(zip(rows["part"], rows["part_verdict"], strict=True))
        if "effect" not in parts:
            return f"{protocol}/{comparison} has no effect row"
        follows = combine_parts(parts["effect"], parts.get("mechanism"))
        if set(rows["verdict"]) != {follows}:
            return (
                f"{protocol}/{comparison} says {sorted(set(rows['verdict']))} but its parts give "
                f"{follows!r}"
            )
    return None


VERDICTS = Schema(
    columns={
        "protocol": "text",
        "comparison": "text",
        "part": "text",
        "direction": "text",
        "mean_diff": "number",
        "p_raw": "number",
        "p_holm": "number",
        "p_tost": "number",
        "part_verdict": "text",
        "verdict": "text",
        "family_size": "integer",
        "rule": "text",
    },
    key=("protocol", "comparison", "part"),
    required=("family_size",),
    required_when=(_tested, ("mean_diff", "p_raw", "p_holm", "p_tost")),
    checks=(_family, _rule),
)


# --- per-seed tables ---------------------------------------------------------------------------


def _paired_seeds(df: pd.DataFrame) -> str | None:
    """Each comparison's quantity has every arm (a and b; a2 and b2 for an interaction; the
    models of a rank correlation) at the same seeds."""
    for (comparison, quantity), rows in df.groupby(["comparison", "quantity"], sort=False):
        seeds = {arm: frozenset(r["seed"]) for arm, r in rows.groupby(["role", "arm"])}
        if len(set(seeds.values())) != 1:
            listed = {"/".join(k): sorted(v) for k, v in seeds.items()}
            return f"{comparison}/{quantity}: the arms' seeds are not paired ({listed})"
    return None


PAIRED = Schema(
    columns={
        "comparison": "text",
        "arm": "text",
        "role": "text",
        "seed": "integer",
        "quantity": "text",
        "value": "number",
        "reached": "flag",
    },
    key=("comparison", "arm", "role", "quantity", "seed"),
    checks=(_paired_seeds,),
)


def _rates(df: pd.DataFrame) -> str | None:
    for column in ("train_error", "val_error", "test_error"):
        values = df[column].dropna() if column in df else pd.Series(dtype=float)
        if ((values < 0) | (values > 1)).any():
            return f"{column} holds values outside [0, 1]"
    return None


PROTOCOL_RUNS = Schema(
    columns={
        "protocol": "text",
        "arm": "text",
        "seed": "integer",
        "lr": "number",
        "status": "text",
        "train_error": "number",
        "test_error": "number",
        "steps_trained": "number",
    },
    key=("protocol", "arm", "seed"),
    required=("seed", "lr"),
    checks=(_rates,),
)


MECHANISM_MEASURES = Schema(
    columns={
        "protocol": "text",
        "comparison": "text",
        "measure": "text",
        "role": "text",
        "n": "integer",
        "ratio": "number",
        "log_low": "number",
        "log_high": "number",
        "p": "number",
        "way": "text",
    },
    key=("protocol", "comparison", "measure"),
    required=("ratio", "p"),
)
MECHANISM_WITHIN = Schema(
    columns={
        "protocol": "text",
        "comparison": "text",
        "measure": "text",
        "n": "integer",
        "slope_within": "number",
        "slope_between": "number",
        "reading": "text",
    },
    key=("protocol", "comparison", "measure"),
    required=("slope_within",),
)
FAMILY_FLOORS = Schema(
    columns={
        "protocol": "text",
        "comparison": "text",
        "part": "text",
        "n_seeds": "integer",
        "p_raw": "number",
        "p_floor": "number",
        "at_floor": "flag",
        "family_size": "integer",
    },
    key=("protocol", "comparison", "part"),
    required=("p_raw", "p_floor"),
)
MECHANISM_INTERVENTION = Schema(
    columns={"protocol": "text", "arm": "text", "measure": "text", "n": "integer",
             "error_closed": "number", "measure_closed": "number", "ratio": "number"},
    key=("protocol", "arm"),
)  # fmt: skip
BY_NAME = {
    "mechanism_intervention": MECHANISM_INTERVENTION,
    "mechanism_measures": MECHANISM_MEASURES,
    "mechanism_within": MECHANISM_WITHIN,
    "family_floors": FAMILY_FLOORS,
}


def schema_for(name: str) -> Schema | None:
    """The schema of table ``name`` (the file's stem), if it has one."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name == "verdicts":
        return VERDICTS
    if name.startswith("paired_"):
        return PAIRED
    if name == "protocol_runs":
        return PROTOCOL_RUNS
    return None


def load(tables: Path, name: str) -> pd.DataFrame | None:
    """Table ``name`` of ``tables``, checked (None where the analysis did not write it): the one way
    the report reads a table."""
    path = tables / f"{name}.csv"
    return read_table(path) if path.exists() else None


def read_table(path: Path) -> pd.DataFrame:
    """A table read and checked against its schema (tables without one are read as they are)."""
    df = pd.read_csv(path)
    schema = schema_for(path.stem)
    return validate(df, schema, str(path)) if schema else df
