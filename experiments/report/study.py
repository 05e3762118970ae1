"""The report's section on a correlation study (issue 14): which measure predicts generalisation,
after Jiang et al. 2020, drawn from what ``python -m experiments.study rank`` saved
(``study_<name>.json``, ``_ranking``, ``_dropped``, ``_models``, ``_null``), never measured here.

It writes the scope, what drives the gap, the ranking table (each measure's sign against the one
its theory predicts, K(μ) with its place and their bootstrap ranges, τ, Ψ), a figure of every
measure's K(μ), τ and Ψ, the measure-versus-gap scatter of the best few coloured by the axis that
moves each most, Andriushchenko et al. 2023's dissection of sharpness, and our ranking beside the
published conclusions, each read by a rule written here. The words are templates
(``experiments/report/templates/study_*.j2``); this module computes what they state and passes it in.
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

from experiments.report.figures import _save  # noqa: E402
from experiments.report.templating import lines as template_lines  # noqa: E402
from experiments.report.templating import render  # noqa: E402

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
    "inverse_margin": "margin",
    "lambda_max": "Hessian",
    "hessian_trace": "Hessian",
    "keskar_sharpness": "sharpness",
    "worst_case_sharpness": "sharpness",
    "average_sharpness": "sharpness",
    "m_sharpness": "sharpness",
    "pacbayes_sigma": "PAC-Bayes",
}
MODELS = {"mlp": "MLP", "cnn1d": "1D CNN", "cnn": "CNN"}
SHARPNESS = ("worst_case_sharpness", "average_sharpness", "m_sharpness", "keskar_sharpness")
BASELINE_NOTES = {
    "baseline.steps": "optimizer steps to the criterion",
    "baseline.train_loss": "final training loss",
    "baseline.random": "a random number per run",
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
    null = tables / f"study_{name}_null.csv"
    return {
        "study": json.loads(described.read_text()),
        "ranking": pd.read_csv(ranking),
        "dropped": pd.read_csv(tables / f"study_{name}_dropped.csv", dtype={"value": str}),
        "models": pd.read_csv(tables / f"study_{name}_models.csv"),
        "null": pd.read_csv(null).iloc[0] if null.exists() else None,
    }


def registered(measure: str, metrics: Mapping[str, Any]) -> str:
    """The registered metric behind a ranked measure (``worst_l2_1e-1`` → worst_case_sharpness;
    ``pacbayes_sigma.inv_sq`` → pacbayes_sigma)."""
    return (metrics.get(_base(measure)) or {}).get("metric", _base(measure))


def _base(measure: str) -> str:
    return measure.rsplit(".", 1)[0] if measure.endswith((".inv_sq", ".bound")) else measure


def settings_of(measure: str, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    return metrics.get(_base(measure)) or {}


def family(measure: str, metrics: Mapping[str, Any]) -> str:
    if measure.startswith("baseline."):
        return "baseline"
    return FAMILIES.get(registered(measure, metrics), "other")


def expected_sign(measure: str, metrics: Mapping[str, Any]) -> int | None:
    """The sign of τ with the gap that the measure's theory predicts: + for a complexity measure
    (norms, 1/γ², curvature, sharpness, 1/σ², the PAC-Bayes bound), − for σ itself (larger is
    flatter); None for the baselines, which predict nothing."""
    if measure.startswith("baseline."):
        return None
    if registered(measure, metrics) == "pacbayes_sigma" and measure == _base(measure):
        return -1
    return 1


def sign_mark(row: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """✓ when τ's 95% interval is on the predicted side of 0, ✗ when on the other, ? otherwise."""
    sign = expected_sign(row["measure"], metrics)
    if sign is None or not np.isfinite(row["tau_gap_lo"]):
        return "–"
    lo, hi = sorted((sign * row["tau_gap_lo"], sign * row["tau_gap_hi"]))
    return "✓" if lo > 0 else ("✗" if hi < 0 else "?")


def column(measure: str) -> str:
    """A ranked measure's column in ``_models.csv`` (metrics carry a ``metric.`` prefix there)."""
    return measure if measure.startswith("baseline.") else f"metric.{measure}"


