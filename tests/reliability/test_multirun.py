"""A real multirun in which one job diverges, one has a metric that raises and one is killed: the
others finish, a second launch completes the sweep without redoing them, and aggregation and status
report each failure with its run directory and reason."""

import os
import subprocess
import sys

from experiments import status
from experiments.analyse import aggregate
from tests.conftest import ROOT, TINY


def sweep(tmp_path, data_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "-m",
        *TINY,
        "dataset.separation=100",
        f"data_dir={data_dir}",
        f"runs_dir={tmp_path / 'runs'}",
        "progress=false",
        "lr=0.1,1e6,0.05,0.2",
        *extra,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_faulty_jobs_do_not_take_the_sweep_down(tmp_path, data_dir):
    faults = [
        "+hydra.callbacks.faults._target_=tests.reliability.callbacks.InjectFaults",
        "+hydra.callbacks.faults.kill_lr=0.2",
        "+hydra.callbacks.faults.broken_metric_lr=0.05",
    ]
    first = sweep(tmp_path, data_dir, *faults)
    assert first.returncode != 0  # the process running the 4th job was killed
    assert first.stdout.count("finished after") == 2 and "diverged at epoch" in first.stdout
    root = tmp_path / "runs" / "default"
    counts, details = status.sweep_status(root)
    # the killed job died as it started, before it wrote anything (a kill during training leaves an
    # "incomplete" run that resumes: see test_run.py and test_faults.py)
    assert counts["done"] == 2 and counts["diverged"] == 1 and sum(counts.values()) == 3

    second = sweep(tmp_path, data_dir)  # no faults this time: only the killed job runs
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("already done") == 3 and second.stdout.count("finished after") == 1
    tables = aggregate.aggregate(root, tmp_path / "tables", samples=20)
    problems = tables["problems"]
    reasons = dict(zip(problems["status"], problems["reason"], strict=True))
    assert "diverged at epoch" in reasons["diverged"]
    assert "lambda_max: RuntimeError: injected metric failure" in reasons["metric failed"]
    assert int(tables["counts"]["used"].iloc[0]) == 3
    assert status.main([str(root)]) == 0
