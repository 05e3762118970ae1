"""Jiang et al. 2020's conditional-independence score of a measure ("Fantastic generalization measures
and where to find them", Sec. 5): does the measure carry information about the generalisation gap
beyond what the hyperparameters that produced the models already explain?

Over every ordered pair of distinct models (i, j): V_g = sign(g_i − g_j) of the gap, V_μ = sign(μ_i −
μ_j) of the measure, and U_S = the values of the hyperparameters in S for both models,
((θ_i[s], θ_j[s]) for s in S). The conditional mutual information

    I(V_μ; V_g | U_S) = Σ_u p(u) Σ_{a,b} p(a, b | u) log[p(a, b | u) / (p(a | u) p(b | u))]

is normalised by the conditional entropy of the gap's sign, H(V_g | U_S) = Σ_u p(u) H(V_g | U_S =
u), so that the gap itself scores 1 whatever S is; the score is the minimum of the normalised value
over every S of at most ``max_size`` axes (the empty set included), Jiang et al.'s K(μ): a measure
whose relation to the gap one or two hyperparameters explain away scores near 0. Probabilities are
plug-in estimates from the pair counts (natural logarithms; the ratio does not depend on the base).
Pairs whose gaps are equal carry no sign of the gap and are left out; a tie of the measure is its own
value of V_μ. The PGDL competition's scorer (Jiang et al. 2020b) weights the conditioning cells
equally and conditions only on pairs of axes; this follows the paper's weighting by p(u).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from experiments.analyse.aggregate import kendall_tau


def _pair_codes(values: np.ndarray) -> np.ndarray:
    """Per ordered pair (i, j), i ≠ j, the sign of values[i] − values[j] as −1, 0 or 1."""
    diff = values[:, None] - values[None, :]
    off = ~np.eye(len(values), dtype=bool)
    return np.sign(diff)[off].astype(np.int8)


def _cell_codes(models: pd.DataFrame, axes: Sequence[str]) -> np.ndarray:
    """Per ordered pair, one integer naming (θ_i[s], θ_j[s]) for every s in ``axes``."""
    n = len(models)
    off = ~np.eye(n, dtype=bool)
    code = np.zeros(n * (n - 1), dtype=np.int64)
    for axis in axes:
        levels, index = np.unique(models[axis].map(str).to_numpy(), return_inverse=True)
        k = len(levels)
        pair = (index[:, None] * k + index[None, :])[off]
        code = code * (k * k) + pair
    return code


def _entropies(counts: np.ndarray, axis) -> np.ndarray:
    """Shannon entropy (nats) of each cell's distribution, summing ``counts`` over ``axis``."""
    total = counts.sum(axis=axis, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=axis)


def conditional_mi(measure: np.ndarray, gap: np.ndarray, cells: np.ndarray) -> tuple[float, float]:
    """(I(V_μ; V_g | U), H(V_g | U)) from per-pair signs of the measure (−1, 0, 1) and the gap
    (−1, 1) and the pairs' conditioning cells (pairs with a gap tie already removed): one count
    table per cell, by ``np.bincount``."""
    total = len(gap)
    if total == 0:
        return 0.0, 0.0
    _, cell = np.unique(cells, return_inverse=True)
    g = (np.asarray(gap) > 0).astype(np.int64)  # 0: −, 1: +
    m = np.asarray(measure).astype(np.int64) + 1  # 0: −, 1: tie, 2: +
    counts = np.bincount(cell * 6 + g * 3 + m, minlength=(cell.max() + 1) * 6)
    counts = counts.reshape(-1, 2, 3).astype(float)  # cell x V_g x V_μ
    weight = counts.sum(axis=(1, 2)) / total
    h_g = _entropies(counts.sum(axis=2), axis=1)
    h_m = _entropies(counts.sum(axis=1), axis=1)
    h_joint = _entropies(counts.reshape(len(counts), -1), axis=1)
    mi = float((weight * (h_g + h_m - h_joint)).sum())
    return max(mi, 0.0), float((weight * h_g).sum())


def normalized_cmi(models: pd.DataFrame, measure: str, gap: str, axes: Sequence[str]) -> float:
    """I(V_μ; V_g | U_S) / H(V_g | U_S) for the conditioning set ``axes`` (NaN when the gap's sign
    is fixed within every cell, so that there is nothing to explain)."""
    pairs = PairTable(models, gap, axes, len(axes))
    return pairs.normalized(models[measure].to_numpy(dtype=float), tuple(axes))


