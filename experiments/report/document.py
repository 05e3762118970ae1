"""``python -m experiments.report``: ``results/REPORT.md`` from the saved tables, nothing else.

Reads what ``python -m experiments.protocol verdicts`` wrote (``verdicts.csv``, ``paired_<protocol>.csv``,
``protocol_runs.csv``, ``lr_<protocol>.csv``, ``secondary.csv``, ``protocols.json``,
``environment.json``), the invariance audit's ``audit.csv`` and Wilson et al.'s counter-example
(``wilson_runs.csv``). Every number in the report is read or computed from those tables, never
typed; every figure is drawn from them (:mod:`experiments.report.figures`). The report opens with the
setup, then the verdicts, then one section per claim with its protocol, per-seed numbers, effect with
its interval and Holm-adjusted p, the verdict and the rule that produced it.

This module computes what each sentence states; the sentences are the templates
``experiments/report/templates/report_*.md.j2`` (:mod:`experiments.report.templating`), one per section or caption.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.schemas import TableError, load
from experiments.criterion import reached_rows
from experiments.report import explanations as E
from experiments.report import figures as F
from experiments.report import landscape as L
from experiments.report import mechanism as M
from experiments.report import robustness as R
from experiments.report.study import study_lines
from experiments.report.templating import render
from flatness.io import atomic_write_bytes

# Keskar et al. 2017, Table 3 ("Sharpness of Minima in Full Space"), ε = 1e-3: small-batch and
# large-batch means over their networks F1, F2, C1-C4; their large/small ratio sits beside ours.
KESKAR_TABLE3 = {
    "F1": (1.23, 205.14),
    "F2": (1.39, 310.64),
    "C1": (28.58, 707.23),
    "C2": (8.68, 925.32),
    "C3": (29.85, 258.75),
    "C4": (12.83, 421.84),
}
PCT = ("test_error", "gap", "train_error", "val_error")
# Wilson et al.'s adaptive methods reach the majority-class error in the limit: how close counts
WILSON_WITHIN = 0.05


# every table as the analysis wrote it, checked against its declared schema: the report refuses a
# table whose rows or verdicts do not add up rather than print it
_table = load


def _text(template: str, /, **context) -> str:
    """``template`` filled with ``context``; the file's final newline ends its last line and
    is not part of the text."""
    return render(template, **context).removesuffix("\n")


def _section(template: str, /, **context) -> list[str]:
    """``_text`` as the report's lines: each line of the template is a line of the report (a
    section that ends with a blank line ends its template with one)."""
    return _text(template, **context).split("\n")


def _csv(figure: str) -> str:
    """The data file saved beside a figure (``x.png`` -> ``x.csv``)."""
    return figure.replace(".png", ".csv")


def _md(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


def _num(x: float, q: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f}%" if q in PCT else f"{x:.4g}"


def _diff(row: pd.Series) -> str:
    """The effect with its 95% interval, in the units a reader expects: points of error, a ratio
    for a log-ratio part, τ for a rank correlation."""
    if math.isnan(row["mean_diff"]):
        return "–"
    d, lo, hi = row["mean_diff"], row["ci_low"], row["ci_high"]
    if row["margin_is_ratio"]:
        return f"×{math.exp(d):.3g} [{math.exp(lo):.3g}, {math.exp(hi):.3g}]"
    if row["quantity"] in PCT:
        return f"{100 * d:+.2f} pts [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]"


# --- sections -------------------------------------------------------------------------------------


def setup_section(protocols: dict, runs: pd.DataFrame, tables: Path, env: dict) -> list[str]:
    """Data, models, criteria, budgets, rates, seeds, hardware and compute, from the saved tables."""
    first = next(iter(protocols.values()))["base"]
    n = runs.iloc[0]
    split = {"train": int(n["num_train"]), "val": int(n["num_val"]), "test": int(n["num_test"])}
    sizes = runs.drop_duplicates("protocol").set_index("protocol")
    other = [
        {"name": name, "train": int(r.num_train), "val": int(r.num_val), "test": int(r.num_test)}
        for name, r in sizes.iterrows()
        if (r.num_train, r.num_val, r.num_test) != (n["num_train"], n["num_val"], n["num_test"])
    ]
    rows = []
    for name, p in protocols.items():
        lr = _table(tables, f"lr_{name}")
        for arm, over in p["arms"].items():
            over = over or {}
            if "same_as" in over:  # listed under the protocol that trains it
                continue
            cfg = {**p["base"], **over}
            mine = runs[(runs["protocol"] == name) & (runs["arm"] == arm)]
            fixed = bool(over.get("fixed_budget"))
            reached = reached_rows(mine, fixed_budget=fixed).sum()
            chosen = lr[(lr["arm"] == arm) & lr["chosen"].astype(bool)] if lr is not None else None
            edge = chosen is not None and len(chosen) and bool(chosen["at_edge"].iloc[0])
            # a choice whose next rate up missed the criterion sits at the limit of what reaches it
            limit = False
            if chosen is not None and len(chosen) and not edge:
                grid_rows = lr[lr["arm"] == arm].sort_values("lr")
                above = grid_rows[grid_rows["lr"] > chosen["lr"].iloc[0]]
                limit = not above.empty and not bool(above["eligible"].iloc[0])
            grid = ((p.get("tune") or {}).get("grid") or {}).get(arm)
            source = over.get("lr_from")
            if grid:
                grid_text = f"{grid[0]:g}…{grid[-1]:g} ({len(grid)})"
            else:
                grid_text = (
                    f"from {source['arm']}"
                    + (" × √(batch ratio)" if source.get("scaling") == "sqrt" else "")
                    + (f" × {source['factor']:g}" if source.get("factor", 1) != 1 else "")
                )
            budget = cfg.get("max_steps") or f"= {over.get('steps_from')}'s steps"
            rows.append(
                {
                    "protocol": name,
                    "arm": arm,
                    "model": f"{cfg.get('model')} ({int(mine['n_params'].iloc[0]):,} params)",
                    "train samples": int(mine["num_train"].iloc[0]),
                    "optimizer": cfg.get("optimizer"),
                    "batch": cfg.get("batch_size"),
                    "weight decay": cfg.get("weight_decay", "default"),
                    "criterion (train CE)": "fixed budget"
                    if fixed
                    else cfg.get("train_until_loss"),
                    "step budget": budget,
                    "lr grid": grid_text,
                    "lr chosen": f"{mine['lr'].iloc[0]:g}"
                    + (" (edge!)" if edge else " (limit)" if limit else ""),
                    "reached": f"{reached}/{len(mine)}" + (" (budget)" if fixed else ""),
                    "steps trained (median, range)": (
                        f"{mine['steps_trained'].median():.0f} "
                        f"({mine['steps_trained'].min():.0f}–{mine['steps_trained'].max():.0f})"
                    ),
                    "train acc (min)": f"{1 - mine['train_error'].max():.4f}",
                    "CPU min": f"{(mine['train_s'].sum() + mine['measure_s'].sum()) / 60:.2f}",
                }
            )
    return _section(
        "report_setup.md.j2",
        num_samples=first.get("dataset.num_samples"),
        split=split,
        other=other,
        model=first.get("model"),
        width=first.get("model.width"),
        **({"depth": first["model.depth"]} if "model.depth" in first else {}),
        n_params=int(n["n_params"]),
        env=env,
        devices=sorted(runs["device"].dropna().unique()),
        measures=[
            {
                "protocol": name,
                "metrics": {m: s or {} for m, s in p["base"].get("metrics", {}).items()},
                "derived": p.get("derived", {}),
            }
            for name, p in protocols.items()
        ],
        criterion_every=[
            (name, p["base"]["criterion_every_samples"])
            for name, p in protocols.items()
            if p["base"].get("criterion_every_samples")
        ],
        reach_within=[
            (name, p["tune"].get("reach_within", 1.0))
            for name, p in protocols.items()
            if p.get("tune")
        ],
        table=_md(pd.DataFrame(rows)),
    )


def statistics_section(verdicts: pd.DataFrame) -> list[str]:
    tested = verdicts[verdicts["p_holm"].notna()]
    size = int(verdicts["family_size"].iloc[0]) if len(verdicts) else 0
    n = int(verdicts["n_seeds"].min())
    # a significant part whose adjusted p is near α depends on the family's size: say by how much
    close = tested[(tested["p_holm"] < 0.05) & (tested["p_holm"] >= 0.04)]
    return _section(
        "report_statistics.md.j2",
        n=n,
        p_min=2 / 2**n,
        size=size,
        tested=[
            {
                **r._asdict(),
                "resolvable": not math.isnan(r.resolvable_margin),
                "log_margin": math.log1p(r.margin) if r.margin_is_ratio else None,
            }
            for r in tested.itertuples()
        ],
        borderline=[
            {**r._asdict(), "ranked_after": round(r.p_holm / r.p_raw)} for r in close.itertuples()
        ],
    )


def verdict_summary(verdicts: pd.DataFrame, tables: Path) -> list[str]:
    n = int(verdicts["n_seeds"].min())
    rows, notes = [], []
    robust = R.label_heads(tables, verdicts["protocol"].unique())
    by_measure = M.verdict_cells(tables)
    for (proto, comp), parts in verdicts.groupby(["protocol", "comparison"], sort=False):
        by = {r.part: r for r in parts.itertuples()}
        eff, mech = by.get("effect"), by.get("mechanism")
        caveat = getattr(eff, "caveat", "")
        mark = ""
        if isinstance(caveat, str) and caveat:
            notes.append((f"{proto}/{comp}", caveat))
            mark = f" (note {len(notes)})"
        rows.append(
            {
                "claim": f"{proto}/{comp}",
                "hypothesis": eff.hypothesis,
                "effect": f"{eff.part_verdict}: {_diff(pd.Series(eff._asdict()))}",
                "mechanism": (
                    f"{mech.part_verdict}: {_diff(pd.Series(mech._asdict()))}" if mech else "–"
                ),
                "mechanism by measure": by_measure.get((proto, comp), {}).get("by measure", "–"),
                "within arms": by_measure.get((proto, comp), {}).get("within arms", "–"),
                "verdict": f"**{eff.verdict}**{mark}",
                "robustness": robust.get((proto, comp), "untested"),
            }
        )
    return _section("report_verdicts.md.j2", n=n, table=_md(pd.DataFrame(rows)), notes=notes)


def one_sided(r) -> str:
    """For an inconclusive part: whether its one-sided (1 − 2α) bound already excludes an effect of
    the stated margin in the claimed direction, or in the other."""
    if r.part_verdict != "inconclusive" or math.isnan(r.tost_ci_low):
        return ""
    margin = math.log1p(r.margin) if r.margin_is_ratio else r.margin  # the scale TOST tests on
    if r.direction == "greater" and r.tost_ci_high < margin:
        bound = r.tost_ci_high
    elif r.direction == "less" and r.tost_ci_low > -margin:
        bound = r.tost_ci_low
    else:
        return ""
    return _text(
        "report_one_sided.md.j2",
        ratio=r.margin_is_ratio,
        direction=r.direction,
        bound=bound,
        margin=margin,
    )


def interaction_table(paired: pd.DataFrame, c: dict) -> pd.DataFrame:
    """Seeds as rows: the quantity in each of the four arms and (a − a2) − (b − b2) in points."""
    rows = paired[(paired["comparison"] == c["name"]) & ~paired["secondary"].astype(bool)]
    wide = rows.pivot(index="seed", columns="role", values="value")
    out = pd.DataFrame({"seed": wide.index})
    arms = dict(zip(rows["role"], rows["arm"], strict=False))
    for role in ("a", "a2", "b", "b2"):
        out[arms[role]] = [f"{100 * v:.2f}%" for v in wide[role]]
    inter = (wide["a"] - wide["a2"]) - (wide["b"] - wide["b2"])
    out["interaction (pts)"] = [f"{100 * v:+.2f}" for v in inter]
    return out


def per_seed_table(paired: pd.DataFrame, comparison: str, few: bool = True) -> pd.DataFrame:
    """Seeds as rows; per quantity, arm a, arm b and a − b (a/b for sharpness); the secondary
    quantities too when ``few``."""
    rows = paired[paired["comparison"] == comparison]
    if not few:
        rows = rows[~rows["secondary"].astype(bool)]
    out = pd.DataFrame({"seed": sorted(rows["seed"].unique())})
    for q, sub in rows.groupby("quantity", sort=False):
        wide = sub.pivot(index="seed", columns="role", values="value").reindex(out["seed"])
        bound = sub.pivot(index="seed", columns="role", values="at_bound").reindex(out["seed"])
        met = sub.pivot(index="seed", columns="role", values="reached").reindex(out["seed"])
        for role in ("a", "b"):
            col = wide[role].map(lambda v, q=q: _num(v, q)).to_numpy()
            col = np.where(bound[role].astype(bool), "at bound", col)
            # a run off its criterion: its value is shown but enters no test
            col = np.where(met[role].astype(bool), col, np.char.add(col.astype(str), " ✗"))
            out[f"{q} {role}"] = col
        if q in PCT:
            out[f"{q} a−b (pts)"] = [f"{100 * d:+.2f}" for d in wide["a"] - wide["b"]]
        else:
            out[f"{q} a/b"] = [f"{r:.3g}" for r in wide["a"] / wide["b"]]
    return out


def protocol_section(
    p: dict, verdicts: pd.DataFrame, tables: Path, figures: Path, runs: pd.DataFrame
) -> list[str]:
    name = p["name"]
    paired = _table(tables, f"paired_{name}")
    secondary = _table(tables, "secondary")
    mine = verdicts[verdicts["protocol"] == name]
    mine_runs = runs[runs["protocol"] == name]
    summary = mine_runs.groupby("arm", sort=False).agg(
        reached=("stop_reason", lambda r: f"{r.isin(['train_until_loss']).sum()}/{len(r)}"),
        budget_used=("stop_reason", lambda r: f"{(r == 'max_steps').sum()}/{len(r)}"),
        train_loss=("train_loss", "mean"),
        train_error=("train_error", "mean"),
        val_error=("val_error", "mean"),
        test_error=("test_error", "mean"),
        test_error_sd=("test_error", "std"),
        steps=("steps_trained", "median"),
    )
    for col in ("train_error", "val_error", "test_error", "test_error_sd"):
        summary[col] = summary[col].map(lambda v: f"{100 * v:.2f}%")
    lines = _section(
        "report_protocol.md.j2",
        protocol=name,
        # the explanation under test, in the deck's own words
        deck=p["deck"].strip() if p.get("deck") else None,
        arms={a: o or {} for a, o in p["arms"].items()},
        seeds=len(p["seeds"]),
        summary=_md(summary.reset_index()),
        history=p.get("history") or [],
    )
    for c in p["comparisons"]:
        lines += comparison_lines(
            p, c, mine[mine["comparison"] == c["name"]], paired, figures, runs
        )
        if paired is None:
            continue
        if c.get("kind") == "kendall_tau":
            lines += within_arm_tau(paired, c)
        else:
            lines += secondary_lines(secondary, name, c["name"])
    if name == "batch_size":
        lines += keskar_comparison(secondary)
    lines += surfaces_lines(p, tables, figures)
    lines += interpolation_lines(p, tables, figures)
    lines += L.landscape_lines(p, tables, figures)
    lines += E.explanation_lines(p, tables, figures, runs)
    lines += M.mechanism_lines(p, tables)
    lines += R.robustness_lines(p, tables, figures)
    lines += schedule_lines(p, mine_runs)
    settings = mine_runs.drop_duplicates("arm").set_index("arm")["settings"]
    lines += _section("report_protocol_settings.md.j2", settings=list(settings.items()))
    return lines


def comparison_lines(
    p: dict,
    c: dict,
    rows: pd.DataFrame,
    paired: pd.DataFrame | None,
    figures: Path,
    runs: pd.DataFrame,
) -> list[str]:
    """One comparison: each part's verdict with its reason, the claim's verdict and rule, and when
    the paired table exists, the per-seed numbers and the figure drawn from them."""
    parts = [
        {
            **r._asdict(),
            "one_sided": one_sided(r) if hasattr(r, "tost_ci_low") else "",
        }
        for r in rows.itertuples()
    ]
    context = {
        "comparison": c["name"],
        "hypothesis": c["rule"]["hypothesis"],
        "parts": parts,
        "verdict": rows["verdict"].iloc[0],
        "rule": rows["rule"].iloc[0],
        "caveat": c.get("caveat"),
        "kind": c.get("kind", "paired"),
        "a": c.get("a"),
        "b": c.get("b"),
        "quantity": c["rule"]["quantity"],
        "table": None,
        "rates": None,
        "figure": None,
    }
    if paired is None:
        return _section("report_comparison.md.j2", **context)
    mine_runs = runs[runs["protocol"] == p["name"]]
    fig_name = f"{p['name']}_{c['name']}"
    if c.get("kind") == "kendall_tau":
        made = F.tau_figure(paired, c["name"], c["x"], c["y"], figures, fig_name)
        sub = paired[paired["comparison"] == c["name"]]
        wide = sub.pivot_table(index="seed", columns=["quantity", "arm"], values="value")
        wide.columns = [f"{q} {a}" for q, a in wide.columns]
        context["table"] = _md(wide.reset_index(), ".4g")
    else:
        quantities = [c["rule"]["quantity"]]
        if c["rule"].get("mechanism"):
            quantities.append(c["rule"]["mechanism"]["quantity"])
        made = F.paired_figure(paired, c["name"], quantities, figures, fig_name)
        rate = mine_runs.drop_duplicates("arm").set_index("arm")["lr"]
        if c.get("kind", "paired") == "paired" and rate[c["a"]] != rate[c["b"]]:
            derived = any(
                {"lr_from", "same_as"} & set(p["arms"][arm] or {}) for arm in (c["a"], c["b"])
            )
            context["rates"] = {"derived": derived, "a": rate[c["a"]], "b": rate[c["b"]]}
        if c.get("kind") == "interaction":
            context["table"] = _md(interaction_table(paired, c))
        else:
            few = len(p.get("secondary", [])) <= 3
            context["table"] = _md(per_seed_table(paired, c["name"], few=few))
    if made:
        context["figure"] = made
        context["caption"] = figure_caption(figures, made, c, mine_runs, p)
    return _section("report_comparison.md.j2", **context)


def figure_caption(figures: Path, made: str, c: dict, runs: pd.DataFrame, p: dict) -> str:
    """A comparison figure's caption, read from the figure's own data and the runs table: what it
    draws, where each arm's runs stopped and their training loss there, and per quantity in how many
    seeds arm a lies above arm b (the direction the rule tests)."""
    data = pd.read_csv(figures / _csv(made))
    arms = []
    for arm in dict.fromkeys(data["arm"]):
        mine = runs[(runs["arm"] == arm) & runs["seed"].isin(set(data["seed"]))]
        arms.append(
            {
                "arm": arm,
                "fixed": bool({"fixed_budget", "steps_from"} & set(p["arms"].get(arm) or {})),
                "met": int(reached_rows(mine).sum()),
                "runs": len(mine),
                "loss": mine["train_loss"].median(),
            }
        )
    counts, constant = [], []  # a rank-correlation figure draws models, not quantities per seed
    quantities = () if c.get("kind") == "kendall_tau" else data.groupby("quantity", sort=False)
    for q, part in quantities:
        if part["value"].nunique() == 1:
            constant.append((q, part["value"].iloc[0]))
            continue
        if c.get("kind", "paired") == "paired":
            wide = part.pivot_table(index="seed", columns="arm", values="value").dropna()
            if {c["a"], c["b"]} <= set(wide.columns):
                counts.append((q, int((wide[c["a"]] > wide[c["b"]]).sum()), len(wide)))
    return _text(
        "report_comparison_caption.md.j2",
        kind=c.get("kind", "paired"),
        data=_csv(made),
        arms=arms,
        models=len(data),
        x=c.get("x"),
        y=c.get("y"),
        a=c.get("a"),
        b=c.get("b"),
        counts=counts,
        constant=constant,
    )


def surfaces_lines(p: dict, tables: Path, figures: Path) -> list[str]:
    """The protocol's saved loss surfaces (``surfaces_<name>.csv``, exported by the verdicts step
    from the runs' own records) drawn as Li et al.'s contours and slices, with a sentence on them."""
    path = tables / f"surfaces_{p['name']}.csv"
    if not path.exists():
        return []
    surfaces = pd.read_csv(path)
    made = F.surfaces_figure(surfaces, list(p["arms"]), figures, f"{p['name']}_surfaces")
    if made is None:
        return []
    reached = int(surfaces.drop_duplicates(["arm", "seed"])["reached"].astype(bool).sum())
    runs = surfaces[["arm", "seed"]].drop_duplicates().shape[0]
    drawn = pd.read_csv(figures / made.replace(".png", ".csv"))
    centre = drawn[(drawn["x"].abs() < 1e-9) & (drawn["y"].abs() < 1e-9)]
    paired = _table(tables, f"paired_{p['name']}")
    sharpness = None  # the slice sharpness' medians, when the protocol tests them
    if paired is not None and "slice_sharpness" in set(paired["quantity"]):
        q = paired[paired["quantity"] == "slice_sharpness"].groupby("arm")["value"].median()
        sharpness = [(a, q[a]) for a in p["arms"] if a in q]
    return _section(
        "report_surfaces.md.j2",
        made=made,
        data=_csv(made),
        table=path.name,
        drawn=[(a, int(s)) for a, s in drawn.groupby("arm", sort=False)["seed"].first().items()],
        reached=reached,
        runs=runs,
        centre_min=centre["train_loss"].min(),
        centre_max=centre["train_loss"].max(),
        sharpness=sharpness,
    )


def interpolation_lines(p: dict, tables: Path, figures: Path) -> list[str]:
    """Keskar's interpolation, when the protocol's pairs measured it (``pairs_<name>.csv``)."""
    pairs = _table(tables, f"pairs_{p['name']}")
    if pairs is None or "interpolation" not in pairs or pairs["interpolation"].isna().all():
        return []
    labels = {a: f"{a} (batch {v['batch_size']})" if "batch_size" in (v or {}) else a
              for a, v in p["arms"].items()}  # fmt: skip
    made = F.interpolation_figure(pairs, figures, f"{p['name']}_interpolation", labels)
    if made is None:
        return []
    data = pd.read_csv(figures / _csv(made))
    told = []
    for pair, part in data.groupby("pair", sort=False):
        wide = part.pivot_table(index="t", columns="seed", values="train_loss")
        inside = wide.loc[(wide.index > 0) & (wide.index < 1)].max()
        ends = wide.loc[[0.0, 1.0]].max()
        a, b = part["a"].iloc[0], part["b"].iloc[0]
        outer_a, outer_b = wide.loc[wide.index.min()], wide.loc[wide.index.max()]
        higher, lower, n_higher = (
            (b, a, int((outer_b > outer_a).sum()))
            if (outer_b > outer_a).sum() * 2 >= wide.shape[1]
            else (a, b, int((outer_a > outer_b).sum()))
        )
        outer = {a: (wide.index.min(), outer_a), b: (wide.index.max(), outer_b)}
        test = part.pivot_table(index="t", columns="seed", values="test_loss")
        dips = test.loc[(test.index > 0) & (test.index < 1)].min() < test.loc[[0.0, 1.0]].min()
        told.append(
            {
                "pair": pair,
                "inside": inside.median(),
                "ends": ends.median(),
                "above": int((inside > ends).sum()),
                "seeds": wide.shape[1],
                "factor": (inside / ends).min(),
                "higher": labels.get(higher, higher),
                "t_higher": outer[higher][0],
                "higher_median": outer[higher][1].median(),
                "t_lower": outer[lower][0],
                "lower_median": outer[lower][1].median(),
                "n_higher": n_higher,
                "dips": int(dips.sum()),
            }
        )
    runs = _table(tables, "protocol_runs")
    met = None
    if runs is not None:
        ends = {
            a for part in data.groupby("pair") for a in (part[1]["a"].iloc[0], part[1]["b"].iloc[0])
        }
        mine = runs[(runs["protocol"] == p["name"]) & runs["arm"].isin(ends)]
        met = {"reached": int(reached_rows(mine).sum()), "runs": len(mine)}
    return _section("report_interpolation.md.j2", made=made, data=_csv(made), pairs=told, met=met)


def within_arm_tau(paired: pd.DataFrame, c: dict) -> list[str]:
    """Where a pooled rank correlation comes from: τ within each arm, and τ after removing each
    arm's mean from both quantities (described, not tested; not part of the rule)."""
    from scipy.stats import kendalltau

    wide = F.models_table(paired, c["name"])
    x, y = c["x"], c["y"]
    arms = []
    for arm, rows in wide.groupby("arm", sort=False):
        tau, p = kendalltau(rows[x], rows[y])
        arms.append({"arm": arm, "tau": tau, "p": p, "models": len(rows)})
    centred = wide.assign(**{q: wide[q] - wide.groupby("arm")[q].transform("mean") for q in (x, y)})
    tau_c, p_c = kendalltau(centred[x], centred[y])
    means = wide.groupby("arm")[[x, y]].mean()
    return _section(
        "report_within_arm_tau.md.j2",
        arms=arms,
        tau_centred=tau_c,
        p_centred=p_c,
        n_means=len(means),
        tau_means=kendalltau(means[x], means[y])[0],
        chance=1 / math.factorial(len(means)),
    )


