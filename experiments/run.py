"""``python -m experiments.run``: train, measure and record one configuration.

The Hydra entry point is a thin wrapper around :func:`main`, which tests call with a config composed
through Hydra's compose API. ``main`` validates everything before it creates the run directory,
skips a finished run, resumes a killed one, and writes ``result.json`` atomically at the end.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import flatness
from experiments import checks, store
from experiments.data import build_dataset
from experiments.errors import ConfigError
from experiments.landscape import compute_surface, trajectory_epochs
from experiments.lock import RunLock, RunLocked
from experiments.measure import CORE, measure_model, plot_sharpness_history, plot_spectral_densities
from experiments.models import build_model
from experiments.optim import build_optimizer, scaled_lr
from experiments.train import TrainSettings, train
from experiments.transform import apply_transform, check_transform
from flatness.evaluate import evaluate

log = logging.getLogger("experiments.run")

DONE_STATUSES = ("finished", "diverged")  # a "failed" run is run again


def main(cfg: DictConfig) -> dict[str, Any]:
    """Run one configuration and return its result (also written to ``<run_dir>/result.json``)."""
    t_start = time.perf_counter()
    try:
        c = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config: {exc}".splitlines()[0]) from None
    checks.check_config(c)
    rid = store.run_id(c)
    run_dir = Path(c["runs_dir"]) / c["name"] / rid
    previous = store.load_result(run_dir / "result.json")
    if previous is not None and previous.get("status") in DONE_STATUSES and not c["force"]:
        print(f"already done: {run_dir}")
        return previous

    device = checks.resolve_device(c["device"])
    t0 = time.perf_counter()
    data = build_dataset(cfg.dataset, c["data_dir"])
    checks.check_against_data(c, data.num_train)
    data = data.to(device)
    data_seconds = time.perf_counter() - t0

    torch.manual_seed(c["seed"])  # the model's initial weights
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    lr = scaled_lr(c["lr"], c["batch_size"], c["base_batch_size"], c["lr_scaling"])
    optimizer = build_optimizer(cfg.optimizer, model, lr, c["weight_decay"])
    check_transform(c["transform"], model, data.x_train)
    checks.check_against_model(
        c.get("metrics") or {}, sum(p.numel() for p in model.parameters() if p.requires_grad)
    )

    # Everything is validated: from here on the run directory exists, locked by this process.
    _check_writable(run_dir)
    try:
        with RunLock(run_dir / ".lock"):
            return _execute(
                cfg, c, rid, run_dir, device, data, data_seconds, model, optimizer, lr, t_start
            )
    except RunLocked as exc:
        print(str(exc))
        return {"status": "running elsewhere", "run_dir": str(run_dir)}


def _check_writable(run_dir: Path) -> None:
    """Create the run directory and prove it writable, or fail with one line before any training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"runs_dir: cannot write to {run_dir} ({exc.strerror or exc})") from None


def _execute(
    cfg, c, rid, run_dir, device, data, data_seconds, model, optimizer, lr, t_start
) -> dict[str, Any]:
    """Train, transform, measure and record one validated configuration in its locked directory."""
    if c["force"]:  # start over, keeping only our lock
        for path in run_dir.iterdir():
            if path.name != ".lock":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    store.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    init_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if not (run_dir / "init.pt").exists():
        store.atomic_torch_save(run_dir / "init.pt", init_state)
    log.info("run %s on %s: %s", rid, device, run_dir)

    settings = TrainSettings(
        epochs=c["epochs"],
        batch_size=c["batch_size"],
        lr=lr,
        seed=c["seed"],
        lr_schedule=c["lr_schedule"],
        lr_step_milestones=c["lr_step_milestones"],
        lr_step_gamma=c["lr_step_gamma"],
        train_until_loss=c["train_until_loss"],
        drop_last=c["drop_last"],
        eval_batch_size=c["eval_batch_size"],
        checkpoint_every=c["checkpoint_every"],
        save_epochs=sorted(
            set(c["save_epochs"]) | set(trajectory_epochs(c["surface"], c["epochs"]))
        ),
        progress=c["progress"],
        track_sharpness_every=c["track_sharpness_every"],
        track_sharpness_samples=c["track_sharpness_samples"],
    )
    outcome = train(model, optimizer, data, settings, run_dir)
    store.atomic_torch_save(run_dir / "final.pt", model.state_dict())
    if c["track_sharpness_every"]:
        plot_sharpness_history(outcome.history, cfg.optimizer, run_dir)

    result: dict[str, Any] = {
        "run_id": rid,
        "run_dir": str(run_dir),
        "status": outcome.status,
        "stop_reason": outcome.stop_reason,
        "epochs_trained": outcome.epochs_trained,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "lr_effective": lr,
        "num_train": data.num_train,
        "num_test": len(data.x_test),
        "config": store.flatten_config(c),
        "device": str(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flatness": flatness.__version__,
        },
        "git_commit": _git_commit(),
    }
    t_measure = time.perf_counter()
    requested = c.get("metrics") or {}
    if outcome.status == "diverged":
        result["diverged_epoch"] = outcome.epochs_trained
        result.update({k: None for k in CORE})
        result["metrics"], result["metric_failures"] = {}, {}
    else:
        init_params = {k: v.to(device) for k, v in init_state.items()}
        if c["transform"]["kind"] != "none":
            before = measure_model(model, data, init_params, requested, c["eval_batch_size"])
            rescaled = apply_transform(c["transform"], model, data.x_train)
            model = rescaled.model
            store.atomic_torch_save(run_dir / "transformed.pt", model.state_dict())
            result["transform"] = {
                **rescaled.settings,
                "kind": c["transform"]["kind"],
                "max_abs_logit_change": rescaled.max_abs_change,
                "relative_logit_change": rescaled.relative_change,
                "tolerance": c["transform"]["tolerance"],
                "before": before,
            }
            if not rescaled.relative_change <= c["transform"]["tolerance"]:
                result["status"] = "failed"
                result["error"] = (
                    f"the transform changed the logits by {rescaled.relative_change:.3g} relative, "
                    f"more than transform.tolerance={c['transform']['tolerance']}"
                )
        result.update(measure_model(model, data, init_params, requested, c["eval_batch_size"]))
        if data.x_val is not None:
            val = evaluate(model, data.x_val, data.y_val, batch_size=c["eval_batch_size"])
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
        if c["surface"]["kind"] != "none":
            try:
                result["surface"] = compute_surface(
                    c["surface"],
                    model,
                    data,
                    run_dir,
                    batch_size=c["eval_batch_size"],
                    progress=c["progress"],
                )
            except Exception as exc:  # like a failed metric: keep the trained run and say why
                log.warning("surface failed: %s", exc)
                result["surface"] = {
                    "kind": c["surface"]["kind"],
                    "failed": f"{type(exc).__name__}: {exc}",
                }
    result["timings"] = {
        "data_s": data_seconds,
        "train_s": outcome.seconds,
        "measure_s": time.perf_counter() - t_measure,
        "total_s": time.perf_counter() - t_start,
    }
    store.atomic_write_json(run_dir / "result.json", result)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # final.pt and result.json supersede it
    _report(result)
    return result


def _report(result: dict[str, Any]) -> None:
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
    try:
        result = main(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if result["status"] == "failed" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)  # in a sweep the failure is recorded in result.json and the other jobs go on


if __name__ == "__main__":
    cli()
