"""``python -m experiments.analyse.correlate DIR [DIR ...]``: which measure predicts generalisation, over any
set of finished runs (a sweep of this suite, or several): Jiang et al. 2020's ranking.

Runs are read from their run directories (``config.yaml`` + ``result.json``); the hyperparameter axes
are the configuration keys that take more than one value (the seed excluded), keys that always change
together (an optimizer and its rate) making one axis. As in Jiang et al.,
only models that fit their training set count: runs below ``--min-train-acc`` (default 0.99) are
dropped, and how many were dropped is printed and written per axis value. Every recorded metric is a
measure, beside three baselines that are not flatness: the number of optimizer steps the run took,
the final training loss, and a random number per run (the floor any measure should beat). A metric
that failed on a run, or whose search stopped at its bound (PAC-Bayes σ at ``sigma_min`` or
``sigma_max``), is missing for that run, never a value, and the table counts those runs
(``at_bound``). A PAC-Bayes σ also enters in Jiang et al.'s 1/σ² form (``<name>.inv_sq``) and, where
the initial weights were known, as their bound ‖w − w₀‖²/(4σ²) + log(m/σ) + 10 (``<name>.bound``). For each measure: Kendall τ with the
gap and with the test error, the granulated Ψ per axis and averaged, and the conditional mutual
information K(μ) with the conditioning set that minimises it (:mod:`experiments.analyse.jiang`), each with a
two-stage bootstrap interval (configurations, then seeds).

    python -m experiments.analyse.correlate runs/correlation              # -> results/tables/correlation_ranking.csv|md
    python -m experiments.analyse.correlate runs/a runs/b --name mine --out /tmp/tables --bootstrap 500
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.analyse.jiang import null_k, ranking
from experiments.criterion import reached_rows
from experiments.runs import GAP, axes, load_runs
from experiments.store import load_result, write_table

BASELINES = ("baseline.steps", "baseline.train_loss", "baseline.random")
# Forms of a measure that Jiang et al. 2020 rank beside it, read from the measurement's extras
DERIVED = {"inverse_sigma_squared": "inv_sq", "bound_term": "bound"}


def measure_columns(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A run's recorded metrics (result.json's ``metrics``) as ``metric.<name>`` values, plus the
    derived forms of :data:`DERIVED`; a measurement at its search bound is NaN, and flagged in
    ``at_bound.<name>`` (1.0) so that the ranking can count it."""
    row: dict[str, float] = {}
    for name, entry in metrics.items():
        value = entry.get("value") if isinstance(entry, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        extra = entry.get("extra") or {}
        bounded = bool(extra.get("at_bound"))
        row[f"metric.{name}"] = np.nan if bounded else float(value)
        row[f"at_bound.metric.{name}"] = float(bounded)
        for key, suffix in DERIVED.items():
            if isinstance(extra.get(key), (int, float)):
                row[f"metric.{name}.{suffix}"] = np.nan if bounded else float(extra[key])
                row[f"at_bound.metric.{name}.{suffix}"] = float(bounded)
    return row


def models_from_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs of :func:`experiments.runs.load_runs` as one row per model (its axis values,
    gap, test error, train accuracy and loss, steps, id and every numeric metric) and the axes: the
    settings that vary between runs, the seed excluded."""
    found = axes(runs)
    models = runs[found].rename(columns=lambda c: c.removeprefix("config.")).map(str)
    for key in ("gap", "test_error", "train_acc", "train_loss", "steps_trained"):
        models[key] = runs[key].astype(float) if key in runs else np.nan
    models["run_id"] = runs["run_id"]
    # a run with a criterion that stopped for another reason is not at the criterion
    criterion = runs.get("config.train_until_loss", pd.Series(None, index=runs.index))
    models["reached"] = criterion.isna() | reached_rows(runs)
    # every metric again from result.json, with its extras (search bounds, derived forms)
    measured = pd.DataFrame(
        [measure_columns((load_result(Path(d) / "result.json") or {}).get("metrics") or {})
         for d in runs["run_dir"]],
        index=runs.index,
    )  # fmt: skip
    models = pd.concat([models, measured], axis=1)
    if "config.seed" in runs:
        models["seed"] = runs["config.seed"]
    return merge_coupled(models, [c.removeprefix("config.") for c in found])


def merge_coupled(models: pd.DataFrame, found: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Settings that always change together (an optimizer and its own rate and momentum) split the
    runs the same way: they are one axis, named ``a+b``, with values ``va/vb``, so that Ψ and the
    conditioning sets see the grid's real axes rather than copies of one."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for axis in found:
        groups.setdefault(tuple(pd.factorize(models[axis])[0]), []).append(axis)
    merged = []
    for columns in groups.values():
        if len(columns) == 1:
            merged.append(columns[0])
            continue
        name = "+".join(columns)
        models[name] = models[columns].astype(str).agg("/".join, axis=1)
        merged.append(name)
    return models, merged


def dropped_by_axis(
    models: pd.DataFrame, found: list[str], fits: pd.Series, reached: pd.Series
) -> pd.DataFrame:
    """Per axis value: models read, models that missed their training criterion, models below the
    train-accuracy floor, and models dropped for either."""
    rows = []
    for axis in found:
        for value, group in models.groupby(models[axis].map(str)):
            i = group.index
            rows.append(
                {
                    "axis": axis,
                    "value": value,
                    "runs": len(group),
                    "missed_criterion": int((~reached[i]).sum()),
                    "below_train_acc": int((~fits[i]).sum()),
                    "dropped": int((~(fits[i] & reached[i])).sum()),
                }
            )
    return pd.DataFrame(rows)


def rank_models(
    models: pd.DataFrame,
    found: list[str],
    out: Path,
    name: str,
    min_train_acc: float,
    n_boot: int,
    write_table,
    seed: int = 0,
    jobs: int = 1,
) -> pd.DataFrame:
    """Drop the models below ``min_train_acc`` (counted per axis value in ``<name>_dropped``), add
    the baselines, rank every measure (``<name>_ranking``), write the ranked models
    (``<name>_models.csv``) and print the table."""
    if not found:
        raise SystemExit("error: the runs share every setting but the seed: no axis to rank over")
    fits = models["train_acc"].astype(float) >= min_train_acc
    reached = (
        models["reached"].astype(bool)
        if "reached" in models
        else pd.Series(True, index=models.index)
    )
    kept = fits & reached
    write_table(dropped_by_axis(models, found, fits, reached), out, f"{name}_dropped")
    used = models[kept].reset_index(drop=True).copy()
    if len(used) < 3:
        raise SystemExit(
            f"error: {len(used)} of {len(models)} models reach train accuracy {min_train_acc}; "
            "a ranking needs at least 3"
        )
    used["baseline.steps"] = used["steps_trained"]
    used["baseline.train_loss"] = used["train_loss"]
    # a fixed random number per run (its id hashed): the same on every reading of the runs
    used["baseline.random"] = [
        int(hashlib.sha256(str(rid).encode()).hexdigest()[:8], 16) / 16**8 for rid in used["run_id"]
    ]
    measures = [c for c in used.columns if c.startswith("metric.")] + list(BASELINES)
    table = ranking(
        used, measures, GAP, found, test="test_error", n_boot=n_boot, seed=seed, jobs=jobs
    )
    counts = used[measures].notna().sum()
    table.insert(1, "models", [int(counts[m]) for m in table["measure"]])
    bounded = {m: int(used[f"at_bound.{m}"].fillna(0).sum()) if f"at_bound.{m}" in used else 0
               for m in table["measure"]}  # fmt: skip
    table.insert(2, "at_bound", [bounded[m] for m in table["measure"]])
    table["measure"] = table["measure"].str.removeprefix("metric.")
    write_table(table, out, f"{name}_ranking")
    # the floor: K(μ) of measures that know nothing, drawn as many times as the bootstrap
    null = null_k(used, GAP, found, n=max(n_boot, 20), seed=seed)
    quantiles = {f"q{q}": float(np.quantile(null, q / 100)) for q in (50, 95, 99)}
    pd.DataFrame([{"draws": len(null), **quantiles, "max": float(null.max())}]).to_csv(
        out / f"{name}_null.csv", index=False
    )
    # every model that was ranked, with its levels and measures: what the report's scatter draws
    columns = [*found, "seed", "run_id", GAP, "test_error", "train_acc", "train_loss",
               "steps_trained", *measures]  # fmt: skip
    used[[c for c in columns if c in used]].to_csv(out / f"{name}_models.csv", index=False)
    print(
        f"{len(used)} models over axes {', '.join(found)} ({len(models) - len(used)} dropped: "
        f"{int((~reached).sum())} missed their training criterion, {int((~fits).sum())} below "
        f"train accuracy {min_train_acc})"
    )
    print(f"K(μ) of {len(null)} random measures (the floor): median {quantiles['q50']:.4f}, "
          f"95th percentile {quantiles['q95']:.4f}")  # fmt: skip
    if len(used) < 30:
        print(f"warning: {len(used)} models is a small sample for rank statistics")
    keep = ["measure", "models", "tau_gap", "psi", "cmi", "cmi_lo", "cmi_hi", "rank_lo", "rank_hi",
            "cmi_given"]  # fmt: skip
    print(table[keep].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"wrote {out / (name + '_ranking')}.csv|md, {out / (name + '_dropped')}.csv|md, "
        f"{out / (name + '_models')}.csv and {out / (name + '_null')}.csv "
        "(cmi: K(μ), the CMI minimised over conditioning sets, cmi_given the set; intervals are "
        "bootstrap percentiles, which for K(μ) near 0 can lie above the estimate)"
    )
    return table


def correlate(
    roots: list[Path],
    out: Path,
    name: str,
    min_train_acc: float = 0.99,
    n_boot: int = 200,
    seed: int = 0,
    jobs: int = 1,
) -> pd.DataFrame:
    runs, problems = load_runs(roots)
    if runs.empty:
        raise SystemExit(f"error: no finished run under {', '.join(map(str, roots))}")
    if len(problems):
        print(f"{len(problems)} problem runs (unfinished, failed, a failed metric) are listed by "
              "`python -m experiments.analyse.aggregate`")  # fmt: skip
    models, found = models_from_runs(runs)
    return rank_models(models, found, out, name, min_train_acc, n_boot, write_table, seed, jobs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.analyse.correlate", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("roots", nargs="+", type=Path, help="directories holding finished runs")
    ap.add_argument("--out", type=Path, default=Path("results/tables"))
    ap.add_argument("--name", help="table name prefix (default: the first directory's name)")
    ap.add_argument("--min-train-acc", type=float, default=0.99)
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples")
    ap.add_argument("--jobs", type=int, default=1, help="bootstrap resamples scored in parallel")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not 0 <= args.min_train_acc <= 1:
        print(
            f"error: --min-train-acc must be in [0, 1], got {args.min_train_acc}", file=sys.stderr
        )
        return 2
    if args.bootstrap < 1:
        print(f"error: --bootstrap must be at least 1, got {args.bootstrap}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    correlate(args.roots, args.out, args.name or args.roots[0].name, args.min_train_acc,
              args.bootstrap, jobs=args.jobs)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
