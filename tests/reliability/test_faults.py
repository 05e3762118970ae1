"""Faults: a run locked by a live process, stale locks, truncated checkpoints and results, a kill
during the metrics, an unwritable runs_dir, and `experiments.status` on a sweep with every state."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import status
from experiments.errors import ConfigError
from experiments.lock import RunLock, is_locked
from experiments.run import main
from tests.conftest import TINY

NUMBERS = ("train_loss", "test_loss", "train_acc", "test_acc", "metrics", "epochs_trained")


def same_numbers(a, b):
    for key in NUMBERS:
        assert a[key] == b[key], key


def test_a_run_locked_by_a_live_process_is_left_alone(make_cfg, tmp_path, capsys):
    import os

    from omegaconf import OmegaConf

    from experiments import store

    cfg = make_cfg(*TINY)
    run_dir = (
        tmp_path / "runs" / "default" / store.run_id(OmegaConf.to_container(cfg, resolve=True))
    )
    run_dir.mkdir(parents=True)
    with RunLock(run_dir / ".lock"):  # held through another handle: as another process would
        result = main(cfg)
        assert is_locked(run_dir / ".lock")
    out = capsys.readouterr().out
    assert result["status"] == "running elsewhere" and "running elsewhere" in out
    assert f"pid {os.getpid()})" in out  # the refused process says who holds it
    assert not (run_dir / "result.json").exists() and not (run_dir / ".lock").exists()


def test_a_stale_lock_is_taken_over(make_cfg, tmp_path):
    import socket

    from omegaconf import OmegaConf

    from experiments import store

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cfg = make_cfg(*TINY)
    run_dir = (
        tmp_path / "runs" / "default" / store.run_id(OmegaConf.to_container(cfg, resolve=True))
    )
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    result = main(cfg)
    assert result["status"] == "finished" and not (run_dir / ".lock").exists()


def test_truncated_checkpoint_is_detected_and_the_run_starts_over(make_cfg, tmp_path, caplog):
    reference = main(make_cfg(*TINY, runs_dir=tmp_path / "a"))
    run_dir = Path(main(make_cfg(*TINY, runs_dir=tmp_path / "b"))["run_dir"])
    (run_dir / "result.json").unlink()
    (run_dir / "final.pt").unlink()
    good = torch.load(Path(reference["run_dir"]) / "final.pt", weights_only=True)
    torch.save({"epoch": 3, "model": good}, run_dir / "checkpoint.pt")
    (run_dir / "checkpoint.pt").write_bytes(
        (run_dir / "checkpoint.pt").read_bytes()[:200]
    )  # truncated
    with caplog.at_level(logging.WARNING):
        again = main(make_cfg(*TINY, runs_dir=tmp_path / "b"))
    assert "checkpoint" in caplog.text and "unreadable" in caplog.text
    assert again["resumed_from_epoch"] == 0
    same_numbers(again, reference)


def test_truncated_result_is_detected_and_the_run_redone(make_cfg, caplog):
    first = main(make_cfg(*TINY))
    result_file = Path(first["run_dir"]) / "result.json"
    result_file.write_text(result_file.read_text()[:50])
    with caplog.at_level(logging.WARNING):
        again = main(make_cfg(*TINY))
    assert "unreadable" in caplog.text
    same_numbers(again, first)
    assert json.loads(result_file.read_text())["status"] == "finished"


def test_killed_during_the_metrics_resumes_without_retraining(make_cfg, tmp_path, monkeypatch):
    reference = main(make_cfg(*TINY, runs_dir=tmp_path / "a"))
    import experiments.run as run

    real = run.measure_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for SIGKILL arriving while the metrics are computed

    monkeypatch.setattr(run, "measure_model", killed)
    with pytest.raises(KeyboardInterrupt):
        main(make_cfg(*TINY, runs_dir=tmp_path / "b"))
    monkeypatch.setattr(run, "measure_model", real)
    again = main(make_cfg(*TINY, runs_dir=tmp_path / "b"))
    assert again["resumed_from_epoch"] == 5  # every epoch was saved: only the metrics ran again
    same_numbers(again, reference)


def test_unwritable_runs_dir_fails_before_training(make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="runs_dir: cannot write"):
        main(make_cfg(*TINY, runs_dir=blocker / "runs"))


def test_status_reports_every_state_and_fails_on_failures(make_cfg, tmp_path, monkeypatch, capsys):
    main(make_cfg(*TINY))
    main(make_cfg(*TINY, "lr=1e6", "dataset.separation=100"))
    main(
        make_cfg(
            *TINY,
            "seed=3",  # a transform is measured in the trained run's directory: train another
            "transform=rescale",
            "transform.alpha=1000",
            "transform.tolerance=1e-12",
            "metrics=none",
        )
    )
    import experiments.run as run

    monkeypatch.setattr(
        run, "measure_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(KeyboardInterrupt):
        main(make_cfg(*TINY, "seed=7"))
    code = status.main([str(tmp_path / "runs" / "default")])
    out = capsys.readouterr().out
    assert "4 runs: 1 done, 0 running, 1 failed, 1 diverged, 1 incomplete" in out
    assert "transform.tolerance" in out and "resumes from epoch 5" in out and "epoch" in out
    assert code == 1
