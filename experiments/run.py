"""``python -m experiments.run``: train, measure and record one configuration.

The Hydra entry point is a thin wrapper around :func:`main`, which tests call with a config composed
through Hydra's compose API. ``main`` validates everything before it creates the run directory,
skips a finished run, resumes a killed one, and writes ``result.json`` atomically at the end.
"""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import flatness
from experiments import checks, store
from experiments.data import build_dataset
from experiments.errors import ConfigError
from experiments.landscape import compute_surface, trajectory_epochs
from experiments.models import build_model
from experiments.optim import build_optimizer, scaled_lr, stability_threshold
from experiments.train import TrainSettings, train
from flatness import metrics as flatness_metrics
from flatness import params as P
from flatness import plot
from flatness.hessian import SpectralDensity

log = logging.getLogger("experiments.run")

DONE_STATUSES = ("finished", "diverged")
CORE = (
    "train_loss",
    "train_acc",
    "train_error",
    "test_loss",
    "test_acc",
    "test_error",
    "gap",
    "gap_loss",
)


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

    # Everything is validated: from here on the run directory exists.
    if c["force"] and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
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
        _plot_sharpness_history(outcome.history, cfg.optimizer, run_dir)

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
    if outcome.status == "diverged":
        result["diverged_epoch"] = outcome.epochs_trained
        result.update({k: None for k in CORE})
        result["metrics"], result["metric_failures"] = {}, {}
    else:
        init_params = {k: v.to(device) for k, v in init_state.items()}
        ctx = flatness_metrics.MetricContext(
            model,
            torch.nn.functional.cross_entropy,
            (data.x_train, data.y_train),
            (data.x_test, data.y_test),
            init_params,
            c["eval_batch_size"],
        )
        result.update({k: flatness_metrics.compute(k, ctx).value for k in CORE})
        result["metrics"], result["metric_failures"] = _measure(ctx, c.get("metrics") or {})
        _plot_spectral_densities(result["metrics"], c.get("metrics") or {}, run_dir)
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


def _measure(ctx: flatness_metrics.MetricContext, requested: dict[str, Any]) -> tuple[dict, dict]:
    """Compute each requested metric; one that raises is recorded as failed and the rest go on."""
    values, failures = {}, {}
    for name, settings in requested.items():
        try:
            with P.restored(ctx.model):
                out = flatness_metrics.compute(name, ctx, settings)
            values[name] = {"value": out.value, "settings": out.settings, "extra": out.extra}
        except Exception as exc:  # a metric's failure must not lose the trained run
            log.warning("metric %s failed: %s", name, exc)
            failures[name] = f"{type(exc).__name__}: {exc}"
    return values, failures


def _plot_spectral_densities(values: dict, requested: dict, run_dir: Path) -> None:
    """One ESD figure per ``hessian_esd`` metric (Ghorbani et al. 2019, Fig. 1 style)."""
    for name, entry in values.items():
        if flatness_metrics.base_metric(name, requested.get(name)) != "hessian_esd":
            continue
        esd = SpectralDensity(
            np.array(entry["extra"]["nodes"]), np.array(entry["extra"]["weights"])
        )
        fig = plot.plot_spectral_density(esd, title=f"Hessian eigenvalue density ({name}, SLQ)")
        entry["figure"] = plot.save_figure(fig, run_dir / f"{name}.png").name


def _plot_sharpness_history(history: list[dict], opt_cfg, run_dir: Path) -> None:
    """λmax along training against the stability threshold of the optimizer (Cohen et al. 2021)."""
    rows = [r for r in history if np.isfinite(r["lambda_max"])]
    epochs = [r["epoch"] for r in rows]
    thresholds = [stability_threshold(opt_cfg, r["lr"]) for r in rows]
    fig = plot.plot_sharpness_history(epochs, [r["lambda_max"] for r in rows], thresholds)
    plot.save_figure(fig, run_dir / "sharpness.png")


def _report(result: dict[str, Any]) -> None:
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
    """Command-line entry point: bad input is one line on stderr and exit status 2."""
    try:
        main(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