def moving_axis(models: pd.DataFrame, measure: str, axes: list[str]) -> tuple[str, float]:
    """The axis whose levels explain the largest share of the measure's rank variance (η² of the
    ranks, as in a Kruskal-Wallis test), and that share."""
    shares = rank_shares(models, measure, axes)
    best = max(shares, key=shares.get, default="")
    return (best, shares[best]) if best and shares[best] > 0 else ("", 0.0)


def level_shares(values: pd.Series, models: pd.DataFrame, axes: list[str]) -> dict[str, float]:
    """Per axis, the share of the values' variance that the axis's levels explain alone (η²:
    between-level over total sum of squares), over the models with a value."""
    keep = values.notna()
    v = values[keep]
    total = ((v - v.mean()) ** 2).sum()
    shares = {}
    for axis in axes:
        groups = v.groupby(models.loc[keep, axis].astype(str))
        between = (groups.count() * (groups.mean() - v.mean()) ** 2).sum()
        shares[axis] = float(between / total) if total > 0 else 0.0
    return shares


def rank_shares(models: pd.DataFrame, measure: str, axes: list[str]) -> dict[str, float]:
    """Per axis, the share of the measure's rank variance its levels explain, one axis at a time."""
    return level_shares(models[measure].rank(), models, axes)


def gap_drivers(models: pd.DataFrame, axes: list[str], n_test: int) -> dict[str, Any]:
    """What the gap is and what moves it: its range; the share of its variance between
    configurations (the rest is seed to seed); each axis's share alone (η²); the test error's
    binomial standard error; and the share of model pairs whose gaps differ by less than it."""
    gap = models["gap"].to_numpy(dtype=float)
    total = ((gap - gap.mean()) ** 2).sum()
    config_mean = models.groupby(axes)["gap"].transform("mean").to_numpy()
    between = ((config_mean - gap.mean()) ** 2).sum()
    shares = level_shares(models["gap"].astype(float), models, axes)
    p = float(models["test_error"].mean())
    se = float(np.sqrt(p * (1 - p) / n_test)) if n_test else float("nan")
    i, j = np.triu_indices(len(gap), 1)
    return {
        "min": float(gap.min()),
        "max": float(gap.max()),
        "mean": float(gap.mean()),
        "between": float(between / total),
        "axes": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        "se": se,
        "close_pairs": float((np.abs(gap[i] - gap[j]) < np.sqrt(2) * se).mean()),
        "tau_test_vs_gap": float(np.abs(models["test_error"] - models["gap"]).max()),
    }


def ranking_figure(ranking: pd.DataFrame, metrics: Mapping, figures: Path, name: str) -> str:
    """K(μ), τ and Ψ with their bootstrap ranges, one row per measure, a hollow marker where τ
    has the sign its theory does not predict."""
    data = ranking.assign(
        family=[family(m, metrics) for m in ranking["measure"]],
        sign=[sign_mark(r, metrics) for _, r in ranking.iterrows()],
    )
    columns = ["measure", "family", "sign", "models", "cmi", "cmi_lo", "cmi_hi", "tau_gap",
               "tau_gap_lo", "tau_gap_hi", "psi", "psi_lo", "psi_hi"]  # fmt: skip
    data = data[columns]
    n = len(data)
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.22 * n + 1.9), sharey=True)
    y = np.arange(n)
    suptitle, *titles = _text(
        "study_ranking_figure.txt.j2", models=int(data["models"].max())
    ).split("\n\n")
    panels = list(zip(["cmi", "tau_gap", "psi"], titles, strict=True))
    colours = [PALETTE.get(f, "grey") for f in data["family"]]
    wrong = (data["sign"] == "✗").to_numpy()
    for ax, (key, title) in zip(axes, panels, strict=True):
        lo, hi = data[f"{key}_lo"].to_numpy(), data[f"{key}_hi"].to_numpy()
        mid = data[key].to_numpy()
        ax.hlines(y, lo, hi, color=colours, lw=1.6)
        ax.scatter(mid[~wrong], y[~wrong], c=[c for c, w in zip(colours, wrong, strict=True) if not w], s=20,
                   zorder=3)  # fmt: skip
        ax.scatter(mid[wrong], y[wrong], facecolors="white", s=20, zorder=3, linewidths=1.2,
                   edgecolors=[c for c, w in zip(colours, wrong, strict=True) if w])  # fmt: skip
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, data["measure"], fontsize=7)
    axes[0].invert_yaxis()
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1.6, label=f) for f, c in PALETTE.items()
               if f in set(data["family"])]  # fmt: skip
    handles.append(plt.Line2D([], [], color="grey", marker="o", markerfacecolor="white", lw=0,
                              label="τ of the unpredicted sign"))  # fmt: skip
    axes[2].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save(fig, data, figures, f"{name}_ranking")


