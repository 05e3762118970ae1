"""The report's figures, drawn from the tables the verdicts step saved (never measured here).

Each figure is written with the tidy CSV of exactly what it draws beside it
(``results/figures/<name>.csv``), so anyone can re-plot it. seaborn draws the per-seed points;
one colour and marker per arm across every figure of a protocol.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

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
        sns.stripplot(
            data=sub, x="arm", y="value", hue="arm", order=order, hue_order=order, jitter=False,
            size=6, ax=ax, legend=False, zorder=2,
        )  # fmt: skip
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
    title = (
        f"{comparison}: {n} paired seeds (grey line: one seed across the arms; black bar: the "
        "mean; on a log axis, the geometric mean)"
    )
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
        markers=MARKERS[: len(arms)], s=50, ax=ax,
    )  # fmt: skip
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="arm", title_fontsize=7)
    ax.set_title(f"{comparison}: {len(wide)} models, each at its training criterion", fontsize=10)
    fig.tight_layout()
    return _save(fig, wide[["arm", "seed", x, y]], figures, name)
