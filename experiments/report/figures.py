"""The report's figures, drawn from the tables the verdicts step saved (never measured here).

Each figure is written with the tidy CSV of exactly what it draws beside it
(``results/figures/<name>.csv``), so anyone can re-plot it. seaborn draws the per-seed points;
one colour and marker per arm across every figure of a protocol.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from experiments.report import templating  # noqa: E402
from flatness.io import atomic_write_bytes  # noqa: E402
from flatness.plot import save_figure  # noqa: E402

LABELS = {
    "test_error": "test error",
    "gap": "generalisation gap (test − train error)",
    "lambda_max": "λmax of the training loss",
    "keskar_sharpness": "Keskar ε-sharpness (ε = 1e-3)",
    "adaptive_worst_case_sharpness": "adaptive worst-case sharpness",
    "slice_sharpness": "filter-normalised slice sharpness",
}
MARKERS = ["o", "s", "D", "^", "v", "P", "X"]
FIGURE_TEXT = "figures_figure_text.txt.j2"  # the figures' titles and long labels


# The protocols in the order the report shows them (then any other file by name): the first ones
# get the most distinct colours of the palette.
PROTOCOL_ORDER = ("batch_size", "optimizer", "visualisation", "batch_norm", "adam_escape")


_PROTOCOLS: list[Mapping[str, Any]] = []  # what the report draws: the tables' protocols.json


def use_protocols(protocols: Iterable[Mapping[str, Any]]) -> None:
    """Style the arms of these protocols (the report passes its tables' ``protocols.json``: the
    protocols as judged, never the config files as they are now); styles given before are reset."""
    _PROTOCOLS[:] = list(protocols)
    _STYLES.clear()


def _protocol_arms() -> tuple[tuple[tuple[str, str | None], ...], ...]:
    """The arms of each protocol given to :func:`use_protocols` (in the report's order, arms in
    their protocol's order), each with the arm whose runs it reuses (``same_as: protocol/arm``)."""
    ordered = sorted(
        _PROTOCOLS,
        key=lambda p: (
            PROTOCOL_ORDER.index(p["name"]) if p["name"] in PROTOCOL_ORDER else 99,
            p["name"],
        ),
    )
    return tuple(
        tuple(
            (
                arm,
                str((over or {}).get("same_as")).split("/")[-1]
                if (over or {}).get("same_as")
                else None,
            )
            for arm, over in (p.get("arms") or {}).items()
        )  # fmt: skip
        for p in ordered
    )


_STYLES: dict[str, tuple[int, str]] = {}


def _assign(arms) -> None:
    """Give each arm of a group (a protocol's arms: what one figure can show together) that has no
    style yet the style of the arm whose runs it reuses, else the first colour and the first marker
    no other arm of the group holds."""
    colours = {_STYLES[a][0] for a, _ in arms if a in _STYLES}
    markers = {_STYLES[a][1] for a, _ in arms if a in _STYLES}
    for arm, source in arms:
        if arm in _STYLES:
            continue
        if source in _STYLES and _STYLES[source][0] not in colours:
            _STYLES[arm] = _STYLES[source]  # the same runs look the same in every figure
        else:
            colour = next(k for k in range(100) if k not in colours)
            marker = next((m for m in MARKERS if m not in markers), MARKERS[0])
            _STYLES[arm] = (colour, marker)
        colours.add(_STYLES[arm][0])
        markers.add(_STYLES[arm][1])


def arm_style(arm: str) -> tuple[tuple[float, float, float], str]:
    """The colour and marker of an arm in every figure of the report, so that an arm named alike in
    two protocols (``momentum`` in optimizer and adam_escape) looks alike everywhere, and the arms
    of one protocol (what one figure shows together) differ in both. An arm of no protocol file
    (a test's, a user's) takes the first pair."""
    if not _STYLES:
        for arms in _protocol_arms():
            _assign(arms)
    if arm not in _STYLES:
        _assign([(arm, None)])
    k, marker = _STYLES[arm]
    palette = sns.color_palette("colorblind", 10)
    # the colour-blind palette reordered so that the first four, which most figures use, are far
    # apart (its orange and vermilion side by side were hard to tell apart)
    return palette[(0, 1, 2, 4, 3, 5, 7, 9, 6, 8)[k % 10]], marker


def arm_palette(arms) -> dict[str, tuple[float, float, float]]:
    """``{arm: colour}`` for seaborn's ``palette=``."""
    return {a: arm_style(a)[0] for a in arms}


def arm_markers(arms) -> dict[str, str]:
    """``{arm: marker}`` for seaborn's ``markers=``."""
    return {a: arm_style(a)[1] for a in arms}


def phrase(name: str, **context) -> str:
    """A one-line template filled in (a figure's title, a table's cell): its text without the
    file's closing newline."""
    return templating.render(name, **context).rstrip("\n")


def _save(fig, data: pd.DataFrame, figures: Path, name: str) -> str:
    figures.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(figures / f"{name}.csv", data.to_csv(index=False).encode())
    save_figure(fig, figures / f"{name}.png")
    return f"{name}.png"


def paired_figure(
    paired: pd.DataFrame, comparison: str, quantities: list[str], figures: Path, name: str
) -> str | None:
    """One panel per quantity: every seed's value in arm b and arm a, joined by a grey line (the
    pairing the test uses); log scale for sharpness. Only seeds where both arms met the criterion."""
    rows = paired[(paired["comparison"] == comparison) & paired["quantity"].isin(quantities)]
    rows = rows[rows["reached"].astype(bool) & ~rows["at_bound"].astype(bool)].dropna(
        subset=["value"]
    )
    if rows.empty:
        return None
    order = list(
        dict.fromkeys(
            rows[rows["role"] == r]["arm"].iloc[0]
            for r in ("b2", "b", "a2", "a")
            if (rows["role"] == r).any()
        )
    )
    rows = rows.drop_duplicates(["arm", "seed", "quantity"])  # an arm in two roles, drawn once
    if rows["arm"].nunique() < 2:  # one arm has no comparable value: nothing paired to draw
        return None
    width = 3.6 if len(order) <= 2 else 1.3 * len(order) + 1
    fig, axes = plt.subplots(
        1, len(quantities), figsize=(width * len(quantities), 3.6), squeeze=False
    )
    for ax, q in zip(axes[0], quantities, strict=True):
        sub = rows[rows["quantity"] == q]
        wide = sub.pivot(index="seed", columns="arm", values="value")
        for _, seed_values in wide.iterrows():
            ax.plot(order, seed_values[order], color="0.75", linewidth=0.8, zorder=1)
        for arm in order:  # seaborn's stripplot takes one marker; each arm keeps its own
            part = sub[sub["arm"] == arm]
            colour, marker = arm_style(arm)
            ax.scatter([arm] * len(part), part["value"], color=colour, marker=marker, s=36,
                       zorder=2)  # fmt: skip
        # sharpness on a log axis with its geometric mean: the test is on log(a/b)
        log = q not in ("test_error", "gap") and bool((sub["value"] > 0).all())
        if log:
            means = np.exp(np.log(sub["value"]).groupby(sub["arm"]).mean())[order]
        else:
            means = sub.groupby("arm")["value"].mean()[order]
        label = "geometric mean" if log else "mean"
        ax.scatter(order, means, marker="_", s=600, color="black", zorder=3, label=label)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("")
        ax.set_ylabel(LABELS.get(q, q) + (" (log scale)" if log else " (axis not from 0)"))
        ax.grid(alpha=0.3)
    n = rows["seed"].nunique()
    logged = any(ax.get_yscale() == "log" for ax in axes[0])
    title = phrase(FIGURE_TEXT, key="paired_title", comparison=comparison, seeds=n, logged=logged)
    # wrapped to the figure's width: a one- or two-panel figure is narrower than the sentence
    fig.suptitle(textwrap.fill(title, int(12 * fig.get_figwidth())), fontsize=9)
    fig.tight_layout()
    return _save(fig, rows[["arm", "role", "seed", "quantity", "value"]], figures, name)


def models_table(paired: pd.DataFrame, comparison: str) -> pd.DataFrame:
    """One row per model (arm, seed) that met the criterion, one column per quantity."""
    rows = paired[(paired["comparison"] == comparison) & paired["reached"].astype(bool)]
    return rows.pivot_table(index=["arm", "seed"], columns="quantity", values="value").reset_index()


def tau_figure(
    paired: pd.DataFrame, comparison: str, x: str, y: str, figures: Path, name: str
) -> str | None:
    """Every model of a rank-correlation comparison: x against y, one colour and marker per arm."""
    wide = models_table(paired, comparison)
    if wide.empty or x not in wide or y not in wide:
        return None
    arms = list(dict.fromkeys(paired[paired["comparison"] == comparison]["arm"]))
    fig, ax = plt.subplots(figsize=(5.2, 4))
    sns.scatterplot(
        data=wide, x=x, y=y, hue="arm", style="arm", hue_order=arms, style_order=arms,
        palette=arm_palette(arms), markers=arm_markers(arms), s=50, ax=ax,
    )  # fmt: skip
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="arm", title_fontsize=7)
    ax.set_title(
        phrase(FIGURE_TEXT, key="tau_title", comparison=comparison, models=len(wide)), fontsize=10
    )
    fig.tight_layout()
    return _save(fig, wide[["arm", "seed", x, y]], figures, name)


