"""The robustness stage end to end on the tiny protocol (issue 26): the grid and second-endpoint
runs, their compact records, runs never repeated once recorded (on this machine or a fresh one), a
second endpoint taken up from the final run bit-identical to training from scratch, the frozen code
enforced, and the tables and report section built from the records."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from experiments import protocol as P
from experiments.analyse.robustness import write_robustness
from experiments.analyse.tune import read_rates
from experiments.code_version import code_hashes
from experiments.execute import execute
from experiments.plan import load_protocol, run_dir
from experiments.report.robustness import robustness_lines
from experiments.robust import budget_specs, endpoint_specs, read_records
from tests.experiments.conftest import TINY, copy_tiny

ROBUSTNESS = {
    "comparisons": ["batch"],
    "seeds": [0, 1, 2],
    "rate_multipliers": [0.5, 1.0, 2.0],
    "metrics": ["lambda_max"],
    "endpoint_factor": 0.8,
    "alpha": 0.05,
}


def _protocol(tmp_path, **changes):
    raw = yaml.safe_load(TINY.read_text())
    raw["robustness"] = {**ROBUSTNESS, **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def robust_tiny(tiny, tmp_path):
    common = copy_tiny(tiny, tmp_path)
    path = _protocol(tmp_path)
    args = ["--runs-dir", common["runs_dir"], "--data-dir", str(tiny[0] / "data"),
            "--tables", str(tmp_path / "tables"), "--jobs", "1",
            "--records", str(tmp_path / "records")]  # fmt: skip
    assert P.main(["verdicts", str(path), *args[:-2]]) == 0
    return path, args, common


def test_the_stage_runs_what_its_records_lack_and_reads_them_back(robust_tiny, tmp_path, capsys):
    path, args, common = robust_tiny
    assert P.main(["robust", str(path), *args]) == 0
    p = load_protocol(path)
    records = read_records(p, tmp_path / "records")
    grid = records[records["kind"] == "rate"]
    assert set(grid["arm"]) == {"large", "small"} and set(grid["seed"]) == {0, 1, 2}
    assert 0.5 in set(grid["multiplier"]) and 1.0 not in set(grid["multiplier"])  # ×1: the finals
    end = records[records["kind"] == "endpoint"]
    assert len(end) == 6 and end["train_until_loss"].tolist() == pytest.approx([0.4] * 6)
    assert (records["code_training"] == code_hashes()["training"]).all()
    assert records["run_id"].is_unique
    # again: nothing to run; from a fresh machine (no runs, the records): nothing either
    capsys.readouterr()
    assert P.main(["robust", str(path), *args]) == 0
    assert (
        f"robustness: {len(records)} of {len(records)} runs already recorded"
        in capsys.readouterr().out
    )
    fresh = [a if a != common["runs_dir"] else str(tmp_path / "fresh") for a in args]
    assert P.main(["robust", str(path), *fresh]) == 0
    assert not (tmp_path / "fresh").exists()
    # the tables and the report section come from the records and the verdict tables
    curve_path, _, labels_path = write_robustness(p, tmp_path / "records", tmp_path / "tables")
    curve, labels = pd.read_csv(curve_path), pd.read_csv(labels_path)
    assert set(curve["moving"]) == {"large", "small"} and (curve["n"] == 3).all()
    today = labels[labels["condition"] == "today"]
    assert set(today["part"]) == {"effect", "mechanism"} and today["label"].str.len().gt(0).all()
    text = "\n".join(robustness_lines(p, tmp_path / "tables", tmp_path / "figures"))
    assert "**Robustness**" in text and "endpoint: CE × 0.8" in text


def test_a_second_endpoint_taken_up_equals_training_from_scratch(robust_tiny, tmp_path):
    path, args, common = robust_tiny
    p = load_protocol(path)
    rates = read_rates(p, tmp_path / "tables")
    spec = endpoint_specs(p, rates, common)[0]
    assert "start_from" in spec.values  # the final run is here: taken up from its checkpoint
    assert execute([spec], common, 1, "taken up") == 0
    scratch = {**common, "runs_dir": str(tmp_path / "scratch")}
    plain = type(spec)(
        spec.arm, spec.lr, spec.seed, {k: v for k, v in spec.values.items() if k != "start_from"}
    )
    assert execute([plain], scratch, 1, "from scratch") == 0
    a, b = run_dir(spec, common), run_dir(plain, scratch)
    assert a.name == b.name  # one run id: start_from says where to begin, not what is computed
    wa = torch.load(a / "final.pt", weights_only=True)
    wb = torch.load(b / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_records_of_other_code_are_not_read_and_a_changed_checkout_is_refused(
    robust_tiny, tmp_path, capsys
):
    path, args, common = robust_tiny
    stale = _protocol(tmp_path, frozen_code={"training": "0123456789ab"})
    assert P.main(["robust", str(stale), *args]) == 2
    assert "frozen_code" in capsys.readouterr().err


def test_conditions_search_choose_and_run_only_the_arms_they_change(robust_tiny, tmp_path, capsys):
    _, args, common = robust_tiny
    conditions = [
        {"name": "matched", "why": "w", "seeds": [0, 1, 2],
         "rates": {"small": {"arm": "large", "factor": 0.3}}},  # off the grid
        {"name": "searched", "why": "w", "seeds": [0, 1, 2], "search_seeds": [102, 103],
         "reach_within": 1.0},
    ]  # fmt: skip
    path = _protocol(tmp_path, comparisons=["batch"], endpoint_factor=None,
                     rate_multipliers=[1.0], conditions=conditions)  # fmt: skip
    assert P.main(["robust", str(path), *args]) == 0
    p = load_protocol(path)
    records = read_records(p, tmp_path / "records")
    search = records[records["kind"] == "search"]
    assert len(search) == 2 * 5 * 2 and set(search["condition"]) == {"searched"}
    assert set(search["seed"]) == {102, 103}
    choice = pd.read_csv(tmp_path / "tables" / "robust_choice_tiny.csv")
    matched = choice[choice["condition"] == "matched"].set_index("arm")
    assert matched.loc["small", "lr"] == pytest.approx(matched.loc["large", "today_lr"] * 0.3)
    finals = records[records["kind"] == "condition"]
    ran = set(zip(finals["condition"], finals["arm"], strict=True))
    assert ("matched", "small") in ran and ("matched", "large") not in ran  # large: today's runs
    changed = choice[(choice["condition"] == "searched") & choice["runs"]]["arm"]
    assert {a for c, a in ran if c == "searched"} == set(changed)
    labels = pd.read_csv(tmp_path / "tables" / "robustness_tiny.csv")
    assert {"matched", "searched"} <= set(labels["condition"])
    read = labels[labels["condition"] == "matched"]
    assert (read["n"] == 3).all() and (read["recorded"] == 6).all()
    capsys.readouterr()
    assert P.main(["robust", str(path), *args]) == 0  # all recorded: nothing runs again
    assert "searched: search: 20 of 20 runs already recorded" in capsys.readouterr().out


def test_a_budget_endpoint_taken_up_equals_training_to_the_budget_from_scratch(
    robust_tiny, tmp_path
):
    _, args, common = robust_tiny
    path = _protocol(tmp_path, rate_multipliers=[1.0], budget_endpoint=True)
    assert P.main(["robust", str(path), *args]) == 0
    p = load_protocol(path)
    records = read_records(p, tmp_path / "records")
    budget = records[records["kind"] == "budget"]
    assert len(budget) == 6 and (budget["stop_reason"] == "max_steps").all()
    assert budget["reached"].all() and (budget["steps_trained"] == 60).all()
    rates = read_rates(p, tmp_path / "tables")
    spec = budget_specs(p, rates, common)[0]
    assert spec.values["start_from"].endswith(
        "checkpoint.pt"
    )  # the second endpoint's, or the final's
    scratch = {**common, "runs_dir": str(tmp_path / "scratch")}
    plain = type(spec)(
        spec.arm, spec.lr, spec.seed, {k: v for k, v in spec.values.items() if k != "start_from"}
    )
    assert execute([plain], scratch, 1, "from scratch") == 0
    a, b = run_dir(spec, common), run_dir(plain, scratch)
    assert a.name == b.name
    wa = torch.load(a / "final.pt", weights_only=True)
    wb = torch.load(b / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    labels = pd.read_csv(tmp_path / "tables" / "robustness_tiny.csv")
    assert "endpoint: whole step budget" in set(labels["condition"])
