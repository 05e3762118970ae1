"""``python -m experiments.analyse.correlate`` on hand-made run directories: the models below the train
accuracy floor are dropped and counted per axis value, a measure equal to the gap ranks first with
K = 1, the baselines are there, a failed metric is missing rather than a value, and errors are one
line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.analyse import correlate as C


def fake_runs(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    i = 0
    for lr in (0.1, 0.01):
        for width in (64, 256):
            for s in range(4):
                gap = 0.05 * (lr == 0.1) + 0.02 * (width == 256) + rng.normal(0, 0.01)
                train_acc = 0.95 if (lr == 0.01 and s == 0) else 1.0  # two runs do not fit
                metrics = {
                    "sharp": {"value": gap + rng.normal(0, 0.002)},
                    "noise": {"value": float(rng.normal())},
                }
                if i == 3:
                    metrics.pop("noise")  # failed on this run: missing, not a value
                result = {
                    "status": "finished",
                    "run_id": f"r{i}",
                    "config": {"lr": lr, "model.width": width, "seed": s, "name": "t"},
                    "train_loss": 0.01, "train_acc": train_acc, "train_error": 1 - train_acc,
                    "test_loss": 0.5, "test_acc": train_acc - gap, "test_error": 1 - train_acc + gap,
                    "gap": gap, "gap_loss": 0.4, "stop_reason": "train_until_loss",
                    "steps_trained": int(1000 * (1 + (lr == 0.01))), "metrics": metrics,
                    "metric_failures": {} if i != 3 else {"noise": "failed"},
                }  # fmt: skip
                d = root / f"r{i}"
                d.mkdir(parents=True)
                (d / "config.yaml").write_text("name: t\n")
                (d / "result.json").write_text(json.dumps(result))
                i += 1


def test_correlate_ranks_drops_and_counts(tmp_path, capsys):
    fake_runs(tmp_path / "runs")
    assert C.main([str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--bootstrap", "20"]) == 0
    table = pd.read_csv(tmp_path / "t" / "runs_ranking.csv").set_index("measure")
    assert table.index[0] == "sharp" and table.loc["sharp", "cmi"] > 0.5
    assert set(C.BASELINES) <= set(table.index)
    assert table.loc["sharp", "models"] == 14  # 16 runs, 2 below train accuracy 0.99
    assert table.loc["noise", "models"] == 13  # and one whose metric failed
    assert table.loc["baseline.random", "cmi"] < table.loc["sharp", "cmi"]
    null = pd.read_csv(tmp_path / "t" / "runs_null.csv").iloc[0]
    assert null["draws"] == 20 and null["q50"] <= null["q95"] < table.loc["sharp", "cmi"]
    dropped = pd.read_csv(tmp_path / "t" / "runs_dropped.csv", dtype={"value": str})
    by = dropped.set_index(["axis", "value"])["dropped"]
    assert by["lr", "0.01"] == 2 and by["lr", "0.1"] == 0 and by["model.width", "64"] == 1
    assert "14 models over axes" in capsys.readouterr().out


def test_correlate_refuses_what_it_cannot_rank(tmp_path, capsys):
    assert C.main([str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no finished run"):
        C.main([str(tmp_path / "empty"), "--out", str(tmp_path / "t")])


def test_a_setting_null_in_some_runs_is_an_axis_and_a_missed_criterion_is_dropped(tmp_path, capsys):
    root = tmp_path / "runs"
    fake_runs(root)
    for i, d in enumerate(sorted(root.iterdir())):
        result = json.loads((d / "result.json").read_text())
        result["config"]["model.ghost"] = None if i % 2 else 8  # null in half the runs
        result["config"]["train_until_loss"] = 0.01
        if i == 5:
            result["stop_reason"] = "max_steps"  # fits its training set, but missed the criterion
        (d / "result.json").write_text(json.dumps(result))
    assert C.main([str(root), "--out", str(tmp_path / "t"), "--bootstrap", "5"]) == 0
    out = capsys.readouterr().out
    assert "model.ghost" in out.split("over axes")[1].split("(")[0]
    dropped = pd.read_csv(tmp_path / "t" / "runs_dropped.csv")
    assert dropped.groupby("axis")["missed_criterion"].sum()["lr"] == 1
    assert "13 models" in out  # 16 runs, 2 below the floor, 1 off its criterion


def test_a_search_at_its_bound_is_no_value_and_derived_forms_follow_the_measure():
    entry = {"value": 0.02, "extra": {"at_bound": False, "inverse_sigma_squared": 2500.0,
                                      "bound_term": 12.5}}  # fmt: skip
    row = C.measure_columns({"pb": entry, "lam": {"value": 3.0}, "topk": {"value": [1.0, 2.0]}})
    assert row["metric.pb"] == 0.02 and row["metric.pb.inv_sq"] == 2500.0
    assert row["metric.pb.bound"] == 12.5 and row["metric.lam"] == 3.0
    assert "metric.topk" not in row  # a list is not a measure of one number
    capped = C.measure_columns(
        {"pb": {"value": 1.0, "extra": {**entry["extra"], "at_bound": True}}}
    )
    assert np.isnan(capped["metric.pb"]) and np.isnan(capped["metric.pb.inv_sq"])
    assert capped["at_bound.metric.pb"] == 1.0


def test_runs_at_a_search_bound_are_counted_and_left_out_of_the_ranking(tmp_path):
    fake_runs(tmp_path / "runs")
    for i, d in enumerate(sorted((tmp_path / "runs").iterdir())):
        result = json.loads((d / "result.json").read_text())
        sigma = 0.5 - result["gap"]  # flatter (larger σ) where the gap is smaller
        result["metrics"]["pb"] = {
            "value": 1.0 if i < 3 else sigma,  # three searches stopped at sigma_max
            "extra": {"at_bound": i < 3, "inverse_sigma_squared": 1 / sigma**2},
        }
        (d / "result.json").write_text(json.dumps(result))
    assert C.main([str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--bootstrap", "10"]) == 0
    table = pd.read_csv(tmp_path / "t" / "runs_ranking.csv").set_index("measure")
    # the three capped runs (r0, r1, r10) fit their training set, so 14 - 3 remain
    assert table.loc["pb", "at_bound"] == 3 and table.loc["pb", "models"] == 11
    assert table.loc["pb.inv_sq", "models"] == 11 and table.loc["sharp", "at_bound"] == 0
    # 1/σ² is a decreasing function of σ: its τ is σ's with the sign flipped
    assert table.loc["pb.inv_sq", "tau_gap"] == pytest.approx(-table.loc["pb", "tau_gap"])
    assert table.loc["pb.inv_sq", "tau_gap"] > 0.5


def test_settings_that_always_change_together_are_one_axis():
    models = pd.DataFrame({
        "optimizer.name": ["adam", "adam", "sgd", "sgd"], "lr": ["0.001", "0.001", "0.1", "0.1"],
        "width": ["64", "256", "64", "256"],
    })  # fmt: skip
    merged, found = C.merge_coupled(models, ["optimizer.name", "lr", "width"])
    assert found == ["optimizer.name+lr", "width"]
    assert merged["optimizer.name+lr"].tolist() == [
        "adam/0.001",
        "adam/0.001",
        "sgd/0.1",
        "sgd/0.1",
    ]
