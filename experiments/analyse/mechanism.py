"""Does sharpness carry the effect? Readings of each claim's mechanism, from the tables alone (issue
27), written to ``mechanism_measures.csv``, ``mechanism_within.csv``, ``mechanism_intervention.csv``
(an arm that changes sharpness on purpose: :func:`intervention`) and ``family_floors.csv``.

1. **Every measure, invariant ones first** (``mechanism_measures``). The mechanism's ratio a/b under
   each sharpness measure the protocol recorded: its geometric mean over seeds, the paired t interval
   of the log ratio, the exact sign-flip p, and whether the scale-invariance audit
   (``audit.csv``; Dinh et al. 2017) found the measure unmoved by rescaling. The protocol's
   ``mechanism.primary`` names the measure a claim is read on; where measures disagree the row says
   so ("flatter by lambda_max, sharper by adaptive_worst_case_sharpness").
2. **Within arms** (``mechanism_within``). Across the seeds of one arm the rate, batch size and
   optimizer are fixed, so if sharpness carried the gap, a seed with a sharper minimum should also
   test worse, at the slope the arms show between them. The slope of test error on the log measure
   is pooled over the comparison's two arms with arm as a fixed effect (each arm's mean removed),
   with a t interval and a within-arm permutation p; the between-arm slope is the arms' difference
   in mean test error over their difference in mean log measure. A seed bootstrap (both arms'
   seeds drawn together, as they are paired) gives an interval for within − between. Not across a
   rate grid: the rate moves both.
3. **The family's floors** (``family_floors``). The smallest p each test can return (an exact
   sign-flip test over n seeds: 2/2^n; a bootstrap p over B resamples: 2/(B + 1)) against the
   threshold Holm's first step needs (α/m over m tests), the seeds a sign-flip test needs to
   pass it (2/2^n ≤ α/m), and the seeds for 80% power at the observed difference and spread at α/m
   (the paired t test's power standing in for the sign-flip test's): the plan for a family on fresh
   seeds.

Readings of seeds 0-9, whose data formed the questions: descriptive here, not tests of the family.

    python -m experiments.analyse.mechanism --tables results/tables
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from experiments.analyse.stats import EXACT_MAX_N, seeds_to_detect, signflip_pvalue, t_interval
from experiments.store import write_table

ALPHA = 0.05
N_PERM = 10_000
N_BOOT = 2_000
# what the within-arm slope says about the between-arm one (``within_reading``)
CONSISTENT, INCONSISTENT, UNINFORMATIVE = "consistent", "inconsistent", "uninformative"
REVERSED_BETWEEN = "not applicable (sharper arm tests better)"
MEASURE_COLUMNS = [
    "protocol", "comparison", "measure", "role", "invariant", "claimed", "n", "seeds_up", "log_ratio",
    "log_low", "log_high", "ratio", "p", "way", "agreement",
]  # fmt: skip
WITHIN_COLUMNS = [
    "protocol", "comparison", "measure", "n", "slope_within", "within_low", "within_high",
    "p_perm", "slope_between", "diff_low", "diff_high", "jack_low", "jack_high", "reading",
]  # fmt: skip
INTERVENTION_COLUMNS = [
    "protocol", "arm", "large", "small", "measure", "n", "error_closed", "error_low", "error_high",
    "measure_closed", "measure_low", "measure_high", "ratio", "ratio_low", "ratio_high",
]  # fmt: skip
FLOOR_COLUMNS = [
    "protocol", "comparison", "part", "kind", "n_seeds", "p_raw", "p_floor", "at_floor",
    "family_size", "first_threshold", "floor_can_pass", "seeds_needed", "seeds_for_power",
]  # fmt: skip


# --- 1. every measure ----------------------------------------------------------------------------


def invariant_measures(audit: pd.DataFrame | None) -> dict[str, bool]:
    """``{measure: True}`` where every audited model and mode left it unmoved by rescaling."""
    if audit is None:
        return {}
    return (audit["verdict"] == "invariant").groupby(audit["metric"]).all().to_dict()


def _measures(tidy: pd.DataFrame, c: dict, declared: dict) -> pd.DataFrame:
    """Comparison ``c``'s rows of its sharpness measures: the rule's, the declared primary and
    those the block lists as ``secondary`` (not the test error, a loss or a distance)."""
    named = {c["rule"]["mechanism"]["quantity"], _primary(declared, c["name"])}
    named |= set(declared.get("secondary") or [])
    return tidy[(tidy["comparison"] == c["name"]) & tidy["quantity"].isin(named)]


def measure_rows(tidy: pd.DataFrame, c: dict, declared: dict, invariant: dict) -> list[dict]:
    """One row per sharpness measure of comparison ``c``: a/b as a geometric mean over seeds."""
    rows = []
    claimed = c["rule"]["mechanism"]["direction"]
    primary = _primary(declared, c["name"])
    mine = _measures(tidy, c, declared)
    for measure, values in mine.groupby("quantity", sort=False):
        wide = values.pivot(index="seed", columns="role", values="value")
        if not {"a", "b"} <= set(wide) or (wide[["a", "b"]] <= 0).any().any():
            continue  # a ratio needs both arms and positive values
        d = np.log(wide["a"].to_numpy(float)) - np.log(wide["b"].to_numpy(float))
        mean, _, lo, hi, _ = t_interval(d)
        p = signflip_pvalue(d)
        rows.append(
            {
                "comparison": c["name"],
                "measure": measure,
                "role": "primary" if measure == primary else "shown",
                "invariant": invariant.get(measure),
                "claimed": claimed or "",
                "n": len(d),
                "seeds_up": int((d > 0).sum()),  # seeds where a is the sharper: a heavy tail shows
                "log_ratio": mean,
                "log_low": lo,
                "log_high": hi,
                "ratio": math.exp(mean),
                "p": p,
                "way": _way(lo, hi, p),
            }
        )
    return rows


def _primary(declared: dict, comparison: str) -> str | None:
    return (declared.get("per_comparison") or {}).get(comparison, declared.get("primary"))


def _way(lo: float, hi: float, p: float) -> str:
    """ "sharper" (a > b), "flatter" (a < b) where the sign-flip p is below α, else "unclear"."""
    if p >= ALPHA:
        return "unclear"
    return "sharper" if lo > 0 else "flatter" if hi < 0 else "unclear"


def agreement(rows: pd.DataFrame) -> str:
    """One phrase per comparison: "sharper by every measure", or how the measures split."""
    ways = {w: list(g["measure"]) for w, g in rows.groupby("way", sort=False)}
    decided = [w for w in ("sharper", "flatter") if w in ways]
    if len(decided) == 1 and "unclear" not in ways:
        return f"{decided[0]} by every measure"
    return ", ".join(
        f"{w} by {' and '.join(ways[w])}" for w in ("sharper", "flatter", "unclear") if w in ways
    )


# --- 2. within arms ------------------------------------------------------------------------------


def _pooled_slope(x: np.ndarray, y: np.ndarray, arm: np.ndarray) -> tuple[float, float, float]:
    """Slope of y on x with one intercept per arm: (slope, its standard error, residual df)."""
    xc, yc = x.astype(float).copy(), y.astype(float).copy()
    for a in np.unique(arm):
        xc[arm == a] -= xc[arm == a].mean()
        yc[arm == a] -= yc[arm == a].mean()
    sxx = float(xc @ xc)
    if sxx <= 0:
        return math.nan, math.nan, 0
    slope = float(xc @ yc) / sxx
    df = len(x) - len(np.unique(arm)) - 1
    rss = float(((yc - slope * xc) ** 2).sum())
    se = math.sqrt(rss / df / sxx) if df > 0 else math.nan
    return slope, se, df


def _between_slope(x: np.ndarray, y: np.ndarray, is_a: np.ndarray) -> float:
    dx = x[is_a].mean() - x[~is_a].mean()
    return float((y[is_a].mean() - y[~is_a].mean()) / dx) if dx != 0 else math.nan


def within_arm(
    x_a, y_a, x_b, y_b, *, n_perm: int = N_PERM, n_boot: int = N_BOOT, seed: int = 0
) -> dict:
    """The within-arm and between-arm slopes of y (test error) on x (log sharpness) of two arms
    whose seeds are paired (position i of each array is seed i), and what one says of the other.

    The within slope is ordinary least squares with one intercept per arm (its t interval on the
    residual degrees of freedom; its p from permuting x within each arm, with the +1 correction of
    Phipson & Smyth 2010). The interval of within − between comes from drawing seeds with
    replacement, both arms' values of a seed together.
    """
    x_a, y_a, x_b, y_b = (np.asarray(v, dtype=float) for v in (x_a, y_a, x_b, y_b))
    if not len(x_a) == len(y_a) == len(x_b) == len(y_b) or len(x_a) < 3:
        raise ValueError("within_arm needs two paired arms of at least 3 seeds each")
    n = len(x_a)
    x, y = np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])
    arm = np.repeat([0, 1], n)
    is_a = arm == 0
    slope, se, df = _pooled_slope(x, y, arm)
    q = st.t.ppf(1 - ALPHA / 2, df) if df > 0 else math.nan
    lo, hi = slope - q * se, slope + q * se
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        xp = np.concatenate([rng.permutation(x_a), rng.permutation(x_b)])
        hits += abs(_pooled_slope(xp, y, arm)[0]) >= abs(slope) - 1e-12
    p_perm = (hits + 1) / (n_perm + 1)
    between = _between_slope(x, y, is_a)
    diffs = []
    for _ in range(n_boot):
        s = rng.integers(0, n, n)
        xb, yb = np.concatenate([x_a[s], x_b[s]]), np.concatenate([y_a[s], y_b[s]])
        w, b = _pooled_slope(xb, yb, arm)[0], _between_slope(xb, yb, is_a)
        if math.isfinite(w) and math.isfinite(b):
            diffs.append(w - b)
    d_lo, d_hi = (
        np.percentile(diffs, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        if len(diffs) >= n_boot // 2
        else (math.nan, math.nan)
    )
    # a second interval, from leaving one seed out (jackknife t): a percentile bootstrap of a
    # ratio over ten seeds can be too narrow, so a difference counts only where both exclude 0
    arm_left, a_left = np.repeat([0, 1], n - 1), np.repeat([True, False], n - 1)
    left = []
    for i in range(n):
        k = np.delete(np.arange(n), i)
        xb, yb = np.concatenate([x_a[k], x_b[k]]), np.concatenate([y_a[k], y_b[k]])
        left.append(_pooled_slope(xb, yb, arm_left)[0] - _between_slope(xb, yb, a_left))
    left = np.asarray(left)
    if np.isfinite(left).all():
        se = math.sqrt((n - 1) / n * ((left - left.mean()) ** 2).sum())
        q_j = st.t.ppf(1 - ALPHA / 2, n - 1)
        centre = slope - between
        j_lo, j_hi = centre - q_j * se, centre + q_j * se
    else:
        j_lo = j_hi = math.nan
    return {
        "n": n,
        "slope_within": slope,
        "within_low": lo,
        "within_high": hi,
        "p_perm": p_perm,
        "slope_between": between,
        "diff_low": float(d_lo),
        "diff_high": float(d_hi),
        "jack_low": float(j_lo),
        "jack_high": float(j_hi),
        "reading": within_reading(lo, hi, between, float(d_lo), float(d_hi), j_lo, j_hi),
    }


def within_reading(
    lo: float,
    hi: float,
    between: float,
    d_lo: float,
    d_hi: float,
    j_lo: float = -math.inf,
    j_hi: float = math.inf,
) -> str:
    """*not applicable* where the between slope is not positive (the sharper arm tests as well or
    better: no flatness account to check); *inconsistent* where within − between excludes 0 by
    both intervals (the seed bootstrap ``d_*`` and the jackknife ``j_*``), or the within slope is
    of the other sign beyond doubt; *consistent* where neither and the within slope excludes 0
    with the between slope's sign; *uninformative* otherwise."""
    if not all(map(math.isfinite, (lo, hi, between))):
        return UNINFORMATIVE
    if between <= 0:
        return REVERSED_BETWEEN
    apart = (d_lo > 0 and j_lo > 0) or (d_hi < 0 and j_hi < 0)
    if (math.isfinite(d_lo) and apart) or hi < 0:
        return INCONSISTENT
    if lo > 0:
        return CONSISTENT
    return UNINFORMATIVE


