"""experiments.analyse.stats against independent computations: brute-force enumeration, hand formulas,
worked examples from the literature, textbook power values and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from experiments.analyse.stats import (
    holm,
    kendall_tau_bootstrap,
    paired_test,
    resolvable_margin,
    seeds_to_detect,
    seeds_to_equivalence,
    signflip_pvalue,
    t_power,
    tost,
    tost_power,
)

# --- input checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "words"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "differ in length"),
        ([1.0], [2.0], "at least 2"),
        ([1.0, math.nan, 3.0], [1.0, 2.0, 3.0], "NaN"),
        ([1.0, 2.0, 3.0], [1.0, math.inf, 3.0], "NaN or infinite"),
    ],
)
def test_paired_test_refuses_bad_samples(a, b, words):
    with pytest.raises(ValueError, match=words):
        paired_test(a, b, margin=0.1)


@pytest.mark.parametrize("margin", [0.0, -0.1, math.nan, math.inf])
def test_paired_test_refuses_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 1.0], margin=margin)


# --- sign-flip permutation test --------------------------------------------------------------------


def brute_force_signflip(d):
    """Loop over every sign pattern with itertools; count |Σ s·d| ≥ |Σ d| (rounded to kill noise)."""
    observed = round(abs(sum(d)), 9)
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        total += 1
        hits += round(abs(sum(s * x for s, x in zip(signs, d, strict=True))), 9) >= observed
    return hits / total


@pytest.mark.parametrize(
    "d",
    [
        [0.3, -0.1, 0.5, 0.2, -0.4, 0.6, 0.1, 0.25],
        [1.0, 2.0, -3.0, 0.5, 0.0, 0.7],  # a zero difference
        [0.1, 0.1, 0.1, -0.1, 0.2, -0.2, 0.3, 0.1, 0.1, 0.05, -0.3],  # many ties
        [2.0, -1.0, -1.0],  # observed sum 0
        [0.02, 0.03],
    ],
)
def test_signflip_matches_brute_force(d):
    assert signflip_pvalue(np.array(d)) == pytest.approx(brute_force_signflip(d), abs=1e-12)


def test_signflip_all_positive_ten_seeds_is_two_over_1024():
    # Only the all-plus and all-minus patterns reach |sum| = sum: p = 2 / 2^10.
    rng = np.random.default_rng(3)
    d = rng.uniform(0.1, 1.0, 10)
    assert signflip_pvalue(d) == 2 / 1024
    assert signflip_pvalue(-d) == 2 / 1024


def test_signflip_counts_patterns_by_hand():
    # ±1 with k minus signs sums to 10 − 2k; |10 − 2k| ≥ 8 for k ∈ {0, 1, 9, 10}: 1 + 10 + 10 + 1.
    assert signflip_pvalue(np.array([1.0] * 9 + [-1.0])) == 22 / 1024


def test_signflip_agrees_with_scipy_permutation_test():
    d = np.random.default_rng(0).normal(0.3, 1.0, 12)
    ref = st.permutation_test(
        (d,), np.sum, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert signflip_pvalue(d) == pytest.approx(ref.pvalue, abs=1e-12)


def test_signflip_exact_at_twenty_and_monte_carlo_above():
    d20 = np.r_[np.ones(19), -1.0]  # k minus signs: |20 − 2k| ≥ 18 for k ∈ {0, 1, 19, 20}
    assert signflip_pvalue(d20) == 42 / 2**20
    d30 = np.random.default_rng(1).normal(0.2, 1.0, 30)
    p = signflip_pvalue(d30)
    assert p == signflip_pvalue(d30)  # seeded, so deterministic
    assert p == pytest.approx(st.ttest_1samp(d30, 0.0).pvalue, abs=0.05)
    assert signflip_pvalue(np.ones(30)) == 1 / (2**16 + 1)  # never 0


# --- paired t interval ------------------------------------------------------------------------------


def test_paired_t_interval_against_hand_formula():
    a = np.array([0.12, 0.15, 0.11, 0.19, 0.14, 0.13, 0.18, 0.16])
    b = np.array([0.10, 0.16, 0.08, 0.15, 0.12, 0.14, 0.13, 0.12])
    d = a - b
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = st.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    t_stat = mean / (sd / math.sqrt(n))
    test = paired_test(a, b, margin=0.05)
    assert test.n == n
    assert test.mean_diff == pytest.approx(mean)
    assert test.sd_diff == pytest.approx(sd)
    assert (test.ci_low, test.ci_high) == pytest.approx((mean - half, mean + half))
    assert test.p_t == pytest.approx(2 * (1 - st.t.cdf(abs(t_stat), n - 1)))
    assert test.p_signflip == pytest.approx(brute_force_signflip(list(d)))


def test_differences_are_a_minus_b():
    test = paired_test([1.0, 2.0, 3.0], [0.0, 1.5, 1.5], margin=1.0)  # d = 1, 0.5, 1.5
    assert test.mean_diff == pytest.approx(1.0)


# --- Holm -------------------------------------------------------------------------------------------


def test_holm_worked_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max makes the
    # last 0.06; back in input order:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_order_and_single_p():
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])
    assert holm([0.2]) == pytest.approx([0.2])
    assert len(holm([])) == 0
    p = np.random.default_rng(0).uniform(0, 0.2, 12)
    adjusted = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in the raw p
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)


def test_holm_refuses_nan():
    with pytest.raises(ValueError):
        holm([0.1, math.nan])


# --- TOST -------------------------------------------------------------------------------------------


def test_tost_is_two_one_sided_t_tests():
    d = np.array([0.004, -0.002, 0.001, 0.006, -0.003, 0.002, 0.0, 0.005, -0.001, 0.003])
    margin = 0.005
    lower = st.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue  # H0: mean ≤ −margin
    upper = st.ttest_1samp(d - margin, 0.0, alternative="less").pvalue  # H0: mean ≥ +margin
    p, lo, hi = tost(d, margin, alpha=0.05)
    assert p == pytest.approx(max(lower, upper))
    half = st.t.ppf(0.95, 9) * d.std(ddof=1) / math.sqrt(10)
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    test = paired_test(d, np.zeros(10), margin=margin)
    assert test.p_tost == pytest.approx(p)
    assert (test.tost_ci_low, test.tost_ci_high) == pytest.approx((lo, hi))


@pytest.mark.parametrize("margin", [0.001, 0.003, 0.004, 0.006, 0.01])
def test_tost_significant_exactly_when_interval_inside_margin(margin):
    d = np.array([0.004, -0.002, 0.001, 0.006, -0.003, 0.002, 0.0, 0.005, -0.001, 0.003])
    p, lo, hi = tost(d, margin)
    assert (p < 0.05) == (-margin < lo and hi < margin)


# --- power ------------------------------------------------------------------------------------------


def test_t_power_textbook_value():
    # Paired t, effect/SD = 1, α = 0.05 two-sided: n = 10 gives power 0.803 (G*Power; Cohen 1988).
    assert t_power(1.0, 10) == pytest.approx(0.803, abs=0.001)
    assert t_power(1.0, 9) < 0.8 < t_power(1.0, 10)
    assert seeds_to_detect(0.03, 0.03) == 10


def test_t_power_matches_simulation():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, (20000, 10))
    simulated = np.mean(st.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05)
    assert simulated == pytest.approx(t_power(1.0, 10), abs=0.015)


def test_seeds_to_detect_monotone_in_effect_and_edge_cases():
    needed = [seeds_to_detect(e, 1.0) for e in (0.2, 0.4, 0.6, 1.0, 1.5)]
    assert all(x >= y for x, y in itertools.pairwise(needed))
    assert needed[0] > needed[-1]
    assert needed[0] == pytest.approx((1.96 + 0.8416) ** 2 / 0.2**2, rel=0.05)  # normal approx.
    assert seeds_to_detect(0.0, 1.0) is None
    # 5 seeds cannot reach sign-flip p < 0.05 (2/32 > 0.05); 6 can (2/64).
    assert seeds_to_detect(100.0, 1.0) == 6
    assert seeds_to_detect(1e-4, 1.0, n_max=1000) is None


def test_tost_power_matches_simulation():
    rng = np.random.default_rng(1)
    for n, margin, effect in [(10, 1.0, 0.0), (10, 1.2, 0.3), (4, 2.0, 0.0)]:
        x = rng.normal(effect, 1.0, (20000, n))
        mean, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
        q = st.t.ppf(0.95, n - 1)
        simulated = np.mean((mean - q * se > -margin) & (mean + q * se < margin))
        assert tost_power(margin, n, effect) == pytest.approx(simulated, abs=0.015)


def test_tost_power_at_least_the_noncentral_t_bound():
    # P(both reject) ≥ P(lower rejects) + P(upper rejects) − 1, each a noncentral t probability.
    n, margin, effect = 12, 0.9, 0.1
    q = st.t.ppf(0.95, n - 1)
    bound = (
        st.nct.sf(q, n - 1, (effect + margin) * math.sqrt(n))
        + st.nct.cdf(-q, n - 1, (effect - margin) * math.sqrt(n))
        - 1
    )
    assert bound - 1e-9 <= tost_power(margin, n, effect) <= bound + 0.02


def test_seeds_to_equivalence_monotone_and_none_outside_margin():
    needed = [seeds_to_equivalence(0.0, 1.0, m) for m in (0.3, 0.5, 1.0, 2.0)]
    assert all(x > y for x, y in itertools.pairwise(needed))
    n = needed[1]
    assert tost_power(0.5, n) >= 0.8 > tost_power(0.5, n - 1)
    assert seeds_to_equivalence(0.2, 1.0, 0.5) > n  # a true difference makes it harder
    assert seeds_to_equivalence(0.5, 1.0, 0.5) is None
    assert seeds_to_equivalence(-0.7, 1.0, 0.5) is None


def test_resolvable_margin_gives_80_percent_power_and_scales_with_sd():
    m = resolvable_margin(1.0, 10)
    assert tost_power(m, 10) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, (20000, 10))
    mean, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(10)
    q = st.t.ppf(0.95, 9)
    assert np.mean((mean - q * se > -m) & (mean + q * se < m)) == pytest.approx(0.8, abs=0.015)
    assert resolvable_margin(0.02, 10) == pytest.approx(0.02 * m, rel=1e-6)
    assert resolvable_margin(1.0, 20) < m


def test_paired_test_carries_power_figures():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.1, 1.0, 10), np.zeros(10)
    test = paired_test(a, b, margin=0.5)
    d = a - b
    assert test.seeds_to_detect == seeds_to_detect(d.mean(), d.std(ddof=1))
    assert test.seeds_to_equivalence == seeds_to_equivalence(d.mean(), d.std(ddof=1), 0.5)
    assert test.resolvable_margin == pytest.approx(resolvable_margin(d.std(ddof=1), 10))


# --- Kendall τ with a seed bootstrap ----------------------------------------------------------------


def test_kendall_tau_bootstrap():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 6)
    x = rng.normal(size=60)
    y = x + rng.normal(scale=1.0, size=60)
    tau, lo, hi = kendall_tau_bootstrap(x, y, groups, n_boot=300, seed=1)
    assert tau == pytest.approx(st.kendalltau(x, y).statistic)
    assert 0 < lo < tau < hi
    assert kendall_tau_bootstrap(x, y, groups, n_boot=300, seed=1) == (tau, lo, hi)
    noise = rng.normal(size=60)
    _, lo0, hi0 = kendall_tau_bootstrap(x, noise, groups, n_boot=300, seed=1)
    assert lo0 < 0 < hi0


def test_kendall_bootstrap_resamples_whole_groups():
    # One group: every resample is the whole data set, so the interval collapses onto τ (a row
    # bootstrap would spread).
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=20), rng.normal(size=20)
    tau, lo, hi = kendall_tau_bootstrap(x, y, np.zeros(20), n_boot=50, seed=0)
    assert lo == pytest.approx(tau) and hi == pytest.approx(tau)
    # Concordant within and across groups: τ = 1 in every resample.
    x = np.arange(12.0)
    assert kendall_tau_bootstrap(x, 2 * x, np.repeat([0, 1, 2], 4), n_boot=50) == pytest.approx(
        (1.0, 1.0, 1.0)
    )


def test_kendall_bootstrap_refuses_mismatched_input():
    with pytest.raises(ValueError):
        kendall_tau_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0], [0, 0, 1])
    with pytest.raises(ValueError):
        kendall_tau_bootstrap([1.0, math.nan, 3.0], [1.0, 2.0, 3.0], [0, 0, 1])
