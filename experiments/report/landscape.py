"""The report's pictures of minima and of the paths to them, drawn from the tables the verdicts step
exported from the runs' records (:mod:`experiments.exports`); nothing here measures.

- :func:`slices_figure`: Li et al. 2018's 1D filter-normalised slices (their Fig. 5), train and test
  loss, one panel per setting the compared arms share.
- :func:`surface_3d_figure`: the same planes as the contour figure, rendered in 3D (their Fig. 1).
- :func:`spectra_figure`: the Hessian's eigenvalue density at each minimum by SLQ (Ghorbani et al.
  2019, Fig. 1), every seed.
- :func:`tracked_figure`: λmax along training against the stability threshold (Cohen et al. 2021).
- :func:`pca_figure`: the path of training on the plane of its two principal directions, with the
  share of the path's variance on each axis (Li et al. 2018, Sec. 7).

Every figure draws only runs that met their training criterion, names each arm with its training
loss at the plotted point (the median over seeds) and uses each arm's colour and marker of every
figure (:func:`experiments.report.figures.arm_style`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.analyse.schemas import load
from experiments.report import templating
from experiments.report.figures import _save, arm_style, phrase, plt, slice_rise, typical_planes

Panels = Sequence[tuple[str, Sequence[str]]]
# experiments.optim.stability_threshold's formulas, for labels
THRESHOLD_FORMULA = {"sgd": "2/η", "momentum": "(2 + 2β)/η"}
FIGURE_TEXT = "landscape_figure_text.txt.j2"  # the figures' titles, legend entries, long labels
CAPTIONS = "landscape_captions.md.j2"


def contrast_panels(p: Mapping[str, Any], vary: str = "batch_size") -> list[tuple[str, list[str]]]:
    """The protocol's arms grouped by every setting but ``vary`` (and the step budget, which follows
    the batch size): one panel per group of two or more arms, titled by what its arms share."""
    groups: dict[str, list[str]] = {}
    for arm, over in p["arms"].items():
        over = over or {}
        if vary not in over:
            continue
        shared = {
            k: v
            for k, v in over.items()
            if k not in (vary, "max_steps") and not k.startswith(("surface", "track_"))
        }
        title = ", ".join(
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in shared.items()
        )
        groups.setdefault(title or "every other setting shared", []).append(arm)
    return [(title, arms) for title, arms in groups.items() if len(arms) > 1]


def _arm_label(arm: str, runs: pd.DataFrame, extra: str = "") -> str:
    """``arm: n seeds, train loss 0.0098`` — the median training loss of the runs drawn."""
    one = runs.drop_duplicates(["arm", "seed"])
    one = one[one["arm"] == arm]
    return f"{arm}: {len(one)} seeds, train loss {one['run_train_loss'].median():.3g}{extra}"


def _log_panel(ax, title: str, xlabel: str) -> None:
    """A panel's log value axis, labels, grid and legend, alike in every figure here."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _reached(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["reached"].astype(bool)]


def slices_figure(surfaces: pd.DataFrame, panels: Panels, figures: Path, name: str) -> str | None:
    """Li et al. 2018's Fig. 5 from the runs' planes: the training (solid) and test (dashed) loss
    along the first filter-normalised direction through each minimum, the median over seeds with
    every seed's range as a band, one panel per group of arms on a shared axis."""
    data = _reached(surfaces)
    data = data[data["y"].abs() < 1e-9]
    panels = [(t, [a for a in arms if a in set(data["arm"])]) for t, arms in panels]
    panels = [(t, arms) for t, arms in panels if len(arms) > 1]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), sharey=True,
                             squeeze=False)  # fmt: skip
    drawn = []
    for ax, (title, arms) in zip(axes[0], panels, strict=True):
        for arm in arms:
            part = data[data["arm"] == arm]
            colour, marker = arm_style(arm)
            for value, ls in (("train_loss", "-"), ("test_loss", "--")):
                wide = part.pivot_table(index="x", columns="seed", values=value)
                ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=colour,
                                alpha=0.15, lw=0)  # fmt: skip
                label = _arm_label(arm, part) if value == "train_loss" else None
                ax.plot(wide.index, wide.median(axis=1), color=colour, ls=ls, marker=marker, ms=4,
                        label=label)  # fmt: skip
            drawn.append(part)
        ax.plot([], [], color="0.3", ls="-", label="training loss (solid)")
        ax.plot([], [], color="0.3", ls="--", label="test loss (dashed)")
        _log_panel(ax, title, phrase(FIGURE_TEXT, key="slices_xlabel"))
    axes[0][0].set_ylabel("cross-entropy (log scale)")
    fig.suptitle(phrase(FIGURE_TEXT, key="slices_title"), fontsize=11)
    fig.tight_layout()
    columns = ["arm", "seed", "reached", "run_train_loss", "x", "train_loss", "test_loss"]
    return _save(fig, pd.concat(drawn)[columns], figures, name)


