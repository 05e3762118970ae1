"""Whether a verdict holds when a reasonable choice changes: the effect against each arm's learning
rate, and a robustness label per verdict, applied by one function (:func:`robustness_label`).

A *condition* re-reads one comparison with one choice changed against today's (the endpoint, the
sharpness measure; the rate rule and the schedule when their runs exist), on paired seeds, outside
the report's Holm family. Each condition gets the verdict rule itself
(:func:`experiments.analyse.verdicts.decide`: its sign-flip p, Holm-adjusted over that part's
declared conditions, those not read yet counted with p = 1, and its TOST against the part's margin), and is compared with today's reading seed by
seed; a shift counts only when it is significant (paired t, Holm over the conditions) and its
interval lies beyond half the margin, so that a tiny but consistent shift is no "dependence".

    today              the rule at condition X / its shift from today               reads
    not comparable     (any)                                                        not comparable today
    (any)              no condition read (none run yet, or a seed missed)           untested (says which)
    reproduced or      the other directional verdict                                depends on X (reverses)
    reversed (sign s)  not reproduced (equivalent within the margin)                depends on X (vanishes)
                       a relevant shift                                             depends on X (weaker|stronger)
                       inconclusive, sign s kept                                    robust in sign, underpowered under X
                       inconclusive, sign s lost                                    sign not kept under X
                       today's verdict                                              robust
    not reproduced     reproduced or reversed                                       depends on X (an effect, sign)
    (TOST)             a relevant shift                                             depends on X (differs)
                       inconclusive                                                 equivalence not shown under X
                       not reproduced                                               robust
    inconclusive       reproduced or reversed                                       depends on X (significant, sign)
                       not reproduced                                               depends on X (equivalent)
                       inconclusive                                                 inconclusive under every condition

"Depends" outranks "sign not kept", which outranks "underpowered" / "equivalence not shown", which
outrank "robust"; every label ends with the conditions it was read under, so "robust" is never more
than robust to those. A condition not run yet is *untested*; one where a seed missed its criterion
is *not comparable*: both are named and neither counts as evidence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.stats import holm, t_interval
from experiments.analyse.tune import choose_rates, condition_rates, condition_search, read_rates
from experiments.analyse.verdicts import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    REVERSED,
    decide,
    part_test,
    rule_parts,
)
from experiments.conditions import CONDITION, SEARCH
from experiments.criterion import reached_rows
from experiments.plan import tuned_arms
from experiments.robust import BUDGET, ENDPOINT, GRID, block, frozen, read_records, robust_arms
from experiments.store import write_table

ROBUST = "robust"
UNTESTED = "untested"
NOT_RUN = "not run yet"


@dataclass(frozen=True)
class Condition:
    """One condition's paired reading of a comparison's part: a − b over its seeds.

    ``status``: ``"read"``, ``NOT_COMPARABLE`` (a seed missed its criterion) or ``NOT_RUN``.
    ``p`` (sign-flip) tests a − b ≠ 0, ``p_tost`` its equivalence within the margin; ``shift_*`` is
    the paired t interval of (a − b at X) − (a − b today) over the seeds both share, ``p_shift`` its
    p (NaN where the condition reads another quantity, e.g. another sharpness measure)."""

    name: str
    status: str = "read"
    mean: float = math.nan
    p: float = math.nan
    p_tost: float = math.nan
    p_shift: float = math.nan
    shift_low: float = math.nan
    shift_high: float = math.nan


def _sign(x: float) -> str:
    return "+" if x > 0 else "−"


def robustness_label(
    today: str,
    today_mean: float,
    conditions: Sequence[Condition],
    *,
    direction: str,
    margin: float,
    alpha: float = 0.05,
) -> str:
    """The robustness label of a part whose verdict today is ``today`` (mean a − b
    ``today_mean``; the part's claimed ``direction`` and equivalence ``margin``, on the scale it is
    tested on), from its readings under ``conditions`` (see the module docstring)."""
    if today == NOT_COMPARABLE:
        return "not comparable today"
    if today not in (REPRODUCED, REVERSED, NOT_REPRODUCED, INCONCLUSIVE):
        raise ValueError(f"unknown part verdict {today!r}")
    read = [c for c in conditions if c.status == "read"]
    aside = [f"{c.name}: {c.status}" for c in conditions if c.status != "read"]
    tail = f" [read under: {', '.join(c.name for c in read)}]" if read else ""
    tail += f" [{'; '.join(aside)}]" if aside else ""
    if not read:
        return f"{UNTESTED}{tail}"
    # Holm over every declared condition, those not read counted with p = 1: a label does not
    # change as later conditions arrive merely because the family it was adjusted over grew
    unread = [1.0] * (len(conditions) - len(read))
    p_adj = holm([c.p for c in read] + unread)[: len(read)]
    shifts = [c.p_shift for c in read]
    has_shift = [math.isfinite(x) for x in shifts]
    finite = [x for x in shifts if math.isfinite(x)]
    shift_adj = iter(holm(finite + unread)[: len(finite)] if any(has_shift) else [])
    s = 1 if today_mean > 0 else -1
    depends, signless, weak = [], [], []
    for c, p, has in zip(read, p_adj, has_shift, strict=True):
        verdict = decide(p, c.mean, direction, c.p_tost, alpha)
        p_shift = next(shift_adj) if has else math.nan
        relevant = p_shift < alpha and (c.shift_low > margin / 2 or c.shift_high < -margin / 2)
        if today in (REPRODUCED, REVERSED):
            if verdict in (REPRODUCED, REVERSED) and verdict != today:
                depends.append(f"{c.name} (reverses)")
            elif verdict == NOT_REPRODUCED:
                depends.append(f"{c.name} (vanishes)")
            elif relevant:
                direction_of = "weaker" if (c.shift_low + c.shift_high) * s < 0 else "stronger"
                depends.append(f"{c.name} ({direction_of})")
            elif verdict == INCONCLUSIVE:
                (weak if c.mean * s > 0 else signless).append(c.name)
        elif today == NOT_REPRODUCED:
            if verdict in (REPRODUCED, REVERSED):
                depends.append(f"{c.name} (an effect, {_sign(c.mean)})")
            elif relevant:
                depends.append(f"{c.name} (differs)")
            elif verdict == INCONCLUSIVE:
                weak.append(c.name)
        elif verdict in (REPRODUCED, REVERSED):  # inconclusive today
            depends.append(f"{c.name} (significant, {_sign(c.mean)})")
        elif verdict == NOT_REPRODUCED:
            depends.append(f"{c.name} (equivalent)")
    if depends:
        return f"depends on {'; '.join(depends)}{tail}"
    if signless:
        return f"sign not kept under {', '.join(signless)}{tail}"
    if today == INCONCLUSIVE:
        return f"inconclusive under every condition{tail}"
    if weak:
        lead = (
            "equivalence not shown" if today == NOT_REPRODUCED else "robust in sign, underpowered"
        )
        return f"{lead} under {', '.join(weak)}{tail}"
    return f"{ROBUST}{tail}"


def rate_curve(
    grid: pd.DataFrame,
    a: str,
    b: str,
    quantity: str = "test_error",
    alpha: float = 0.05,
    planned: int | None = None,
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
            complete = planned is None or len(seeds) >= planned  # else: not all run yet
            comparable = complete and len(seeds) >= 2 and reached_a == reached_b == len(seeds)
            mean = low = high = math.nan
            if comparable:
                d = va.loc[seeds, quantity].to_numpy(float) - vb.loc[seeds, quantity].to_numpy(
                    float
                )
                mean, _, low, high, _ = t_interval(d, alpha)
            rows.append(
                {"moving": moving, "multiplier": float(m), "n": len(seeds),
                 "planned": len(seeds) if planned is None else planned,
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
        curve = rate_curve(grid, c["a"], c["b"], c["rule"]["quantity"], r.get("alpha", 0.05),
                           planned=len(r["seeds"]))  # fmt: skip
        rows.append(curve.assign(comparison=c["name"], a=c["a"], b=c["b"]))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def grid_runs(p: dict, records: pd.DataFrame, today: pd.DataFrame) -> pd.DataFrame:
    """The runs the rate figure draws: the grid's records and the final runs at ×1 (run ids)."""
    r = block(p)
    arms = {a for c in p["comparisons"] if c["name"] in r["comparisons"] for a in (c["a"], c["b"])}
    finals = today[today["arm"].isin(arms) & today["seed"].isin(r["seeds"])]
    finals = finals.assign(multiplier=1.0, run_id=finals["run_dir"].map(lambda d: Path(d).name))
    grid = _records(records, GRID)
    cols = ["arm", "multiplier", "seed", "run_id", "reached"]
    both = pd.concat([finals[cols], grid[cols]], ignore_index=True)
    return both.sort_values(["arm", "multiplier", "seed"]).reset_index(drop=True)