def within_rows(tidy: pd.DataFrame, c: dict, declared: dict, name: str) -> list[dict]:
    """Per sharpness measure of comparison ``c``, its within-arm reading against test error."""
    rows = []
    mine = tidy[(tidy["comparison"] == c["name"]) & (tidy["quantity"] == "test_error")]
    error = mine.pivot(index="seed", columns="role", values="value")
    for measure, values in _measures(tidy, c, declared).groupby("quantity", sort=False):
        wide = values.pivot(index="seed", columns="role", values="value")
        seeds = wide.index.intersection(error.index)
        if not {"a", "b"} <= set(wide) or len(seeds) < 3 or (wide[["a", "b"]] <= 0).any().any():
            continue
        x, y = np.log(wide.loc[seeds]), error.loc[seeds]
        got = within_arm(x["a"], y["a"], x["b"], y["b"])
        rows.append({"protocol": name, "comparison": c["name"], "measure": measure, **got})
    return rows


# --- an intervention ----------------------------------------------------------------------------


def intervention(
    error: pd.DataFrame, log_measure: pd.DataFrame, arm: str, large: str, small: str,
    n_boot: int = N_BOOT, seed: int = 0,
) -> dict:  # fmt: skip
    """What an arm that changes sharpness on purpose does to a gap (issue 27): the share of the
    large − small gap in test error it closes, mean(large − arm) / mean(large − small), the share of
    the log-measure gap it closes, likewise, and their ratio (1: the error moves in proportion to
    sharpness; 0: sharpness moved, the error did not), each with a 95% percentile interval from
    drawing seeds with replacement (a seed's arms together). ``error`` and ``log_measure``: one row
    per seed, one column per arm."""
    seeds = error.index.intersection(log_measure.index)
    e, x = error.loc[seeds], log_measure.loc[seeds]
    parts = {
        "error": ((e[large] - e[arm]).to_numpy(float), (e[large] - e[small]).to_numpy(float)),
        "measure": ((x[large] - x[arm]).to_numpy(float), (x[large] - x[small]).to_numpy(float)),
    }

    def shares(i: np.ndarray) -> tuple[float, float, float]:
        got = []
        for closed, gap in parts.values():
            got.append(closed[i].mean() / gap[i].mean() if gap[i].mean() != 0 else math.nan)
        return got[0], got[1], got[0] / got[1] if got[1] != 0 else math.nan

    point = shares(np.arange(len(seeds)))
    rng = np.random.default_rng(seed)
    draws = np.array([shares(rng.integers(0, len(seeds), len(seeds))) for _ in range(n_boot)])
    row = {"n": len(seeds)}
    for k, name in enumerate(("error_closed", "measure_closed", "ratio")):
        finite = draws[:, k][np.isfinite(draws[:, k])]
        lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) else (math.nan, math.nan)
        stem = name.removesuffix("_closed")
        row |= {name: point[k], f"{stem}_low": float(lo), f"{stem}_high": float(hi)}
    return row


