"""The learning-rate search of a protocol (``python -m experiments.protocol tune <name>``): every arm
x rate x search seed trained to the criterion, and the rule that picks each arm's rate on validation
only: the lowest mean validation error among the rates at which every search seed met the criterion
within ``tune.reach_within`` of the step budget, a choice at the grid's edge flagged. The table it
writes (``lr_<name>.csv|md``) is stamped with a hash of the search, so a changed protocol makes it
stale and the final runs refuse it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.criterion import reached
from experiments.errors import ProtocolError
from experiments.execute import execute
from experiments.plan import arm_keys, load_result, run_dir, source_of, tune_specs, tuned_arms
from experiments.store import digest, write_table


def tune_hash(p: Mapping[str, Any]) -> str:
    """A hash of the search: its rule and every search run's arm, rate, seed and run id (which hashes
    the whole resolved config that determines the weights). Any change to the protocol's base, arms
    or tune block, or to a conf/ default they rely on, makes a table stale."""
    runs = [(s.arm, s.lr, s.seed, run_dir(s, {}).name) for s in tune_specs(p)]
    rule = {"rule": p["tune"]["rule"], "reach_within": p["tune"].get("reach_within", 1.0)}
    return digest({**rule, "runs": runs}, 12, sort_keys=False)


def choose_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm and rate over the search seeds (columns arm, lr, seed, reached, val_error, and
    optionally steps and within): mean validation error, how many seeds reached the criterion, and the
    choice: the lowest mean validation error among the rates where every seed reached it (ties: the
    smaller rate), flagged at_edge when it is the grid's smallest or largest rate. With a ``within``
    column (reached within the protocol's ``tune.reach_within`` fraction of the step budget), a rate is
    eligible only when every seed reached it that early: a rate that two search seeds reach just
    before the budget runs out is one that final seeds miss."""
    runs = runs.copy()
    if "within" not in runs:
        runs["within"] = runs["reached"]
    if "steps" not in runs:
        runs["steps"] = np.nan
    runs["within"] = runs["within"].astype(bool) & runs["reached"].astype(bool)
    table = (
        runs.groupby(["arm", "lr"], sort=False)
        .agg(
            search_seeds=("seed", "size"),
            reached=("reached", "sum"),
            reached_early=("within", "sum"),
            max_steps_to_criterion=("steps", "max"),
            mean_val_error=("val_error", "mean"),
            sd_val_error=("val_error", "std"),
        )
        .reset_index()
    )
    table["reached"] = table["reached"].astype(int)
    table["reached_early"] = table["reached_early"].astype(int)
    table["eligible"] = table["reached_early"] == table["search_seeds"]
    table["chosen"] = False
    table["at_edge"] = False
    for _, rows in table.groupby("arm", sort=False):
        ok = rows[rows["eligible"] & rows["mean_val_error"].notna()]
        if ok.empty:
            continue
        best = ok.sort_values(["mean_val_error", "lr"]).index[0]
        table.loc[best, "chosen"] = True
        table.loc[best, "at_edge"] = table.loc[best, "lr"] in (rows["lr"].min(), rows["lr"].max())
    return table


def read_rates(p: Mapping[str, Any], tables: Path) -> dict[str, float]:
    """The rate of every arm: a tuned arm's choice from the committed table (a missing or stale one
    is refused), a ``same_as`` arm's from its protocol's table, an ``lr_from`` arm's from the arm it
    names (x factor, x sqrt of the batch-size ratio with scaling sqrt)."""
    rates = _tuned_rates(p, tables) if tuned_arms(p) else {}
    for arm in p["arms"]:
        if found := source_of(p, arm):
            other, name = found
            rates[arm] = read_rates(other, tables)[name]
    for arm in p["arms"]:
        rule = arm_keys(p, arm).get("lr_from")
        if rule is not None:
            rate = rates[rule["arm"]] * float(rule.get("factor", 1.0))
            if rule.get("scaling", "none") == "sqrt":
                rate *= (_batch(p, arm) / _batch(p, rule["arm"])) ** 0.5
            rates[arm] = rate
    return rates


def _batch(p: Mapping[str, Any], arm: str) -> int:
    if found := source_of(p, arm):
        return _batch(*found)
    over = {**p["base"], **(p["arms"][arm] or {})}
    return int(over.get("batch_size", 128))


def _tuned_rates(p: Mapping[str, Any], tables: Path) -> dict[str, float]:
    path = tables / f"lr_{p['name']}.csv"
    if not path.exists():
        raise ProtocolError(
            f"no learning-rate table {path}: run `python -m experiments.protocol tune {p['name']}`"
        )
    table = pd.read_csv(path)
    stamps = set(table.get("tune_hash", pd.Series(dtype=str)).astype(str))
    current = tune_hash(p)
    if stamps != {current}:
        raise ProtocolError(
            f"{path} is stale (tuned for {sorted(stamps)}, the protocol's search now hashes to "
            f"{current}): run `python -m experiments.protocol tune {p['name']}` again"
        )
    rates = {}
    for arm, grid in p["tune"]["grid"].items():
        chosen = table[(table["arm"] == arm) & table["chosen"].astype(bool)]
        if len(chosen) != 1:
            raise ProtocolError(
                f"{path}: arm {arm} has no rate at which every search seed reached the criterion "
                "(within tune.reach_within of the budget); "
                "widen its grid or its budget and tune again"
            )
        # the grid's own float, so that the run config is exactly the tuned one
        rates[arm] = float(min(grid, key=lambda g: abs(g - chosen["lr"].iloc[0])))
    return rates


