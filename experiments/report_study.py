"""The report's section on a correlation study (issue 14): which measure predicts generalisation,
after Jiang et al. 2020, drawn from what ``python -m experiments.study rank`` saved
(``study_<name>.json``, ``_ranking``, ``_dropped``, ``_models``), never measured here.

It writes the ranking table, a figure of every measure's K(μ) and τ with their bootstrap intervals,
the measure-versus-gap scatter of the best few measures coloured by the axis that moves each most,
Andriushchenko et al. 2023's dissection of sharpness (adaptive or plain, worst case or average, ℓ2
or ℓ∞, radius), and our ranking beside the published ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from experiments.report_figures import _save  # noqa: E402

# Which family each registered measure belongs to, for the figure's colours and the text
FAMILIES = {
    "param_count": "norm / size",
    "param_norm": "norm / size",
    "distance_from_init": "norm / size",
    "path_norm": "norm / size",
    "spectral_product": "norm / size",
    "frobenius_product": "norm / size",
    "frobenius_sum": "norm / size",
    "fisher_rao_norm": "norm / size",
    "output_margin": "margin",
    "lambda_max": "Hessian",
    "hessian_trace": "Hessian",
    "keskar_sharpness": "sharpness",
    "worst_case_sharpness": "sharpness",
    "average_sharpness": "sharpness",
    "m_sharpness": "sharpness",
    "pacbayes_sigma": "PAC-Bayes",
}
BASELINE_NOTES = {
    "baseline.steps": "optimizer steps to the criterion",
    "baseline.train_loss": "final training loss",
    "baseline.random": "a random number per run (the floor)",
}
PALETTE = dict(
    zip(
        ["norm / size", "margin", "Hessian", "sharpness", "PAC-Bayes", "baseline"],
        sns.color_palette("colorblind", 6),
        strict=True,
    )
)


def read_study(tables: Path, name: str) -> dict[str, Any] | None:
    """Everything ``study rank`` saved for study ``name``, or None before it ran."""
    described = tables / f"study_{name}.json"
    ranking = tables / f"study_{name}_ranking.csv"
    if not described.exists() or not ranking.exists():
        return None
    return {
        "study": json.loads(described.read_text()),
        "ranking": pd.read_csv(ranking),
        "dropped": pd.read_csv(tables / f"study_{name}_dropped.csv", dtype={"value": str}),
        "models": pd.read_csv(tables / f"study_{name}_models.csv"),
    }


def registered(measure: str, metrics: Mapping[str, Any]) -> str:
    """The registered metric behind a ranked measure (``worst_l2_1e-1`` → worst_case_sharpness;
    ``pacbayes_sigma.inv_sq`` → pacbayes_sigma)."""
    base = measure.split(".")[0] if measure.endswith((".inv_sq", ".bound")) else measure
    return (metrics.get(base) or {}).get("metric", base)


def family(measure: str, metrics: Mapping[str, Any]) -> str:
    if measure.startswith("baseline."):
        return "baseline"
    return FAMILIES.get(registered(measure, metrics), "other")


def column(measure: str) -> str:
    """A ranked measure's column in ``_models.csv`` (metrics carry a ``metric.`` prefix there)."""
    return measure if measure.startswith("baseline.") else f"metric.{measure}"


def moving_axis(models: pd.DataFrame, measure: str, axes: list[str]) -> tuple[str, float]:
    """The axis whose levels explain the largest share of the measure's rank variance (η² of the
    ranks, as in a Kruskal-Wallis test), and that share."""
    ranks = models[measure].rank()
    keep = ranks.notna()
    total = ((ranks[keep] - ranks[keep].mean()) ** 2).sum()
    best = ("", 0.0)
    for axis in axes:
        groups = ranks[keep].groupby(models.loc[keep, axis].astype(str))
        between = (groups.count() * (groups.mean() - ranks[keep].mean()) ** 2).sum()
        share = float(between / total) if total > 0 else 0.0
        if share > best[1]:
            best = (axis, share)
    return best


