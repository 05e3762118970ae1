"""Robustness conditions that choose the rate, or the schedule, otherwise (issue 26, items 2 and 3):
run specifications for a condition's search and final runs, and its rate choice from the records.

A condition of a protocol's ``robustness.conditions`` changes one choice against today's and keeps
the rest:

- ``base``: overrides of every arm's run (e.g. ``lr_schedule: constant``: schedule parity);
- ``search_seeds`` (and ``reach_within``): the rate searched again on these seeds, over the
  protocol's grid, by today's rule (:func:`experiments.analyse.tune.choose_rates`) with this
  fraction of the budget (1.0: every seed reaches the criterion within the whole budget);
- ``rates``: an arm's rate taken from another arm's chosen one times a factor instead (matched
  η/B: the small batch at the large batch's rate × B_small/B_large), with no search;
- ``budget_factor``: the final runs' step budget times this (a rate that meets the criterion late
  in the search is given room in the finals; an arm whose rate is unchanged reads today's runs, so
  with a schedule tied to the budget, as a step decay at fractions of it, keep it at 1);
- ``seeds``: the final seeds, paired with today's.

The rate each arm gets is the analysis's (:func:`experiments.analyse.tune.condition_rates`, from the
search's records); an arm whose condition changes nothing (the same rate, no ``base`` overrides, the
same budget) reads today's final runs: "finals only where the choice differs". Records go to the
protocol's robustness records with ``kind`` ``search`` or ``condition`` and the condition's name.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pandas as pd

from experiments.errors import ProtocolError
from experiments.plan import Spec, arm_spec, tune_specs

SEARCH, CONDITION = "search", "condition"


def condition_protocol(p: Mapping[str, Any], cond: Mapping[str, Any]) -> dict[str, Any]:
    """``p`` with the condition's ``base`` overrides on every arm."""
    q = copy.deepcopy(dict(p))
    q["base"] = {**q["base"], **(cond.get("base") or {})}
    return q


def search_specs(p: Mapping[str, Any], cond: Mapping[str, Any], arms: list[str]) -> list[Spec]:
    """The condition's search: ``arms`` × the protocol's grid × ``search_seeds``, under
    ``<name>_robust``, measuring nothing beyond the core (as today's search)."""
    if not cond.get("search_seeds"):
        return []
    q = condition_protocol(p, cond)
    q["tune"] = {**q["tune"], "seeds": list(cond["search_seeds"])}
    q["arms"] = {a: q["arms"][a] for a in arms if a not in (cond.get("rates") or {})}
    name = f"{p['name']}_robust"
    return [Spec(s.arm, s.lr, s.seed, {**s.values, "name": name}) for s in tune_specs(q)]


def final_specs(
    p: Mapping[str, Any], cond: Mapping[str, Any], choice: pd.DataFrame, common: Mapping[str, Any]
) -> list[Spec]:
    """The condition's final runs of the arms whose choice needs them, under ``<name>_robust``."""
    q, factor = condition_protocol(p, cond), float(cond.get("budget_factor", 1.0))
    out = []
    for r in choice[choice["runs"]].itertuples():
        for seed in cond["seeds"]:
            spec = arm_spec(q, r.arm, {r.arm: r.lr}, seed, common)
            values = {**spec.values, "name": f"{p['name']}_robust"}
            if factor != 1.0:
                if not values.get("max_steps"):
                    raise ProtocolError(f"robustness: {cond['name']}: {r.arm} has no max_steps")
                values["max_steps"] = int(round(values["max_steps"] * factor))
            out.append(Spec(r.arm, r.lr, seed, values))
    return out