def scatter_figure(
    models: pd.DataFrame, best: list[str], axes: list[str], driver: str, figures: Path, name: str
) -> tuple[str, dict[str, tuple[str, float]]]:
    """Each of the ``best`` measures against the gap, one panel each, coloured by the axis whose
    levels move that measure most and marked by ``driver``, the axis that moves the gap most; the
    tidy CSV holds every plotted point."""
    moved = {m: moving_axis(models, column(m), axes) for m in best}
    fig, panels = plt.subplots(1, len(best), figsize=(4.4 * len(best), 3.9))
    panels = np.atleast_1d(panels)
    rows = []
    for ax, measure in zip(panels, best, strict=True):
        axis, share = moved[measure]
        cols = list(dict.fromkeys([column(measure), "gap", axis, driver, "seed"]))
        part = (
            models[cols].dropna(subset=[column(measure)]).rename(columns={column(measure): measure})
        )
        part[axis] = part[axis].astype(str)
        style = driver if driver != axis else None
        if style:
            part[driver] = part[driver].astype(str)
        sns.scatterplot(data=part, x=measure, y="gap", hue=axis, style=style or axis, s=28, ax=ax)
        if (part[measure] > 0).all() and part[measure].max() / part[measure].min() > 30:
            ax.set_xscale("log")
        ax.set_xlabel(measure)
        ax.set_ylabel("generalisation gap (test − train error)")
        title = f"{measure}\ncolour: {axis} ({share:.0%} of its rank variance)"
        ax.set_title(title + (f"; marker: {driver}" if style else ""), fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        tidy = part.rename(columns={measure: "value", axis: "level"}).assign(
            measure=measure, axis=axis
        )
        if style:
            tidy = tidy.rename(columns={driver: "driver_level"}).assign(driver=driver)
        rows.append(tidy)
    fig.tight_layout()
    return _save(fig, pd.concat(rows, ignore_index=True), figures, f"{name}_scatter"), moved


def _fmt(v: float, lo: float | None = None, hi: float | None = None) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:+.2f}" if lo is None else f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def ranking_table(ranking: pd.DataFrame, axes: list[str], metrics: Mapping) -> pd.DataFrame:
    rows = []
    for _, r in ranking.iterrows():
        row = {
            "measure": r["measure"],
            "sign": sign_mark(r, metrics),
            "K(μ) [bootstrap 2.5–97.5%]": f"{r['cmi']:.3f} [{r['cmi_lo']:.3f}, {r['cmi_hi']:.3f}]",
            "place [range]": f"{int(r['rank'])} [{int(r['rank_lo'])}–{int(r['rank_hi'])}]",
            "given": r["cmi_given"],
            "τ gap [95%]": _fmt(r["tau_gap"], r["tau_gap_lo"], r["tau_gap_hi"]),
            "Ψ [95%]": _fmt(r["psi"], r["psi_lo"], r["psi_hi"]),
        }
        row.update({f"Ψ {a}": _fmt(r[f"psi[{a}]"]) for a in axes})
        if r.get("at_bound", 0) or (ranking.get("at_bound", pd.Series([0])) > 0).any():
            row["at bound"] = int(r.get("at_bound", 0))
        rows.append(row)
    return pd.DataFrame(rows)


def dissection(ranking: pd.DataFrame, metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Andriushchenko et al.'s axes of sharpness: for each kind (worst case or average, plain or
    adaptive, ℓ2 or ℓ∞), K(μ), τ and Ψ at each radius of the study."""
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
                "τ gap [95%]": _fmt(r["tau_gap"], r["tau_gap_lo"], r["tau_gap_hi"]),
                "Ψ [95%]": _fmt(r["psi"], r["psi_lo"], r["psi_hi"]),
                "Ψ depth": _fmt(r.get("psi[depth]", np.nan)),
                "_tau": r["tau_gap"],
                "_psi_depth": r.get("psi[depth]", np.nan),
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


def _ordered(levels) -> list[str]:
    """Level labels in numeric order when they are all numbers, else as given."""
    labels = [str(v) for v in levels]
    try:
        return sorted(labels, key=float)
    except ValueError:
        return labels


def _subsets(metrics: Mapping[str, Any]) -> list[str]:
    """The training subsets the measures are computed on, smallest first (none: the whole set)."""
    subsets = {v.get("subset") for v in metrics.values() if isinstance(v, Mapping)} - {None}
    return [str(x) for x in sorted(subsets)]


def _text(template: str, **context: Any) -> str:
    """A template that renders one paragraph or none: its text without the file's last newline."""
    return render(template, **context).removesuffix("\n")


