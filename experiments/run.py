"""``python -m experiments.run``: train, measure and record one configuration.

The Hydra entry point is a thin wrapper around :func:`main`, which tests call with a config composed
through Hydra's compose API. ``main`` validates everything before it creates the run directory. The
run directory is identified by what determines the trained weights (:func:`experiments.store.run_id`):
a trained run is never trained again, a killed one resumes, and a finished one asked for other
metrics, surfaces or transforms only measures what it does not hold yet (:mod:`experiments.measure`).
``result.json`` is rewritten atomically after every step.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from torch import nn

import flatness
from experiments import checks, store
from experiments.code_version import code_hashes
from experiments.config import RunConfig
from experiments.criterion import REACHED
from experiments.data import Dataset, build_dataset
from experiments.errors import ConfigError, one_line_exits
from experiments.landscape import compute_surface, trajectory_epochs
from experiments.lock import RunLock, RunLocked
from experiments.machine import describe_machine
from experiments.measurements import (
    CORE,
    Records,
    measure_model,
    not_trained,
    plot_sharpness_history,
    plot_spectral_densities,
    settings_hash,
)
from experiments.models import build_model
from experiments.optim import build_optimizer, scaled_lr
from experiments.train import TrainOutcome, TrainSettings, full_epochs, train
from experiments.transform import apply_transform, check_transform
from flatness import __version__ as FLATNESS_VERSION

log = logging.getLogger("experiments.run")

DONE_STATUSES = ("finished", "diverged")  # a "failed" run is run again


@dataclass
class Prepared:
    """A validated run: its config, where it lives, and what was built for it."""

    rc: RunConfig
    run_id: str
    run_dir: Path
    device: torch.device
    data: Dataset
    data_seconds: float
    model: nn.Module
    optimizer: Any
    lr: float
    t_start: float


def main(cfg: DictConfig, train: bool = True) -> dict[str, Any]:
    """Run one configuration and return its result (also written to ``<run_dir>/result.json``).
    ``train=False`` measures a trained run only: an untrained one is a ConfigError, not a run."""
    t_start = time.perf_counter()
    rc = RunConfig.from_hydra(cfg)
    checks.check_config(rc.values)
    rid = store.run_id(rc.values)
    run_dir = rc.runs_root / rid

    device = checks.resolve_device(rc.device)
    if device.type == "cpu" and rc.threads is not None:
        # one thread per run: two threads on two cores spin while another process holds a core
        # (runs of 7.5 s took 15-82 s), and a sweep runs its jobs in parallel instead
        torch.set_num_threads(rc.threads)
    t0 = time.perf_counter()
    data = build_dataset(rc.group("dataset"), rc.data_dir)
    checks.check_against_data(rc.values, data.num_train)
    data = data.to(device)
    data_seconds = time.perf_counter() - t0

    torch.manual_seed(rc.seed)  # the model's initial weights
    model = build_model(rc.group("model"), data.input_shape, data.num_classes).to(device)
    if rc.init_from is not None:
        _start_from(model, rc.init_from)
    lr = scaled_lr(rc.lr, rc.batch_size, rc.base_batch_size, rc.lr_scaling)
    optimizer = build_optimizer(rc.group("optimizer"), model, lr, rc.weight_decay)
    check_transform(rc.transform, model, data.x_train)
    checks.check_metrics(rc.metrics, sum(p.numel() for p in model.parameters() if p.requires_grad))

    # Everything is validated: from here on the run directory exists, locked by this process.
    _check_writable(run_dir)
    run = Prepared(rc, rid, run_dir, device, data, data_seconds, model, optimizer, lr, t_start)
    try:
        with RunLock(run_dir / ".lock"):
            return _execute(run, train)
    except RunLocked as exc:
        print(str(exc))
        return {"status": "running elsewhere", "run_dir": str(run_dir)}


def _start_from(model: nn.Module, path: str) -> None:
    """Load the weights a continuation starts from, or fail with one line before any directory."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        state = None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"init_from: {path} does not hold a model's weights (a state dict)")
    own = model.state_dict()
    differ = sorted(set(state) ^ set(own)) or [k for k in own if state[k].shape != own[k].shape]
    if differ:
        raise ConfigError(
            f"init_from: {path} holds weights of another architecture than model (first "
            f"difference: {differ[0]})"
        )
    model.load_state_dict(state)