def surface_3d_figure(
    surfaces: pd.DataFrame, arms: Sequence[str], figures: Path, name: str
) -> str | None:
    """Li et al. 2018's Fig. 1 style: each arm's training-loss plane (its median seed by slice
    sharpness, :func:`experiments.report.figures.typical_planes`) as a 3D surface over the grid the run measured, log10 of the loss on one shared
    vertical scale, so that the arms' steepness compares directly."""
    data = _reached(surfaces)
    arms = [a for a in arms if a in set(data["arm"])]
    if len(arms) < 2:
        return None
    seed0 = typical_planes(data, arms)
    z = np.log10(seed0["train_loss"])
    lo, hi = float(z.min()), float(z.max())
    fig = plt.figure(figsize=(4.2 * len(arms), 4.4))
    for k, arm in enumerate(arms):
        ax = fig.add_subplot(1, len(arms), k + 1, projection="3d")
        part = seed0[seed0["arm"] == arm]
        table = part.pivot_table(index="y", columns="x", values="train_loss")
        xs, ys = np.meshgrid(table.columns, table.index)
        ax.plot_surface(xs, ys, np.log10(table.to_numpy()), cmap="viridis", vmin=lo, vmax=hi,
                        edgecolor="0.3", linewidth=0.3)  # fmt: skip
        ax.set_zlim(lo, hi)
        ax.set_xlabel("direction 1", fontsize=8)
        ax.set_ylabel("direction 2", fontsize=8)
        ax.set_zlabel("log10 training loss", fontsize=8)
        ax.set_title(phrase(FIGURE_TEXT, key="surfaces_3d_panel", arm=arm,
                            seed=int(part["seed"].iloc[0]), loss=part["run_train_loss"].iloc[0]),
                     fontsize=9)  # fmt: skip
    fig.suptitle(phrase(FIGURE_TEXT, key="surfaces_3d_title"), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    columns = ["arm", "seed", "reached", "run_train_loss", "x", "y", "train_loss"]
    return _save(fig, seed0[columns], figures, name)


def density_curves(spectra: pd.DataFrame, grid: np.ndarray, sigma: float) -> pd.DataFrame:
    """Each run's density on ``grid``: every quadrature node a Gaussian of width ``sigma`` (the
    same for every run drawn together), weighted, summed, averaged over the random vectors
    (:meth:`flatness.hessian.SpectralDensity.density`, with a shared width)."""
    rows = []
    for (arm, seed), part in spectra.groupby(["arm", "seed"], sort=False):
        curves = []
        for _, vec in part.groupby("vector"):
            diff = grid[None, :] - vec["node"].to_numpy()[:, None]
            kernel = np.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
            curves.append((vec["weight"].to_numpy()[:, None] * kernel).sum(axis=0))
        rows.append(pd.DataFrame({"arm": arm, "seed": seed, "reached": part["reached"].iloc[0],
                                  "run_train_loss": part["run_train_loss"].iloc[0],
                                  "eigenvalue": grid, "density": np.mean(curves, axis=0)}))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def spectra_figure(spectra: pd.DataFrame, panels: Panels, figures: Path, name: str) -> str | None:
    """Ghorbani et al. 2019's Fig. 1 at both minima of each panel's arms (same optimizer): every
    seed's eigenvalue density (thin) and the median over seeds (thick), on a log density axis; each
    seed's largest quadrature node, its estimate of λmax, as a tick at the top."""
    data = _reached(spectra)
    panels = [(t, [a for a in arms if a in set(data["arm"])]) for t, arms in panels]
    panels = [(t, arms) for t, arms in panels if len(arms) > 1]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    drawn = []
    for ax, (title, arms) in zip(axes[0], panels, strict=True):
        part = data[data["arm"].isin(arms)]
        lo, hi = float(part["node"].min()), float(part["node"].max())
        pad = 0.05 * (hi - lo)
        grid = np.linspace(lo - pad, hi + pad, 400)
        curves = density_curves(part, grid, sigma=0.01 * (hi - lo))
        for arm in arms:
            colour, _ = arm_style(arm)
            mine = curves[curves["arm"] == arm]
            wide = mine.pivot_table(index="eigenvalue", columns="seed", values="density")
            ax.plot(wide.index, wide.to_numpy(), color=colour, lw=0.6, alpha=0.35)
            top = part[part["arm"] == arm].groupby("seed")["node"].max()
            ax.plot(wide.index, wide.median(axis=1), color=colour, lw=2,
                    label=_arm_label(arm, mine, phrase(FIGURE_TEXT, key="spectra_arm",
                                                       top=top.median())))  # fmt: skip
            ax.plot(top, np.full(len(top), 1.0), "|", color=colour, ms=12,
                    transform=ax.get_xaxis_transform())  # fmt: skip
            drawn.append(mine)
        ax.set_yscale("log")
        peak = float(curves["density"].max())
        ax.set_ylim(peak * 1e-7, peak * 3)
        ax.set_xlabel(phrase(FIGURE_TEXT, key="spectra_xlabel"))
        ax.set_ylabel("density (log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.9))
        ax.text(0.01, 0.01, phrase(FIGURE_TEXT, key="spectra_width", sigma=0.01 * (hi - lo)),
                transform=ax.transAxes, fontsize=8, va="bottom")  # fmt: skip
    fig.suptitle(phrase(FIGURE_TEXT, key="spectra_title"), fontsize=11)
    fig.tight_layout()
    return _save(fig, pd.concat(drawn), figures, name)


def tracked_figure(
    tracked: pd.DataFrame, figures: Path, name: str, order: Sequence[str] = ()
) -> str | None:
    """Cohen et al. 2021's picture: λmax of the training loss along training, every seed of each
    tracked arm, against the optimizer's stability threshold at its rate ((2 + 2β)/η for heavy-ball
    momentum), one panel per arm on a shared log axis; the line ends (dotted) at the run's own λmax
    of its final weights, where it stopped (a filled marker: at its criterion)."""
    data = _reached(tracked)
    arms = _ordered(data["arm"], order)
    if not arms:
        return None
    fig, axes = plt.subplots(1, len(arms), figsize=(5.6 * len(arms), 4.4), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, arm in zip(axes[0], arms, strict=True):
        part = data[data["arm"] == arm]
        colour, marker = arm_style(arm)
        for _, run in part.groupby("seed"):
            along = run[run["point"] == "tracked"]
            ax.plot(along["step"], along["lambda_max"], color=colour, lw=0.9, alpha=0.6)
            final = run[run["point"] == "final"]
            if len(final):
                ax.plot([along["step"].iloc[-1], final["step"].iloc[0]],
                        [along["lambda_max"].iloc[-1], final["lambda_max"].iloc[0]], color=colour,
                        lw=0.9, alpha=0.6, ls=":")  # fmt: skip
                ax.plot(final["step"], final["lambda_max"], marker=marker, color=colour, ms=5)
        threshold = part["threshold"].dropna()
        if len(threshold):
            formula = THRESHOLD_FORMULA.get(part["optimizer"].iloc[0], "")
            ax.axhline(threshold.iloc[0], color="crimson", ls="--",
                       label=phrase(FIGURE_TEXT, key="tracked_threshold", formula=formula,
                                    threshold=threshold.iloc[0]))  # fmt: skip
        ax.plot([], [], color=colour, marker=marker,
                label=_arm_label(arm, part, phrase(FIGURE_TEXT, key="tracked_arm",
                                                   lr=part["lr"].iloc[0])))  # fmt: skip
        _log_panel(ax, arm, "training step")
    axes[0][0].set_ylabel("λmax, first 4000 samples (log)")
    fig.suptitle(phrase(FIGURE_TEXT, key="tracked_title"), fontsize=11)
    fig.tight_layout()
    columns = ["arm", "seed", "reached", "run_train_loss", "optimizer", "point", "epoch", "step",
               "lr", "train_loss", "lambda_max", "threshold"]  # fmt: skip
    return _save(fig, data[columns], figures, name)


def _ordered(arms: pd.Series, order: Sequence[str]) -> list[str]:
    """The arms present, in ``order`` first (the protocol's), then as they come."""
    present = list(dict.fromkeys(arms))
    return [a for a in order if a in present] + [a for a in present if a not in order]


def pca_figure(
    planes: pd.DataFrame, paths: pd.DataFrame, figures: Path, name: str, order: Sequence[str] = ()
) -> str | None:
    """Li et al. 2018's Sec. 7 picture: each arm's path of training (its lowest seed that met the
    criterion) projected on the top two principal directions of that path, over the training loss
    on that plane (one log colour scale for every panel); the axes give the share of the path's
    variance each direction holds, the title its range over every seed."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FixedLocator, FuncFormatter

    planes, paths = _reached(planes), _reached(paths)
    arms = _ordered(paths["arm"], order)
    if not arms:
        return None
    first = {a: paths[paths["arm"] == a]["seed"].min() for a in arms}
    plane0 = pd.concat(
        [planes[(planes["arm"] == a) & (planes["seed"] == s)] for a, s in first.items()]
    )
    path0 = pd.concat([paths[(paths["arm"] == a) & (paths["seed"] == s)] for a, s in first.items()])
    norm = LogNorm(plane0["train_loss"].min(), plane0["train_loss"].max())
    levels = np.geomspace(norm.vmin, norm.vmax, 16)
    fig, axes = plt.subplots(1, len(arms), figsize=(5.4 * len(arms) + 0.8, 4.8), squeeze=False,
                             layout="constrained")  # fmt: skip
    mesh = None
    for ax, arm in zip(axes[0], arms, strict=True):
        part = plane0[plane0["arm"] == arm]
        table = part.pivot_table(index="y", columns="x", values="train_loss")
        mesh = ax.contourf(table.columns, table.index, table.to_numpy(), levels=levels, norm=norm,
                           cmap="viridis")  # fmt: skip
        path = path0[path0["arm"] == arm]
        colour, marker = arm_style(arm)
        ax.plot(path["pc1"], path["pc2"], color="white", lw=1.2, marker=marker, ms=3,
                mfc=colour, mec="white", mew=0.5)  # fmt: skip
        # the plane is centred on the final weights, which the last saved epoch precedes
        ax.plot([path["pc1"].iloc[-1], 0.0], [path["pc2"].iloc[-1], 0.0], color="white", lw=1.2,
                ls=":")  # fmt: skip
        ax.plot(path["pc1"].iloc[:1], path["pc2"].iloc[:1], "w^", ms=8, label="initialisation")
        ax.plot([0.0], [0.0], "w*", ms=12, label="final weights (the plane's centre)")
        all_seeds = paths[paths["arm"] == arm].drop_duplicates("seed")
        share = all_seeds["pc1_variance"] + all_seeds["pc2_variance"]
        ax.set_xlabel(
            phrase(FIGURE_TEXT, key="pca_xlabel", share=100 * path["pc1_variance"].iloc[0])
        )
        ax.set_ylabel(f"PC2 ({100 * path['pc2_variance'].iloc[0]:.1f}%)")
        ax.set_title(phrase(FIGURE_TEXT, key="pca_panel", arm=arm, seed=first[arm],
                            epochs=len(path), loss=path["run_train_loss"].iloc[0],
                            seeds=len(all_seeds), low=100 * share.min(), high=100 * share.max()),
                     fontsize=9)  # fmt: skip
        ax.legend(fontsize=8, loc="lower right")
    cbar = fig.colorbar(mesh, ax=list(axes[0]), fraction=0.04)
    cbar.ax.yaxis.set_major_locator(FixedLocator(levels[::3]))
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    cbar.ax.yaxis.set_minor_locator(FixedLocator([]))
    cbar.set_label(phrase(FIGURE_TEXT, key="pca_colorbar"))
    fig.suptitle(phrase(FIGURE_TEXT, key="pca_title"), fontsize=11)
    plane0 = plane0.assign(part="plane")
    path0 = path0.assign(part="path")
    columns = ["part", "arm", "seed", "reached", "run_train_loss", "x", "y", "train_loss", "epoch",
               "step", "pc1", "pc2", "pc1_variance", "pc2_variance"]  # fmt: skip
    drawn = pd.concat([path0, plane0], ignore_index=True)
    return _save(fig, drawn[[c for c in columns if c in drawn]], figures, name)


# --- the report's lines -------------------------------------------------------------------------------


_read = load  # every table through its schema


def _rise(slices: pd.DataFrame, value: str, at: float = 0.5) -> pd.Series:
    """Median over seeds of the mean rise of ``value`` at ±``at`` along the slice over its centre."""
    out = {}
    for arm, part in slices.groupby("arm", sort=False):
        rises = []
        for _, run in part.groupby("seed"):
            run = run.sort_values("x")
            rises.append(slice_rise(run["x"], run[value], at))
        out[arm] = float(np.median(rises))
    return pd.Series(out)


def tracked_caption(data: pd.DataFrame, made: str, order: Sequence[str] = ()) -> list[str]:
    """What the λmax-along-training figure shows, counted from its data."""
    data = data.assign(ratio=data["lambda_max"] / data["threshold"])
    along = data[data["point"] == "tracked"]
    final = data[data["point"] == "final"]
    runs = along.groupby(["arm", "seed"], sort=False)
    peak = runs["ratio"].max()
    second = runs["step"].apply(lambda s: sorted(s)[1] if len(s) > 1 else np.nan)
    at = along.loc[runs["ratio"].idxmax()].set_index(["arm", "seed"])["step"]
    told = [
        {
            "arm": arm,
            "runs": int(len(peak.loc[arm])),
            "above": int((peak.loc[arm] >= 1).sum()),
            "peak": peak.loc[arm].median(),
            "first": int((at.loc[arm] <= second.loc[arm]).sum()),
            "end": final[final["arm"] == arm]["ratio"].median(),
        }
        for arm in _ordered(along["arm"], order)
    ]
    at_end = float(final.groupby("arm")["ratio"].median().max()) if len(final) else float("nan")
    highest = float(peak.max())
    return _caption(
        "sharpness_history",
        made,
        told=told,
        edge=edge_of_stability(highest, at_end),
        above=highest >= 1,
    )


def edge_of_stability(highest: float, at_end: float) -> str:
    """What the ratios of λmax to the stability threshold say, from the highest any run reaches
    and the largest arm median at the end (Cohen et al. 2021 find full-batch training held at
    ratio ≈ 1): ``far`` (no run within a factor of two), ``early`` (some come close early, every
    arm's median ends below half) or ``near`` (runs end near it)."""
    if highest < 0.5:
        return "far"
    if at_end < 0.5:
        return "early"
    return "near"


def _caption(figure: str, made: str, **context: Any) -> list[str]:
    """A figure's Markdown image and its caption (``landscape_captions.md.j2``)."""
    return templating.lines(
        CAPTIONS, figure=figure, made=made, data=made.replace(".png", ".csv"), **context
    )


def landscape_lines(p: Mapping[str, Any], tables: Path, figures: Path) -> list[str]:
    """The pictures of this protocol's minima and paths that its runs recorded, each with a
    sentence read from the figure's own data."""
    name, lines = p["name"], []
    panels = contrast_panels(p)
    surfaces = _read(tables, f"surfaces_{name}")
    if surfaces is not None and panels:
        made = slices_figure(surfaces, panels, figures, f"{name}_slices_1d")
        if made:
            lines += _slices_caption(figures, made)
        made = surface_3d_figure(surfaces, list(p["arms"]), figures, f"{name}_surfaces_3d")
        if made:
            lines += _surfaces_3d_caption(surfaces, figures, made)
    spectra = _read(tables, f"spectra_{name}")
    if spectra is not None and panels:
        made = spectra_figure(spectra, panels, figures, f"{name}_spectra")
        if made:
            lines += _spectra_caption(p, tables, spectra, made)
    tracked = _read(tables, f"tracked_{name}")
    if tracked is not None:
        made = tracked_figure(tracked, figures, f"{name}_sharpness_history", list(p["arms"]))
        if made:
            lines += tracked_caption(_reached(tracked), made, list(p["arms"]))
    planes, paths = _read(tables, f"pca_planes_{name}"), _read(tables, f"pca_paths_{name}")
    if planes is not None and paths is not None:
        made = pca_figure(planes, paths, figures, f"{name}_pca_path", list(p["arms"]))
        if made:
            lines += _pca_caption(p, paths, figures, made)
    return lines


def _slices_caption(figures: Path, made: str) -> list[str]:
    """The 1D slices' rise at ±0.5 and the test-over-train gap at the centre, per arm."""
    drawn = pd.read_csv(figures / made.replace(".png", ".csv"))
    centre = drawn[drawn["x"].abs() < 1e-9].groupby("arm", sort=False)
    test, train = centre["test_loss"].median(), centre["train_loss"].median()
    return _caption(
        "slices_1d",
        made,
        train=_rise(drawn, "train_loss").to_dict(),
        test=_rise(drawn, "test_loss").to_dict(),
        gap=(test - train).to_dict(),
        factor=(test / train).to_dict(),
    )


def _surfaces_3d_caption(surfaces: pd.DataFrame, figures: Path, made: str) -> list[str]:
    """The drawn planes' highest points against every seed's median, and whether they agree on
    the arms' order."""
    drawn = pd.read_csv(figures / made.replace(".png", ".csv"))
    corner = drawn.groupby("arm", sort=False)["train_loss"].max()
    every = _reached(surfaces).groupby(["arm", "seed"])["train_loss"].max()
    highest = every.groupby("arm").median().reindex(corner.index)
    return _caption(
        "surfaces_3d",
        made,
        seeds=drawn.groupby("arm", sort=False)["seed"].first().to_dict(),
        corner=corner.to_dict(),
        highest=highest.to_dict(),
        same_order=list(corner.sort_values().index) == list(highest.sort_values().index),
    )


def _spectra_caption(
    p: Mapping[str, Any], tables: Path, spectra: pd.DataFrame, made: str
) -> list[str]:
    """The spectra's extreme nodes and tail weight per arm (medians over seeds), beside the
    protocol's own λmax where it has one."""
    data = _reached(spectra)
    order = _ordered(data["arm"], list(p["arms"]))
    per_run = data.groupby(["arm", "seed"])["node"]
    heavy = data[data["node"] > 0.1].groupby(["arm", "seed", "vector"])["weight"].sum()
    weight = heavy.reindex(
        data.groupby(["arm", "seed", "vector"]).size().index, fill_value=0.0
    )  # every vector, those with no node above 0.1 at 0
    settings = p["base"].get("metrics", {}).get("hessian_esd", {})
    paired = _read(tables, f"paired_{p['name']}")
    own = {}
    if paired is not None and "lambda_max" in set(paired["quantity"]):
        lam = paired[paired["quantity"] == "lambda_max"].drop_duplicates(["arm", "seed"])
        own = lam.groupby("arm")["value"].median().reindex(order).dropna().to_dict()
    return _caption(
        "spectra",
        made,
        protocol=p["name"],
        vectors=settings.get("vectors", "?"),
        steps=settings.get("steps", "?"),
        top=per_run.max().groupby("arm").median().reindex(order).to_dict(),
        bottom=per_run.min().groupby("arm").median().reindex(order).to_dict(),
        tail=weight.groupby("arm").median().reindex(order).to_dict(),
        own_lambda_max=own,
    )


def _pca_caption(p: Mapping[str, Any], paths: pd.DataFrame, figures: Path, made: str) -> list[str]:
    """The share of the paths' variance on the first directions, and the plane's lowest loss
    against its centre's."""
    drawn = pd.read_csv(figures / made.replace(".png", ".csv"))
    plane = drawn[drawn["part"] == "plane"]
    low = plane.groupby("arm", sort=False)["train_loss"].min()
    at_end = plane[(plane["x"].abs() < 1e-9) & (plane["y"].abs() < 1e-9)]
    at_end = at_end.groupby("arm", sort=False)["train_loss"].first().reindex(low.index)
    runs = _reached(paths).drop_duplicates(["arm", "seed"])
    order = _ordered(runs["arm"], list(p["arms"]))
    share = (runs["pc1_variance"] + runs["pc2_variance"]).groupby(runs["arm"]).min()
    first = runs.groupby("arm")["pc1_variance"].median().reindex(order)
    return _caption(
        "pca_path",
        made,
        first=first.to_dict(),
        share=share.reindex(order).to_dict(),
        one_dimensional=bool(first.min() >= 0.8),
        low=low.to_dict(),
        at_end=at_end.to_dict(),
    )