def _of_condition(records: pd.DataFrame, kind: str, name: str) -> pd.DataFrame:
    mine = _records(records, kind)
    if "condition" not in mine:
        return mine.iloc[0:0]
    return mine[mine["condition"] == name]


def condition_choice(p: dict, records: pd.DataFrame, rates: dict) -> pd.DataFrame:
    """Per condition and arm: today's rate, the condition's, how it was chosen and whether the
    condition has runs of its own (:func:`experiments.analyse.tune.condition_rates`), and for a
    searched rate how the choice moves over two-seed subsets and leave-one-outs of its search."""
    rows = []
    for cond in block(p).get("conditions") or []:
        search = _of_condition(records, SEARCH, cond["name"])
        choice = condition_rates(p, cond, robust_arms(p), rates, search)
        runs = condition_search(p, cond, search)
        moves = choice_stability(runs) if len(runs) else pd.DataFrame()
        for r in choice.itertuples():
            row = {"condition": cond["name"], **r._asdict()}
            row.pop("Index")
            if len(moves):
                lrs = moves[(moves["arm"] == r.arm) & (moves["kind"] != "all")]["lr"]
                row["subsets"] = len(lrs)
                row["subsets_same"] = int(np.isclose(lrs, r.lr).sum())
                row["subset_rates"] = " ".join(f"{v:g}" for v in sorted(set(lrs.dropna())))
            rows.append(row)
    return pd.DataFrame(rows)


