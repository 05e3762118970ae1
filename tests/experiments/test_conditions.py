"""Robustness conditions (issue 26, items 2 and 3): the runs a condition plans, the rate it picks
from its search's records, and the checks on its declaration."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from experiments.analyse.tune import condition_rates
from experiments.conditions import final_specs, search_specs
from experiments.errors import ProtocolError
from experiments.plan import CONF, load_protocol

P = load_protocol("batch_size")
TODAY = {"momentum_small": 0.05, "momentum_large": 0.8, "adam_small": 0.002, "adam_large": 0.012}
ARMS = list(TODAY)


def _search(arm, chosen_lr, seeds, budget, late=()):
    """A finished search of ``arm``: every rate reached; ``chosen_lr`` validates best; rates in
    ``late`` reached only after half the budget."""
    rows = []
    for lr in P["tune"]["grid"][arm]:
        for s in seeds:
            steps = 0.8 * budget if lr in late else 0.2 * budget
            err = 0.10 if math.isclose(lr, chosen_lr) else 0.15
            rows.append({"arm": arm, "lr": lr, "seed": s, "reached": True, "val_error": err,
                         "steps_trained": steps})  # fmt: skip
    return pd.DataFrame(rows)


def test_a_matched_rate_is_the_other_arms_times_its_factor_and_needs_runs():
    cond = {
        "name": "m",
        "seeds": [0, 1],
        "rates": {"momentum_small": {"arm": "momentum_large", "factor": 0.04}},
    }
    got = condition_rates(P, cond, ARMS, TODAY, pd.DataFrame()).set_index("arm")
    assert got.loc["momentum_small", "lr"] == pytest.approx(0.032)
    assert got.loc["momentum_small", "how"] == "matched" and got.loc["momentum_small", "runs"]
    assert got.loc["momentum_large", "how"] == "today" and not got.loc["momentum_large", "runs"]


def test_a_search_picks_by_its_own_reach_and_reuses_todays_runs_where_the_choice_is_the_same():
    cond = {"name": "s", "seeds": [0, 1], "search_seeds": [100, 101, 102, 103], "reach_within": 1.0,
            "budget_factor": 1.5}  # fmt: skip
    # momentum_small: 0.1 validates best but reaches late: eligible within the whole budget only
    search = pd.concat(
        [
            _search("momentum_small", 0.1, cond["search_seeds"], 30000, late=(0.1,)),
            _search("momentum_large", 0.8, cond["search_seeds"], 4000),
        ]
    )
    got = condition_rates(P, cond, ARMS, TODAY, search).set_index("arm")
    assert got.loc["momentum_small", "lr"] == 0.1 and got.loc["momentum_small", "runs"]
    # the same rate as today's: today's runs are read, whatever the finals' budget
    assert got.loc["momentum_large", "lr"] == 0.8 and not got.loc["momentum_large", "runs"]
    assert math.isnan(got.loc["adam_small", "lr"])  # its search not run yet: no rate, no runs
    assert not got.loc["adam_small", "runs"]
    half = {**cond, "reach_within": 0.5}
    got = condition_rates(P, half, ARMS, TODAY, search).set_index("arm")
    assert got.loc["momentum_small", "lr"] != 0.1  # today's reach: the late rate is not eligible


def test_a_condition_that_changes_the_runs_reruns_every_arm():
    cond = {"name": "c", "seeds": [0, 1], "base": {"lr_schedule": "constant"}, "search_seeds": []}
    got = condition_rates(P, cond, ARMS, TODAY, pd.DataFrame())
    assert got["runs"].all() and (got["lr"] == got["today_lr"]).all()


def test_the_search_and_finals_it_plans():
    cond = {"name": "c", "seeds": [0, 1, 2], "base": {"lr_schedule": "cosine"},
            "search_seeds": [100, 101, 102], "budget_factor": 1.5}  # fmt: skip
    specs = search_specs(P, cond, ["momentum_small", "adam_large"])
    assert len(specs) == (5 + 5) * 3
    assert {s.values["name"] for s in specs} == {"batch_size_robust"}
    assert {s.values["lr_schedule"] for s in specs} == {"cosine"}
    assert {s.seed for s in specs} == {100, 101, 102}
    choice = pd.DataFrame([{"arm": "momentum_small", "lr": 0.1, "runs": True},
                           {"arm": "adam_large", "lr": 0.012, "runs": False}])  # fmt: skip
    finals = final_specs(P, cond, choice, {"runs_dir": "runs"})
    assert [(s.arm, s.seed) for s in finals] == [("momentum_small", s) for s in (0, 1, 2)]
    assert {s.values["max_steps"] for s in finals} == {45000}  # 30000 x 1.5
    assert {s.lr for s in finals} == {0.1}


@pytest.mark.parametrize(
    "condition, said",
    [
        ("{name: a, why: w, seeds: [0, 11]}", "[11] are not final seeds"),
        (
            "{name: a, why: w, seeds: [0, 1], search_seeds: [1, 100]}",
            "disjoint from the final seeds",
        ),
        (
            "{name: a, why: w, seeds: [0, 1], rates: {adam_small: {arm: nope, factor: 2}}}",
            "rates.adam_small",
        ),
        ("{name: a, why: w, seeds: [0, 1], budget_factor: 0}", "budget_factor"),
        ("{name: a, why: w, seeds: [0, 1], base: {lr: 0.1}}", "lr, seed and name"),
    ],
)
def test_a_malformed_condition_is_refused_naming_it(tmp_path, condition, said):
    text = (CONF / "protocol" / "batch_size.yaml").read_text()
    start = text.index("  conditions:\n")
    end = text.index("\n\n", start)
    (tmp_path / "p.yaml").write_text(text[:start] + f"  conditions: [{condition}]" + text[end:])
    with pytest.raises(ProtocolError, match=r"robustness.conditions\[a\]") as err:
        load_protocol(tmp_path / "p.yaml")
    assert said in str(err.value)


def test_grid_seeds_that_are_not_final_seeds_are_refused(tmp_path):
    text = (CONF / "protocol" / "batch_size.yaml").read_text()
    (tmp_path / "p.yaml").write_text(
        text.replace("  seeds: [0, 1, 2, 3, 4, 5]\n", "  seeds: [0, 1, 12]\n", 1)
    )
    with pytest.raises(ProtocolError, match=r"robustness.seeds: \[12\] are not final seeds"):
        load_protocol(tmp_path / "p.yaml")
