"""What the report's pictures read: the runs' own records, exported as tidy tables by the verdicts
step (``results/tables/<kind>_<protocol>.csv``), so that a figure loads and draws and never
measures. Each frame has one row per plotted point with the run's arm and seed, whether the run met
its criterion and its training loss there (``reached``, ``run_train_loss``).

- :func:`surface_frame`: the runs' 1D/2D filter-normalised surfaces (Li et al. 2018).
- :func:`pca_frames`: the PCA plane of the training path and the path on it (Li et al. 2018, Sec. 7).
- :func:`tracked_frame`: λmax along training with the optimizer's stability threshold (Cohen et al.
  2021).
- :func:`spectra_frame`: the SLQ quadrature of the Hessian's eigenvalue density at the final
  weights (Ghorbani et al. 2019): nodes and weights per random vector.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.history import read_history
from experiments.optim import stability_threshold

Runs = Mapping[tuple[str, int], tuple[Mapping[str, Any] | None, Path]]
Reached = Callable[[str, Mapping[str, Any]], bool]


def _run_columns(arm: str, seed: int, result: Mapping[str, Any], reached: Reached) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "reached": reached(arm, result),
        "run_train_loss": result.get("train_loss"),
    }


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def surface_frame(runs: Runs, reached: Reached, kinds=("1d", "2d")) -> pd.DataFrame:
    """Every run's saved 1D or 2D loss surface (its ``surface_<kind>`` record) as tidy rows: the
    run's columns, then one row per grid point with x (and y) and each surface value."""
    from flatness.surface import Surface

    parts = []
    for (arm, seed), (result, folder) in sorted(runs.items()):
        kind = next((k for k in kinds if (folder / f"surface_{k}.npz").exists()), None)
        if result is None or kind is None:
            continue
        surf = Surface.load(folder / f"surface_{kind}")
        grid = np.meshgrid(*surf.coords, indexing="ij")
        frame = {
            **_run_columns(arm, seed, result, reached),
            "x": grid[0].ravel(),
            "y": grid[1].ravel() if len(grid) > 1 else 0.0,
        }
        frame.update({k: np.asarray(v).ravel() for k, v in surf.values.items()})
        parts.append(pd.DataFrame(frame))
    return _concat(parts)


def pca_frames(runs: Runs, reached: Reached) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' ``pca`` surfaces: the plane (one row per grid point, its training and test loss)
    and the path on it (one row per saved epoch: its coordinates along the first two principal
    directions of the weights' path, and the share of the path's variance each direction holds)."""
    planes, paths = [], []
    for (arm, seed), (result, folder) in sorted(runs.items()):
        if result is None or not (folder / "surface_pca.npz").exists():
            continue
        plane = surface_frame({(arm, seed): (result, folder)}, reached, kinds=("pca",))
        settings = json.loads((folder / "surface_pca.json").read_text())
        path = np.asarray(settings["trajectory"])
        ratio = settings["explained_variance_ratio"]
        history = read_history(folder)
        step_of = dict(zip(history["epoch"], history["step"], strict=True)) if len(history) else {}
        planes.append(plane)
        paths.append(
            pd.DataFrame(
                {
                    **_run_columns(arm, seed, result, reached),
                    "epoch": settings["trajectory_epochs"],
                    "step": [step_of.get(e, np.nan) for e in settings["trajectory_epochs"]],
                    "pc1": path[:, 0],
                    "pc2": path[:, 1],
                    "pc1_variance": ratio[0],
                    "pc2_variance": ratio[1],
                }
            )
        )
    return _concat(planes), _concat(paths)


def tracked_frame(runs: Runs, reached: Reached) -> pd.DataFrame:
    """λmax tracked along training (``history.csv`` of runs trained with ``track_sharpness_every``),
    one row per tracked epoch (``point`` "tracked"), then the run's own ``lambda_max`` measurement of
    its final weights where it stopped (``point`` "final": at its criterion, if it met it), each
    with the optimizer's stability threshold at that rate
    (:func:`experiments.optim.stability_threshold`: (2 + 2β)/η for heavy-ball momentum)."""
    from omegaconf import OmegaConf

    parts = []
    for (arm, seed), (result, folder) in sorted(runs.items()):
        if result is None or not result.get("tracked_sharpness"):
            continue
        history = read_history(folder).dropna(subset=["lambda_max"])
        optimizer = OmegaConf.load(folder / "config.yaml").optimizer
        thresholds = [stability_threshold(optimizer, lr) for lr in history["lr"]]
        frame = pd.DataFrame(
            {
                **_run_columns(arm, seed, result, reached),
                "optimizer": optimizer.name,
                "point": "tracked",
                **{k: history[k].to_numpy() for k in ("epoch", "step", "lr", "train_loss")},
                "lambda_max": history["lambda_max"].to_numpy(),
                "threshold": [np.nan if t is None else t for t in thresholds],
            }
        )
        parts.append(frame)
        final = (result.get("metrics") or {}).get("lambda_max")
        if isinstance(final, Mapping) and isinstance(final.get("value"), int | float):
            # where the run stopped (its criterion): the run's own λmax of its final weights
            last = history.iloc[-1] if len(history) else None
            lr = float(last["lr"]) if last is not None else np.nan
            parts.append(
                pd.DataFrame(
                    {
                        **_run_columns(arm, seed, result, reached),
                        "optimizer": optimizer.name,
                        "point": "final",
                        "epoch": [result.get("epochs_trained")],
                        "step": [result.get("steps_trained")],
                        "lr": [lr],
                        "train_loss": [result.get("train_loss")],
                        "lambda_max": [float(final["value"])],
                        "threshold": [stability_threshold(optimizer, lr) or np.nan],
                    }
                )
            )
    return _concat(parts)


def spectra_frame(runs: Runs, reached: Reached, metric: str = "hessian_esd") -> pd.DataFrame:
    """The SLQ quadrature of each run's ``hessian_esd`` record: one row per (random vector, node),
    with the node (an eigenvalue estimate) and its weight (the vector's weights sum to 1)."""
    parts = []
    for (arm, seed), (result, _) in sorted(runs.items()):
        entry = (result or {}).get("metrics", {}).get(metric)
        extra = (entry or {}).get("extra") if isinstance(entry, Mapping) else None
        if not extra or "nodes" not in extra:
            continue
        for k, (nodes, weights) in enumerate(zip(extra["nodes"], extra["weights"], strict=True)):
            # a vector's Lanczos run can stop early, so vectors may hold different numbers of nodes
            frame = {"vector": k, "node": nodes, "weight": weights}
            parts.append(pd.DataFrame({**_run_columns(arm, seed, result, reached), **frame}))
    return _concat(parts)
