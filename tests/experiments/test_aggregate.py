"""Aggregation on hand-made result files whose τ and Ψ are known by construction."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from experiments import runs as R
from experiments.analyse import aggregate as A

# Two axes, lr ∈ {0.1, 0.2} and batch ∈ {32, 64}; gap = 10·lr + batch/100.
# Metric "agrees" rises with the gap along both axes: τ = 1, Ψ = 1.
# Metric "mixed" = 10·lr − batch/100 agrees along lr (Ψ_lr = 1) and disagrees along batch
# (Ψ_batch = −1), so Ψ = 0; over the four configurations its τ = (4 − 2)/6 = 1/3.
CONFIGS = [(lr, bs) for lr in (0.1, 0.2) for bs in (32, 64)]


def write_run(root, i, status="finished", lr=0.1, bs=32, seed=0, noise=0.0):
    run_dir = root / f"run{i:03d}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("{}\n")
    torch.save({"w": torch.zeros(2)}, run_dir / "final.pt")  # a finished run keeps its weights
    gap = 10 * lr + bs / 100
    result = {
        "run_id": f"run{i:03d}",
        "status": status,
        "config": {
            "lr": lr,
            "batch_size": bs,
            "seed": seed,
            "name": "hand",
            "runs_dir": "x",
            "progress": False,
        },
        "train_acc": 1.0,
        "test_acc": 1.0 - gap / 10,
        "train_loss": 0.0,
        "test_loss": gap,
        "train_error": 0.0,
        "test_error": gap / 10,
        "gap": gap + noise,
        "gap_loss": gap,
        "metrics": {
            "agrees": {"value": gap + noise},
            "mixed": {"value": 10 * lr - bs / 100 + noise},
        },
        "metric_failures": {},
    }
    if status == "diverged":
        result["diverged_epoch"] = 3
    if status == "failed":
        result["error"] = "injected failure"
    (run_dir / "result.json").write_text(json.dumps(result))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "hand"
    i = 0
    for lr, bs in CONFIGS:
        for seed, noise in ((0, -0.01), (1, 0.01)):  # seeds average out to the designed values
            write_run(root, i, lr=lr, bs=bs, seed=seed, noise=noise)
            i += 1
    write_run(root, i, status="diverged", lr=0.4)
    write_run(root, i + 1, status="failed", lr=0.4)
    (root / "run999").mkdir()
    (root / "run999" / "config.yaml").write_text("{}\n")  # killed before it wrote a result
    return root


def test_tau_and_psi_match_their_construction(sweep):
    runs, problems = R.load_runs([sweep])
    assert len(runs) == 8
    assert sorted(problems["status"]) == ["diverged", "failed", "unfinished"]
    assert sorted(R.axes(runs)) == ["config.batch_size", "config.lr"]
    table = A.correlation_table(runs, samples=200).set_index("metric")
    assert table.loc["agrees", "tau"] == pytest.approx(1.0)
    assert table.loc["agrees", "psi"] == pytest.approx(1.0)
    assert table.loc["mixed", "tau"] == pytest.approx(1 / 3)
    assert table.loc["mixed", "psi[lr]"] == pytest.approx(1.0)
    assert table.loc["mixed", "psi[batch_size]"] == pytest.approx(-1.0)
    assert table.loc["mixed", "psi"] == pytest.approx(0.0)
    assert table.loc["agrees", "psi_lo"] == pytest.approx(1.0)  # every resample agrees
    assert table.loc["mixed", "tau_lo"] <= 1 / 3 <= table.loc["mixed", "tau_hi"]


def test_summary_has_means_and_stds_over_seeds_and_tables_are_written(sweep, tmp_path):
    tables = A.aggregate(sweep, tmp_path / "tables", samples=50)
    summary = tables["summary"]
    assert len(summary) == 4 and (summary["seeds"] == 2).all()
    row = summary[(summary["config.lr"] == 0.2) & (summary["config.batch_size"] == 64)].iloc[0]
    assert row["gap mean"] == pytest.approx(2.64)
    assert row["gap std"] == pytest.approx(np.std([-0.01, 0.01], ddof=1))
    counts = tables["counts"].iloc[0]
    assert (
        counts["used"] == 8
        and counts["diverged"] == 1
        and counts["failed"] == 1
        and counts["unfinished"] == 1
    )
    for name in ("hand_summary", "hand_correlation", "hand_problems", "hand_counts"):
        assert (tmp_path / "tables" / f"{name}.csv").exists() and (
            tmp_path / "tables" / f"{name}.md"
        ).exists()
    problems = pd.read_csv(tmp_path / "tables" / "hand_problems.csv")
    assert "injected failure" in set(problems["reason"].dropna())


def test_kendall_tau_against_scipy_and_degenerate_cases():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    from scipy.stats import kendalltau

    assert A.kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert np.isnan(A.kendall_tau([1, 1, 1], [1, 2, 3]))
    assert np.isnan(A.kendall_tau([1], [2]))