def _paragraphs(template: str, **context: Any) -> list[str]:
    """A template that renders a paragraph per line: those paragraphs (none when it is empty)."""
    text = _text(template, **context)
    return text.split("\n") if text else []


def _n_test(base: Mapping[str, Any]) -> int:
    n = base.get("dataset.num_samples") or 0
    return int(round(n * (1 - base.get("dataset.train_split", 0.8))))


def study_lines(tables: Path, figures: Path, name: str = "jiang") -> list[str]:
    """The report's section for study ``name``; a pointer to the command before it ran."""
    saved = read_study(tables, name)
    if saved is None:
        return template_lines("study_intro.md.j2", ran=False, study=name)
    s, ranking, dropped, models, null = (
        saved[k] for k in ("study", "ranking", "dropped", "models", "null")
    )
    axes, metrics, base = list(s["axes"]), s["base"].get("metrics") or {}, s["base"]
    n_test = _n_test(base)
    lr_axis = any(
        a in ("lr", "learning_rate") or any("lr_factor" in (lvl or {}) for lvl in levels.values())
        for a, levels in s["axes"].items()
    )
    lines = intro_lines(s, name, dropped, models, n_test, lr_axis)
    drivers = gap_drivers(models, axes, n_test)
    lines += gap_lines(drivers)
    lines += method_lines(s, metrics, null, models, ranking)
    lines += ranking_lines(ranking, models, metrics, axes, drivers, figures, name)
    lines += reading_lines(ranking, metrics, models, null, drivers, axes)
    lines += dissection_lines(ranking, metrics)
    lines += published_lines()
    lines += agreement_lines(ranking, metrics, drivers, lr_axis)
    return lines


def ranking_lines(
    ranking: pd.DataFrame,
    models: pd.DataFrame,
    metrics: Mapping[str, Any],
    axes: list[str],
    drivers: Mapping[str, Any],
    figures: Path,
    name: str,
) -> list[str]:
    """The ranking table and its key; the figure of every measure and the scatter of the best
    three (the 1/σ² forms left out: they rank as σ does), marked by the axis that moves the gap
    most."""
    figure = ranking_figure(ranking, metrics, figures, f"study_{name}")
    best = [m for m in ranking["measure"] if not m.startswith("baseline.")]
    best = [m for m in best if not m.endswith(".inv_sq")][:3]
    driver = next(iter(drivers["axes"]))
    scatter, moved = scatter_figure(models, best, axes, driver, figures, f"study_{name}")
    return template_lines(
        "study_ranking.md.j2",
        table=_md(ranking_table(ranking, axes, metrics)),
        study=name,
        tau_test_vs_gap=drivers["tau_test_vs_gap"],
        figure=figure,
        figure_csv=figure.replace(".png", ".csv"),
        scatter=scatter,
        moved=moved,
        driver=driver,
    )


def intro_lines(
    s: Mapping[str, Any],
    name: str,
    dropped: pd.DataFrame,
    models: pd.DataFrame,
    n_test: int,
    lr_axis: bool,
) -> list[str]:
    """The section's heading, the study's scope and its grid, with the models it lost."""
    base = s["base"]
    lost = dropped.groupby("axis")[["missed_criterion", "below_train_acc"]].sum().iloc[0]
    return template_lines(
        "study_intro.md.j2",
        ran=True,
        study=name,
        model=MODELS.get(base.get("model"), base.get("model")),
        seeds=len(s["seeds"]),
        n_config=int(np.prod([len(v) for v in s["axes"].values()])),
        level_counts=sorted({str(len(v)) for v in s["axes"].values()}),
        levels={a: _ordered(s["axes"][a]) for a in s["axes"]},
        lr_axis=lr_axis,
        n_test=n_test,
        models=s["models"],
        ranked=len(models),
        train_until_loss=base.get("train_until_loss"),
        max_steps=base.get("max_steps"),
        missed=int(lost["missed_criterion"]),
        below=int(lost["below_train_acc"]),
        min_train_acc=s["min_train_acc"],
        notes=s.get("notes", "").rstrip(),
    )


