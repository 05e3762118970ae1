"""Whether a verdict holds when a reasonable choice changes: the effect against each arm's learning
rate, and a robustness label per verdict, applied by one function (:func:`robustness_label`).

A *condition* re-reads one comparison with one factor changed against today's (the rate, the rule
that picks it, the schedule, the endpoint), on paired seeds. Conditions stay outside the Holm family:
their p-values are unadjusted and only qualify a verdict, they never make one.

The label, from today's part verdict (``experiments.analyse.verdicts``) and each condition's paired
reading; α is the protocol's, a condition that is not comparable (an arm missed its criterion in
some seed) is named and never counts as evidence either way:

    today              a condition X                                          reads
    not comparable     (any)                                                  not comparable today
    (any)              no condition comparable                                untested (names X)
    reproduced or      significant the other way (p < α)                      depends on X (reverses)
    reversed (sign s)  differs from today, paired over seeds (p < α)          depends on X (weaker|stronger)
                       sign s kept but p ≥ α                                  robust in sign, underpowered under X
                       otherwise, at every X                                  robust
    not reproduced     an effect, p < α                                       depends on X (an effect, sign)
    (TOST)             differs from today, paired (p < α)                     depends on X (differs)
                       TOST p ≥ α                                             equivalence not shown under X
                       otherwise, at every X                                  robust
    inconclusive       significant at X                                       depends on X (significant, sign)
                       otherwise                                              inconclusive under every condition

Dependence outranks being underpowered, which outranks robust: one condition that reverses the
effect makes the verdict "depends on X" whatever the others say.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.stats import t_interval
from experiments.analyse.tune import choose_rates
from experiments.analyse.verdicts import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    REVERSED,
    part_test,
    rule_parts,
)
from experiments.criterion import reached_rows
from experiments.robust import ENDPOINT, GRID, block, frozen, read_records
from experiments.store import write_table

ROBUST = "robust"
UNTESTED = "untested"


@dataclass(frozen=True)
class Condition:
    """One condition's paired reading of a comparison's part: a − b over its seeds.

    ``p`` tests a − b ≠ 0 at the condition, ``p_tost`` its equivalence within the part's margin,
    ``p_vs_today`` whether it differs from today's a − b over the seeds both share (NaN: none)."""

    name: str
    comparable: bool
    mean: float = math.nan
    p: float = math.nan
    p_tost: float = math.nan
    p_vs_today: float = math.nan


def _sign(x: float) -> str:
    return "+" if x > 0 else "−"


def robustness_label(
    today: str, today_mean: float, conditions: Sequence[Condition], alpha: float = 0.05
) -> str:
    """The robustness label of a part whose verdict today is ``today`` (mean a − b ``today_mean``),
    from its readings under ``conditions`` (see the module docstring)."""
    if today == NOT_COMPARABLE:
        return "not comparable today"
    usable = [c for c in conditions if c.comparable]
    skipped = [c.name for c in conditions if not c.comparable]
    if not usable:
        return f"{UNTESTED} (not comparable under {', '.join(skipped)})" if skipped else UNTESTED
    depends, weak = [], []
    s = 1 if today_mean > 0 else -1
    for c in usable:
        significant = c.p < alpha
        differs = c.p_vs_today < alpha  # NaN compares false: no shared seeds, no evidence
        if today in (REPRODUCED, REVERSED):
            if significant and c.mean * s < 0:
                depends.append(f"{c.name} (reverses)")
            elif differs:
                direction = "weaker" if (c.mean - today_mean) * s < 0 else "stronger"
                depends.append(f"{c.name} ({direction})")
            elif not significant:
                weak.append(c.name)
        elif today == NOT_REPRODUCED:
            if significant:
                depends.append(f"{c.name} (an effect, {_sign(c.mean)})")
            elif differs:
                depends.append(f"{c.name} (differs)")
            elif not c.p_tost < alpha:
                weak.append(c.name)
        elif today == INCONCLUSIVE:
            if significant:
                depends.append(f"{c.name} (significant, {_sign(c.mean)})")
        else:
            raise ValueError(f"unknown part verdict {today!r}")
    tail = f"; not comparable under {', '.join(skipped)}" if skipped else ""
    if depends:
        return f"depends on {'; '.join(depends)}{tail}"
    if today == INCONCLUSIVE:
        return f"inconclusive under every condition{tail}"
    if weak:
        lead = (
            "equivalence not shown" if today == NOT_REPRODUCED else "robust in sign, underpowered"
        )
        return f"{lead} under {', '.join(weak)}{tail}"
    return f"{ROBUST}{tail}"


