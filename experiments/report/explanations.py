"""The report's extra lines and figures for the deck's three explanations (issue 13), read from the
tables the verdicts step saved: how much of the batch-size gap each intervention closes (batch_norm),
sharpness against the batch size it is computed on (averaged_sharpness), and how far and over what
barrier Adam's minimum is left (adam_escape). Nothing here measures; every figure's CSV is beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.schemas import load
from experiments.criterion import reached_rows
from experiments.report import templating
from experiments.report.figures import _save, arm_style, phrase, plt, sns

BASIN = 0.05  # the adam_escape protocol's rule: a barrier below it is one basin
FIGURE_TEXT = "explanations_figure_text.txt.j2"  # the figures' titles and long labels


def explanation_lines(p: dict, tables: Path, figures: Path, runs: pd.DataFrame) -> list[str]:
    """The lines specific to one of the explanation protocols (nothing for the others)."""
    base = p["name"].removesuffix("_full")
    make = {
        "batch_norm": batch_norm_lines,
        "averaged_sharpness": averaged_lines,
        "adam_escape": adam_escape_lines,
    }.get(base)
    return make(p, tables, figures, runs) if make else []


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".4g")


_read = load  # every table through its schema


# --- 1. batch norm ----------------------------------------------------------------------------------


def _intervals(tables: Path, protocol: str, kind: str) -> pd.DataFrame:
    """The analysis's paired intervals of one kind for one protocol
    (:mod:`experiments.analyse.explanations`), indexed by what identifies them."""
    table = _read(tables, "explanation_intervals")
    if table is None:
        raise FileNotFoundError(
            f"{tables}/explanation_intervals.csv: run the verdicts step, which writes it"
        )
    return table[(table["protocol"] == protocol) & (table["kind"] == kind)]


def _one(rows: pd.DataFrame, **match) -> pd.Series:
    for column, value in match.items():
        rows = rows[rows[column] == value]
    if len(rows) != 1:
        raise ValueError(f"explanation_intervals.csv: {len(rows)} rows for {match}")
    return rows.iloc[0]


def batch_norm_lines(p: dict, tables: Path, figures: Path, runs: pd.DataFrame) -> list[str]:
    mine = runs[runs["protocol"] == p["name"]]
    wide = mine.pivot(index="seed", columns="arm", values="test_error")
    loss = mine.pivot(index="seed", columns="arm", values="train_loss")
    steps = mine.pivot(index="seed", columns="arm", values="steps_trained")
    need = {"bn_large", "bn_small", "ghost_large", "regime_large", "ghost_regime"}
    if not need <= set(wide.columns):
        return []
    gap = _one(_intervals(tables, p["name"], "gap"), a="bn_large", b="bn_small")
    mean, lo, hi = gap["mean"], gap["low"], gap["high"]
    closed = _intervals(tables, p["name"], "closed")
    rows = []
    for arm in ("ghost_large", "regime_large", "ghost_regime"):
        share, s_lo, s_hi = _one(closed, a=arm)[["mean", "low", "high"]]
        rows.append(
            {
                "arm": arm,
                "what changes from bn_large": phrase("explanations_batch_norm_arm.md.j2", arm=arm),
                "test error": f"{100 * wide[arm].mean():.2f}%",
                "train loss at the end": f"{loss[arm].mean():.3g}",
                "updates (median)": f"{steps[arm].median():.0f}",
                "share of the gap closed": f"{share:.2f} [{s_lo:.2f}, {s_hi:.2f}]",
            }
        )
    contrasts = []
    contrast = _intervals(tables, p["name"], "contrast")
    for a, b in (("bn_large", "ghost_large"), ("regime_large", "ghost_regime")):
        m, c_lo, c_hi, p_t = _one(contrast, a=a, b=b)[["mean", "low", "high", "p"]]
        contrasts.append(
            {"a": a, "b": b, "points": 100 * m, "low": 100 * c_lo, "high": 100 * c_hi, "p": p_t}
        )
    criterion = p["base"].get("train_until_loss")
    fixed = [a for a in ("regime_large", "ghost_regime") if a in loss.columns]
    below = criterion and fixed and (loss[fixed].mean() < criterion / 2).any()
    order = [a for a in p["arms"] if a in wide.columns]
    made = _batch_norm_figure(mine, wide, order, figures, p["name"])
    return templating.lines(
        "explanations_batch_norm.md.j2",
        gap={"points": 100 * mean, "low": 100 * lo, "high": 100 * hi},
        updates={a: steps[a].median() for a in ("bn_small", "bn_large")},
        table=_md(pd.DataFrame(rows)),
        contrasts=contrasts,
        regime_loss={a: loss[a].mean() for a in fixed} if below else {},
        criterion=criterion,
        made=made,
        data=made.replace(".png", ".csv"),
        n_seeds=wide.shape[0],
        means={a: 100 * wide[a].mean() for a in order},
    )


def _batch_norm_figure(
    mine: pd.DataFrame, wide: pd.DataFrame, order: list[str], figures: Path, name: str
) -> str:
    """Every seed's test error in each arm, grey lines joining one seed's runs, the bar the mean."""
    tidy = mine[["arm", "seed", "test_error", "train_loss"]].copy()
    fig, ax = plt.subplots(figsize=(1.15 * len(order) + 1.5, 3.8))
    for _, seed_values in wide[order].iterrows():
        ax.plot(order, 100 * seed_values, color="0.8", linewidth=0.7, zorder=1)
    tidy["test error (%)"] = 100 * tidy["test_error"]
    for arm in order:  # each arm in its colour and marker of every figure
        colour, marker = arm_style(arm)
        part = tidy[tidy["arm"] == arm]
        ax.scatter([arm] * len(part), part["test error (%)"], color=colour, marker=marker, s=28,
                   zorder=2)  # fmt: skip
    ax.scatter(order, 100 * wide[order].mean(), marker="_", s=500, color="black", zorder=3)
    ax.set_xlabel("")
    ax.set_ylabel("test error (%), axis not from 0")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(alpha=0.3)
    ax.set_title(phrase(FIGURE_TEXT, key="batch_norm_title", n_seeds=wide.shape[0]), fontsize=8)
    fig.tight_layout()
    return _save(fig, tidy, figures, f"{name}_arms")


# --- 2. averaged sharpness --------------------------------------------------------------------------


def relative_se(tables: Path, p: dict) -> list[tuple[str, float]] | None:
    """Median over minima of (standard error / mean) of λmax(L_B) over the batches, per B (None:
    not recorded)."""
    metrics = _read(tables, "run_metrics")
    if metrics is None:
        return None
    rows = metrics[(metrics["protocol"] == p["name"]) & metrics["metric"].str.match(r"lmax_b\d")]
    rel = (rows["error_bound"] / rows["value"]).groupby(rows["metric"]).median()
    order = sorted(rel.index, key=lambda m: int(m.rsplit("_b", 1)[1]))
    return [(m.rsplit("_b", 1)[1], rel[m]) for m in order]


def averaged_lines(p: dict, tables: Path, figures: Path, runs: pd.DataFrame) -> list[str]:
    paired = _read(tables, f"paired_{p['name']}")
    if paired is None:
        return []
    tidy = _read(tables, f"sharpness_by_batch_values_{p['name']}")
    taus = _read(tables, f"sharpness_by_batch_{p['name']}")
    if taus is None:
        raise FileNotFoundError(
            f"{tables}/sharpness_by_batch_{p['name']}.csv: run the verdicts step, which writes it"
        )
    made = _by_b_figure(tidy, figures, p["name"])
    return templating.lines(
        "explanations_averaged_sharpness.md.j2",
        table=_md(_averaged_table(tidy, taus, _intervals(tables, p["name"], "separation"))),
        **_monotone(tidy),
        relative_se=relative_se(tables, p),
        without=_without_b1(_intervals(tables, p["name"], "without_b1")),
        made=made,
        data=made.replace(".png", ".csv"),
        ratios=_large_over_small(tidy),
    )


def _averaged_table(
    tidy: pd.DataFrame, taus: pd.DataFrame, separation: pd.DataFrame
) -> pd.DataFrame:
    """Per model, measure and B: both minima's geometric means, their separation seed by seed and
    Kendall τ with test error (both from the verdicts step's tables)."""
    tau_of = taus.set_index(["model", "measure", "quantity"])
    rows = []
    for (model, measure, quantity), sub in tidy.groupby(
        ["model", "measure", "quantity"], sort=False
    ):
        wide = sub.pivot(index="seed", columns="batch", values="value")
        if not {"small", "large"} <= set(wide.columns):
            continue
        sep = _one(separation, model=model, measure=measure, quantity=quantity)
        mean, lo, hi = sep[["mean", "low", "high"]]
        tau, t_lo, t_hi = tau_of.loc[(model, measure, quantity), ["tau", "tau_low", "tau_high"]]
        rows.append(
            {
                "model": model,
                "measure": measure,
                "B": "all" if sub["whole_set"].iloc[0] else int(sub["B"].iloc[0]),
                "small-batch minimum (geo. mean)": float(np.exp(np.log(wide["small"]).mean())),
                "large-batch minimum (geo. mean)": float(np.exp(np.log(wide["large"]).mean())),
                "log(large/small) [95% CI]": f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                "Kendall τ with test error [95%]": f"{tau:+.2f} [{t_lo:+.2f}, {t_hi:+.2f}]",
            }
        )
    return pd.DataFrame(rows)


def _without_b1(intervals: pd.DataFrame) -> list[dict]:
    """Per model, the separation of the averaging ratio with B = 1 left out (B = 4 to 64)."""
    return [
        {"model": r["model"], "mean": r["mean"], "low": r["low"], "high": r["high"]}
        for _, r in intervals.iterrows()
    ]


def _monotone(tidy: pd.DataFrame) -> dict[str, list[dict]]:
    """Jensen's check: per model and measure, how many minima's sharpness falls monotonically with
    B (``falls``), and every step where λmax rises (``rises``)."""
    falls, rises = [], []
    for (model, measure), sub in tidy.groupby(["model", "measure"], sort=False):
        curve = sub.groupby(["arm", "seed"]).apply(
            lambda g: bool(np.all(np.diff(g.sort_values("B")["value"].to_numpy()) <= 1e-12)),
            include_groups=False,
        )
        falls.append(
            {"model": model, "measure": measure, "falling": int(curve.sum()), "minima": len(curve)}
        )
        if measure.startswith("λ"):
            for (arm, seed), g in sub.groupby(["arm", "seed"]):
                v = g.sort_values("B")[["B", "value"]].to_numpy()
                for (b0, v0), (b1, v1) in zip(v[:-1], v[1:], strict=True):
                    if v1 > v0:
                        rises.append({"arm": arm, "seed": seed, "b0": b0, "b1": b1,
                                      "factor": v1 / v0})  # fmt: skip
    return {"falls": falls, "rises": rises}


def _by_b_figure(tidy: pd.DataFrame, figures: Path, name: str) -> str:
    """Each minimum's sharpness against B, one panel per model and measure."""
    fig, axes = plt.subplots(
        2, tidy["model"].nunique(), figsize=(4.3 * tidy["model"].nunique(), 6.6), squeeze=False
    )
    for j, model in enumerate(dict.fromkeys(tidy["model"])):
        for i, measure in enumerate(dict.fromkeys(tidy["measure"])):
            ax = axes[i, j]
            sub = tidy[(tidy["model"] == model) & (tidy["measure"] == measure)]
            arms = [
                a for b in ("small", "large") for a in dict.fromkeys(sub[sub["batch"] == b]["arm"])
            ]
            sns.lineplot(
                data=sub, x="B", y="value", hue="arm", style="arm", hue_order=arms,
                style_order=arms, palette={a: arm_style(a)[0] for a in arms},
                markers={a: arm_style(a)[1] for a in arms}, dashes=False,
                estimator=lambda v: float(np.exp(np.mean(np.log(v)))), errorbar=("pi", 100),
                ax=ax,
            )  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(phrase(FIGURE_TEXT, key="by_b_xlabel"))
            ax.set_ylabel(measure + " (log)")
            ax.grid(alpha=0.3, which="both")
            ax.set_title(phrase(FIGURE_TEXT, key="by_b_panel", model=model), fontsize=9)
            ax.legend(title="minimum", fontsize=7, title_fontsize=7)
    fig.suptitle(phrase(FIGURE_TEXT, key="by_b_title"), fontsize=9)
    fig.tight_layout()
    return _save(fig, tidy, figures, f"{name}_by_b")


def _large_over_small(tidy: pd.DataFrame) -> list[dict]:
    """Per model and measure, the large- over the small-batch minima's geometric mean at the
    smallest B and on the whole set."""
    ratios = []
    for (model, measure), sub in tidy.groupby(["model", "measure"], sort=False):
        geo = np.exp(np.log(sub["value"]).groupby([sub["B"], sub["batch"]]).mean()).unstack()
        if {"small", "large"} <= set(geo.columns):
            r = geo["large"] / geo["small"]
            ratios.append({"model": model, "measure": measure, "first": r.iloc[0],
                           "b": r.index[0], "last": r.iloc[-1]})  # fmt: skip
    return ratios


# --- 3. Adam's local minima ---------------------------------------------------------------------------


def adam_escape_lines(p: dict, tables: Path, figures: Path, runs: pd.DataFrame) -> list[str]:
    pairs = _read(tables, f"pairs_{p['name']}")
    paired = _read(tables, f"paired_{p['name']}")
    if pairs is None or paired is None:
        return []
    mine = runs[runs["protocol"].isin([p["name"], "optimizer", "optimizer_full"])]
    values = paired.drop_duplicates(["arm", "seed", "quantity"]).pivot_table(
        index="seed", columns=["quantity", "arm"], values="value"
    )
    barrier = paired[(paired["comparison"] == "escape") & (paired["quantity"] == "linear_barrier")]
    sw = pairs[pairs["pair"] == "switched_minimum_vs_adam"]
    made, tidy = _paths_figure(pairs, figures, p["name"])
    return templating.lines(
        "explanations_adam_escape.md.j2",
        premise=_premise(_read(tables, "verdicts")),
        table=_md(_pairs_table(pairs)),
        moved=_moved(values, pairs),
        zero_barriers=bool(not barrier.empty and (barrier["value"] == 0).all()),
        continued=_continued(mine),
        control=_control(mine),
        switched_minimum={
            "min": sw["barrier"].min(),
            "max": sw["barrier"].max(),
            "under": int((sw["barrier"] < BASIN).sum()),
            "seeds": len(sw),
        }
        if not sw.empty
        else None,
        above_criterion=_above_criterion(values),
        made=made,
        data=made.replace(".png", ".csv"),
        rises=_path_rises(tidy, pairs, mine[mine["protocol"] == p["name"]]),
    ) + equal_loss_lines(p, tables, mine)


def _premise(verdicts: pd.DataFrame | None) -> dict | None:
    """The optimizer protocol's adam verdict where it is not reproduced (the gap to explain)."""
    if verdicts is None:
        return None
    premise = verdicts[
        (verdicts["protocol"].str.startswith("optimizer")) & (verdicts["comparison"] == "adam")
    ]
    if premise.empty or premise["verdict"].iloc[0] == "reproduced":
        return None
    r = premise.iloc[0]
    return {"points": 100 * r["mean_diff"], "verdict": r["verdict"]}


def _pairs_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per path: its length and barrier over the seeds, and in how many seeds it is one basin."""
    rows = []
    for name, sub in pairs.groupby("pair", sort=False):
        rows.append(
            {
                "path": name,
                "distance (mean, range)": f"{sub['distance'].mean():.1f} "
                f"({sub['distance'].min():.1f}–{sub['distance'].max():.1f})",
                "barrier (mean, range)": f"{sub['barrier'].mean():.3g} "
                f"({sub['barrier'].min():.3g}–{sub['barrier'].max():.3g})",
                f"seeds under {BASIN} (one basin)": f"{(sub['barrier'] < BASIN).sum()}/{len(sub)}",
            }
        )
    return pd.DataFrame(rows)


def _spread(values: pd.Series) -> dict[str, float]:
    return {"mean": values.mean(), "min": values.min(), "max": values.max()}


def _moved(values: pd.DataFrame, pairs: pd.DataFrame) -> list[dict]:
    """How far each continuation moved from the Adam minimum, absolute and as a share of the
    Adam–momentum distance of its seed, and the train loss it ended at."""
    yard = pairs[pairs["pair"] == "adam_vs_momentum"].set_index("seed")["distance"]
    moved = []
    for arm in ("adam_then_momentum", "adam_then_adam", "adam_then_momentum_min"):
        if ("distance_from_init", arm) not in values:
            continue
        share = values["distance_from_init", arm] / yard
        loss = values.get(("train_loss", arm))
        moved.append(
            {
                "arm": arm,
                "distance": values["distance_from_init", arm].mean(),
                "share": share.mean(),
                "share_min": share.min(),
                "share_max": share.max(),
                "loss": _spread(loss) if loss is not None else None,
            }
        )
    return moved


def _continued(mine: pd.DataFrame) -> dict | None:
    """The switched runs continued to the criterion, against momentum from initialisation."""
    runs_min = mine[mine["arm"] == "adam_then_momentum_min"]
    if runs_min.empty:
        return None
    return {
        "met": int(reached_rows(runs_min).sum()),
        "runs": len(runs_min),
        "steps": int(runs_min["steps_trained"].max()),
        "loss": _spread(runs_min["train_loss"]),
        "test_error": 100 * runs_min["test_error"].mean(),
        "momentum_steps": mine[mine["arm"] == "momentum"]["steps_trained"].median(),
    }


def _control(mine: pd.DataFrame) -> dict | None:
    """The restart control: momentum's own minimum restarted like the switch."""
    control = mine[mine["arm"] == "momentum_then_momentum"]
    if control.empty:
        return None
    return {
        "loss": _spread(control["train_loss"]),
        "test_error": 100 * control["test_error"].mean(),
        "switched_loss": mine[mine["arm"] == "adam_then_momentum"]["train_loss"].mean(),
        "settles": bool(control["train_loss"].max() < 0.05),  # stays in its minimum
    }


def _above_criterion(values: pd.DataFrame) -> dict | None:
    """The switched runs' end loss where it is above the criterion the Adam minima were taken at."""
    criterion = 0.01  # the optimizer protocol's, at which the Adam minima were taken
    loss = values.get(("train_loss", "adam_then_momentum"))
    if loss is None or not (loss > criterion).any():
        return None
    above = int((loss > criterion).sum())
    return {"loss": loss.mean(), "criterion": criterion, "above": above, "seeds": len(loss)}


def _paths_figure(pairs: pd.DataFrame, figures: Path, name: str) -> tuple[str, pd.DataFrame]:
    """The training loss on each straight path, every seed, one panel per pair; the file and the
    tidy data drawn."""
    n = pairs["pair"].nunique()
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), sharey=True, squeeze=False)
    axes = axes[0]
    tidy = []
    for ax, (pair, sub) in zip(axes, pairs.groupby("pair", sort=False), strict=False):
        for r in sub.itertuples():
            t, loss = json.loads(r.path_t), json.loads(r.path_loss)
            ax.plot(t, loss, color="tab:blue", alpha=0.5, linewidth=0.9)
            tidy += [
                {"pair": pair, "seed": r.seed, "t": a, "train_loss": b}
                for a, b in zip(t, loss, strict=True)
            ]
        ax.set_yscale("log")
        ax.set_xlabel(f"t: 0 at {sub['b'].iloc[0]}, 1 at {sub['a'].iloc[0]}")
        ax.set_title(f"{pair}: {len(sub)} seeds", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(phrase(FIGURE_TEXT, key="paths_ylabel"))
    fig.suptitle(phrase(FIGURE_TEXT, key="paths_title"), fontsize=9)
    fig.tight_layout()
    tidy = pd.DataFrame(tidy)
    return _save(fig, tidy, figures, f"{name}_paths"), tidy


def _path_rises(tidy: pd.DataFrame, pairs: pd.DataFrame, own: pd.DataFrame) -> list[dict]:
    """Per pair, read from the figure's data: how many seeds' lines peak above both ends and by
    how much, and how many fall below the t = 0 end just beside it; ``own`` is the protocol's
    runs (each once), for how many of each end's runs met their criterion."""
    rises = []
    for name, sub in tidy.groupby("pair", sort=False):
        wide = sub.pivot_table(index="t", columns="seed", values="train_loss")
        inside = wide.loc[(wide.index > 0) & (wide.index < 1)].max()
        ends = wide.loc[[wide.index.min(), wide.index.max()]].max()
        pair = pairs[pairs["pair"] == name].iloc[0]
        met = [
            (
                arm,
                int(reached_rows(own[own["arm"] == arm]).sum()),
                int((own["arm"] == arm).sum()),
            )
            for arm in (pair["b"], pair["a"])
        ]
        near = wide.loc[wide.index[wide.index > 0].min()]
        rises.append(
            {
                "pair": name,
                "met": met,
                "above": int((inside > ends).sum()),
                "seeds": wide.shape[1],
                "factor": (inside / ends).min(),
                "peak": inside.median(),
                "end": ends.median(),
                "below": int((near < wide.loc[wide.index.min()]).sum()),
            }
        )
    return rises


def equal_loss_lines(p: dict, tables: Path, runs: pd.DataFrame) -> list[str]:
    """Adam's and momentum's minima at equal training loss: sharpness beside test error, per arm
    and as the paired ratio adam/momentum over the seeds (described; the intervals are the
    analysis's)."""
    metrics = _read(tables, "run_metrics")
    if metrics is None:
        return []
    mine = metrics[(metrics["protocol"] == p["name"]) & metrics["arm"].isin(["adam", "momentum"])]
    if mine.empty:
        return []
    wide = mine.pivot_table(index=["arm", "seed"], columns="metric", values="value")
    test = runs[runs["protocol"] == p["name"]].set_index(["arm", "seed"])["test_error"]
    wide["test_error"] = test.reindex(wide.index)
    paired_of = _intervals(tables, p["name"], "equal_loss")
    rows = []
    for q, label in (
        ("test_error", "test error"),
        ("lambda_max", "λmax"),
        ("adaptive_worst_case_sharpness", "adaptive worst-case sharpness (ρ = 0.5)"),
    ):
        if q not in wide:
            continue
        a, m = wide.loc["adam", q], wide.loc["momentum", q]
        d, lo, hi = _one(paired_of, quantity=q)[["mean", "low", "high"]]
        if q == "test_error":
            paired = f"{100 * d:+.2f} points [{100 * lo:+.2f}, {100 * hi:+.2f}]"
            shown = [f"{100 * a.mean():.2f}%", f"{100 * m.mean():.2f}%"]
        else:
            paired = f"×{np.exp(d):.2f} [×{np.exp(lo):.2f}, ×{np.exp(hi):.2f}]"
            shown = [f"{np.exp(np.log(a).mean()):.3g}", f"{np.exp(np.log(m).mean()):.3g}"]
        rows.append(
            {
                "measure": label,
                "adam": shown[0],
                "momentum": shown[1],
                "adam vs momentum, paired [95% t]": paired,
            }
        )
    return templating.lines("explanations_equal_loss.md.j2", table=_md(pd.DataFrame(rows)))