def gap_lines(d: Mapping[str, Any]) -> list[str]:
    return template_lines("study_gap.md.j2", d=d, pair_se=np.sqrt(2) * d["se"])


def at_bound(ranking: pd.DataFrame) -> int:
    """How many of the ranking's searches stopped at their bound."""
    return int(ranking["at_bound"].sum()) if "at_bound" in ranking else 0


def method_lines(
    s: Mapping, metrics: Mapping, null: pd.Series | None, models, ranking: pd.DataFrame
) -> list[str]:
    return template_lines(
        "study_method.md.j2",
        bootstrap=s.get("bootstrap", 200),
        null=_draws(null),
        subsets=_subsets(metrics),
        rises=radius_rises(metrics, models),
        n_models=len(models),
        at_bound=at_bound(ranking),
    )


def radius_rises(metrics: Mapping[str, Any], models: pd.DataFrame) -> dict[str, Any] | None:
    """The loss rises the sharpness radii actually produced (their least and largest over all
    models), and per measure how many models' rise was ≤ 0 (a Monte-Carlo average or an ascent
    that found no rise); None without a sharpness measure."""
    names = [n for n, v in metrics.items() if (v or {}).get("metric") in SHARPNESS[:3]]
    columns = [f"metric.{n}" for n in names if f"metric.{n}" in models]
    if not columns:
        return None
    every = pd.concat([models[c] for c in columns])
    nonpositive = {c.removeprefix("metric."): int((models[c] <= 0).sum()) for c in columns}
    return {
        "min": every.min(),
        "max": every.max(),
        "nonpositive": {n: k for n, k in nonpositive.items() if k},
    }


def reading_lines(
    ranking: pd.DataFrame,
    metrics: Mapping[str, Any],
    models: pd.DataFrame,
    null: pd.Series | None,
    drivers: Mapping[str, Any],
    axes: list[str],
) -> list[str]:
    """What the ranking says, in numbers read from it. Places are among all the table's rows
    (measures and baselines); counts of measures leave the baselines out."""
    r = ranking.set_index("measure")
    measures = ranking[~ranking["measure"].str.startswith("baseline.")]
    marks = {row["measure"]: sign_mark(row, metrics) for _, row in ranking.iterrows()}
    top = measures.iloc[0]
    right = measures[[marks[m] == "✓" for m in measures["measure"]]]
    wrong = [m for m in measures["measure"] if marks[m] == "✗"]
    # dropout explains the norms' wrong sign when every norm that has it ranks dropout backwards
    dropout = "dropout" in axes and all(r.loc[m, "psi[dropout]"] <= -0.5 for m in wrong
                                        if registered(m, metrics) != "param_count")  # fmt: skip
    bound = [m for m in measures["measure"] if m.endswith(".bound")]
    loss, steps = (_placed(r.loc[b]) if b in r.index else None
                   for b in ("baseline.train_loss", "baseline.steps"))  # fmt: skip
    return template_lines(
        "study_reading.md.j2",
        rows=len(ranking),
        n_measures=len(measures),
        top=_placed(top),
        top_family=family(top["measure"], metrics),
        top_wrong=marks[top["measure"]] == "✗",
        right=_placed(right.iloc[0]) if len(right) else None,
        null=_draws(null),
        above=None if null is None else int((measures["cmi"] > null["q95"]).sum()),
        above_max=None if null is None else int((measures["cmi"] > null["max"]).sum()),
        wrong=wrong,
        dropout=dropout,
        bound=bound if marks.get("distance_from_init") == "✗" else [],
        train_loss=loss,
        beaten=None if loss is None else int((measures["cmi"] < loss["cmi"]).sum()),
        loss_min=models["train_loss"].min(),
        loss_max=models["train_loss"].max(),
        steps=steps,
        findings=axis_failure_lines(measures, metrics, axes, drivers, marks)
        + seed_lines(models, measures, metrics, axes),
        design=[m for m in measures["measure"] if registered(m, metrics) == "param_count"],
    )