def rate_curve(
    grid: pd.DataFrame, a: str, b: str, quantity: str = "test_error", alpha: float = 0.05
) -> pd.DataFrame:
    """The effect a − b against one arm's rate, the other held at its chosen rate (×1): one row per
    slice (``moving`` a or b) and multiplier, with how many of the seeds reached the criterion in
    each arm, and the paired mean with its pointwise t band (1 − α) over *all* the point's seeds.

    ``grid`` has columns arm, multiplier, seed, reached, and ``quantity``. A point where some seed
    of either arm missed its criterion is not comparable: its mean and band are NaN, never computed
    on the seeds that happened to reach (that would select on the outcome). Descriptive: with a
    handful of seeds no point is a test, and none enters the family."""
    rows = []
    for moving, still in ((a, b), (b, a)):
        base = grid[(grid["arm"] == still) & np.isclose(grid["multiplier"], 1.0)].set_index("seed")
        for m, part in grid[grid["arm"] == moving].groupby("multiplier"):
            moved = part.set_index("seed")
            seeds = sorted(set(moved.index) & set(base.index))
            va, vb = (moved, base) if moving == a else (base, moved)
            reached_a = int(va.loc[seeds, "reached"].astype(bool).sum())
            reached_b = int(vb.loc[seeds, "reached"].astype(bool).sum())
            comparable = len(seeds) >= 2 and reached_a == reached_b == len(seeds)
            mean = low = high = math.nan
            if comparable:
                d = va.loc[seeds, quantity].to_numpy(float) - vb.loc[seeds, quantity].to_numpy(
                    float
                )
                mean, _, low, high, _ = t_interval(d, alpha)
            rows.append(
                {"moving": moving, "multiplier": float(m), "n": len(seeds),
                 "reached_a": reached_a, "reached_b": reached_b, "comparable": comparable,
                 "mean": mean, "low": low, "high": high}
            )  # fmt: skip
    return pd.DataFrame(rows)


def choice_stability(
    search: pd.DataFrame, choose: Callable[[pd.DataFrame], pd.DataFrame] = choose_rates
) -> pd.DataFrame:
    """How the rate a rule picks moves with the search seeds: per arm, the choice from every seed,
    then from each subset of two seeds and each leave-one-out (``subset`` names the seeds used).

    ``search`` holds one row per search run (arm, lr, seed, reached, val_error, and optionally
    within, steps), as :func:`experiments.analyse.tune.choose_rates` reads it; ``choose`` is the
    rule (today's by default). An arm with no eligible rate in a subset gets NaN."""
    rows = []
    seeds = sorted(search["seed"].unique())
    subsets = [("all", tuple(seeds))]
    subsets += [("two", pair) for pair in itertools.combinations(seeds, 2)]
    if len(seeds) > 2:
        subsets += [("leave one out", tuple(x for x in seeds if x != out)) for out in seeds]
    for kind, used in subsets:
        table = choose(search[search["seed"].isin(used)])
        for arm in search["arm"].unique():
            chosen = table[(table["arm"] == arm) & table["chosen"]]
            lr = float(chosen["lr"].iloc[0]) if len(chosen) else math.nan
            rows.append({"arm": arm, "kind": kind, "subset": " ".join(map(str, used)), "lr": lr})
    return pd.DataFrame(rows)


# --- the tables, from the committed records and the verdicts' tables ------------------------------


def _today(p: dict, runs: pd.DataFrame, metrics: pd.DataFrame | None) -> pd.DataFrame:
    """The final runs at the criterion (×1, today's condition): arm, seed, reached, the quantities."""
    mine = runs[runs["protocol"] == p["name"]].copy()
    mine["reached"] = reached_rows(mine)
    if metrics is not None:
        m = metrics[metrics["protocol"] == p["name"]].pivot_table(
            index=["arm", "seed"], columns="metric", values="value"
        )
        mine = mine.join(m, on=["arm", "seed"])
    return mine