def doubled_eligible(p: Mapping[str, Any], tables: Path) -> set[str]:
    """The tuned arms whose search found twice the chosen rate eligible (every search seed reached
    the criterion there in time): the arms whose rate grid (issue 26) also goes to ×2."""
    rates = _tuned_rates(p, tables)
    table = pd.read_csv(tables / f"lr_{p['name']}.csv")
    ok = table[table["eligible"].astype(bool)]
    return {
        arm
        for arm, rate in rates.items()
        if np.isclose(ok.loc[ok["arm"] == arm, "lr"], 2 * rate, rtol=1e-6).any()
    }


def tune_table(p: Mapping[str, Any], common: Mapping[str, Any]) -> pd.DataFrame:
    """The search's table from its finished runs (see :func:`choose_rates`), stamped with the hash."""
    rows = []
    within = p["tune"].get("reach_within", 1.0)
    for s in tune_specs(p):
        result, folder = load_result(s, common)
        if result is None or "stop_reason" not in result:
            raise ProtocolError(f"tune run {folder} has no result: run tune again")
        met = reached(result)
        steps = result.get("steps_trained")
        row = {"arm": s.arm, "lr": s.lr, "seed": s.seed, "reached": met}
        row["val_error"] = result.get("val_error")
        row["steps"] = steps if met else np.nan
        row["within"] = met and steps <= within * s.values["max_steps"]
        rows.append(row)
    table = choose_rates(pd.DataFrame(rows).astype({"val_error": float}))
    table.insert(0, "protocol", p["name"])
    table["tune_hash"] = tune_hash(p)
    return table


def tune(p: Mapping[str, Any], common: Mapping[str, Any], tables: Path, jobs: int) -> int:

    failed = execute(tune_specs(p), common, jobs, f"{p['name']} tune")
    table = tune_table(p, common)
    write_table(table, tables, f"lr_{p['name']}")
    print(table.drop(columns=["protocol", "tune_hash"]).to_string(index=False))
    for arm in tuned_arms(p):
        chosen = table[(table["arm"] == arm) & table["chosen"]]
        if chosen.empty:
            print(f"warning: arm {arm}: no rate reached the criterion in every search seed")
        elif chosen["at_edge"].iloc[0]:
            print(
                f"warning: arm {arm}: the chosen rate {chosen['lr'].iloc[0]:g} is at the grid's edge"
            )
    print(f"wrote {tables / ('lr_' + p['name'])}.csv|md")
    return 1 if failed else 0


# --- a robustness condition's rates (issue 26; experiments.conditions) -----------------------------


def condition_search(
    p: Mapping[str, Any], cond: Mapping[str, Any], search: pd.DataFrame
) -> pd.DataFrame:
    """A condition's search records as :func:`choose_rates` reads them (arm, lr, seed, reached,
    val_error, steps, within: reached within ``reach_within``, the condition's or the protocol's,
    of the arm's step budget), for the arms whose search is complete."""
    columns = ["arm", "lr", "seed", "reached", "val_error", "steps", "within"]
    if not len(search) or not cond.get("search_seeds"):
        return pd.DataFrame(columns=columns)
    within = cond.get("reach_within", (p.get("tune") or {}).get("reach_within", 1.0))
    base = {**p["base"], **(cond.get("base") or {})}.get("max_steps")
    runs = search.rename(columns={"steps_trained": "steps"})
    budget = runs["arm"].map(lambda a: float((p["arms"][a] or {}).get("max_steps", base)))
    runs = runs.assign(within=runs["steps"] <= within * budget)
    planned = {
        a: len(p["tune"]["grid"][a]) * len(cond["search_seeds"]) for a in runs["arm"].unique()
    }
    complete = runs.groupby("arm")["lr"].transform("size") >= runs["arm"].map(planned)
    return runs.loc[complete, columns]


def condition_rates(
    p: Mapping[str, Any],
    cond: Mapping[str, Any],
    arms: list[str],
    today: Mapping[str, float],
    search: pd.DataFrame,
) -> pd.DataFrame:
    """Per arm: today's rate, the condition's rate and how it was chosen (``search``, ``matched``
    or ``today``), and whether its finals must be run (``runs``). ``search``: the condition's search
    records (arm, lr, seed, reached, val_error, steps_trained); an arm whose search is not complete
    has no rate yet (NaN)."""
    rows = []
    # a rate the condition leaves as it is reads today's runs, whatever the finals' budget: the
    # issue's "finals only where the choice differs" (``base`` overrides change every arm's runs)
    changes_runs = bool(cond.get("base"))
    matched = cond.get("rates") or {}
    chosen = choose_rates(condition_search(p, cond, search))
    for arm in arms:
        lr, how = today[arm], "today"
        if arm in matched:
            source = matched[arm]
            lr, how = today[source["arm"]] * float(source["factor"]), "matched"
        elif cond.get("search_seeds"):
            picked = chosen[(chosen["arm"] == arm) & chosen["chosen"]]["lr"]
            lr, how = (float(picked.iloc[0]) if len(picked) else math.nan), "search"
        same = math.isfinite(lr) and math.isclose(lr, today[arm], rel_tol=1e-9)
        rows.append({"arm": arm, "today_lr": today[arm], "lr": lr, "how": how,
                     "runs": math.isfinite(lr) and (changes_runs or not same)})  # fmt: skip
    return pd.DataFrame(rows)