# The audit's metrics by family, one panel each (metrics not listed go to "other")
AUDIT_FAMILIES = {
    "norms": [
        "param_norm",
        "frobenius_product",
        "spectral_product",
        "path_norm",
        "fisher_rao_norm",
    ],
    "Hessian": ["lambda_max", "hessian_trace"],
    "sharpness": ["keskar_sharpness", "worst_case_sharpness", "average_sharpness"],
    "adaptive sharpness": ["adaptive_worst_case_sharpness", "adaptive_average_sharpness"],
    "PAC-Bayes": ["pacbayes_sigma"],
}


def audit_figure(
    values: pd.DataFrame, audit: pd.DataFrame, model: str, figures: Path, label: str = ""
) -> str:
    """Dinh et al.'s audit of one model as small multiples: a row per rescaling mode, a panel per
    metric family, each metric's |value / original| against α, the test error (which must not
    move) as a grey band in every panel. Each metric's line style follows its verdict in the audit
    table (solid: moves; dashed, hollow: invariant), read from that table, not recomputed; metrics
    drawn on top of each other stay visible as concentric hollow markers of different shapes. A
    neuron-wise rescaling at α = 1 is not the original model, which is marked at ratio 1."""
    rows = values[(values["model"] == model) & ~values["at_bound"].astype(bool)].copy()
    rows["ratio"] = (rows["value"] / rows["reference"]).abs()
    verdicts = audit[audit["model"] == model].set_index(["mode", "metric"])["verdict"]
    rows["verdict"] = [
        verdicts.get((m, k), "") for m, k in zip(rows["mode"], rows["metric"], strict=True)
    ]
    family_of = {m: f for f, ms in AUDIT_FAMILIES.items() for m in ms}
    rows["family"] = rows["metric"].map(
        lambda m: "test error" if m == "test_error" else family_of.get(m, "other")
    )
    families = [f for f in [*AUDIT_FAMILIES, "other"] if f in set(rows["family"])]
    modes = list(dict.fromkeys(rows["mode"]))
    # one colour per metric across every panel and figure; shapes and sizes tell stacked lines apart
    others = sorted(m for m in set(rows["metric"]) - {"test_error"} if m not in family_of)
    ordered = [m for ms in [*AUDIT_FAMILIES.values(), others] for m in ms]
    palette = dict(zip(ordered, sns.color_palette("tab20", 20) * 2, strict=False))
    shape = {
        m: (k, "osD^vP"[k % 6])
        for ms in [*AUDIT_FAMILIES.values(), others]
        for k, m in enumerate(ms)
    }
    fig, axes = plt.subplots(len(modes), len(families), figsize=(4.3 * len(families), 4.0 * len(modes)),
                             squeeze=False, sharex=True, sharey=True)  # fmt: skip
    for i, mode in enumerate(modes):
        test = rows[(rows["mode"] == mode) & (rows["metric"] == "test_error")]
        for j, fam in enumerate(families):
            ax = axes[i][j]
            ax.plot(
                test["alpha"], test["ratio"], color="grey", lw=6, alpha=0.35, label="test error"
            )
            if mode != "layer":
                ax.plot([1], [1], marker="*", color="black", ms=11, ls="none",
                        label="original model (ratio 1)")  # fmt: skip
            panel = rows[(rows["mode"] == mode) & (rows["family"] == fam)]
            for metric, group in panel.groupby("metric"):
                invariant = group["verdict"].iloc[0] == "invariant"
                k, marker = shape[metric]
                ax.plot(group["alpha"], group["ratio"], color=palette[metric], marker=marker,
                        ms=11 - 2 * k if invariant else 6, mfc="none" if invariant else palette[metric],
                        mew=1.5, ls="--" if invariant else "-",
                        label=f"{metric}: {group['verdict'].iloc[0]}")  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
            if i == 0:
                ax.set_title(fam, fontsize=11)
            if j == 0:
                ax.set_ylabel(f"{mode}-wise: value / original")
            if i == len(modes) - 1:
                ax.set_xlabel("α (the same function at every α)")
    fig.suptitle(phrase(FIGURE_TEXT, key="audit_title", model=label or model), fontsize=12)
    fig.tight_layout()
    tidy = rows[["model", "mode", "family", "metric", "alpha", "ratio", "verdict"]]
    return _save(fig, tidy, figures, f"audit_{model}")


