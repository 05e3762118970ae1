"""Damage noticed (issue 16): a checkpoint, final weights, config or result that does not hold what
it should is treated as missing — the run resumes, starts over or retrains and says so — and
``experiments.status`` and ``experiments.analyse.aggregate`` list such runs by path instead of crashing or
hiding them; Ctrl-C and a full disk end in one line and a state a rerun resumes from."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import runs, status
from experiments.analyse import aggregate
from experiments.run import main
from tests.conftest import TINY, killed_at_epoch

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = ("train_loss", "test_loss", "train_acc", "test_acc", "epochs_trained")


def states(root: Path, capsys) -> str:
    capsys.readouterr()
    status.main([str(root)])
    return capsys.readouterr().out


def killed_run(make_cfg) -> Path:
    """A run killed at epoch 3: its checkpoint holds epochs 1-2 (a checkpoint every epoch)."""
    with killed_at_epoch(3), pytest.raises(KeyboardInterrupt):
        main(make_cfg(*TINY, "checkpoint_seconds=0"))
    (run_dir,) = [p.parent for p in Path(make_cfg().runs_dir).rglob("checkpoint.pt")]
    return run_dir


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: torch.save(torch.zeros(3), path),  # a tensor, not a checkpoint
        lambda path: torch.save({"epoch": 2, "model": {}}, path),  # no optimizer, wrong model
        lambda path: torch.save(
            {**torch.load(path, weights_only=True), "model": {"w": torch.zeros(1)}}, path
        ),  # a checkpoint of another model
    ],
    ids=["tensor", "missing keys", "other model"],
)
def test_a_checkpoint_that_holds_the_wrong_thing_means_starting_over(
    make_cfg, tmp_path, caplog, capsys, damage
):
    reference = main(make_cfg(*TINY, runs_dir=tmp_path / "reference"))
    run_dir = killed_run(make_cfg)
    damage(run_dir / "checkpoint.pt")
    assert "a rerun starts over" in states(run_dir.parent, capsys)
    with caplog.at_level(logging.WARNING):
        again = main(make_cfg(*TINY))
    assert "checkpoint" in caplog.text and again["resumed_from_epoch"] == 0
    assert all(again[k] == reference[k] for k in NUMBERS)  # retrained from the seed, identical


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:100]),  # truncated
        lambda path: torch.save(torch.zeros(3), path),  # a tensor
        lambda path: torch.save({"0.weight": torch.zeros(2, 2)}, path),  # another model's weights
        lambda path: path.unlink(),  # deleted
    ],
    ids=["truncated", "tensor", "other weights", "deleted"],
)
def test_damaged_final_weights_are_reported_and_trained_again(make_cfg, caplog, capsys, damage):
    first = main(make_cfg(*TINY))
    run_dir = Path(first["run_dir"])
    damage(run_dir / "final.pt")
    said = states(run_dir.parent, capsys)
    assert "1 damaged" in said and str(run_dir) in said and "final.pt" in said
    rows, problems = runs.load_runs([run_dir.parent])
    assert len(rows) == 1 and problems["status"].tolist() == ["damaged"]
    with caplog.at_level(logging.WARNING):
        again = main(make_cfg(*TINY))
    assert "final.pt" in caplog.text and again["status"] == "finished"
    assert all(again[k] == first[k] for k in NUMBERS)
    assert "1 done" in states(run_dir.parent, capsys)


def test_a_run_whose_config_was_deleted_is_listed_and_a_rerun_writes_it_back(make_cfg, capsys):
    first = main(make_cfg(*TINY))
    run_dir = Path(first["run_dir"])
    (run_dir / "config.yaml").unlink()
    said = states(run_dir.parent, capsys)
    assert "1 damaged" in said and "config.yaml" in said
    rows, problems = runs.load_runs([run_dir.parent])
    assert len(rows) == 1 and problems["status"].tolist() == ["damaged"]  # listed and aggregated
    main(make_cfg(*TINY))
    assert (run_dir / "config.yaml").exists() and "1 done" in states(run_dir.parent, capsys)


@pytest.mark.parametrize("content", ["[1, 2]", '"finished"', "{}", '{"status": "finished"}'])
def test_a_result_file_of_the_wrong_shape_is_listed_not_a_crash(make_cfg, capsys, content):
    first = main(make_cfg(*TINY))
    run_dir = Path(first["run_dir"])
    (run_dir / "result.json").write_text(content)
    said = states(run_dir.parent, capsys)
    assert "1 failed" in said and str(run_dir) in said
    rows, problems = runs.load_runs([run_dir.parent])
    assert rows.empty and list(problems["run_dir"]) == [str(run_dir)]
    again = main(make_cfg(*TINY))  # measured again from the saved final weights
    assert again["status"] == "finished" and json.loads((run_dir / "result.json").read_text())


def test_aggregate_refuses_a_directory_that_does_not_exist(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        aggregate.main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "not a directory" in capsys.readouterr().err


def _sigint_as_usual() -> None:
    # a shell starts background jobs with SIGINT ignored, and a child inherits that (a CI job run
    # in the background would); Python turns Ctrl-C into KeyboardInterrupt only if it is not
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def command(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_usual)  # fmt: skip


def test_ctrl_c_ends_in_one_line_and_leaves_a_run_that_resumes(tmp_path, data_dir, capsys):
    """SIGINT mid-training: exit 130, one line, the lock released and the checkpoint intact, so
    that status says a rerun resumes (resuming itself is tested bit for bit in test_faults). The
    budget is far beyond what the test waits for, so the signal always lands mid-training."""
    args = [*TINY, "epochs=100000", "metrics=none", "progress=false", f"data_dir={data_dir}"]
    proc = command(*args, "checkpoint_seconds=0", cwd=tmp_path)
    deadline = time.time() + 120
    while not list(tmp_path.rglob("checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    (run_dir,) = [p.parent for p in tmp_path.rglob("checkpoint.pt")]
    assert not (run_dir / ".lock").exists()
    assert "a rerun resumes from epoch" in states(run_dir.parent, capsys)


def test_a_full_disk_ends_in_one_line(tmp_path, data_dir):
    """On a 64 KiB tmpfs the run's files do not fit. Mounting one needs root: skipped where the
    test cannot make a full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                          capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): no full disk to test on")
    try:
        args = [*TINY, "metrics=none", "progress=false", f"data_dir={data_dir}",
                f"runs_dir={disk / 'runs'}", "model.width=256"]  # fmt: skip
        proc = command(*args, cwd=tmp_path)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert "No space left on device" in err and len(err.strip().splitlines()) == 1
        assert not list(disk.rglob("*.tmp*")) and not list(disk.rglob(".lock"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