def ranking_figure(ranking: pd.DataFrame, metrics: Mapping, figures: Path, name: str) -> str:
    """K(μ) and τ with the gap, each with its 95% bootstrap interval, one row per measure."""
    data = ranking.assign(family=[family(m, metrics) for m in ranking["measure"]])
    columns = ["measure", "family", "models", "cmi", "cmi_lo", "cmi_hi", "tau_gap", "tau_gap_lo",
               "tau_gap_hi", "psi", "psi_lo", "psi_hi"]  # fmt: skip
    data = data[columns]
    n = len(data)
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.22 * n + 1.6), sharey=True)
    y = np.arange(n)
    panels = [
        ("cmi", "K(μ): normalised CMI with the gap's sign,\nminimised over ≤ 2 axes (0 = none, 1 = the gap)"),
        ("tau_gap", "Kendall τ with the gap\n(over all models)"),
        ("psi", "granulated Ψ: mean τ within\none-axis-varying groups"),
    ]  # fmt: skip
    colours = [PALETTE.get(f, "grey") for f in data["family"]]
    for ax, (key, title) in zip(axes, panels, strict=True):
        lo, hi = data[f"{key}_lo"].to_numpy(), data[f"{key}_hi"].to_numpy()
        mid = data[key].to_numpy()
        ax.hlines(y, lo, hi, color=colours, lw=1.6)
        ax.scatter(mid, y, c=colours, s=18, zorder=3)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, data["measure"], fontsize=7)
    axes[0].invert_yaxis()
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1.6, label=f) for f, c in PALETTE.items()
               if f in set(data["family"])]  # fmt: skip
    axes[2].legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle(
        f"Every measure against the generalisation gap over {int(data['models'].max())} models, "
        "best K(μ) first; bars: 95% bootstrap over configurations, then seeds",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, data, figures, f"{name}_ranking")


def scatter_figure(
    models: pd.DataFrame, best: list[str], axes: list[str], figures: Path, name: str
) -> tuple[str, dict[str, tuple[str, float]]]:
    """Each of the ``best`` measures against the gap, one panel each, coloured by the axis whose
    levels move that measure most; the tidy CSV holds every plotted point."""
    moved = {m: moving_axis(models, column(m), axes) for m in best}
    fig, panels = plt.subplots(1, len(best), figsize=(4.3 * len(best), 3.8))
    panels = np.atleast_1d(panels)
    rows = []
    for ax, measure in zip(panels, best, strict=True):
        axis, share = moved[measure]
        part = models[[column(measure), "gap", axis, "seed"]].dropna(subset=[column(measure)])
        part = part.rename(columns={column(measure): measure})
        part[axis] = part[axis].astype(str)
        sns.scatterplot(data=part, x=measure, y="gap", hue=axis, style=axis, s=28, ax=ax)
        if (part[measure] > 0).all() and part[measure].max() / part[measure].min() > 30:
            ax.set_xscale("log")
        ax.set_xlabel(measure)
        ax.set_ylabel("generalisation gap (test − train error)")
        ax.set_title(
            f"{measure}\ncoloured by {axis} ({share:.0%} of its rank variance)", fontsize=9
        )
        ax.legend(fontsize=7, title=axis, title_fontsize=7)
        ax.grid(alpha=0.3)
        rows.append(
            part.rename(columns={measure: "value", axis: "level"}).assign(
                measure=measure, axis=axis
            )[["measure", "axis", "level", "seed", "value", "gap"]]
        )
    fig.tight_layout()
    return _save(fig, pd.concat(rows, ignore_index=True), figures, f"{name}_scatter"), moved


def _fmt(v: float, lo: float | None = None, hi: float | None = None) -> str:
    if not np.isfinite(v):
        return "–"
    text = f"{v:+.2f}" if lo is None else f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    return text.replace("+", "") if lo is None and v >= 0 else text