def secondary_lines(sec: pd.DataFrame | None, protocol: str, comparison: str) -> list[str]:
    """The secondary measures of a comparison (described, not tested): mean in each arm and the
    ratio of means; shown so that a mechanism verdict on λmax can be read beside the others."""
    if sec is None or sec.empty:
        return []
    rows = sec[(sec["protocol"] == protocol) & (sec["comparison"] == comparison)]
    if rows.empty:
        return []
    return _section(
        "report_secondary.md.j2",
        rows=[{**r._asdict(), "ratio": r.mean_a / r.mean_b} for r in rows.itertuples()],
    )


def schedule_lines(p: dict, runs: pd.DataFrame) -> list[str]:
    """When the criterion was met relative to a step decay of the rate: arms measured at
    different points of the schedule are not at quite equal footing, and the reader should know."""
    base = p["base"]
    if base.get("lr_schedule") != "step":
        return []
    arms = []
    for arm, rows in runs.groupby("arm", sort=False):
        budget = {**base, **(p["arms"][arm] or {})}["max_steps"]
        first = base.get("lr_step_milestones", [0.5])[0] * budget
        arms.append(
            {
                "arm": arm,
                "after": int((rows["steps_trained"] > first).sum()),
                "runs": len(rows),
                "loss_min": rows["train_loss"].min(),
                "loss_max": rows["train_loss"].max(),
            }
        )
    return _section(
        "report_schedule.md.j2",
        gamma=base.get("lr_step_gamma", 0.1),
        milestones=base.get("lr_step_milestones", []),
        arms=arms,
    )