def intervention_rows(name: str, p: dict, runs: pd.DataFrame, metrics: pd.DataFrame) -> list[dict]:
    """The declared intervention of protocol ``name`` on its primary measure, where its runs are
    tabulated (``protocol_runs.csv``, ``run_metrics.csv``)."""
    i = (p.get("mechanism") or {}).get("intervention")
    measure = (p.get("mechanism") or {}).get("primary")
    mine = runs[runs["protocol"] == name]
    if not i or mine.empty:
        return []
    error = mine.pivot(index="seed", columns="arm", values="test_error")
    m = metrics[(metrics["protocol"] == name) & (metrics["metric"] == measure)]
    x = np.log(m.pivot(index="seed", columns="arm", values="value"))
    if not {i["arm"], i["large"], i["small"]} <= set(error) & set(x):
        return []
    got = intervention(error, x, i["arm"], i["large"], i["small"])
    return [{"protocol": name, **i, "measure": measure, **got}]


# --- 3. the family's floors ----------------------------------------------------------------------


def p_floor(kind: str, n: int, n_boot: int | None = None) -> float:
    """The smallest p a test can return: exact sign-flip over n seeds 2/2^n (Monte Carlo above
    ``EXACT_MAX_N``: 1/(2^16 + 1)); a bootstrap-inverted p (Kendall τ): 2/(B + 1)."""
    if kind == "kendall_tau":
        return 2 / ((n_boot or 1000) + 1)
    return 2 / 2**n if n <= EXACT_MAX_N else 1 / (2**16 + 1)