def _placed(row: pd.Series) -> dict[str, Any]:
    """A ranking row with its place and the place's range as integers, as the text states them."""
    return {**row.to_dict(), **{k: int(row[k]) for k in ("rank", "rank_lo", "rank_hi")}}


def _draws(null: pd.Series | None) -> dict[str, Any] | None:
    """The random floor with its number of draws as an integer (None when none was drawn)."""
    return None if null is None else {**null.to_dict(), "draws": int(null["draws"])}


def seed_lines(
    models: pd.DataFrame, measures: pd.DataFrame, metrics: Mapping, axes: list[str]
) -> list[str]:
    """Whether any measure follows the gap from seed to seed within a configuration: per measure,
    the mean sign agreement of (measure, gap) differences over the configurations' seed pairs."""
    groups = [g for _, g in models.groupby(axes) if len(g) == 2]
    if len(groups) < 8:
        return []
    agreement = {}
    for m in measures["measure"]:
        if m.endswith(".inv_sq") or registered(m, metrics) == "param_count":
            continue
        c = column(m)
        if c not in models:
            continue
        signs = [np.sign(g[c].iloc[1] - g[c].iloc[0]) * np.sign(g["gap"].iloc[1] - g["gap"].iloc[0])
                 for g in groups]  # fmt: skip
        agreement[m] = expected_sign(m, metrics) * float(np.nanmean(signs))
    if not agreement:
        return []
    values = pd.Series(agreement)
    se = 1 / np.sqrt(len(groups))
    return _paragraphs(
        "study_seed.md.j2",
        configurations=len(groups),
        lo=values.min(),
        hi=values.max(),
        highest=values.idxmax(),
        se=se,
        beyond=int((values > 2.5 * se).sum()),
        looked_at=len(values),
    )


def axis_failure_lines(
    measures: pd.DataFrame,
    metrics: Mapping,
    axes: list[str],
    drivers: Mapping,
    marks: Mapping[str, str],
) -> list[str]:
    """The axis on which most measures rank the gap backwards (oriented Ψ ≤ −0.5 at the point
    estimate), who fails and who does not; and the axes too weak in the gap for their Ψ to mean
    much."""
    oriented = {}
    for _, row in measures.iterrows():
        m = row["measure"]
        sign = expected_sign(m, metrics)
        # σ stands for its 1/σ²; a design variable has no Ψ of its own to judge
        if sign is None or m.endswith(".inv_sq") or registered(m, metrics) == "param_count":
            continue
        oriented[m] = {a: sign * row[f"psi[{a}]"] for a in axes}
    if not oriented:
        return []
    frame = pd.DataFrame(oriented).T
    counts = (frame <= -0.5).sum()
    axis = counts.idxmax()
    failing = frame.index[frame[axis] <= -0.5]
    holding = frame.index[frame[axis] >= 0.5]
    return _paragraphs(
        "study_axis_failure.md.j2",
        axis=axis,
        failing=int(counts[axis]),
        judged=len(frame),
        families=pd.Series([family(m, metrics) for m in failing]).value_counts().to_dict(),
        holding=[(m, marks.get(m) == "✗") for m in holding],
        weak=[a for a, v in drivers["axes"].items() if v < 0.05],
    )


def dissection_lines(ranking: pd.DataFrame, metrics: Mapping[str, Any]) -> list[str]:
    """The dissection table with what it shows: τ's span for average and worst-case sharpness,
    Ψ on depth per kind (one number where its radii agree), and Ψ on depth where τ is near 0."""
    table = dissection(ranking, metrics)
    if table.empty:
        return []
    tau = {kind: (group["_tau"].min(), group["_tau"].max())
           for kind, group in table.groupby("kind") if kind in ("average", "worst case")}  # fmt: skip
    depth, flat = [], None
    if table["_psi_depth"].notna().any():
        for (kind, adaptive), group in table.groupby(["kind", "adaptive"], sort=True):
            lo, hi = group["_psi_depth"].min(), group["_psi_depth"].max()
            depth.append(
                {"kind": kind, "adaptive": adaptive, "lo": lo, "hi": None if lo == hi else hi}
            )
        near = table[table["_tau"].abs() < 0.1]
        if len(near):
            flat = {
                "rows": len(near),
                "all_worst": bool((near["kind"] != "average").all()),
                "lo": near["_psi_depth"].min(),
                "hi": near["_psi_depth"].max(),
            }
    return template_lines(
        "study_dissection.md.j2",
        tau=tau if len(tau) == 2 else None,
        depth=depth,
        flat=flat,
        table=_md(table.drop(columns=["_tau", "_psi_depth"])),
    )


