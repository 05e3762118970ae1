"""Figures for loss surfaces: 1D curves, 2D contours, filled contours, heatmaps, 3D surfaces and a
training trajectory on the PCA plane (after Li et al. 2018, Figures 1, 5 and 9).

Every figure says in its title which normalisation and which data produced it; PNGs are written
atomically. Uses the non-interactive Agg backend, so it works on machines without a display.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flatness.hessian import SpectralDensity  # noqa: E402
from flatness.io import atomic_write_bytes  # noqa: E402
from flatness.surface import Surface  # noqa: E402

KINDS_2D = ("contour", "filled", "heatmap", "3d")
LABELS = {"loss": "loss", "acc": "accuracy"}


def describe(surface: Surface) -> str:
    """A short description of what a surface was computed from, for titles."""
    s = surface.settings
    parts = []
    if s.get("kind") == "interpolation":
        parts.append("linear interpolation")
    elif s.get("direction") == "PCA":
        parts.append("PCA directions of the training trajectory")
    else:
        parts.append(
            f"{s.get('normalization', '?')}-normalised {s.get('direction', '')} directions".replace(
                "  ", " "
            )
        )
    data = f"{s.get('n_train', '?')} train"
    if "n_test" in s:
        data += f" / {s['n_test']} test"
    parts.append(f"{data} samples" + (" (subset)" if s.get("subset") else ""))
    if s.get("bn_policy") == "recompute":
        parts.append("BN recomputed")
    return ", ".join(parts)


def plot_1d(surfaces: Surface | Mapping[str, Surface], title: str | None = None) -> plt.Figure:
    """Loss (left) and accuracy (right) along a line; train solid, test dashed; several models overlaid."""
    if isinstance(surfaces, Surface):
        surfaces = {"": surfaces}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, surf in surfaces.items():
        if surf.ndim != 1:
            raise ValueError("plot_1d needs 1D surfaces")
        x = surf.coords[0]
        for ax, q in zip(axes, ("loss", "acc"), strict=True):
            for split, style in (("train", "-"), ("test", "--")):
                key = f"{split}_{q}"
                if key in surf.values:
                    ax.plot(x, surf.values[key], style, label=f"{label} {split}".strip())
    xlabel = (
        "t (interpolation)"
        if next(iter(surfaces.values())).settings.get("kind") == "interpolation"
        else "step along the direction"
    )
    for ax, q in zip(axes, ("loss", "acc"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(LABELS[q])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if all(np.all(s.values["train_loss"] > 0) for s in surfaces.values()):
        axes[0].set_yscale("log")  # loss rises by orders of magnitude away from a minimum
    fig.suptitle(title or describe(next(iter(surfaces.values()))), fontsize=10)
    fig.tight_layout()
    return fig


def plot_2d(
    surface: Surface,
    quantity: str = "train_loss",
    kind: str = "contour",
    *,
    levels: int | np.ndarray = 30,
    trajectory: np.ndarray | None = None,
    title: str | None = None,
) -> plt.Figure:
    """A 2D surface as ``contour``, ``filled`` contour, ``heatmap`` or ``3d`` plot, with a colour bar.

    ``trajectory`` (N×2 coordinates in the surface's plane) is drawn on top, e.g. a training path
    projected onto PCA directions.
    """
    if surface.ndim != 2:
        raise ValueError("plot_2d needs a 2D surface")
    if kind not in KINDS_2D:
        raise ValueError(f"kind must be one of {list(KINDS_2D)} (got {kind!r})")
    if quantity not in surface.values:
        raise ValueError(f"quantity must be one of {sorted(surface.values)} (got {quantity!r})")
    xs, ys = surface.coords
    z = surface.values[quantity]  # [i, j] = (xs[i], ys[j])
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    fig = plt.figure(figsize=(6, 5))
    if kind == "3d":
        ax = fig.add_subplot(projection="3d")
        art = ax.plot_surface(gx, gy, z, cmap="viridis", linewidth=0, antialiased=True)
        ax.set_zlabel(quantity)
    else:
        ax = fig.add_subplot()
        if kind == "contour":
            art = ax.contour(gx, gy, z, levels=levels, cmap="viridis")
            ax.clabel(art, inline=True, fontsize=6)
        elif kind == "filled":
            art = ax.contourf(gx, gy, z, levels=levels, cmap="viridis")
        else:
            art = ax.pcolormesh(gx, gy, z, cmap="viridis", shading="nearest")
        ax.set_aspect("auto")
        if trajectory is not None:
            t = np.asarray(trajectory)
            ax.plot(t[:, 0], t[:, 1], "o-", color="crimson", markersize=3, label="trajectory")
            ax.legend(fontsize=8)
    fig.colorbar(art, ax=ax, label=quantity, shrink=0.8)
    ax.set_xlabel(surface.settings.get("x_label", "δ"))
    ax.set_ylabel(surface.settings.get("y_label", "η"))
    ax.set_title(title or f"{quantity}: {describe(surface)}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_spectral_density(
    esd: SpectralDensity, title: str | None = None, points: int = 1000
) -> plt.Figure:
    """The Hessian eigenvalue density on a log scale, as in Ghorbani et al. 2019."""
    lo, hi = float(esd.nodes.min()), float(esd.nodes.max())
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, points)
    density = esd.density(grid)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(grid, np.maximum(density, 1e-12))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_ylim(bottom=max(density.max() * 1e-8, 1e-12))
    ax.grid(alpha=0.3)
    ax.set_title(title or "Hessian eigenvalue density (SLQ)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_sharpness_history(
    epochs: list[int],
    lambdas: list[float],
    thresholds: list[float | None],
    title: str | None = None,
) -> plt.Figure:
    """λmax along training, with the optimizer's stability threshold (e.g. 2/η) where it has one."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, lambdas, "o-", markersize=3, label="λmax (training loss)")
    if any(t is not None for t in thresholds):
        ax.plot(
            epochs,
            [np.nan if t is None else t for t in thresholds],
            "--",
            color="crimson",
            label="stability threshold (2/η, or (2+2β)/η)",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("λmax")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Sharpness along training (Cohen et al. 2021)", fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (atomically) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
