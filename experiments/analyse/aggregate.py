"""``python -m experiments.analyse.aggregate``: run directories → tidy tables in ``results/tables/``.

Per configuration (every determining setting but the seed): mean and standard deviation over seeds of
train/test accuracy and loss, the generalisation gap and every metric. Per metric: Kendall's τ with
the generalisation gap over configurations, and the granulated Kendall coefficient Ψ of Jiang et al.
2020 ("Fantastic generalization measures and where to find them", Eq. 4): for each hyperparameter
axis i, the average over all settings of the other axes of τ computed among configurations that
differ only in axis i; Ψ is the mean over axes. 95% confidence intervals by bootstrap over
configurations (τ) and over the groups of each axis (Ψ). Failed, diverged and unfinished runs are
counted and listed, never mixed in.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from experiments.runs import GAP, axes, load_runs, summarize
from experiments.store import write_table

log = logging.getLogger(__name__)


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b (ties handled); NaN when either side is constant or there are < 2 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(stats.kendalltau(x[keep], y[keep]).statistic)


def psi_groups(configs: pd.DataFrame, axis: str, all_axes: list[str]) -> list[pd.DataFrame]:
    """Groups of configurations that differ only in ``axis`` (at least two values of it)."""
    others = [a for a in all_axes if a != axis]
    if not others:
        return [configs] if configs[axis].nunique() > 1 else []
    return [g for _, g in configs.groupby(others, dropna=False) if g[axis].nunique() > 1]


def granulated_psi(
    configs: pd.DataFrame, metric: str, gap: str, all_axes: list[str]
) -> tuple[float, dict[str, float]]:
    """Jiang et al.'s Ψ: the mean over axes of the mean τ within groups varying only that axis."""
    per_axis = {}
    for axis in all_axes:
        taus = [kendall_tau(g[metric], g[gap]) for g in psi_groups(configs, axis, all_axes)]
        taus = [t for t in taus if np.isfinite(t)]
        per_axis[axis] = float(np.mean(taus)) if taus else float("nan")
    finite = [v for v in per_axis.values() if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else float("nan")), per_axis


def bootstrap(statistic, n: int, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``statistic(indices)`` over resamples of ``range(n)``."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(samples)]
    values = np.array([v for v in values if np.isfinite(v)])
    if len(values) < samples // 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def correlation_table(runs: pd.DataFrame, samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per metric: τ with the gap over configurations, Ψ and its per-axis parts, with bootstrap CIs."""
    all_axes = axes(runs)
    metrics = [c for c in runs.columns if c.startswith("metric.")]
    keys = all_axes or ["config.name"]
    configs = runs.groupby(keys, dropna=False)[[GAP, *metrics]].mean().reset_index()
    rows = []
    for metric in metrics:
        tau = kendall_tau(configs[metric], configs[GAP])
        tau_ci = bootstrap(
            lambda idx, m=metric: kendall_tau(
                configs[m].to_numpy()[idx], configs[GAP].to_numpy()[idx]
            ),
            len(configs),
            samples,
            seed,
        )
        psi, per_axis = granulated_psi(configs, metric, GAP, all_axes)
        psi_ci = _psi_bootstrap(configs, metric, all_axes, samples, seed)
        row = {
            "metric": metric.removeprefix("metric."),
            "tau": tau,
            "tau_lo": tau_ci[0],
            "tau_hi": tau_ci[1],
            "psi": psi,
            "psi_lo": psi_ci[0],
            "psi_hi": psi_ci[1],
            "configurations": len(configs),
        }
        row.update({f"psi[{a.removeprefix('config.')}]": v for a, v in per_axis.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _psi_bootstrap(
    configs: pd.DataFrame, metric: str, all_axes: list[str], samples: int, seed: int
):
    """Resample, for every axis, its groups with replacement; Ψ of each resample."""
    groups = {a: psi_groups(configs, a, all_axes) for a in all_axes}
    taus = {a: np.array([kendall_tau(g[metric], g[GAP]) for g in gs]) for a, gs in groups.items()}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        means = []
        for t in taus.values():
            t = t[np.isfinite(t)]
            if len(t):
                means.append(t[rng.integers(0, len(t), len(t))].mean())
        values.append(np.mean(means) if means else np.nan)
    values = np.array([v for v in values if np.isfinite(v)])
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def aggregate(
    root: Path, out: Path, name: str | None = None, samples: int = 1000
) -> dict[str, pd.DataFrame]:
    """Tables for the runs under ``root``: ``<name>_runs``, ``<name>_summary``, ``<name>_correlation``,
    ``<name>_problems``; returns them."""
    name = name or Path(root).name
    runs, problems = load_runs([root])
    tables = {"problems": problems}
    if len(runs):
        tables["runs"] = runs
        tables["summary"] = summarize(runs)
        tables["correlation"] = correlation_table(runs, samples=samples)
    counts = pd.DataFrame([{"used": len(runs), **problems["status"].value_counts().to_dict()}])
    tables["counts"] = counts
    for key, df in tables.items():
        write_table(df, out, f"{name}_{key}")
    return tables


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.analyse.aggregate", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "roots", nargs="*", type=Path, help="sweep directories (default: every runs/<name>)"
    )
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, default=Path("results/tables"))
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    args = ap.parse_args(argv)
    if missing := [str(r) for r in args.roots or [args.runs_dir] if not Path(r).is_dir()]:
        ap.error(f"not a directory: {missing[0]}")
    if args.bootstrap < 1:
        ap.error("--bootstrap must be at least 1")
    roots = args.roots or sorted(p for p in args.runs_dir.iterdir() if p.is_dir())
    if not roots:
        ap.error(f"no sweep directories under {args.runs_dir}")
    for root in roots:
        tables = aggregate(root, args.out, samples=args.bootstrap)
        counts = tables["counts"].iloc[0].to_dict()
        print(f"{root}: " + ", ".join(f"{k} {int(v)}" for k, v in counts.items()))
        for _, p in tables["problems"].iterrows():
            print(f"  {p['status']}: {p['run_dir']} {p['reason']}")
    print(f"tables in {args.out}")


if __name__ == "__main__":
    main()