def _check_writable(run_dir: Path) -> None:
    """Create the run directory and prove it writable, or fail with one line before any training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"runs_dir: cannot write to {run_dir} ({exc.strerror or exc})") from None


def _execute(run: Prepared, may_train: bool = True) -> dict[str, Any]:
    """Train (unless trained already), then measure what is missing, in the locked directory."""
    rc, run_dir = run.rc, run.run_dir
    for left in run_dir.glob(".*.tmp"):  # a write cut by SIGKILL: we hold the lock, no one writes
        left.unlink(missing_ok=True)
    if rc.force:  # start over, keeping only our lock
        for path in run_dir.iterdir():
            if path.name != ".lock":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    previous = store.load_result(run_dir / "result.json")
    final = None
    if (
        previous is not None
        and previous.get("status") in DONE_STATUSES + ("failed",)
        and "stop_reason" in previous
    ):
        final = store.load_weights(run_dir / "final.pt", run.model.state_dict())
        if final is None:
            log.warning("%s: final.pt is missing or damaged; training the run again", run_dir)
    trained = final is not None
    if not trained and not may_train:
        raise ConfigError(not_trained(run_dir))
    if trained and not (run_dir / "config.yaml").exists():  # deleted: status and aggregate need it
        log.warning("%s: config.yaml was missing; written again", run_dir)
        store.atomic_write_text(run_dir / "config.yaml", rc.yaml())
    if trained and _nothing_new(run, previous):
        print(f"already done: {run_dir}")
        return previous
    init_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    if trained:
        run.model.load_state_dict(final)
        result = _training_record(run, previous)
        if rc.track_sharpness_every and not previous.get("tracked_sharpness"):
            log.warning("track_sharpness_every: this run was trained without tracking; not redone")
    else:
        store.atomic_write_text(run_dir / "config.yaml", rc.yaml())
        if not (run_dir / "init.pt").exists():
            store.atomic_torch_save(run_dir / "init.pt", init_state)
        log.info("run %s on %s: %s", run.run_id, run.device, run_dir)
        outcome = train(
            run.model,
            run.optimizer,
            run.data,
            _train_settings(run),
            run_dir,
            start_from=_shortcut(rc.start_from),
        )
        store.atomic_torch_save(run_dir / "final.pt", run.model.state_dict())
        if rc.track_sharpness_every:
            plot_sharpness_history(outcome.history, rc.group("optimizer"), run_dir)
        result = _training_record(run, None, outcome)
    t_measure = time.perf_counter()
    before = dict(previous or {})
    if result["status"] == "diverged":
        result.update({k: None for k in CORE})
        result["metrics"], result["metric_failures"] = {}, {}
    else:
        _measure(run, result, {k: v.to(run.device) for k, v in init_state.items()})
    result["timings"] = {
        **result.get("timings", {}),
        "measure_s": time.perf_counter() - t_measure,
        "total_s": time.perf_counter() - run.t_start,
    }
    store.atomic_write_json(run_dir / "result.json", result)
    if result.get("stop_reason") != REACHED:  # final.pt and result.json supersede it
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    # at its criterion it is kept: a run of these settings to a lower criterion takes it up from
    # there (start_from, experiments.continuation) instead of training those steps again
    _report(result, unchanged=trained and _same_measurements(before, result))
    return result


def _nothing_new(run: Prepared, previous: dict[str, Any]) -> bool:
    """Whether a trained run already holds every measurement asked for (then nothing is rewritten)."""
    rc = run.rc
    weights = "final"
    if rc.transform["kind"] != "none":
        weights = f"transformed-{settings_hash(rc.transform)}"
        if previous.get("transform", {}).get("weights") != weights:
            return False
    records = Records(run.run_dir, weights)
    if not records.has_all(rc.metrics):
        return False
    if (
        set(records.latest())
        - set(previous.get("metrics", {}))
        - set(previous.get("metric_failures", {}))
    ):
        return False  # result.json lags behind its records
    if rc.surface["kind"] != "none":
        marker = (
            run.run_dir / "measurements" / "final" / f"surface-{settings_hash(rc.surface)}.json"
        )
        return marker.exists()
    return True


def _train_settings(run: Prepared) -> TrainSettings:
    rc = run.rc
    epochs = full_epochs(rc.epochs, rc.max_steps, run.data.num_train, rc.batch_size, rc.drop_last)
    return TrainSettings(
        epochs=rc.epochs,
        batch_size=rc.batch_size,
        lr=run.lr,
        seed=rc.seed,
        lr_schedule=rc.lr_schedule,
        lr_step_milestones=rc.lr_step_milestones,
        lr_step_gamma=rc.lr_step_gamma,
        train_until_loss=rc.train_until_loss,
        criterion_every_samples=rc.criterion_every_samples,
        criterion_samples=rc.criterion_samples,
        max_steps=rc.max_steps,
        drop_last=rc.drop_last,
        eval_batch_size=rc.eval_batch_size,
        checkpoint_every=rc.checkpoint_every,
        checkpoint_seconds=rc.checkpoint_seconds,
        eval_every=rc.eval_every,
        save_epochs=sorted(set(rc.save_epochs) | set(trajectory_epochs(rc.surface, epochs))),
        progress=rc.progress,
        track_sharpness_every=rc.track_sharpness_every,
        track_sharpness_samples=rc.track_sharpness_samples,
    )


_TRAINING_KEYS = (
    "status",
    "stop_reason",
    "epochs_trained",
    "resumed_from_epoch",
    "steps_trained",
    "samples_seen",
    "criterion_loss",
    "criterion_n",
    "diverged_epoch",
    "tracked_sharpness",
)


def _training_record(
    run: Prepared, previous: dict[str, Any] | None, outcome: TrainOutcome | None = None
) -> dict[str, Any]:
    """What the training produced (from ``outcome``, or kept from ``previous``) and the run's
    identity; measurements are added by :func:`_measure`."""
    result: dict[str, Any] = {
        "run_id": run.run_id,
        "run_dir": str(run.run_dir),
        "lr_effective": run.lr,
        "num_train": run.data.num_train,
        "num_test": len(run.data.x_test),
        "config": store.flatten_config(run.rc.values),
        "device": str(run.device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flatness": FLATNESS_VERSION,
        },
        "machine": describe_machine(),  # the machine that trained it: a bit-identical rerun's
        "git_commit": _git_commit(),
        "code": code_hashes(),  # the code that trained and measured it (experiments.code_version)
    }
    if outcome is None:
        result.update({k: previous[k] for k in _TRAINING_KEYS if k in previous})
        result["machine"] = previous.get("machine")  # trained elsewhere or before it was recorded
        # trained by the code of its first record (None: before hashes were recorded), measured now
        trained_by = (previous.get("code") or {}).get("training")
        result["code"] = {**code_hashes(), "training": trained_by}
        result["timings"] = {"train_s": previous.get("timings", {}).get("train_s")}
        result["status"] = "finished" if previous["status"] == "failed" else previous["status"]
        return result
    result.update(
        {
            "status": outcome.status,
            "stop_reason": outcome.stop_reason,
            "epochs_trained": outcome.epochs_trained,
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "steps_trained": outcome.steps_trained,
            "samples_seen": outcome.samples_seen,
            "criterion_loss": outcome.criterion_loss,
            "criterion_n": outcome.criterion_n,
            "tracked_sharpness": bool(run.rc.track_sharpness_every),
            "timings": {"data_s": run.data_seconds, "train_s": outcome.seconds},
        }
    )
    if outcome.status == "diverged":
        result["diverged_epoch"] = outcome.epochs_trained
    return result


def _measure(run: Prepared, result: dict[str, Any], init: dict[str, torch.Tensor]) -> None:
    """Measure the final weights (and, with a transform, the transformed ones), reusing records."""
    rc, model, data, run_dir = run.rc, run.model, run.data, run.run_dir
    requested = rc.metrics
    final = Records(run_dir, "final")
    if rc.transform["kind"] != "none":
        before = measure_model(model, data, init, requested, rc.eval_batch_size, final)
        rescaled = apply_transform(rc.transform, model, data.x_train)
        model = rescaled.model
        name = f"transformed-{settings_hash(rc.transform)}"
        store.atomic_torch_save(run_dir / f"{name}.pt", model.state_dict())
        # the latest transform's weights also under a fixed name, for scripts and the audit
        store.atomic_torch_save(run_dir / "transformed.pt", model.state_dict())
        result["transform"] = {
            **rescaled.settings,
            "kind": rc.transform["kind"],
            "weights": name,
            "max_abs_logit_change": rescaled.max_abs_change,
            "relative_logit_change": rescaled.relative_change,
            "tolerance": rc.transform["tolerance"],
            "before": before,
        }
        if not rescaled.relative_change <= rc.transform["tolerance"]:
            result["status"] = "failed"
            result["error"] = (
                f"the transform changed the logits by {rescaled.relative_change:.3g} relative, "
                f"more than transform.tolerance={rc.transform['tolerance']}"
            )
        records = Records(run_dir, name)
    else:
        records = final
    result.update(measure_model(model, data, init, requested, rc.eval_batch_size, records))
    if data.x_val is not None:
        val = flatness.evaluate(model, (data.x_val, data.y_val), batch_size=rc.eval_batch_size)
        result.update(
            {
                "val_loss": val.loss,
                "val_acc": val.accuracy,
                "val_error": val.error,
                "num_val": val.n,
            }
        )
    plot_spectral_densities(result["metrics"], requested, run_dir)
    if "transform" in result:
        plot_spectral_densities(
            result["transform"]["before"]["metrics"], requested, run_dir, " before"
        )
    if rc.surface["kind"] != "none":
        result["surface"] = _surface(run, model)


def _surface(run: Prepared, model: nn.Module) -> dict[str, Any]:
    """The configured surface, reused when one with the same settings was saved before."""
    rc = run.rc
    key = settings_hash(rc.surface)
    marker = run.run_dir / "measurements" / "final" / f"surface-{key}.json"
    saved = store.load_result(marker)
    if saved is not None:
        return saved
    try:
        entry = compute_surface(
            rc.surface, model, run.data, run.run_dir, batch_size=rc.eval_batch_size,
            progress=rc.progress,
        )  # fmt: skip
    except Exception as exc:  # like a failed metric: keep the trained run and say why
        log.warning("surface failed: %s", exc)
        return {"kind": rc.surface["kind"], "failed": f"{type(exc).__name__}: {exc}"}
    store.atomic_write_json(marker, entry)
    return entry


def _same_measurements(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return set(before.get("metrics", {})) == set(after.get("metrics", {})) and before.get(
        "surface"
    ) == after.get("surface")


def _report(result: dict[str, Any], unchanged: bool = False) -> None:
    if unchanged:
        print(f"already done: {result['run_dir']}")
        return
    if result["status"] == "failed":
        print(f"failed: {result['error']} ({result['run_dir']})")
        return
    if result["status"] == "diverged":
        print(f"diverged at epoch {result['diverged_epoch']}: {result['run_dir']}")
        return
    print(
        f"{result['status']} after {result['epochs_trained']} epochs ({result['stop_reason']}): "
        f"train acc {result['train_acc']:.4f}, test acc {result['test_acc']:.4f}, "
        f"gap {result['gap']:.4f} -> {result['run_dir']}/result.json"
    )


def _shortcut(start_from: str | None) -> Path | None:
    """The checkpoint to take the run up from, None where there is none to take up: the run is
    then trained from scratch, which gives the same weights (experiments.continuation)."""
    if start_from is None:
        return None
    if not Path(start_from).exists():
        log.info("start_from: %s is not here; training from scratch (the same run)", start_from)
        return None
    return Path(start_from)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def cli(cfg: DictConfig) -> None:
    """Command-line entry point: bad input is one line on stderr and exit status 2; a run whose
    transform failed its tolerance exits 1 (on its own; within a sweep the others go on)."""
    _run_or_exit(cfg, in_sweep=HydraConfig.get().mode == RunMode.MULTIRUN)


def _run_or_exit(cfg: DictConfig, in_sweep: bool) -> None:
    try:
        with one_line_exits("run the same command again to resume from the last checkpoint"):
            result = main(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if result["status"] == "failed" and not in_sweep:
        sys.exit(1)  # in a sweep the failure is recorded in result.json and the other jobs go on


if __name__ == "__main__":
    from experiments.command_line import compose_command_line

    composed, error = compose_command_line(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if composed is not None:  # a single run: composed once, run without Hydra's second pass
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        _run_or_exit(composed, in_sweep=False)
    else:
        with one_line_exits("before the run started"):  # Hydra's start-up, outside cli's own
            cli()
