"""Paired statistics over seeds, for the analysis (verdicts, pairs, the study); the report reads their tables.

Every comparison in the suite pairs seeds across two arms a and b, so the unit of analysis is the
per-seed difference d = a − b. This module holds:

- `paired_test`: the mean difference with a paired t interval (Student 1908), an exact two-sided
  sign-flip permutation p-value (Fisher 1935; Good 2005, *Permutation, Parametric and Bootstrap Tests
  of Hypotheses*, §3.2), and a TOST equivalence test against a margin (Schuirmann 1987), with the
  power figures below, in one frozen `PairedTest`;
- `holm`: Holm's (1979) step-down adjustment over a family of tests;
- power from the observed spread: `seeds_to_detect` (the noncentral t distribution), and
  `seeds_to_equivalence` and `resolvable_margin` (the exact power of TOST, Phillips 1990);
- `kendall_tau_bootstrap`: Kendall's τ (as in Jiang et al. 2020) with a percentile interval from
  resampling seeds (Efron & Tibshirani 1993).

The verdicts themselves are in ``experiments.analyse.verdicts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, special
from scipy import stats as st

EXACT_MAX_N = 20  # 2^20 sign patterns still enumerate in well under a second
POWER = 0.8
RESOLVE_N = 10  # the seeds per arm the suite runs
N_MAX = 10**6


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of two arms over n seeds; differences are a − b.

    ``ci_*`` is the (1 − α) paired t interval; ``p_t`` its two-sided p-value; ``p_signflip`` the exact
    two-sided sign-flip p-value; ``p_tost`` the TOST p-value against ±``margin`` with its (1 − 2α)
    interval ``tost_ci_*``. ``seeds_to_detect`` / ``seeds_to_equivalence``: the paired seeds the
    observed mean and SD would need for 80% power (None: no number would do, or more than N_MAX);
    ``resolvable_margin``: the smallest margin ``resolve_n`` seeds could show equivalence within, with
    80% power, if the true difference were 0. ``scale`` names what was differenced.
    """

    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    p_t: float
    p_signflip: float
    margin: float
    p_tost: float
    tost_ci_low: float
    tost_ci_high: float
    alpha: float
    seeds_to_detect: int | None
    seeds_to_equivalence: int | None
    resolvable_margin: float
    resolve_n: int = RESOLVE_N
    scale: str = "a − b"


def paired_differences(a, b) -> np.ndarray:
    """a − b as floats, refusing anything that is not two finite seed-aligned samples of n ≥ 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("paired samples must be 1-D arrays with one value per seed")
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)} seeds")
    if len(a) < 2:
        raise ValueError(f"a paired test needs at least 2 seeds, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(
            "paired samples contain NaN or infinite values; drop or fix those seeds first"
        )
    return a - b


def t_interval(d, alpha: float = 0.05) -> tuple[float, float, float, float, float]:
    """Mean, SD, the (1 − α) t interval of the mean and the two-sided t p-value of differences d."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    q = st.t.ppf(1 - alpha / 2, n - 1)
    # Identical differences (se = 0): the limit of the test as the spread goes to 0.
    p = float(2 * st.t.sf(abs(mean) / se, n - 1)) if se > 0 else float(mean == 0)
    return mean, sd, float(mean - q * se), float(mean + q * se), p


