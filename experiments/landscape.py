"""The runner's surface step: compute the loss surface that the ``surface`` config group asks for,
save it with its plots in the run directory, and say what was written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.data import Dataset
from flatness.directions import pca_directions
from flatness.surface import surface_1d, surface_2d

SURFACE_KINDS = ("none", "1d", "2d", "pca")


def trajectory_epochs(cfg: dict[str, Any], epochs: int) -> list[int]:
    """Epochs whose weights the ``pca`` surface needs saved."""
    if cfg.get("kind") != "pca":
        return []
    return list(range(cfg["every"], epochs + 1, cfg["every"]))


def compute_surface(
    cfg: dict[str, Any],
    model: nn.Module,
    data: Dataset,
    run_dir: Path,
    *,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    """Compute, save and plot the configured surface; return its entry for ``result.json``."""
    t0 = time.perf_counter()
    common = {
        "batch_size": batch_size,
        "subset": cfg["subset"],
        "bn_policy": cfg["bn_policy"],
        "bn_samples": cfg["bn_samples"],
        "engine": cfg["engine"],
        "precision": cfg["precision"],
        "progress": progress,
    }
    train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)
    trajectory = None
    kind = cfg["kind"]
    random_directions = {
        "seed": cfg.get("seed"),
        "normalization": cfg.get("normalization"),
        "ignore": cfg["ignore"],
    }
    grid = {
        "x_points": cfg.get("x_points") or cfg["points"],
        "y_points": cfg.get("y_points") or cfg["points"],
    }
    if kind == "1d":
        surf = surface_1d(
            model,
            train,
            test,
            span=tuple(cfg["span"]),
            points=cfg["points"],
            **random_directions,
            **common,
        )
    elif kind == "2d":
        spans = {"x_span": tuple(cfg["x_span"]), "y_span": tuple(cfg["y_span"])}
        surf = surface_2d(model, train, test, **spans, **grid, **random_directions, **common)
    else:
        final = {k: v.detach() for k, v in model.named_parameters()}
        files = sorted((run_dir / "weights").glob("epoch_*.pt"))
        init = torch.load(run_dir / "init.pt", weights_only=True)
        points = [init] + [torch.load(f, weights_only=True) for f in files]
        points = [{k: p[k].to(final[k].device) for k in final} for p in points]
        pca = pca_directions(points, final, 2, ignore=cfg["ignore"])
        trajectory = pca.projection
        spans = [cfg["margin"] * max(np.abs(trajectory[:, i]).max(), 1e-3) for i in range(2)]
        surf = surface_2d(
            model,
            train,
            test,
            directions=pca.directions,
            x_span=(-spans[0], spans[0]),
            y_span=(-spans[1], spans[1]),
            **grid,
            **common,
        )
        surf.settings.update(
            {
                "kind": "pca",
                "direction": "PCA",
                "normalization": "none",
                "explained_variance_ratio": pca.explained_variance_ratio.tolist(),
                "trajectory_epochs": [0] + [int(f.stem.split("_")[1]) for f in files],
                "x_label": f"PC1 ({100 * pca.explained_variance_ratio[0]:.1f}%)",
                "y_label": f"PC2 ({100 * pca.explained_variance_ratio[1]:.1f}%)",
            }
        )
        surf.settings["trajectory"] = trajectory.tolist()
    written = [p.name for p in surf.save(run_dir / f"surface_{kind}")]
    if cfg["plots"]:
        from flatness import plot  # matplotlib only when a plot is asked for: runs start faster
    for name in cfg["plots"]:
        if kind == "1d":
            fig = plot.plot_1d(surf)
        else:
            fig = plot.plot_2d(surf, "train_loss", name, trajectory=trajectory)
        written.append(plot.save_figure(fig, run_dir / f"surface_{kind}_{name}.png").name)
    return {
        "kind": kind,
        "files": written,
        "settings": surf.settings,
        "seconds": time.perf_counter() - t0,
    }