def ranking_table(ranking: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    rows = []
    for _, r in ranking.iterrows():
        row = {
            "measure": r["measure"],
            "models": int(r["models"]),
            "at bound": int(r.get("at_bound", 0)),
            "K(μ) [95% CI]": f"{r['cmi']:.3f} [{r['cmi_lo']:.3f}, {r['cmi_hi']:.3f}]",
            "given": r["cmi_given"],
            "τ gap [95% CI]": _fmt(r["tau_gap"], r["tau_gap_lo"], r["tau_gap_hi"]),
            "τ test": _fmt(r["tau_test"]),
            "Ψ [95% CI]": _fmt(r["psi"], r["psi_lo"], r["psi_hi"]),
        }
        row.update({f"Ψ {a}": _fmt(r[f"psi[{a}]"]) for a in axes})
        rows.append(row)
    return pd.DataFrame(rows)


def dissection(ranking: pd.DataFrame, metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Andriushchenko et al.'s axes of sharpness: for each kind (worst case or average, plain or
    adaptive, ℓ2 or ℓ∞), K(μ) and τ at each radius of the study."""
    rows = []
    for _, r in ranking.iterrows():
        settings = metrics.get(r["measure"]) or {}
        metric = settings.get("metric", r["measure"])
        if metric not in ("worst_case_sharpness", "average_sharpness", "m_sharpness"):
            continue
        kind = {"worst_case_sharpness": "worst case", "average_sharpness": "average",
                "m_sharpness": f"worst case, m = {settings.get('m')}"}[metric]  # fmt: skip
        rows.append(
            {
                "kind": kind,
                "adaptive": "adaptive" if settings.get("adaptive") else "plain",
                "norm": {"l2": "ℓ2", "linf": "ℓ∞"}[settings.get("norm", "l2")],
                "ρ": f"{settings.get('rho'):g}",
                "K(μ)": r["cmi"],
                "τ gap": r["tau_gap"],
                "Ψ": r["psi"],
            }
        )
    order = pd.DataFrame(rows)
    if order.empty:
        return order
    order["radius"] = order["ρ"].astype(float)
    return order.sort_values(["kind", "adaptive", "norm", "radius"], ignore_index=True).drop(
        columns="radius"
    )


def _md(df: pd.DataFrame) -> str:
    """A markdown table of strings as written (tabulate would reparse "0.50" and "1e-4")."""
    cells = df.map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
    return cells.to_markdown(index=False, disable_numparse=True)


def study_lines(tables: Path, figures: Path, name: str = "jiang") -> list[str]:
    """The report's section for study ``name``; a pointer to the command before it ran."""
    saved = read_study(tables, name)
    head = ["", "## Which measure predicts generalisation? (Jiang et al. 2020's study)", ""]
    if saved is None:
        return head + [f"Not run yet: `python -m experiments.study run {name}` then `rank {name}`."]
    s, ranking, dropped, models = (saved[k] for k in ("study", "ranking", "dropped", "models"))
    axes, metrics, base = list(s["axes"]), s["base"].get("metrics") or {}, s["base"]
    levels = "; ".join(f"{a} ∈ {{{', '.join(_ordered(s['axes'][a]))}}}" for a in axes)
    n_config = int(np.prod([len(v) for v in s["axes"].values()]))
    lost = dropped.groupby("axis")[["missed_criterion", "below_train_acc"]].sum().iloc[0]
    lines = head + [
        f"A full factorial grid of {n_config} configurations of the MNIST-1D {base.get('model')} "
        f"({levels}), each trained from {len(s['seeds'])} seeds (`conf/study/{name}.yaml`): "
        f"{s['models']} models, {len(models)} ranked. Every model trains to training "
        f"cross-entropy {base.get('train_until_loss')} under a budget of "
        f"{base.get('max_steps'):,} steps, as Jiang et al. train to 0.01; "
        f"{int(lost['missed_criterion'])} missed it and {int(lost['below_train_acc'])} ended below "
        f"{s['min_train_acc']:.0%} train accuracy (per axis level in "
        f"`results/tables/study_{name}_dropped.csv`). {s.get('notes', '')}".rstrip(),
        "",
        "**The statistics** (`experiments/jiang.py`, tested on hand-made data with known answers): "
        "Kendall τ of each measure with the gap over all models, and with the test error; the "
        "granulated Ψ (for each axis, the mean τ within the groups of configurations that differ "
        "only in that axis, seeds averaged; then the mean over axes); and K(μ), the conditional "
        "mutual information between the sign of a measure's difference and the sign of the gap's "
        "difference over pairs of models, normalised by the conditional entropy of the gap's sign "
        "(so the gap itself scores 1) and minimised over every conditioning set of at most 2 axes, "
        "as Jiang et al.'s Section 5. Intervals: 95% percentiles of a two-stage bootstrap "
        f"({s.get('bootstrap', 200)} resamples; configurations, then seeds within each). K(μ) "
        "is a plug-in estimate biased upwards near 0, so its interval reads as its spread.",
        "",
        "**The measures** are every metric of the catalogue that applies to an MLP, at the "
        "papers' settings (each name's settings are in the study file): the Hessian- and "
        f"search-based ones on {_common_subset(metrics)}; sharpness at three radii per kind (worst case "
        "and average, plain and adaptive, ℓ2 and ℓ∞, radii from rises of 1e-3 to 1 in the "
        "training loss), and m-sharpness at m = 16 and 128; PAC-Bayes σ and magnitude-aware σ′ "
        "with their 1/σ² forms (`.inv_sq`) and Jiang's bound with the distance from "
        "initialisation (`.bound`); and three baselines that are not flatness. A search that "
        "stopped at its bound counts as no value (`at bound`).",
        "",
    ]
    lines += [_md(ranking_table(ranking, axes)), ""]
    figure = ranking_figure(ranking, metrics, figures, f"study_{name}")
    best = [m for m in ranking["measure"] if not m.startswith("baseline.")][:3]
    scatter, moved = scatter_figure(models, best, axes, figures, f"study_{name}")
    lines += [
        f"![ranking](figures/{figure})",
        "",
        f"*Figure: every measure's K(μ), τ and Ψ with 95% bootstrap intervals, from "
        f"`figures/{figure.replace('.png', '.csv')}`.*",
        "",
        f"![best measures](figures/{scatter})",
        "",
        f"*Figure: the {len(best)} measures of highest K(μ) against the gap, one point per model, "
        "coloured by the axis that moves each most: "
        + "; ".join(f"{m}: {a} ({v:.0%})" for m, (a, v) in moved.items())
        + ".*",
        "",
    ]
    lines += reading_lines(ranking, metrics)
    table = dissection(ranking, metrics)
    if not table.empty:
        lines += [
            "**Andriushchenko et al.'s dissection of sharpness**, each kind at the study's three "
            "radii (K(μ), τ and Ψ as above):",
            "",
            _md(table),
            "",
        ]
    lines += published_lines()
    lines += agreement_lines(ranking, metrics)
    return lines


def _ordered(levels) -> list[str]:
    """Level labels in numeric order when they are all numbers, else as given."""
    labels = [str(v) for v in levels]
    try:
        return sorted(labels, key=float)
    except ValueError:
        return labels


def _common_subset(metrics: Mapping[str, Any]) -> str:
    subsets = {v.get("subset") for v in metrics.values() if isinstance(v, Mapping)} - {None}
    if not subsets:
        return "the whole training set"
    return f"the first {' or '.join(str(x) for x in sorted(subsets))} training samples"


def reading_lines(ranking: pd.DataFrame, metrics: Mapping[str, Any]) -> list[str]:
    """What the ranking says, in numbers read from it."""
    r = ranking.set_index("measure")
    floor = r.loc["baseline.random"] if "baseline.random" in r.index else None
    lines = []
    top = ranking.iloc[0]
    lines.append(
        f"**Reading.** The best measure by K(μ) is `{top['measure']}` ({family(top['measure'], metrics)}): "
        f"K = {top['cmi']:.3f} [{top['cmi_lo']:.3f}, {top['cmi_hi']:.3f}], τ with the gap "
        f"{top['tau_gap']:+.2f}. "
    )
    if floor is not None:
        above = ranking[
            (ranking["cmi_lo"] > floor["cmi_hi"]) & ~ranking["measure"].str.startswith("baseline.")
        ]
        lines[-1] += (
            f"The random floor scores K = {floor['cmi']:.3f} (interval up to "
            f"{floor['cmi_hi']:.3f}); {len(above)} of "
            f"{int((~ranking['measure'].str.startswith('baseline.')).sum())} measures have an "
            "interval wholly above that."
        )
    for b in ("baseline.steps", "baseline.train_loss"):
        if b in r.index:
            beaten = int(
                (
                    (ranking["cmi"] > r.loc[b, "cmi"])
                    & ~ranking["measure"].str.startswith("baseline.")
                ).sum()
            )
            tau = r.loc[b, "tau_gap"]
            tau_text = f"{tau:+.2f}" if np.isfinite(tau) else "undefined (the same in every model)"
            lines.append(
                f"The baseline `{b}` ({BASELINE_NOTES[b]}): K = {r.loc[b, 'cmi']:.3f}, τ = "
                f"{tau_text}; {beaten} measure{'s' if beaten != 1 else ''} score higher."
            )
    negative = ranking[
        (ranking["tau_gap_hi"] < 0) & ~ranking["measure"].str.startswith("baseline.")
    ]
    if len(negative):
        lines.append(
            "Measures that fall as the gap rises (τ with the gap below 0 over its whole interval): "
            + ", ".join(f"`{m}`" for m in negative["measure"])
            + ". For a PAC-Bayes σ (larger is flatter) that is what flat minima predict; for a "
            "norm it is the opposite of the sign that reads it as a complexity measure."
        )
    return [" ".join(lines[:1]), ""] + [f"- {line}" for line in lines[1:]] + [""]


def published_lines() -> list[str]:
    """Our ranking beside the published ones: only what could be read from a citable source."""
    return [
        "**Beside the published rankings.** Jiang et al. 2020 (ICLR, arXiv 1912.02178) rank over "
        "2,187 CIFAR-10 networks (7 axes × 3 levels) trained to cross-entropy 0.01; their "
        "conclusions are that sharpness- and PAC-Bayes-based measures, the magnitude-aware ones "
        "above all, predict generalisation best, and that norm-based measures, the spectral "
        "product in particular, correlate negatively. Andriushchenko et al. 2023 (ICML, arXiv "
        '2302.07011) find that sharpness "does not correlate well with generalization but rather '
        "with some training parameters like the learning rate\"; the authors' summary figure "
        "(repository `tml-epfl/sharpness-vs-generalization`, `images/summary_slide.png`) gives τ "
        "of adaptive worst-case ℓ∞ sharpness with test error of 0.08 (ViT from scratch on "
        "ImageNet), 0.04 (CLIP fine-tuned on ImageNet) and −0.09 (BERT, HANS lexical). The "
        "per-measure numbers of Jiang et al.'s Table 1 (τ, Ψ per axis, K) could not be read "
        "from any source reachable while this report was written (offline), so they are not "
        "quoted here rather than quoted from memory; compare our table with their Table 1 "
        "directly.",
        "",
    ]


def _interval_word(lo: float, hi: float, expected: str) -> str:
    """Whether a 95% interval agrees with the expected sign ("negative", "positive", "near 0")."""
    if expected == "near 0":
        return (
            "agrees"
            if lo >= -0.1 and hi <= 0.1
            else ("differs" if lo > 0.1 or hi < -0.1 else "inconclusive")
        )
    inside = hi < 0 if expected == "negative" else lo > 0
    outside = lo > 0 if expected == "negative" else hi < 0
    return "agrees" if inside else ("differs" if outside else "inconclusive")


def agreement_lines(ranking: pd.DataFrame, metrics: Mapping[str, Any]) -> list[str]:
    """Where this study agrees with the published conclusions and where it differs, each read from
    the ranking by a stated rule: a sign is agreed when its 95% interval excludes the other sign,
    "τ ≈ 0" when the interval lies within ±0.1, "among the best" when in the top quarter by K(μ)."""
    measures = ranking[~ranking["measure"].str.startswith("baseline.")].reset_index(drop=True)
    n = len(measures)
    rows = []

    def settings(m: str) -> Mapping[str, Any]:
        base = m.split(".")[0] if m.endswith((".inv_sq", ".bound")) else m
        return metrics.get(base) or {}

    mag = [i for i, m in enumerate(measures["measure"])
           if registered(m, metrics) == "pacbayes_sigma" and settings(m).get("magnitude_aware")
           and not m.endswith(".bound")]  # fmt: skip
    if mag:
        i = mag[0]
        r = measures.loc[i]
        rows.append({
            "published": "Jiang et al.: magnitude-aware PAC-Bayes flatness is among the best measures",
            "here": f"`{r['measure']}` ranks {i + 1} of {n} by K(μ) (K = {r['cmi']:.3f}, τ = {r['tau_gap']:+.2f})",
            "reading": "agrees" if i < n / 4 else "differs",
        })  # fmt: skip
    for m, claim in (("spectral_product", "Jiang et al.: the spectral product correlates negatively with the gap"),):  # fmt: skip
        if m in set(measures["measure"]):
            r = measures.set_index("measure").loc[m]
            rows.append({
                "published": claim,
                "here": f"τ with the gap {r['tau_gap']:+.2f} [{r['tau_gap_lo']:+.2f}, {r['tau_gap_hi']:+.2f}]",
                "reading": _interval_word(r["tau_gap_lo"], r["tau_gap_hi"], "negative"),
            })  # fmt: skip
    sharp = [m for m in measures["measure"] if registered(m, metrics) == "worst_case_sharpness"
             and settings(m).get("adaptive") and settings(m).get("norm") == "linf"]  # fmt: skip
    for m in sharp:
        r = measures.set_index("measure").loc[m]
        rows.append({
            "published": "Andriushchenko et al.: τ of adaptive worst-case ℓ∞ sharpness with test error ≈ 0",
            "here": f"`{m}` (ρ = {settings(m).get('rho'):g}): τ with test error {r['tau_test']:+.2f} "
                    f"[{r['tau_test_lo']:+.2f}, {r['tau_test_hi']:+.2f}]",
            "reading": _interval_word(r["tau_test_lo"], r["tau_test_hi"], "near 0"),
        })  # fmt: skip
    if not rows:
        return []
    given = measures[[registered(m, metrics) in ("worst_case_sharpness", "average_sharpness",
                      "m_sharpness", "keskar_sharpness") for m in measures["measure"]]]  # fmt: skip
    lines = [
        "**Where we agree and where we differ**, each read by a rule of `experiments/report_study.py` (a sign "
        "agrees when its 95% interval excludes the other sign; τ ≈ 0 when the interval lies within "
        '±0.1; "among the best" is the top quarter by K(μ)):',
        "",
        _md(pd.DataFrame(rows)),
        "",
    ]
    if len(given):
        common = given["cmi_given"].value_counts()
        lines += [
            f"Andriushchenko et al. find sharpness tracking training parameters rather than "
            f"generalisation. Here the conditioning set that leaves the least of a sharpness "
            f"measure's information about the gap is `{common.index[0]}` for {common.iloc[0]} of "
            f"{len(given)} sharpness measures: what they share with the gap runs largely through "
            "those hyperparameters.",
            "",
        ]
    return lines
