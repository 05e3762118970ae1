"""The run lock under real concurrent processes (issue 16): with no lock file, an empty one, or a
stale one naming a dead process, at most one process ever holds the lock, none crashes, and a run
launched several times at once is trained exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.lock import RunLock, is_locked
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]

# Each racer takes the lock, proves it alone (an O_EXCL marker no other holder may have made),
# holds it briefly, and logs what happened; a second holder would find the marker.
RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from experiments.lock import RunLock, RunLocked
    lock, marker, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    start = float(sys.argv[4])
    while time.time() < start:  # every racer starts at once
        pass
    for _ in range(20):
        try:
            with RunLock(lock):
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    outcome = "overlap"
                else:
                    os.close(fd)
                    time.sleep(0.002)
                    marker.unlink()
                    outcome = "held"
        except RunLocked:
            outcome = "refused"
        with open(log, "a") as f:
            f.write(outcome + "\\n")
    """
)


@pytest.mark.parametrize("before", ["none", "empty", "stale", "foreign"])
def test_at_most_one_process_holds_the_lock(tmp_path, before):
    import time

    lock, marker, log = tmp_path / ".lock", tmp_path / "marker", tmp_path / "log"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    if before == "empty":
        lock.write_text("")
    elif before == "stale":  # a lock file left by a killed process
        lock.write_text(json.dumps({"host": "here", "pid": dead.pid}))
    elif before == "foreign":  # naming a live process that is not ours (pid 1)
        lock.write_text(json.dumps({"host": "here", "pid": 1}))
    if before != "none":  # a file left by a dead or another process blocks no one
        left = lock.read_text()
        with RunLock(lock):
            assert is_locked(lock)
        assert not is_locked(lock) and not lock.exists()
        lock.write_text(left)
    start = time.time() + 1.5
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(lock), str(marker), str(log), str(start)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    errors = [r.communicate(timeout=60)[1] for r in racers]
    assert [r.returncode for r in racers] == [0] * 4, errors
    outcomes = log.read_text().split()
    assert len(outcomes) == 80 and "overlap" not in outcomes and "held" in outcomes


def test_a_run_launched_three_times_at_once_trains_once(tmp_path, data_dir):
    """Three `python -m experiments.run` processes on one configuration: one trains, the others
    say it is running elsewhere or already done; none crashes."""
    args = [sys.executable, "-m", "experiments.run", *TINY, "epochs=20", "progress=false",
            f"runs_dir={tmp_path / 'runs'}", f"data_dir={data_dir}"]  # fmt: skip
    racers = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(3)]  # fmt: skip
    outs = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0, 0], [e for _, e in outs]
    said = [o.strip().splitlines()[-1] for o, _ in outs]
    assert sum(s.startswith("finished") for s in said) == 1, said
    assert all(s.startswith(("finished", "running elsewhere", "already done")) for s in said), said
    (run_dir,) = (tmp_path / "runs" / "default").iterdir()
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 21  # one header, epochs 0-20 once: trained by one process only


def test_the_parallel_launcher_given_one_run_three_times_ends_without_an_error(tmp_path, data_dir):
    """experiments.protocol's launcher (joblib workers, as `execute` runs them) on three copies of
    one run: each worker trains it, finds it running elsewhere or finds it done; none errors, and the
    run ends finished. (That no two train at once is the lock's test above.)"""
    from joblib import Parallel, delayed

    from experiments import execute as E
    from experiments import plan as P

    p = P.load_protocol(Path(__file__).parents[1] / "experiments" / "protocol_tiny.yaml")
    common = {"runs_dir": str(tmp_path / "runs"), "data_dir": str(data_dir), "progress": False}
    spec = P._spec(p, "small", 0.1, 0, name="race", epochs=30, max_steps=None)
    outs = Parallel(n_jobs=3)(delayed(E._job)(P.configure(spec, common)) for _ in range(3))
    assert {o["status"] for o in outs} <= {"finished", "running elsewhere"}, outs
    (run_dir,) = (tmp_path / "runs" / "race").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"


def test_two_measure_commands_at_once_measure_once(tmp_path, data_dir):
    """Two `python -m experiments.measure` on one finished run, asking for a new metric: the
    record is written once and neither crashes."""
    train = [sys.executable, "-m", "experiments.run", *TINY, "metrics=none", "progress=false",
             f"runs_dir={tmp_path / 'runs'}", f"data_dir={data_dir}"]  # fmt: skip
    subprocess.run(train, cwd=ROOT, check=True, capture_output=True)
    (run_dir,) = (tmp_path / "runs" / "default").iterdir()
    measure = [sys.executable, "-m", "experiments.measure", str(run_dir), "+metrics.lambda_max={}",
               "--jobs", "1"]  # fmt: skip
    racers = [subprocess.Popen(measure, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]  # fmt: skip
    outs = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], [e for _, e in outs]
    records = list((run_dir / "measurements").rglob("lambda_max-*.json"))
    assert len(records) == 1
    said = " ".join(o for o, _ in outs)
    assert "1 new measurements" in said and "Traceback" not in " ".join(e for _, e in outs)