def keskar_comparison(sec: pd.DataFrame | None) -> list[str]:
    """Our large/small ratio of Keskar's ε-sharpness beside the ratios of his Table 3."""
    if sec is None or sec.empty:
        return []
    sec = sec[(sec["protocol"] == "batch_size") & (sec["quantity"] == "keskar_sharpness")]
    if sec.empty:
        return []
    return _section(
        "report_keskar.md.j2",
        ours=[{**r._asdict(), "ratio": r.mean_a / r.mean_b} for r in sec.itertuples()],
        theirs=[(k, lb / sb) for k, (sb, lb) in KESKAR_TABLE3.items()],
    )


def audit_section(tables: Path, figures: Path) -> list[str]:
    audit = _table(tables, "audit")
    if audit is None:
        return []
    keep = [c for c in audit.columns if c not in ("spread",)]
    lines = _section("report_audit.md.j2", table=_md(audit[keep], ".3g"))
    values = _table(tables, "audit_values")
    runs = _table(tables, "protocol_runs")
    for model in dict.fromkeys(audit["model"]):
        if values is None:
            break
        label = _audited(model, runs)
        made = F.audit_figure(values, audit, model, figures, label)
        lines += _section(
            "report_audit_figure.md.j2",
            model=model,
            made=made,
            data=_csv(made),
            label=label,
            alphas=sorted(values["alpha"].unique()),
        )
        lines += audit_slice_lines(tables, figures, model, label)
    lines += audit_order_lines(tables, runs)
    return lines