class PairTable:
    """The pairs of one set of models, prepared once for every measure: the gap's signs, each
    conditioning set's cells, and which pairs have a gap tie. :meth:`k` is K(μ) of one measure."""

    def __init__(self, models: pd.DataFrame, gap: str, axes: Sequence[str], max_size: int = 2):
        self.off = ~np.eye(len(models), dtype=bool)
        values = models[gap].to_numpy(dtype=float)
        self.gap_ok = np.isfinite(values)
        self.v_g = _pair_codes(np.nan_to_num(values))
        self.subsets = [
            subset for size in range(max_size + 1) for subset in itertools.combinations(axes, size)
        ]
        self.cells = {subset: _cell_codes(models, subset) for subset in self.subsets}

    def _signs(self, measure: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pairs kept, V_μ, V_g) over the pairs where both models have a value and the gap no tie."""
        measure = np.asarray(measure, dtype=float)
        valid = self.gap_ok & np.isfinite(measure)
        keep = (valid[:, None] & valid[None, :])[self.off] & (self.v_g != 0)
        return keep, _pair_codes(np.nan_to_num(measure))[keep], self.v_g[keep]

    def normalized(self, measure: np.ndarray, subset: tuple[str, ...], signs=None) -> float:
        """The normalised CMI of the measure's values under one conditioning set."""
        keep, v_m, v_g = self._signs(measure) if signs is None else signs
        mi, h = conditional_mi(v_m, v_g, self.cells[subset][keep])
        return mi / h if h > 0 else float("nan")

    def k(self, measure: np.ndarray) -> tuple[float, tuple[str, ...]]:
        """K(μ) and its conditioning set for the measure's values (NaN: left out)."""
        signs = self._signs(measure)
        best, where = float("inf"), ()
        for subset in self.subsets:
            value = self.normalized(measure, subset, signs)
            if np.isfinite(value) and value < best:
                best, where = value, subset
        return (best if np.isfinite(best) else float("nan")), where


def jiang_cmi(
    models: pd.DataFrame, measure: str, gap: str, axes: Sequence[str], max_size: int = 2
) -> tuple[float, tuple[str, ...]]:
    """Jiang et al.'s K(μ): the smallest normalised conditional mutual information over every
    conditioning set of at most ``max_size`` of ``axes`` (the empty set included), and that set.
    ``models`` has one row per trained model: the measure, the gap and each axis's value."""
    return PairTable(models, gap, axes, max_size).k(models[measure].to_numpy(dtype=float))


def _resample(models: pd.DataFrame, config_cols: Sequence[str], rng) -> pd.DataFrame:
    """A two-stage bootstrap sample: configurations with replacement, then, within each drawn
    configuration, its models (seeds) with replacement. Every drawn model is a row of its own, so
    τ and K(μ) count copies apart; Ψ averages a configuration's copies into one (see _scores)."""
    groups = [g for _, g in models.groupby(list(config_cols), sort=False)]
    parts = []
    for i in rng.integers(0, len(groups), len(groups)):
        g = groups[i]
        parts.append(g.iloc[rng.integers(0, len(g), len(g))])
    return pd.concat(parts, ignore_index=True)


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b of a few points by their pairwise signs (NaN when either side is constant):
    the statistic scipy.stats.kendalltau computes, without its per-call overhead."""
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = np.sqrt(float((n0 - (sx == 0).sum()) * (n0 - (sy == 0).sum())))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


def granulated_psi_all(
    configs: pd.DataFrame, measures: Sequence[str], gap: str, axes: Sequence[str]
) -> dict[str, tuple[float, dict[str, float]]]:
    """:func:`experiments.analyse.aggregate.granulated_psi` of every measure, its groups formed once: per
    axis, the mean τ within each group of configurations that differ only in that axis, and the
    mean of those over axes."""
    groups = {}
    for axis in axes:
        others = [a for a in axes if a != axis]
        parts = (
            configs.groupby(others, dropna=False).indices.values()
            if others
            else [np.arange(len(configs))]
        )
        levels = configs[axis].map(str).to_numpy()
        groups[axis] = [idx for idx in parts if len(set(levels[idx])) > 1]
    g = configs[gap].to_numpy(dtype=float)
    out = {}
    for measure in measures:
        m = configs[measure].to_numpy(dtype=float)
        per_axis = {}
        for axis, parts in groups.items():
            taus = []
            for idx in parts:
                keep = idx[np.isfinite(m[idx]) & np.isfinite(g[idx])]
                if len(keep) >= 2:
                    taus.append(_tau_b(m[keep], g[keep]))
            taus = [t for t in taus if np.isfinite(t)]
            per_axis[axis] = float(np.mean(taus)) if taus else float("nan")
        finite = [v for v in per_axis.values() if np.isfinite(v)]
        out[measure] = (float(np.mean(finite)) if finite else float("nan"), per_axis)
    return out


def _scores(
    models: pd.DataFrame,
    measures: Sequence[str],
    gap: str,
    test: str | None,
    axes: Sequence[str],
    max_size: int,
) -> dict[str, tuple[dict[str, float], tuple[str, ...]]]:
    """Every measure's scores on one set of models, sharing its pairs and its configurations."""
    pairs = PairTable(models, gap, axes, max_size)
    # Ψ compares configurations that differ in one axis; in a bootstrap sample the copies of a
    # configuration drawn twice are averaged into one (counting them apart would add within-level
    # pairs of copies, which pull every Ψ towards 0), so a resample's Ψ rests on fewer pairs
    configs = models.groupby(list(axes), as_index=False)[[*measures, gap]].mean()
    psis = granulated_psi_all(configs, measures, gap, axes)
    out = {}
    for measure in measures:
        row = {"tau_gap": kendall_tau(models[measure], models[gap])}
        if test is not None:
            row["tau_test"] = kendall_tau(models[measure], models[test])
        psi, per_axis = psis[measure]
        row["psi"] = psi
        row.update({f"psi[{a}]": v for a, v in per_axis.items()})
        row["cmi"], where = pairs.k(models[measure].to_numpy(dtype=float))
        out[measure] = (row, where)
    return out