def seeds_needed(m: int, alpha: float = ALPHA) -> int:
    """The fewest seeds whose exact sign-flip floor 2/2^n passes Holm's first step, α/m."""
    return math.ceil(math.log2(2 * m / alpha))


def floor_rows(verdicts: pd.DataFrame, protocols: dict) -> list[dict]:
    """Each test of the family: its p, floor, Holm's first threshold and the seeds that floor needs."""
    tested = verdicts[verdicts["p_holm"].notna()]
    m = len(tested)
    rows = []
    for r in tested.itertuples():
        c = next(c for c in protocols[r.protocol]["comparisons"] if c["name"] == r.comparison)
        floor = p_floor(r.kind, int(r.n_seeds), c.get("n_boot"))
        rows.append(
            {
                "protocol": r.protocol,
                "comparison": r.comparison,
                "part": r.part,
                "kind": r.kind,
                "n_seeds": int(r.n_seeds),
                "p_raw": r.p_raw,
                "p_floor": floor,
                "at_floor": bool(r.p_raw <= floor * (1 + 1e-9)),
                "family_size": m,
                "first_threshold": ALPHA / m,
                "floor_can_pass": bool(floor <= ALPHA / m),
                "seeds_needed": seeds_needed(m) if r.kind != "kendall_tau" else None,
                # planning a family on fresh seeds: 80% power at the observed difference and its
                # spread, at Holm's first threshold (Bonferroni's, so a bound from above)
                "seeds_for_power": _power_seeds(
                    getattr(r, "mean_diff", math.nan), getattr(r, "sd_diff", math.nan), m
                ),
            }
        )
    return rows


