"""Sweeps: a two-job multirun through the joblib and the submitit_local launchers, and a sweep launched
twice runs nothing the second time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY


def multirun(tmp_path, data_dir, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "-m",
        *TINY,
        "epochs=2",
        f"data_dir={data_dir}",
        f"runs_dir={tmp_path / 'runs'}",
        "progress=false",
        "metrics=none",
        "seed=0,1",
        *args,
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def results(tmp_path):
    return sorted((tmp_path / "runs" / "default").glob("*/result.json"))


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5",
            "hydra.launcher.cpus_per_task=1",
        ],
    ],
    ids=["joblib", "submitit_local"],
)
def test_two_job_multirun_through_a_launcher(tmp_path, data_dir, launcher):
    proc = multirun(tmp_path, data_dir, *launcher)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = results(tmp_path)
    assert len(files) == 2
    seeds = sorted(json.loads(f.read_text())["config"]["seed"] for f in files)
    assert seeds == [0, 1]


def test_a_sweep_launched_twice_runs_nothing_the_second_time(tmp_path, data_dir):
    first = multirun(tmp_path, data_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    stamps = {f: f.stat().st_mtime_ns for f in results(tmp_path)}
    assert len(stamps) == 2
    second = multirun(tmp_path, data_dir)
    assert second.returncode == 0
    assert second.stdout.count("already done:") == 2
    assert {f: f.stat().st_mtime_ns for f in results(tmp_path)} == stamps
    assert not list(Path(tmp_path).glob("outputs"))


def test_a_failed_job_does_not_stop_a_sweep_but_fails_a_single_run(tmp_path, data_dir):
    failing = ["transform=rescale", "transform.alpha=1000", "transform.tolerance=1e-12"]
    proc = multirun(tmp_path, data_dir, *failing)
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = [json.loads(f.read_text())["status"] for f in results(tmp_path)]
    assert statuses == ["failed", "failed"]  # both jobs ran and recorded their failure
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            *TINY,
            "epochs=2",
            f"data_dir={data_dir}",
            "progress=false",
            f"runs_dir={tmp_path / 'single'}",
            "metrics=none",
            *failing,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single.returncode == 1 and "failed:" in single.stdout