def ranking(
    models: pd.DataFrame,
    measures: Sequence[str],
    gap: str,
    axes: Sequence[str],
    *,
    test: str | None = None,
    max_size: int = 2,
    n_boot: int = 200,
    seed: int = 0,
    jobs: int = 1,
) -> pd.DataFrame:
    """Per measure: Kendall τ with the gap (and with ``test``, e.g. the test error) over models,
    Jiang et al.'s granulated Ψ per axis and averaged (over configurations, each the mean of its
    seeds), and K(μ) with the conditioning set that minimises it, each with a 95% percentile
    interval from a two-stage bootstrap (configurations, then seeds within them; for Ψ the copies of
    a configuration drawn twice are averaged into one), its resamples scored ``jobs`` at a time; and the measure's place by
    K(μ) (``rank``, 1 the highest, ties sharing a place) with the 95% range of that place over the
    resamples. ``models`` has one row per trained model. Sorted by K(μ), highest first (Jiang et
    al.'s ranking criterion).
    K(μ) is a plug-in estimate biased upwards near 0 (more so in a bootstrap sample, whose
    duplicated models thin the pairs), so its percentile interval can lie above a point estimate
    near 0: read it as the estimate's spread, not as a coverage statement."""
    from joblib import Parallel, delayed

    rng = np.random.default_rng(seed)
    measures = list(measures)
    points = _scores(models, measures, gap, test, axes, max_size)
    # the samples are drawn here, in order, so the intervals do not depend on ``jobs``
    samples = [_resample(models, axes, rng) for _ in range(n_boot)]
    draws = Parallel(n_jobs=jobs)(
        delayed(_scores)(sample, measures, gap, test, axes, max_size) for sample in samples
    )
    # each measure's place by K(μ) in every resample (ties share the better place), for rank intervals
    # K rounded before ranking, so that a measure and a monotone transform of it (σ and 1/σ²),
    # equal up to float rounding, tie as they should
    places = (
        pd.DataFrame([{m: d[m][0]["cmi"] for m in measures} for d in draws])
        .round(12)
        .rank(axis=1, ascending=False, method="min")
    )
    place = (
        pd.Series({m: points[m][0]["cmi"] for m in measures})
        .round(12)
        .rank(ascending=False, method="min")
    )
    rows = []
    for measure in measures:
        point, where = points[measure]
        boot = pd.DataFrame([d[measure][0] for d in draws])
        row = {"measure": measure, "cmi_given": "+".join(where) or "∅"}
        for key, value in point.items():
            lo, hi = (
                np.nanpercentile(boot[key], [2.5, 97.5])
                if boot[key].notna().any()
                else (
                    np.nan,
                    np.nan,
                )
            )
            row.update({key: value, f"{key}_lo": float(lo), f"{key}_hi": float(hi)})
        # places are whole numbers: the range's ends are places that occurred, not interpolations
        lo, hi = (
            (
                np.nanpercentile(places[measure], 2.5, method="lower"),
                np.nanpercentile(places[measure], 97.5, method="higher"),
            )
            if n_boot
            else (np.nan, np.nan)
        )
        row.update({"rank": place[measure], "rank_lo": float(lo), "rank_hi": float(hi)})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("cmi", ascending=False, ignore_index=True)


def null_k(
    models: pd.DataFrame,
    gap: str,
    axes: Sequence[str],
    n: int = 200,
    seed: int = 0,
    max_size: int = 2,
) -> np.ndarray:
    """K(μ) of ``n`` measures that know nothing: an independent uniform number per model each time.
    Its upper quantiles are the floor a measure must clear (a permutation null of K, which is
    biased upwards near 0), rather than the one random measure ranked beside the others."""
    rng = np.random.default_rng(seed)
    pairs = PairTable(models, gap, axes, max_size)
    return np.array([pairs.k(rng.random(len(models)))[0] for _ in range(n)])