def audit_slice_figure(slices: pd.DataFrame, model: str, figures: Path) -> str | None:
    """Dinh et al.'s point on a picture: the filter-normalised 1D slice of one model before and
    after its α-rescalings (the same function), training loss (log) and accuracy, from the audit's
    saved slices (``tables/audit_slices.csv``)."""
    rows = slices[slices["model"] == model]
    if rows.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, (curve, part) in enumerate(rows.groupby("curve", sort=False)):
        for ax, value in zip(axes, ("train_loss", "train_acc"), strict=True):
            ax.plot(part["t"], part[value], ls=("-", "--", ":")[k % 3], lw=2 - 0.4 * k,
                    label=curve)  # fmt: skip
    axes[0].set_yscale("log")
    for ax, label in zip(axes, ("training loss (log scale)", "training accuracy"), strict=True):
        ax.set_xlabel(phrase(FIGURE_TEXT, key="audit_slice_xlabel"))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(phrase(FIGURE_TEXT, key="audit_slice_title", model=model), fontsize=10)
    fig.tight_layout()
    return _save(fig, rows, figures, f"audit_{model}_slice")


def slice_rise(coords, values, at: float = 0.5) -> float:
    """Li et al. 2018's reading of a 1D slice: the mean rise of ``values`` at ±``at`` (interpolated
    between grid points) over the value at the coordinate nearest 0. The report's one reading of
    every saved slice (surfaces, audit slices); the verdicts' slice sharpness is
    :func:`experiments.analyse.judge.slice_sharpness`."""
    coords, values = np.asarray(coords, dtype=float), np.asarray(values, dtype=float)
    centre = values[np.abs(coords).argmin()]
    return float(np.interp([-at, at], coords, values).mean() - centre)