def _sign_sums(x: np.ndarray) -> np.ndarray:
    """Σ ±x_i over all 2^len(x) sign patterns, built by doubling."""
    sums = np.zeros(1)
    for v in x:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def signflip_pvalue(d, *, n_resamples: int = 2**16, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of differences d (Fisher 1935; Good 2005, §3.2).

    Under H0 (the distribution of d is symmetric about 0) every sign pattern is equally likely; p is
    the share of patterns with |Σ ±d_i| ≥ |Σ d_i|, the observed one included, so with n = 10 its
    smallest value is 2/1024. Exact for n ≤ 20: the sums of the two halves' patterns are added
    pairwise (2^10 × 2^10 instead of a 2^20 × 20 matrix). Above that, a seeded Monte Carlo estimate
    with the +1 correction of Phipson & Smyth (2010), so it never returns 0.
    """
    d = np.asarray(d, dtype=float)
    observed = abs(d.sum())
    # Sums equal up to rounding must count as ties (≥); 1e-12 is far above the rounding of ≤ 2^20
    # additions and far below any real gap between two sums of the data.
    tol = 1e-12 * np.abs(d).sum()
    if len(d) <= EXACT_MAX_N:
        half = len(d) // 2
        sums = _sign_sums(d[:half])[:, None] + _sign_sums(d[half:])[None, :]
        return float(np.mean(np.abs(sums) >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, len(d)))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (hits + 1) / (n_resamples + 1)


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in input order, monotone and capped at 1.

    With the p-values sorted ascending, the k-th (from 0) is multiplied by m − k and the running
    maximum taken, so an adjusted p never falls below that of a smaller raw p. Rejecting where the
    adjusted p < α controls the family-wise error rate at α under any dependence.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError("Holm needs a 1-D list of p-values in [0, 1] (no NaN)")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def tost(d, margin: float, alpha: float = 0.05) -> tuple[float, float, float]:
    """Two one-sided tests of equivalence within ±margin (Schuirmann 1987).

    H0: mean ≤ −margin or mean ≥ +margin, each tested with a one-sided t test at α; p_TOST is the
    larger p. Returns p_TOST and the (1 − 2α) t interval, which lies inside (−margin, margin) exactly
    when p_TOST < α.
    """
    d = np.asarray(d, dtype=float)
    n = len(d)
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    q = st.t.ppf(1 - alpha, n - 1)
    if se == 0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        p_lower = st.t.sf((mean + margin) / se, n - 1)  # H0: mean ≤ −margin
        p_upper = st.t.cdf((mean - margin) / se, n - 1)  # H0: mean ≥ +margin
        p = float(max(p_lower, p_upper))
    return p, float(mean - q * se), float(mean + q * se)


# --- power ------------------------------------------------------------------------------------------


def t_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test with n pairs when the true mean/SD is ``effect``.

    The statistic follows a noncentral t with n − 1 degrees of freedom and noncentrality effect·√n.
    """
    df, nc = n - 1, effect * math.sqrt(n)
    q = st.t.ppf(1 - alpha / 2, df)
    return float(st.nct.sf(q, df, nc) + st.nct.cdf(-q, df, nc))


def tost_power(margin: float, n: int, effect: float = 0.0, alpha: float = 0.05) -> float:
    """Exact power of TOST with n pairs; margin and true mean difference ``effect`` in SD units.

    Both one-sided tests share the sample SD s, so TOST rejects when −M + q·s/√n < mean < M − q·s/√n
    (Phillips 1990). Given s the mean is normal, so the power is a 1-D integral over the χ² law of s;
    integrating over its quantile u keeps the integrand bounded and smooth.
    """
    df, k = n - 1, math.sqrt(n)
    q = st.t.ppf(1 - alpha, df)
    x_max = df * (margin * k / q) ** 2  # beyond this s the acceptance interval is empty
    u_max = special.gammainc(df / 2, x_max / 2)  # the χ²_df cdf at x_max

    def given(u: float) -> float:
        w = math.sqrt(2 * special.gammaincinv(df / 2, u) / df)  # s/σ at quantile u
        hi = special.ndtr(k * (margin - effect) - q * w)
        lo = special.ndtr(-k * (margin + effect) + q * w)
        return max(0.0, hi - lo)

    if u_max <= 0:
        return 0.0
    value, _ = integrate.quad(given, 0.0, u_max, limit=200)
    return float(min(1.0, value))


def _smallest_n(power_at: Callable[[int], float], target: float, n_max: int) -> int | None:
    """Smallest n ≥ 2 with power_at(n) ≥ target, for power growing with n; None past n_max.

    Doubling then bisection, so an effect needing 10^5 seeds costs ~35 evaluations, not 10^5.
    """
    if power_at(2) >= target:
        return 2
    lo, hi = 2, 4
    while power_at(hi) < target:
        if hi >= n_max:
            return None
        lo, hi = hi, min(2 * hi, n_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= target else (mid, hi)
    return hi


def signflip_min_n(alpha: float = 0.05) -> int:
    """Fewest seeds at which the sign-flip test can reach p < α at all: 2/2^n < α."""
    return max(2, math.floor(math.log2(2 / alpha)) + 1)


def seeds_to_detect(
    mean_diff: float, sd: float, *, alpha: float = 0.05, power: float = POWER, n_max: int = N_MAX
) -> int | None:
    """Paired seeds needed to detect ``mean_diff`` with the two-sided test at α with this power.

    The t test's power (noncentral t) stands in for the sign-flip test's, which is close to it for
    normal data; the answer is never below `signflip_min_n`, where the sign-flip test first can
    reject. None when the difference is 0 or more than n_max seeds would be needed.
    """
    if mean_diff == 0:
        return None
    floor = signflip_min_n(alpha)
    if sd == 0:
        return floor
    effect = abs(mean_diff) / sd
    n = _smallest_n(lambda n: t_power(effect, n, alpha), power, n_max)
    return None if n is None else max(n, floor)


def seeds_to_equivalence(
    mean_diff: float,
    sd: float,
    margin: float,
    *,
    alpha: float = 0.05,
    power: float = POWER,
    n_max: int = N_MAX,
) -> int | None:
    """Paired seeds TOST needs to show equivalence within ±margin if the true difference is
    ``mean_diff``; None when |mean_diff| ≥ margin (then it never would) or past n_max."""
    if abs(mean_diff) >= margin:
        return None
    if sd == 0:
        return 2
    return _smallest_n(lambda n: tost_power(margin / sd, n, mean_diff / sd, alpha), power, n_max)


def resolvable_margin(
    sd: float, n: int = RESOLVE_N, *, alpha: float = 0.05, power: float = POWER
) -> float:
    """The smallest margin at which TOST with n pairs has this power when the true difference is 0."""
    if sd == 0:
        return 0.0

    def shortfall(m: float) -> float:
        return tost_power(m, n, 0.0, alpha) - power

    hi = 1.0
    while shortfall(hi) < 0:
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-10)) * sd


