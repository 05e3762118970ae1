"""The runner's measurement step: train/test loss, accuracy and gap, every configured metric (a
failing one is recorded, not raised), and the figures that come with some of them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.data import Dataset
from experiments.optim import stability_threshold
from flatness import metrics as flatness_metrics
from flatness import params as P
from flatness import plot
from flatness.hessian import SpectralDensity

log = logging.getLogger(__name__)

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


def measure_model(
    model: nn.Module,
    data: Dataset,
    init: dict[str, torch.Tensor],
    requested: dict[str, Any],
    batch_size: int,
) -> dict[str, Any]:
    """The core numbers of every run, plus ``metrics`` and ``metric_failures`` for the requested ones."""
    ctx = flatness_metrics.MetricContext(
        model,
        torch.nn.functional.cross_entropy,
        (data.x_train, data.y_train),
        (data.x_test, data.y_test),
        init,
        batch_size,
    )
    out: dict[str, Any] = {k: flatness_metrics.compute(k, ctx).value for k in CORE}
    out["metrics"], out["metric_failures"] = {}, {}
    for name, settings in requested.items():
        try:
            with P.restored(model):
                value = flatness_metrics.compute(name, ctx, settings)
            out["metrics"][name] = {
                "value": value.value,
                "settings": value.settings,
                "extra": value.extra,
            }
        except Exception as exc:  # a metric's failure must not lose the trained run
            log.warning("metric %s failed: %s", name, exc)
            out["metric_failures"][name] = f"{type(exc).__name__}: {exc}"
    return out


def plot_spectral_densities(values: dict, requested: dict, run_dir: Path, suffix: str = "") -> None:
    """One ESD figure per ``hessian_esd`` metric (Ghorbani et al. 2019, Fig. 1 style)."""
    for name, entry in values.items():
        if flatness_metrics.base_metric(name, requested.get(name)) != "hessian_esd":
            continue
        esd = SpectralDensity(
            np.array(entry["extra"]["nodes"]), np.array(entry["extra"]["weights"])
        )
        fig = plot.plot_spectral_density(
            esd, title=f"Hessian eigenvalue density ({name}, SLQ){suffix}"
        )
        entry["figure"] = plot.save_figure(
            fig, run_dir / f"{name}{suffix.replace(' ', '_')}.png"
        ).name


def plot_sharpness_history(history: list[dict], opt_cfg: Any, run_dir: Path) -> None:
    """λmax along training against the stability threshold of the optimizer (Cohen et al. 2021)."""
    rows = [r for r in history if np.isfinite(r["lambda_max"])]
    epochs = [r["epoch"] for r in rows]
    thresholds = [stability_threshold(opt_cfg, r["lr"]) for r in rows]
    fig = plot.plot_sharpness_history(epochs, [r["lambda_max"] for r in rows], thresholds)
    plot.save_figure(fig, run_dir / "sharpness.png")
