"""The deck's explanations, described with paired intervals over seeds: computed once here from the
protocols' tables and written to ``explanation_intervals.csv``, which the report reads.

Descriptive, not tests of the family: each row is a paired t interval (95%) of a − b over the seeds
(:func:`experiments.analyse.stats.t_interval`), on the log scale for sharpness measures, or for
``closed`` the share of a gap an arm closes with a seed-bootstrap percentile interval (Efron &
Tibshirani 1993, §13). Rows by ``kind``:

- ``gap``, ``closed``, ``contrast`` (batch_norm): the large-minus-small gap in test error, the share of
  it each arm closes, and the contrasts that separate batch statistics from the number of updates;
- ``separation``, ``without_b1`` (averaged_sharpness): log(large/small) of each per-batch sharpness
  (Keskar's explanation 2), and of the averaging ratio with B = 1 left out;
- ``equal_loss`` (adam_escape): Adam against momentum at equal training loss, test error and sharpness.

    python -m experiments.analyse.explanations --tables results/tables
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.sharpness_by_batch import sharpness_by_b
from experiments.analyse.stats import t_interval

N_BOOT = 2000
TABLE = "explanation_intervals"
COLUMNS = [
    "protocol",
    "kind",
    "model",
    "measure",
    "quantity",
    "a",
    "b",
    "n",
    "mean",
    "low",
    "high",
    "p",
]
# Adam against momentum at equal training loss: the quantities and whether they are compared on
# the log scale (sharpness) or as a difference (error)
EQUAL_LOSS = (
    ("test_error", False),
    ("lambda_max", True),
    ("adaptive_worst_case_sharpness", True),
)


def _interval(d, **row) -> dict:
    d = np.asarray(d, dtype=float)
    mean, _, lo, hi, p = t_interval(d) if len(d) >= 2 else (math.nan,) * 5
    return {**row, "n": len(d), "mean": mean, "low": lo, "high": hi, "p": p}


def gap_closed(wide: pd.DataFrame, large: str, small: str, arm: str, seed: int = 0):
    """The share of the large-minus-small gap in test error that ``arm`` closes,
    mean(large − arm) / mean(large − small), with a 95% percentile interval from resampling seeds
    (the arms' values of one seed stay together)."""
    d_arm = (wide[large] - wide[arm]).to_numpy()
    d_gap = (wide[large] - wide[small]).to_numpy()
    share = d_arm.mean() / d_gap.mean() if d_gap.mean() != 0 else math.nan
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(N_BOOT):
        i = rng.integers(0, len(d_arm), len(d_arm))
        if d_gap[i].mean() != 0:
            draws.append(d_arm[i].mean() / d_gap[i].mean())
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (math.nan, math.nan)
    return float(share), float(lo), float(hi)


def batch_norm(name: str, runs: pd.DataFrame) -> list[dict]:
    wide = runs[runs["protocol"] == name].pivot(index="seed", columns="arm", values="test_error")
    need = {"bn_large", "bn_small", "ghost_large", "regime_large", "ghost_regime"}
    if not need <= set(wide.columns):
        return []
    rows = [_interval(wide["bn_large"] - wide["bn_small"], kind="gap", a="bn_large", b="bn_small")]
    for arm in ("ghost_large", "regime_large", "ghost_regime"):
        share, lo, hi = gap_closed(wide, "bn_large", "bn_small", arm)
        rows.append(
            {"kind": "closed", "a": arm, "b": "bn_large", "n": len(wide), "mean": share,
             "low": lo, "high": hi}
        )  # fmt: skip
    for a, b in (("bn_large", "ghost_large"), ("regime_large", "ghost_regime")):
        rows.append(_interval(wide[a] - wide[b], kind="contrast", a=a, b=b))
    return rows


def averaged(tidy: pd.DataFrame) -> list[dict]:
    rows = []
    for (model, measure, quantity), sub in tidy.groupby(
        ["model", "measure", "quantity"], sort=False
    ):
        wide = sub.pivot(index="seed", columns="batch", values="value")
        if not {"small", "large"} <= set(wide.columns):
            continue
        sep = np.log(wide["large"]) - np.log(wide["small"])
        rows.append(
            _interval(sep[np.isfinite(sep)], kind="separation", model=model, measure=measure,
                      quantity=quantity, a="large", b="small")
        )  # fmt: skip
    for model, sub in tidy[tidy["measure"].str.startswith("λ")].groupby("model", sort=False):
        wide_b = sub.pivot_table(index=["batch", "seed"], columns="B", values="value")
        bs = sorted(b for b in wide_b.columns if 4 <= b <= 64)
        ratio = np.exp(np.log(wide_b[bs]).mean(axis=1)) / wide_b[max(wide_b.columns)]
        sep = np.log(ratio.loc["large"]) - np.log(ratio.loc["small"])
        rows.append(_interval(sep.dropna(), kind="without_b1", model=model, a="large", b="small"))
    return rows


def equal_loss(name: str, runs: pd.DataFrame, metrics: pd.DataFrame) -> list[dict]:
    mine = metrics[(metrics["protocol"] == name) & metrics["arm"].isin(["adam", "momentum"])]
    if mine.empty:
        return []
    wide = mine.pivot_table(index=["arm", "seed"], columns="metric", values="value")
    test = runs[runs["protocol"] == name].set_index(["arm", "seed"])["test_error"]
    wide["test_error"] = test.reindex(wide.index)
    rows = []
    for quantity, log in EQUAL_LOSS:
        if quantity not in wide:
            continue
        a, m = wide.loc["adam", quantity], wide.loc["momentum", quantity]
        d = np.log(a) - np.log(m) if log else a - m
        rows.append(_interval(d, kind="equal_loss", quantity=quantity, a="adam", b="momentum"))
    return rows


def intervals(tables: Path) -> pd.DataFrame:
    """Every explanation protocol's intervals, from ``protocols.json``, ``protocol_runs.csv``,
    ``run_metrics.csv`` and ``paired_<protocol>.csv`` in ``tables``."""
    protocols = json.loads((tables / "protocols.json").read_text())
    runs = pd.read_csv(tables / "protocol_runs.csv")
    rows = []
    for p in protocols:
        name = p["name"]
        base = name.removesuffix("_full")
        found = []
        if base == "batch_norm":
            found = batch_norm(name, runs)
        elif base == "averaged_sharpness" and (tables / f"paired_{name}.csv").exists():
            found = averaged(sharpness_by_b(pd.read_csv(tables / f"paired_{name}.csv"), runs, name))
        elif base == "adam_escape" and (tables / "run_metrics.csv").exists():
            found = equal_loss(name, runs, pd.read_csv(tables / "run_metrics.csv"))
        rows += [{"protocol": name, **row} for row in found]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_intervals(tables: Path, out: Path | None = None) -> Path:
    """``explanation_intervals.csv`` in ``out`` (default ``tables``) from the tables in ``tables``."""
    path = (tables if out is None else out) / f"{TABLE}.csv"
    intervals(tables).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.analyse.explanations", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--tables", type=Path, default=Path("results/tables"))
    args = ap.parse_args(argv)
    print(f"wrote {write_intervals(args.tables)}")


if __name__ == "__main__":
    main()
