"""The robustness of a protocol's verdicts (issue 26), drawn and tabulated from the analysis's
tables ``robust_rate_<name>.csv`` (the effect against each arm's rate) and ``robustness_<name>.csv``
(each condition's paired reading and the label); the sentences are ``templates/robustness*.j2``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.schemas import load
from experiments.report import templating
from experiments.report.figures import _save, arm_style, phrase, plt

FIGURE_TEXT = "robustness_figure_text.txt.j2"


def robustness_lines(p: dict, tables: Path, figures: Path) -> list[str]:
    """The section's lines, nothing where the protocol has no robustness tables."""
    curve = load(tables, f"robust_rate_{p['name']}")
    labels = load(tables, f"robustness_{p['name']}")
    if labels is None:
        return []
    made = _rate_figure(curve, figures, p["name"]) if curve is not None and len(curve) else None
    table = labels.assign(
        reading=[
            _reading(r) if r["condition"] != "today" else _reading(r) + f" ({r['verdict_today']})"
            for _, r in labels.iterrows()
        ]
    )
    shown = table[
        [
            "comparison",
            "part",
            "condition",
            "quantity",
            "recorded",
            "reached_both",
            "reading",
            "p_shift",
        ]
    ]
    verdicts = labels[labels["condition"] == "today"][
        ["comparison", "part", "verdict_today", "label"]
    ]
    return templating.lines(
        "robustness.md.j2",
        conditions=shown.to_markdown(index=False, floatfmt=".3g"),
        labels=verdicts.to_markdown(index=False),
        made=made,
        data=made.replace(".png", ".csv") if made else None,
        points=_points(curve) if curve is not None else [],
        flips=_flips(curve) if curve is not None and len(curve) else [],
        budget=(labels["condition"] == "endpoint: whole step budget").any(),
    )


def label_heads(tables: Path, protocols) -> dict[tuple[str, str], str]:
    """``{(protocol, comparison): "effect: <label>; mechanism: <label>"}`` for the verdict table,
    each label without its list of conditions read (the protocol's section lists them). A protocol
    without a ``robustness_<name>`` table is absent, so the table says "untested" for its claims."""
    heads = {}
    for name in protocols:
        labels = load(tables, f"robustness_{name}")
        if labels is None:
            continue
        today = labels[labels["condition"] == "today"]
        for comparison, parts in today.groupby("comparison", sort=False):
            heads[(name, comparison)] = "; ".join(
                f"{r.part}: {_short_label(r.label)}" for r in parts.itertuples()
            )
    return heads


def _short_label(label: str) -> str:
    """A label for the verdict table: its head, what it was read under, the conditions not
    comparable named, those not run yet counted (``robustness_label`` writes the brackets)."""
    head, *brackets = label.split(" [")
    read, aside = "", []
    for b in brackets:
        b = b.rstrip("]")
        if b.startswith("read under: "):
            read = b.removeprefix("read under: ")
        else:
            aside += b.split("; ")
    missed = [a.split(": not comparable")[0] for a in aside if ": not comparable" in a]
    waiting = sum(": not run yet" in a for a in aside)
    said = [f"read under {read}" if read else "nothing read"]
    said += [f"{m}: not comparable (a seed missed its criterion)" for m in missed]
    said += [f"{waiting} not run yet"] if waiting else []
    return f"{head} ({'; '.join(said)})"


def _reading(r: pd.Series) -> str:
    if not np.isfinite(r["mean_diff"]):
        return "not read"
    scale = 100 if r["quantity"].endswith("error") else 1
    unit = " points" if scale == 100 else ""
    return (
        f"{scale * r['mean_diff']:+.2f}{unit} [{scale * r['ci_low']:+.2f}, "
        f"{scale * r['ci_high']:+.2f}], p {r['p']:.2g}"
    )


def _flips(curve: pd.DataFrame) -> list[dict]:
    """Grid points whose mean effect has the other sign from the same slice's ×1 point (the label
    does not read the grid, so the section says where it would disagree)."""
    out = []
    for (comparison, moving), rows in curve.groupby(["comparison", "moving"], sort=False):
        one = rows[np.isclose(rows["multiplier"], 1.0)]
        if one.empty or not np.isfinite(one["mean"].iloc[0]):
            continue
        sign = np.sign(one["mean"].iloc[0])
        for r in rows[rows["comparable"].astype(bool)].itertuples():
            if np.isfinite(r.mean) and np.sign(r.mean) == -sign:
                out.append({"comparison": comparison, "moving": moving, "multiplier": r.multiplier,
                            "mean": r.mean, "low": r.low, "high": r.high})  # fmt: skip
    return out


def _points(curve: pd.DataFrame) -> list[dict]:
    """Grid points that are not comparable, with how many seeds reached in each arm."""
    missed = curve[~curve["comparable"].astype(bool)]
    return [
        {"comparison": r["comparison"], "moving": r["moving"], "multiplier": r["multiplier"],
         "reached_a": int(r["reached_a"]), "reached_b": int(r["reached_b"]), "n": int(r["n"]),
         "planned": int(r["planned"])}
        for _, r in missed.iterrows()
    ]  # fmt: skip


def _rate_figure(curve: pd.DataFrame, figures: Path, name: str) -> str:
    """Per comparison, the effect a − b against the moved arm's rate multiplier (log scale), one
    line per slice with its pointwise paired-t band; a point where a seed missed is drawn hollow
    at 0 with how many seeds reached (k/n), never as a number."""
    comparisons = list(dict.fromkeys(curve["comparison"]))
    fig, axes = plt.subplots(1, len(comparisons), figsize=(4.2 * len(comparisons), 3.4),
                             squeeze=False)  # fmt: skip
    for ax, comparison in zip(axes[0], comparisons, strict=True):
        mine = curve[curve["comparison"] == comparison]
        for moving, part in mine.groupby("moving", sort=False):
            part = part.sort_values("multiplier")
            colour, marker = arm_style(moving)
            ok = part[part["comparable"].astype(bool)]
            ax.plot(ok["multiplier"], 100 * ok["mean"], marker=marker, color=colour,
                    label=phrase(FIGURE_TEXT, key="slice", arm=moving))  # fmt: skip
            ax.fill_between(ok["multiplier"], 100 * ok["low"], 100 * ok["high"], color=colour,
                            alpha=0.15, linewidth=0)  # fmt: skip
            for _, r in part[~part["comparable"].astype(bool)].iterrows():
                ax.scatter([r["multiplier"]], [0], marker=marker, facecolors="none",
                           edgecolors=colour)  # fmt: skip
                reached = min(r["reached_a"], r["reached_b"])
                run = "" if r["n"] >= r["planned"] else f" ({r['n']} of {r['planned']} run)"
                ax.annotate(f"{reached}/{r['n']}{run}", (r["multiplier"], 0), fontsize=7,
                            textcoords="offset points", xytext=(3, 4))  # fmt: skip
        ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(phrase(FIGURE_TEXT, key="x"))
        ax.set_ylabel(phrase(FIGURE_TEXT, key="y"))
        ax.set_title(phrase(FIGURE_TEXT, key="title", comparison=comparison), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, curve, figures, f"{name}_robust_rate")