def _power_seeds(mean: float, sd: float, m: int) -> float:
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan
    n = seeds_to_detect(mean, sd, alpha=ALPHA / m)
    return math.nan if n is None else float(max(n, seeds_needed(m)))


# --- the tables ----------------------------------------------------------------------------------


def tables(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """The four tables from ``protocols.json``, ``protocol_runs.csv``, ``run_metrics.csv``, ``verdicts.csv``, ``paired_<name>.csv`` and
    ``audit.csv`` (where present), for the protocols with a ``mechanism`` block (the claims about
    sharpness; not the explanations, whose comparisons are at unequal loss or about other
    quantities)."""
    protocols = {p["name"]: p for p in json.loads((tables_dir / "protocols.json").read_text())}
    verdicts = pd.read_csv(tables_dir / "verdicts.csv")
    audit_path = tables_dir / "audit.csv"
    invariant = invariant_measures(pd.read_csv(audit_path) if audit_path.exists() else None)
    measures, within, interventions = [], [], []
    runs_path, metrics_path = tables_dir / "protocol_runs.csv", tables_dir / "run_metrics.csv"
    runs = pd.read_csv(runs_path) if runs_path.exists() else None
    metrics = pd.read_csv(metrics_path) if metrics_path.exists() else None
    for name, p in protocols.items():
        if runs is not None and metrics is not None:
            interventions += intervention_rows(name, p, runs, metrics)
        paired = tables_dir / f"paired_{name}.csv"
        declared = p.get("mechanism")
        if not declared or not paired.exists():
            continue
        tidy = pd.read_csv(paired)
        for c in p["comparisons"]:
            rule = c.get("rule") or {}
            if c.get("kind", "paired") != "paired" or not rule.get("mechanism"):
                continue
            got = measure_rows(tidy, c, declared, invariant)
            if got:
                phrase = agreement(pd.DataFrame(got))
                measures += [{"protocol": name, **row, "agreement": phrase} for row in got]
            within += within_rows(tidy, c, declared, name)
    return {
        "mechanism_measures": pd.DataFrame(measures, columns=MEASURE_COLUMNS),
        "mechanism_within": pd.DataFrame(within, columns=WITHIN_COLUMNS),
        "mechanism_intervention": pd.DataFrame(interventions, columns=INTERVENTION_COLUMNS),
        "family_floors": pd.DataFrame(floor_rows(verdicts, protocols), columns=FLOOR_COLUMNS),
    }


def write_mechanism(tables_dir: Path, out: Path | None = None) -> list[Path]:
    """Write the three tables (CSV and Markdown) to ``out`` (default: ``tables_dir``)."""
    out = tables_dir if out is None else out
    written = []
    for name, df in tables(tables_dir).items():
        write_table(df, out, name)
        written.append(out / f"{name}.csv")
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.analyse.mechanism", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--tables", type=Path, default=Path("results/tables"))
    args = ap.parse_args(argv)
    for path in write_mechanism(args.tables):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