def audit_order_lines(tables: Path, runs: pd.DataFrame | None) -> list[str]:
    """Whether a rescaling changes which audited model's slice looks the sharper."""
    slices = _table(tables, "audit_slices")
    if slices is None or slices["model"].nunique() != 2:
        return []
    rises = {}
    for (model, curve), part in slices.groupby(["model", "curve"], sort=False):
        rises[model, curve] = F.slice_rise(part["t"], part["train_loss"])
    first, second = list(dict.fromkeys(slices["model"]))
    curves = [
        {"curve": curve, "a": rises[first, curve], "b": rises[second, curve]}
        for curve in dict.fromkeys(slices["curve"])
    ]
    for c in curves:
        c["smaller"] = c["a"] < c["b"]
    return _section(
        "report_audit_order.md.j2",
        first=_audited(first, runs),
        second=_audited(second, runs),
        curves=curves,
        flips=len({c["smaller"] for c in curves}) > 1,
    )


def audit_slice_lines(tables: Path, figures: Path, model: str, label: str) -> list[str]:
    """The audited model's slice before and after rescaling, from ``audit_slices.csv``."""
    slices = _table(tables, "audit_slices")
    made = F.audit_slice_figure(slices, model, figures) if slices is not None else None
    if made is None:
        return []
    rows = slices[slices["model"] == model]
    original = rows[rows["curve"] == "original"].set_index("t")["train_loss"]
    curves = []
    for curve, part in rows.groupby("curve", sort=False):
        apart = (part.set_index("t")["train_loss"] / original - 1).abs().max()
        curves.append(
            {
                "curve": curve,
                "original": curve == "original",
                "rise": F.slice_rise(part["t"], part["train_loss"]),
                "apart": apart,
            }
        )
    return _section(
        "report_audit_slice.md.j2",
        model=model,
        made=made,
        data=_csv(made),
        label=label,
        curves=curves,
    )


