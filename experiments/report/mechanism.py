"""A claim's mechanism under every measure, within arms, and the family's floors (issue 27), from
the analysis's tables ``mechanism_measures.csv``, ``mechanism_within.csv`` and
``family_floors.csv``; the sentences are ``templates/mechanism*.j2``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from experiments.analyse.schemas import load
from experiments.report import templating

SHORT = {  # labels, not prose: the measures' names in the verdict table
    "lambda_max": "λmax",
    "keskar_sharpness": "Keskar",
    "adaptive_worst_case_sharpness": "adaptive worst-case",
    "adaptive_average_sharpness": "adaptive average",
}


def _short(measure: str) -> str:
    return SHORT.get(measure, measure)


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """The primary measure first, then the others as the analysis listed them."""
    return rows.assign(_first=rows["role"] != "primary").sort_values("_first", kind="stable")


def verdict_cells(tables: Path) -> dict[tuple[str, str], dict[str, str]]:
    """``{(protocol, comparison): {"by measure": ..., "within arms": ...}}`` for the verdict table:
    a/b under each measure with the way it points (the primary first), and the primary measure's
    within-arm reading."""
    measures = load(tables, "mechanism_measures")
    within = load(tables, "mechanism_within")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    if measures is None or not len(measures):
        return cells
    for (proto, comp), rows in measures.groupby(["protocol", "comparison"], sort=False):
        rows = _ordered(rows)
        by = ", ".join(
            f"{_short(r.measure)}{' (primary)' if r.role == 'primary' else ''} ×{r.ratio:.3g} {r.way}"
            for r in rows.itertuples()
        )
        reading = "–"
        primary = rows[rows["role"] == "primary"]["measure"]
        if within is not None and len(primary):
            w = within[
                (within["protocol"] == proto)
                & (within["comparison"] == comp)
                & (within["measure"] == primary.iloc[0])
            ]
            if len(w):
                reading = w["reading"].iloc[0]
        cells[(proto, comp)] = {"by measure": by, "within arms": reading}
    return cells


def mechanism_lines(p: dict, tables: Path) -> list[str]:
    """A protocol's mechanism readings (nothing where the analysis wrote none for it)."""
    measures = load(tables, "mechanism_measures")
    within = load(tables, "mechanism_within")
    if measures is None or not len(measures) or p["name"] not in set(measures["protocol"]):
        return []
    done = load(tables, "mechanism_intervention")
    done = done[done["protocol"] == p["name"]] if done is not None else None
    mine = measures[measures["protocol"] == p["name"]]
    shown = pd.concat([_ordered(g) for _, g in mine.groupby("comparison", sort=False)])
    shown = shown.assign(
        ratio_interval=[
            f"×{r.ratio:.3g} [{math.exp(r.log_low):.3g}, {math.exp(r.log_high):.3g}]"
            for r in shown.itertuples()
        ]
    )[["comparison", "measure", "role", "invariant", "ratio_interval", "seeds_up", "p", "way",
       "agreement"]]  # fmt: skip
    w = within[within["protocol"] == p["name"]] if within is not None else within
    slopes = (
        w.assign(
            within_pts=[
                f"{100 * r.slope_within:+.2f} [{100 * r.within_low:+.2f}, {100 * r.within_high:+.2f}]"
                for r in w.itertuples()
            ],
            between_pts=(100 * w["slope_between"]).map(lambda v: f"{v:+.2f}"),
            difference=[
                f"[{100 * r.diff_low:+.2f}, {100 * r.diff_high:+.2f}]" for r in w.itertuples()
            ],
        )[
            [
                "comparison",
                "measure",
                "n",
                "within_pts",
                "p_perm",
                "between_pts",
                "difference",
                "reading",
            ]
        ]
        if w is not None and len(w)
        else None
    )
    return templating.lines(
        "mechanism.md.j2",
        measures=shown.to_markdown(index=False, floatfmt=".3g"),
        within=slopes.to_markdown(index=False, floatfmt=".3g") if slopes is not None else None,
        intervention=done.to_markdown(index=False, floatfmt=".3g")
        if done is not None and len(done)
        else None,
    )


def floor_lines(tables: Path) -> list[str]:
    """The family's floors: each test's p beside the smallest p it could return."""
    floors = load(tables, "family_floors")
    if floors is None or not len(floors):
        return []
    at = int(floors["at_floor"].astype(bool).sum())
    return templating.lines(
        "mechanism_floors.md.j2",
        table=floors[
            [
                "protocol",
                "comparison",
                "part",
                "kind",
                "n_seeds",
                "p_raw",
                "p_floor",
                "at_floor",
                "seeds_for_power",
            ]  # fmt: skip
        ].to_markdown(index=False, floatfmt=".3g"),
        m=int(floors["family_size"].iloc[0]),
        threshold=float(floors["first_threshold"].iloc[0]),
        at=at,
        needed=floors["seeds_needed"].dropna().astype(int).max(),
    )