def _records(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    mine = table[table["kind"] == kind].copy()
    mine.columns = [c.removeprefix("metric.") for c in mine.columns]
    mine["reached"] = mine["reached"].astype(str).eq("True")
    return mine


def grid_curves(p: dict, records: pd.DataFrame, today: pd.DataFrame) -> pd.DataFrame:
    """:func:`rate_curve` of every comparison the block names, on its grid seeds, ×1 from today."""
    r = block(p)
    at_one = today[today["seed"].isin(r["seeds"])].assign(multiplier=1.0)
    grid = pd.concat([at_one, _records(records, GRID)], ignore_index=True)
    rows = []
    for c in p["comparisons"]:
        if c["name"] not in r["comparisons"]:
            continue
        curve = rate_curve(grid, c["a"], c["b"], c["rule"]["quantity"], r.get("alpha", 0.05))
        rows.append(curve.assign(comparison=c["name"], a=c["a"], b=c["b"]))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _reading(part, c: dict, values: pd.DataFrame, today: pd.DataFrame, alpha: float):
    """A condition's :class:`Condition` for one rule part: paired a − b over every seed (not
    comparable where a seed missed its criterion in either arm), and its difference from today's."""
    wide = values.pivot_table(index="seed", columns="arm", values=part.quantity)
    ok = values.pivot_table(index="seed", columns="arm", values="reached", aggfunc="all")
    arms = [c["a"], c["b"]]
    if not set(arms) <= set(wide.columns) or not ok[arms].all().all() or len(wide) < 2:
        return None, None
    test = part_test(part, wide[c["a"]], wide[c["b"]], alpha=alpha)
    now = today.pivot_table(index="seed", columns="arm", values=part.quantity).loc[wide.index]
    d_x, d_now = (
        (np.log(w[c["a"]]) - np.log(w[c["b"]])) if part.relative else (w[c["a"]] - w[c["b"]])
        for w in (wide, now)
    )
    vs = t_interval((d_x - d_now).to_numpy(float), alpha)[4] if (d_x != d_now).any() else 1.0
    return test, vs


def condition_table(
    p: dict, records: pd.DataFrame, today: pd.DataFrame, verdicts: pd.DataFrame
) -> pd.DataFrame:
    """Per comparison and rule part: today's verdict, each condition's paired reading (so far the
    second endpoint), and the robustness label (:func:`robustness_label`)."""
    r = block(p)
    alpha = r.get("alpha", 0.05)
    conditions = {}
    end = _records(records, ENDPOINT)
    if len(end):
        factor = r.get("endpoint_factor")
        conditions[f"endpoint: CE × {factor:g}"] = end
    rows = []
    for c in p["comparisons"]:
        if c["name"] not in r["comparisons"]:
            continue
        for part in rule_parts(c["rule"]):
            v = verdicts[
                (verdicts["protocol"] == p["name"])
                & (verdicts["comparison"] == c["name"])
                & (verdicts["part"] == part.part)
            ].iloc[0]
            readings = []
            for name, values in conditions.items():
                mine = values[values["arm"].isin([c["a"], c["b"]])]
                test, vs = (
                    _reading(part, c, mine, today, alpha) if part.quantity in mine else (None, None)
                )
                n = mine["seed"].nunique()
                reached_n = int(mine.groupby("seed")["reached"].all().sum()) if n else 0
                if test is None:
                    readings.append(Condition(name, False))
                    rows.append(_row(p, c, part, v, name, n, reached_n, None, math.nan))
                else:
                    readings.append(
                        Condition(name, True, test.mean_diff, test.p_signflip, test.p_tost, vs)
                    )
                    rows.append(_row(p, c, part, v, name, n, reached_n, test, vs))
            label = robustness_label(v["part_verdict"], v["mean_diff"], readings, alpha)
            rows.append(_row(p, c, part, v, "today", len(p["seeds"]), None, None, math.nan, label))
    table = pd.DataFrame(rows)
    labels = table[table["condition"] == "today"].set_index(["comparison", "part"])["label"]
    table["label"] = [labels[c, q] for c, q in zip(table["comparison"], table["part"], strict=True)]
    return table


def _row(p, c, part, v, condition, n, reached_n, test, vs, label=""):
    today = condition == "today"
    return {
        "protocol": p["name"], "comparison": c["name"], "part": part.part,
        "quantity": part.quantity, "condition": condition, "n": n, "reached_both": reached_n,
        "mean_diff": v["mean_diff"] if today else (test.mean_diff if test else math.nan),
        "ci_low": v["ci_low"] if today else (test.ci_low if test else math.nan),
        "ci_high": v["ci_high"] if today else (test.ci_high if test else math.nan),
        "p": v["p_raw"] if today else (test.p_signflip if test else math.nan),
        "p_tost": v["p_tost"] if today else (test.p_tost if test else math.nan),
        "p_vs_today": vs, "verdict_today": v["part_verdict"], "label": label,
    }  # fmt: skip


def write_robustness(p: dict, records_dir: Path, tables: Path) -> list[Path]:
    """``robust_rate_<name>.csv|md`` and ``robustness_<name>.csv|md`` from the frozen records and
    the committed verdict tables."""
    records = frozen(p, read_records(p, records_dir))
    runs = pd.read_csv(tables / "protocol_runs.csv")
    metrics_path = tables / "run_metrics.csv"
    metrics = pd.read_csv(metrics_path) if metrics_path.exists() else None
    today = _today(p, runs, metrics)
    verdicts = pd.read_csv(tables / "verdicts.csv")
    write_table(grid_curves(p, records, today), tables, f"robust_rate_{p['name']}")
    write_table(condition_table(p, records, today, verdicts), tables, f"robustness_{p['name']}")
    return [tables / f"robust_rate_{p['name']}.csv", tables / f"robustness_{p['name']}.csv"]