def _audited(model: str, runs: pd.DataFrame | None) -> str:
    """A readable name for an audited final run (``momentum_small_seed0``): its protocol arm,
    batch size and seed, read from the runs table."""
    for _, r in (runs if runs is not None else pd.DataFrame()).iterrows():
        if model == f"{r['arm']}_seed{r['seed']}" and r["protocol"] == "batch_size":
            return f"{r['arm']} (batch {int(r['batch_size'])}, seed {int(r['seed'])})"
    return model


def wilson_section(tables: Path) -> list[str]:
    runs = _table(tables, "wilson_runs")
    if runs is None:
        return []
    err = runs.groupby("optimizer", sort=False)["test_error"].mean()
    majority = runs["majority_error"].mean()
    as_derived = (
        err[["sgd", "heavy_ball"]].max() == 0
        and (abs(err[["adagrad", "rmsprop", "adam"]] - majority) < WILSON_WITHIN).all()
    )
    return _section(
        "report_wilson.md.j2",
        errors=list(err.items()),
        majority=majority,
        as_derived=as_derived,
        within=WILSON_WITHIN,
    )


def build(results: Path) -> Path:
    tables, figures = results / "tables", results / "figures"
    F.use_protocols([])  # no arm styled by an earlier report of this process
    verdicts = _table(tables, "verdicts")
    lines = _section("report_intro.md.j2", verdicts=verdicts is not None)
    if verdicts is not None:
        protocols = json.loads((tables / "protocols.json").read_text())
        protocols = {p["name"]: p for p in protocols}
        F.use_protocols(protocols.values())  # one colour and marker per arm, as judged
        runs = _table(tables, "protocol_runs")
        env = json.loads((tables / "environment.json").read_text())
        lines += setup_section(protocols, runs, tables, env) + [""]
        lines += verdict_summary(verdicts, tables) + [""]
        lines += statistics_section(verdicts)
        lines += M.floor_lines(tables)
        for p in protocols.values():
            lines += protocol_section(p, verdicts, tables, figures, runs)
    lines += audit_section(tables, figures)
    lines += wilson_section(tables)
    for described in sorted(tables.glob("study_*.json")):
        lines += study_lines(tables, figures, described.stem.removeprefix("study_"))
    lines += sources_section(lines, results)
    lines += _section("report_not_in_report.md.j2")
    path = results / "REPORT.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def figure_sources(lines: list[str], results: Path) -> pd.DataFrame:
    """Every run each figure of the report draws, one row per (figure, run): read from the
    figure's own CSV (its arm and seed columns, or its pairs' two arms; an audit figure's model; a
    study figure's models) and the runs tables, so the list is of what was drawn, not what was
    meant to be."""
    import re

    tables, figures = results / "tables", results / "figures"
    runs = _table(tables, "protocol_runs")
    runs = (
        runs
        if runs is not None
        else pd.DataFrame(columns=["protocol", "arm", "seed", "run_dir", "stop_reason"])
    )
    names = sorted(set(runs["protocol"]), key=len, reverse=True)
    rows = []
    for name in dict.fromkeys(re.findall(r"\]\(figures/([^)]+)\.png\)", "\n".join(lines))):
        data = pd.read_csv(figures / f"{name}.csv")
        if name.startswith("study_"):
            study = next(
                (s.stem.removesuffix("_models").removeprefix("study_")
                 for s in tables.glob("study_*_models.csv")
                 if name.startswith(s.stem.removesuffix("_models") + "_")),
                None,
            )  # fmt: skip
            models = _table(tables, f"study_{study}_models") if study else None
            # the models the ranking kept, every one at its criterion (correlate.rank_models)
            for r in (models if models is not None else pd.DataFrame()).itertuples():
                rows.append({"figure": name, "source": f"study {study}", "arm": "", "seed": r.seed,
                             "run_id": r.run_id, "met_criterion": True})  # fmt: skip
            continue
        if name.endswith("_robust_rate"):  # the robustness grid: its runs, listed by the analysis
            grid = _table(tables, f"robust_runs_{name.removesuffix('_robust_rate')}")
            for r in (grid if grid is not None else pd.DataFrame()).itertuples():
                rows.append({"figure": name, "source": f"robustness x{r.multiplier:g}",
                             "arm": r.arm, "seed": r.seed, "run_id": r.run_id,
                             "met_criterion": bool(r.reached)})  # fmt: skip
            continue
        if name.startswith("audit_") and "model" in data:
            protocol, drawn = "batch_size", set()
            for model in set(data["model"]):
                found = re.fullmatch(r"(.+)_seed(\d+)", model)
                if found:
                    drawn.add((found[1], int(found[2])))
        else:
            protocol = next((n for n in names if name.startswith(n + "_")), None)
            if protocol is None:
                continue
            if "arm" in data:
                drawn = set(zip(data["arm"], data["seed"].astype(int), strict=True))
            else:  # a pair's figure: both arms of each pair it draws
                pairs = _table(tables, f"pairs_{protocol}")
                keys = data[["pair", "seed"]].drop_duplicates().merge(pairs, on=["pair", "seed"])
                drawn = {(r[a], int(r["seed"])) for _, r in keys.iterrows() for a in ("a", "b")}
        mine = runs[runs["protocol"] == protocol]
        for arm, seed in sorted(drawn):
            match = mine[(mine["arm"] == arm) & (mine["seed"] == seed)]
            folder = Path(match["run_dir"].iloc[0]) if len(match) else None
            met = bool(reached_rows(match).iloc[0]) if len(match) else None
            rows.append({"figure": name, "source": f"protocol {protocol}", "arm": arm,
                         "seed": seed, "run_id": folder.name if folder else "",
                         "met_criterion": met})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["figure", "source", "arm", "seed", "run_id", "met_criterion"]
    )