def condition_values(p: dict, cond: dict, records: pd.DataFrame, choice: pd.DataFrame,
                     today: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """A condition's final runs: its own records for the arms it changes, today's for the rest."""
    mine = choice[choice["condition"] == cond["name"]] if len(choice) else choice
    own = set(mine[mine["runs"].astype(bool)]["arm"]) if len(mine) else set()
    same = set(mine[~mine["runs"].astype(bool) & mine["lr"].notna()]["arm"]) if len(mine) else set()
    finals = _of_condition(records, CONDITION, cond["name"])
    return pd.concat(
        [finals[finals["arm"].isin(own)], today[today["arm"].isin(same)]], ignore_index=True
    )


# Other sharpness measures a mechanism part is read with, where the protocol measured them: the
# choice of measure is a choice too (Dinh et al. 2017: λmax moves under rescaling; adaptive
# sharpness does not)
MEASURES = ("adaptive_worst_case_sharpness", "keskar_sharpness")


def _measures(p: dict, comparison: str) -> list[str]:
    """The sharpness measures a mechanism part is read under: the protocol's ``mechanism`` block
    (its primary for this comparison first, then the measures shown beside it; issue 27), then
    the defaults above."""
    m = p.get("mechanism") or {}
    primary = (m.get("per_comparison") or {}).get(comparison, m.get("primary"))
    named = [primary, *(m.get("secondary") or []), *MEASURES]
    return [x for x in dict.fromkeys(named) if x]


def _test_scale(part, wide: pd.DataFrame, a: str, b: str) -> pd.Series:
    return np.log(wide[a]) - np.log(wide[b]) if part.relative else wide[a] - wide[b]


def _condition(
    name: str,
    part,
    quantity: str,
    c: dict,
    values: pd.DataFrame,
    today: pd.DataFrame | None,
    seeds: list[int],
    alpha: float,
) -> tuple[Condition, dict]:
    """A condition's reading of one part on ``seeds`` (all of them, or it is not read): not run
    where a seed's record is missing, not comparable where a seed missed its criterion."""
    a, b = c["a"], c["b"]
    mine = values[values["arm"].isin([a, b]) & values["seed"].isin(seeds)]
    have = set(zip(mine["arm"], mine["seed"], strict=True))
    info = {"condition": name, "quantity": quantity, "n": len(seeds),
            "recorded": len(have), "reached_both": 0}  # fmt: skip
    if len(have) < 2 * len(seeds) or quantity not in mine:
        return Condition(name, f"{NOT_RUN} ({len(have)} of {2 * len(seeds)} runs)"), info
    ok = mine.pivot_table(index="seed", columns="arm", values="reached", aggfunc="all")
    info["reached_both"] = int(ok[[a, b]].all(axis=1).sum())
    wide = mine.pivot_table(index="seed", columns="arm", values=quantity)
    if info["reached_both"] < len(seeds) or wide[[a, b]].isna().any().any():
        return Condition(name, NOT_COMPARABLE), info
    test = part_test(replace(part, quantity=quantity), wide[a], wide[b], alpha=alpha)  # margin kept
    shift = dict(p_shift=math.nan, shift_low=math.nan, shift_high=math.nan)
    if today is not None:
        now = today[today["arm"].isin([a, b])].pivot_table(
            index="seed", columns="arm", values=part.quantity
        )
        d = (_test_scale(part, wide, a, b) - _test_scale(part, now.loc[wide.index], a, b)).to_numpy(
            float
        )
        if np.all(np.abs(d) < 1e-12):  # the same numbers: no shift (not a t-test on rounding)
            shift = dict(p_shift=1.0, shift_low=0.0, shift_high=0.0)
        else:
            mean, _, lo, hi, p_t = t_interval(d, alpha)
            shift = dict(p_shift=p_t, shift_low=lo, shift_high=hi)
    info.update(mean_diff=test.mean_diff, ci_low=test.ci_low, ci_high=test.ci_high,
                p=test.p_signflip, p_tost=test.p_tost, **shift)  # fmt: skip
    return Condition(name, "read", test.mean_diff, test.p_signflip, test.p_tost, **shift), info


def condition_table(
    p: dict,
    records: pd.DataFrame,
    today: pd.DataFrame,
    verdicts: pd.DataFrame,
    choice: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per comparison and rule part: today's reading and verdict, each condition's reading, and the
        robustness label (:func:`robustness_label`). Conditions: the second endpoint (its records),
        each of the block's ``conditions`` (its final runs, today's where it changes nothing for an arm;
    ``choice`` from :func:`condition_choice`), and for a mechanism part each other sharpness measure
    the protocol measured (today's runs)."""
    r = block(p)
    alpha = r.get("alpha", 0.05)
    end = _records(records, ENDPOINT)
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
            readings, infos = [], []
            if r.get("endpoint_factor") is not None:
                name = f"endpoint: CE × {r['endpoint_factor']:g}"
                got = _condition(name, part, part.quantity, c, end, today, list(p["seeds"]), alpha)
                readings.append(got[0]), infos.append(got[1])
            if r.get("budget_endpoint"):
                got = _condition("endpoint: whole step budget", part, part.quantity, c,
                                 _records(records, BUDGET), today, list(p["seeds"]), alpha)  # fmt: skip
                readings.append(got[0]), infos.append(got[1])
            for cond in r.get("conditions") or []:
                values = condition_values(p, cond, records, choice, today)
                got = _condition(cond["name"], part, part.quantity, c, values, today,
                                 list(cond["seeds"]), alpha)  # fmt: skip
                readings.append(got[0]), infos.append(got[1])
            if part.part == "mechanism":
                for measure in _measures(p, c["name"]):
                    if measure in today and measure != part.quantity:
                        got = _condition(f"measure: {measure}", part, measure, c, today, None,
                                         list(p["seeds"]), alpha)  # fmt: skip
                        readings.append(got[0]), infos.append(got[1])
            margin = math.log1p(part.margin) if part.relative else part.margin
            label = robustness_label(v["part_verdict"], v["mean_diff"], readings,
                                     direction=part.direction, margin=margin, alpha=alpha)  # fmt: skip
            base = {"protocol": p["name"], "comparison": c["name"], "part": part.part,
                    "verdict_today": v["part_verdict"], "label": label}  # fmt: skip
            rows.append({**base, "condition": "today", "quantity": part.quantity,
                         "n": len(p["seeds"]), "recorded": math.nan, "reached_both": math.nan,
                         "mean_diff": v["mean_diff"], "ci_low": v["ci_low"], "ci_high": v["ci_high"],
                         "p": v["p_raw"], "p_tost": v["p_tost"]})  # fmt: skip
            rows += [{**base, **info} for info in infos]
    return pd.DataFrame(rows)


def write_robustness(p: dict, records_dir: Path, tables: Path) -> list[Path]:
    """``robust_rate_<name>``, ``robust_runs_<name>`` (the runs the rate figure draws) and
    ``robustness_<name>`` (csv and md) from the frozen records and the committed verdict tables."""
    records = frozen(p, read_records(p, records_dir))
    runs = pd.read_csv(tables / "protocol_runs.csv")
    metrics_path = tables / "run_metrics.csv"
    metrics = pd.read_csv(metrics_path) if metrics_path.exists() else None
    today = _today(p, runs, metrics)
    verdicts = pd.read_csv(tables / "verdicts.csv")
    choice = (
        condition_choice(p, records, read_rates(p, tables)) if tuned_arms(p) else pd.DataFrame()
    )
    write_table(grid_curves(p, records, today), tables, f"robust_rate_{p['name']}")
    write_table(grid_runs(p, records, today), tables, f"robust_runs_{p['name']}")
    table = condition_table(p, records, today, verdicts, choice)
    write_table(table, tables, f"robustness_{p['name']}")
    written = ["robust_rate", "robust_runs", "robustness"]
    if len(choice):
        write_table(choice, tables, f"robust_choice_{p['name']}")
        written.append("robust_choice")
    return [tables / f"{t}_{p['name']}.csv" for t in written]