def typical_planes(data: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Each arm's plane of its median seed by slice sharpness (the mean rise of the training loss
    at ±0.5 along both directions over the centre, read off the plane itself; the lower middle for
    an even count), so that one picture per arm shows a typical run, not the first seed."""
    picked = []
    for arm in arms:
        part = data[data["arm"] == arm]
        rises = {}
        for seed, plane in part.groupby("seed"):
            table = plane.pivot_table(index="x", columns="y", values="train_loss")
            xs, ys = table.index.to_numpy(), table.columns.to_numpy()
            i, j = int(np.abs(xs).argmin()), int(np.abs(ys).argmin())
            rises[seed] = (slice_rise(xs, table.iloc[:, j]) + slice_rise(ys, table.iloc[i, :])) / 2
        ordered = sorted(rises, key=lambda s: (rises[s], s))
        picked.append(part[part["seed"] == ordered[(len(ordered) - 1) // 2]])
    return pd.concat(picked)


def surfaces_figure(
    surfaces: pd.DataFrame, arms: list[str], figures: Path, name: str
) -> str | None:
    """Li et al. 2018's 2D contours of the minima the runs saved: each arm's training-loss plane
    (its median seed by slice sharpness, :func:`typical_planes`) as its grid's cells on one shared logarithmic colour
    scale with a colour bar (no interpolation between the grid points). Reads the runs' surfaces;
    measures nothing. The slices through the same planes are
    :func:`experiments.report.landscape.slices_figure`."""
    from matplotlib.colors import LogNorm

    data = surfaces[surfaces["arm"].isin(arms) & surfaces["reached"].astype(bool)]
    arms = [a for a in arms if a in set(data["arm"])]
    if len(arms) < 2:
        return None
    seed0 = typical_planes(data, arms)
    norm = LogNorm(seed0["train_loss"].min(), seed0["train_loss"].max())
    fig = plt.figure(figsize=(3.9 * len(arms) + 0.6, 4.4))
    grid = fig.add_gridspec(1, len(arms) + 1, width_ratios=[1] * len(arms) + [0.06])
    mesh = None
    for k, arm in enumerate(arms):
        ax = fig.add_subplot(grid[0, k])
        part = seed0[seed0["arm"] == arm]
        table = part.pivot_table(index="y", columns="x", values="train_loss")
        mesh = ax.pcolormesh(table.columns, table.index, table.to_numpy(), norm=norm,
                             cmap="viridis", shading="nearest")  # fmt: skip
        ax.plot(0, 0, "w+", ms=12)
        centre = part.loc[(part["x"].abs() + part["y"].abs()).idxmin()]
        ax.set_title(phrase(FIGURE_TEXT, key="surfaces_panel", arm=arm,
                            seed=int(part["seed"].iloc[0]), loss=part["run_train_loss"].iloc[0],
                            centre_loss=centre["train_loss"], centre_acc=centre["test_acc"]),
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("direction 1 (filter-normalised)", fontsize=10)
        if k == 0:
            ax.set_ylabel("direction 2 (filter-normalised)", fontsize=10)
    cbar = fig.colorbar(mesh, cax=fig.add_subplot(grid[0, -1]))
    cbar.set_label(phrase(FIGURE_TEXT, key="surfaces_colorbar"), fontsize=10)
    fig.suptitle(phrase(FIGURE_TEXT, key="surfaces_title"), fontsize=12)
    fig.tight_layout()
    columns = ["arm", "seed", "reached", "run_train_loss", "x", "y", "train_loss", "test_loss",
               "train_acc", "test_acc"]  # fmt: skip
    return _save(fig, seed0[[c for c in columns if c in seed0]], figures, name)


def interpolation_figure(
    pairs: pd.DataFrame, figures: Path, name: str, labels: dict[str, str] | None = None
) -> str | None:
    """Keskar et al. 2017's Fig. 3 from the pairs the runs measured: for each pair, training and
    test loss (left) and accuracy (right) on the line from arm a's minimum (t = 0) to arm b's
    (t = 1) of the same seed, the median over seeds with every seed's range as a band; the legend
    gives both accuracies at both minima."""
    rows = []
    for _, r in pairs.dropna(subset=["interpolation"]).iterrows():
        line = json.loads(r["interpolation"])
        for k, t in enumerate(line["t"]):
            rows.append({"pair": r["pair"], "a": r["a"], "b": r["b"], "seed": r["seed"], "t": t,
                         **{q: line[q][k] for q in ("train_loss", "test_loss", "train_acc",
                                                     "test_acc")}})  # fmt: skip
    data = pd.DataFrame(rows)
    if data.empty:
        return None
    names = list(dict.fromkeys(data["pair"]))
    labels = labels or {}
    fig, axes = plt.subplots(len(names), 2, figsize=(14, 4.6 * len(names)), squeeze=False,
                             sharey="col")  # fmt: skip
    style = {"train": ("tab:blue", "-"), "test": ("tab:orange", "--")}
    for i, pair in enumerate(names):
        part = data[data["pair"] == pair]
        a, b = part["a"].iloc[0], part["b"].iloc[0]
        la, lb = labels.get(a, a), labels.get(b, b)
        for j, kind in enumerate(("loss", "acc")):
            ax = axes[i][j]
            for split, (colour, ls) in style.items():
                wide = part.pivot_table(index="t", columns="seed", values=f"{split}_{kind}")
                ends = (
                    wide.loc[[0.0, 1.0]].median(axis=1) if {0.0, 1.0} <= set(wide.index) else None
                )
                label = f"{split} {'loss' if kind == 'loss' else 'accuracy'}"
                if kind == "acc" and split == "test" and ends is not None:
                    label += f" ({la}: {ends[0.0]:.3f}, {lb}: {ends[1.0]:.3f})"
                ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=colour,
                                alpha=0.2, lw=0)  # fmt: skip
                ax.plot(wide.index, wide.median(axis=1), color=colour, ls=ls, marker="o", ms=3,
                        label=label)  # fmt: skip
            for t in (0.0, 1.0):
                ax.axvline(t, color="grey", lw=0.8, ls=":")
            if kind == "loss":
                ax.set_yscale("log")
            ax.set_xlabel(f"t: (1 − t)·θ[{la}] + t·θ[{lb}]", fontsize=9)
            ax.set_ylabel("loss" if kind == "loss" else "accuracy")
            ax.set_title(f"{pair}: {'loss' if kind == 'loss' else 'accuracy'}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.suptitle(phrase(FIGURE_TEXT, key="interpolation_title", seeds=data["seed"].nunique()),
                 fontsize=12)  # fmt: skip
    fig.tight_layout()
    return _save(fig, data, figures, name)