def sources_section(lines: list[str], results: Path) -> list[str]:
    """The report's list of each figure's source runs, saved whole as
    ``tables/figure_sources.csv`` (one row per figure and run, with the run id)."""
    sources = figure_sources(lines, results)
    if sources.empty:
        return []
    atomic_write_bytes(
        results / "tables" / "figure_sources.csv", sources.to_csv(index=False).encode()
    )
    rows = []
    for (figure, source), part in sources.groupby(["figure", "source"], sort=False):
        if source.startswith("study"):
            arms = f"{len(part)} models of the grid"
        else:
            arms = ", ".join(
                f"{arm} (seeds {_seeds(group['seed'])})"
                for arm, group in part.groupby("arm", sort=False)
            )
        missing = int((part["run_id"] == "").sum())
        met = part["met_criterion"].dropna()
        rows.append({"figure": f"`{figure}.png`", "runs of": source, "arms and seeds drawn": arms,
                     "runs": len(part) - missing,
                     "at their criterion": f"{int(met.sum())} of {len(met)}"})  # fmt: skip
    return _section("report_sources.md.j2", table=_md(pd.DataFrame(rows)))


def _seeds(seeds: pd.Series) -> str:
    """``0–9`` for a contiguous run of seeds, else the list."""
    values = sorted(set(int(s) for s in seeds))
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.report", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args(argv)
    try:
        print(f"report: {build(args.results)}")
    except TableError as exc:
        raise SystemExit(f"error: {exc}; the report is not written from it") from None
