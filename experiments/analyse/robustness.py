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
)

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