def published_lines() -> list[str]:
    """Our ranking beside the published ones: only what could be read from a citable source."""
    return template_lines("study_published.md.j2")


def _interval_word(lo: float, hi: float, expected: str, width: float = 0.1) -> str:
    """Whether a 95% interval agrees with the expected sign ("negative", "positive") or with
    "near 0" (inside ±``width``)."""
    if expected == "near 0":
        if lo >= -width and hi <= width:
            return "agrees"
        return "differs" if lo > width or hi < -width else "inconclusive"
    inside = hi < 0 if expected == "negative" else lo > 0
    outside = lo > 0 if expected == "negative" else hi < 0
    return "agrees" if inside else ("differs" if outside else "inconclusive")


def agreement_lines(
    ranking: pd.DataFrame, metrics: Mapping[str, Any], drivers: Mapping, lr_axis: bool
) -> list[str]:
    """Where this study agrees with the published conclusions and where it differs, each read by
    a rule written with this section (after a first ranking had been seen): a sign agrees when its
    95% interval excludes the other sign; "τ ≈ 0" when the interval lies within ±0.1; "among the
    best" when the bootstrap range of the measure's place lies within the top quarter."""
    measures = ranking[~ranking["measure"].str.startswith("baseline.")].reset_index(drop=True)
    by_name = measures.set_index("measure")
    n, rows = len(ranking), []  # places are among all the table's rows, baselines included
    mag = [m for m in measures["measure"] if registered(m, metrics) == "pacbayes_sigma"
           and settings_of(m, metrics).get("magnitude_aware") and not m.endswith(".bound")]  # fmt: skip
    if mag:
        r, quarter = _placed(by_name.loc[mag[0]]), n / 4
        word = (
            "agrees"
            if r["rank_hi"] <= quarter
            else ("differs" if r["rank_lo"] > quarter else "inconclusive")
        )
        cells = _cells("magnitude_aware", measure=mag[0], row=r, rows=n, quarter=quarter)
        rows.append({**cells, "reading": word})
    if "spectral_product" in by_name.index:
        r = by_name.loc["spectral_product"]
        cells = _cells("spectral_product", row=r)
        rows.append(
            {**cells, "reading": _interval_word(r["tau_gap_lo"], r["tau_gap_hi"], "negative")}
        )
    sharp = [m for m in measures["measure"] if registered(m, metrics) == "worst_case_sharpness"
             and settings_of(m, metrics).get("adaptive")
             and settings_of(m, metrics).get("norm") == "linf"]  # fmt: skip
    for m in sharp:
        r = by_name.loc[m]
        lo, hi = r["tau_test_lo"], r["tau_test_hi"]
        rows.append({
            **_cells("adaptive_sharpness", measure=m, row=r, rho=settings_of(m, metrics).get("rho")),
            "reading": _interval_word(lo, hi, "near 0"),
            "at ±0.05 / ±0.15": " / ".join(_interval_word(lo, hi, "near 0", w) for w in (0.05, 0.15)),
        })  # fmt: skip
    if not rows:
        return []
    given = measures["cmi_given"].value_counts()
    return template_lines(
        "study_agreement.md.j2",
        table=_md(pd.DataFrame(rows).fillna("")),
        sharp=bool(sharp),
        lr_axis=lr_axis,
        n_measures=len(measures),
        given=None if given.empty else {
            "axes": given.index[0],
            "measures": given.iloc[0],
            "share": sum(drivers["axes"].get(a, 0) for a in given.index[0].split("+")),
        },
    )  # fmt: skip


def _cells(claim: str, **context: Any) -> dict[str, str]:
    """The agreement table's words for one published conclusion: the claim and what we find."""
    published, here = _text("study_agreement_cells.md.j2", claim=claim, **context).split("\n")
    return {"published": published, "here": here}