# --- the paired test ----------------------------------------------------------------------------


def paired_test(
    a, b, *, margin: float, alpha: float = 0.05, resolve_n: int = RESOLVE_N
) -> PairedTest:
    """Compare seed-aligned samples a and b: t interval, sign-flip p, TOST against ±margin, power."""
    d = paired_differences(a, b)
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"the equivalence margin must be positive and finite, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    mean, sd, lo, hi, p_t = t_interval(d, alpha)
    p_tost, tost_lo, tost_hi = tost(d, margin, alpha)
    return PairedTest(
        n=len(d),
        mean_diff=mean,
        sd_diff=sd,
        ci_low=lo,
        ci_high=hi,
        p_t=p_t,
        p_signflip=signflip_pvalue(d),
        margin=float(margin),
        p_tost=p_tost,
        tost_ci_low=tost_lo,
        tost_ci_high=tost_hi,
        alpha=alpha,
        seeds_to_detect=seeds_to_detect(mean, sd, alpha=alpha),
        seeds_to_equivalence=seeds_to_equivalence(mean, sd, margin, alpha=alpha),
        resolvable_margin=resolvable_margin(sd, resolve_n, alpha=alpha),
        resolve_n=resolve_n,
    )


# --- rank correlation -------------------------------------------------------------------------------


def kendall_tau_bootstrap(
    x, y, groups, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Kendall's τ-b of x and y, and a (1 − α) percentile interval from resampling groups.

    Rows of one group (one seed) share their training randomness, so the bootstrap draws whole
    groups with replacement rather than rows (a cluster bootstrap; Efron & Tibshirani 1993, §8).
    Resamples where x or y is constant have no τ and are left out of the interval.
    """
    x, y, groups = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(groups)
    if not (x.ndim == y.ndim == groups.ndim == 1 and len(x) == len(y) == len(groups)):
        raise ValueError(
            f"x, y and groups must be 1-D of one length: {x.shape}, {y.shape}, {groups.shape}"
        )
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("Kendall's τ needs at least 2 finite (x, y) pairs")
    tau = float(st.kendalltau(x, y).statistic)
    _, index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(index.max() + 1)]
    rng = np.random.default_rng(seed)
    taus = np.empty(n_boot)
    for i in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        taus[i] = st.kendalltau(x[rows], y[rows]).statistic
    taus = taus[np.isfinite(taus)]
    if len(taus) == 0:
        return tau, math.nan, math.nan
    lo, hi = np.percentile(taus, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return tau, float(lo), float(hi)
