"""The mechanism readings of issue 27 on hand-made data: every branch of the within-arm reading,
the slopes against a direct least-squares fit, the family's floors and the measures' agreement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.analyse.mechanism import (
    CONSISTENT,
    INCONSISTENT,
    REVERSED_BETWEEN,
    UNINFORMATIVE,
    agreement,
    floor_rows,
    intervention,
    measure_rows,
    p_floor,
    seeds_needed,
    within_arm,
    within_reading,
)
from experiments.errors import ProtocolError
from experiments.plan import CONF, load_protocol


def _arms(slope_within, gap, noise, n=10, seed=0):
    """Two arms of n paired seeds: log sharpness x, test error y = slope·x + arm offset + noise;
    arm a is sharper by 1 log-unit and worse by ``gap``."""
    rng = np.random.default_rng(seed)
    x_b = rng.normal(0, 0.3, n)
    x_a = x_b + 1 + rng.normal(0, 0.3, n)
    y_b = slope_within * x_b + rng.normal(0, noise, n)
    y_a = slope_within * x_a + (gap - slope_within) + rng.normal(0, noise, n)
    return x_a, y_a, x_b, y_b


def test_a_within_slope_equal_to_the_between_slope_is_consistent():
    got = within_arm(*_arms(0.03, 0.03, 0.002), n_perm=2000, n_boot=1000)
    assert got["reading"] == CONSISTENT
    assert got["slope_within"] == pytest.approx(0.03, abs=0.006)
    assert got["slope_between"] == pytest.approx(0.03, abs=0.006)
    assert got["p_perm"] < 0.01


def test_no_slope_within_arms_against_a_gap_between_them_is_inconsistent():
    got = within_arm(*_arms(0.0, 0.03, 0.002), n_perm=2000, n_boot=1000)
    assert got["reading"] == INCONSISTENT
    assert got["within_low"] < 0 < got["within_high"]
    assert got["diff_high"] < 0


def test_noise_that_hides_both_is_uninformative():
    got = within_arm(*_arms(0.0, 0.03, 0.2), n_perm=2000, n_boot=1000)
    assert got["reading"] == UNINFORMATIVE


def test_the_within_slope_is_least_squares_with_one_intercept_per_arm():
    x_a, y_a, x_b, y_b = _arms(0.02, 0.05, 0.01, seed=3)
    design = np.column_stack(
        [np.r_[x_a, x_b], np.r_[np.ones(10), np.zeros(10)], np.r_[np.zeros(10), np.ones(10)]]
    )
    coef, *_ = np.linalg.lstsq(design, np.r_[y_a, y_b], rcond=None)
    got = within_arm(x_a, y_a, x_b, y_b, n_perm=200, n_boot=200)
    assert got["slope_within"] == pytest.approx(coef[0], rel=1e-10)
    between = (y_a.mean() - y_b.mean()) / (x_a.mean() - x_b.mean())
    assert got["slope_between"] == pytest.approx(between, rel=1e-12)


@pytest.mark.parametrize(
    "lo, hi, between, d, j, reading",
    [
        (0.01, 0.05, 0.03, (-0.02, 0.02), (-0.03, 0.03), CONSISTENT),
        (-0.01, 0.01, 0.03, (-0.05, -0.01), (-0.06, -0.005), INCONSISTENT),  # both exclude 0
        (-0.01, 0.01, 0.03, (-0.05, -0.01), (-0.06, 0.005), UNINFORMATIVE),  # the jackknife not
        (-0.05, -0.01, 0.03, (-0.5, 0.5), (-0.5, 0.5), INCONSISTENT),  # the other sign for sure
        (-0.01, 0.05, 0.03, (-0.05, 0.03), (-0.05, 0.03), UNINFORMATIVE),
        (-0.05, -0.01, -0.03, (-0.02, 0.02), (-0.02, 0.02), REVERSED_BETWEEN),
        (0.01, 0.05, math.nan, (math.nan, math.nan), (math.nan, math.nan), UNINFORMATIVE),
    ],
)
def test_every_branch_of_the_within_reading(lo, hi, between, d, j, reading):
    assert within_reading(lo, hi, between, *d, *j) == reading


def test_floors_and_the_seeds_holm_needs():
    assert p_floor("paired", 10) == 2 / 1024
    assert p_floor("kendall_tau", 10, 1000) == 2 / 1001
    # the floor: n >= 10 passes Holm's first step for m <= 25, 11 for m <= 51
    assert [seeds_needed(m) for m in (18, 25, 26, 51, 52)] == [10, 10, 11, 11, 12]
    for m in (5, 18, 26, 51, 100):
        n = seeds_needed(m)
        assert 2 / 2**n <= 0.05 / m < 2 / 2 ** (n - 1)


def test_floor_rows_mark_tests_at_their_floor():
    verdicts = pd.DataFrame(
        {
            "protocol": "p",
            "comparison": ["c", "c", "d"],
            "part": ["effect", "mechanism", "effect"],
            "kind": ["paired", "paired", "kendall_tau"],
            "n_seeds": 10,
            "p_raw": [2 / 1024, 0.01, 2 / 1001],
            "p_holm": [0.006, 0.01, 0.006],
        }
    )
    protocols = {"p": {"comparisons": [{"name": "c"}, {"name": "d", "n_boot": 1000}]}}
    rows = pd.DataFrame(floor_rows(verdicts, protocols))
    assert rows["at_floor"].tolist() == [True, False, True]
    assert rows["family_size"].eq(3).all() and rows["first_threshold"].eq(0.05 / 3).all()


def _tidy(ratios_a_over_b: dict[str, float], n=10):
    rng = np.random.default_rng(1)
    rows = []
    for measure, ratio in ratios_a_over_b.items():
        for s in range(n):
            b = math.exp(rng.normal(0, 0.1))
            wobble = math.exp(rng.normal(0, 0.02))
            rows += [
                {
                    "comparison": "c",
                    "role": "a",
                    "seed": s,
                    "quantity": measure,
                    "value": b * ratio * wobble,
                },
                {"comparison": "c", "role": "b", "seed": s, "quantity": measure, "value": b},
            ]
    return pd.DataFrame(rows)


def test_measures_that_disagree_are_named_each_way():
    tidy = _tidy(
        {"lambda_max": 0.25, "adaptive_worst_case_sharpness": 1.8, "keskar_sharpness": 1.0}
    )
    c = {"name": "c", "rule": {"mechanism": {"quantity": "lambda_max", "direction": "less"}}}
    declared = {"primary": "adaptive_worst_case_sharpness", "secondary": ["keskar_sharpness"]}
    rows = pd.DataFrame(measure_rows(tidy, c, declared, {"adaptive_worst_case_sharpness": True}))
    by = rows.set_index("measure")
    assert by.loc["lambda_max", "ratio"] == pytest.approx(0.25, rel=0.05)
    assert by.loc["adaptive_worst_case_sharpness", "role"] == "primary"
    assert by.loc["adaptive_worst_case_sharpness", "invariant"] is True
    assert by["way"].to_dict() == {
        "lambda_max": "flatter",
        "adaptive_worst_case_sharpness": "sharper",
        "keskar_sharpness": "unclear",
    }
    assert agreement(rows) == (
        "sharper by adaptive_worst_case_sharpness, flatter by lambda_max, unclear by keskar_sharpness"
    )
    same = pd.DataFrame(
        measure_rows(_tidy({"lambda_max": 2.0, "keskar_sharpness": 1.5}), c, declared, {})
    )
    assert agreement(same) == "sharper by every measure"


def test_a_mechanism_block_must_name_measured_metrics_and_real_comparisons(tmp_path):
    text = (CONF / "protocol" / "batch_size.yaml").read_text()
    bad = text.replace(
        "secondary: [lambda_max, keskar_sharpness]", "secondary: [lambda_max, hessian_trace]"
    )
    (tmp_path / "a.yaml").write_text(bad)
    with pytest.raises(ProtocolError, match=r"mechanism: \['hessian_trace'\] are not among"):
        load_protocol(tmp_path / "a.yaml")
    bad = text.replace(
        "  primary: adaptive_worst_case_sharpness\n",
        "  primary: adaptive_worst_case_sharpness\n  per_comparison: {sgd: lambda_max}\n",
        1,
    )
    (tmp_path / "b.yaml").write_text(bad)
    with pytest.raises(ProtocolError, match=r"per_comparison: \['sgd'\] are not comparisons"):
        load_protocol(tmp_path / "b.yaml")


def test_the_mechanism_tables_are_read_through_their_schemas(tmp_path):
    from experiments.analyse.schemas import TableError, load

    row = {"protocol": "p", "comparison": "c", "measure": "lambda_max", "n": 10}
    row |= {"slope_within": 0.01, "slope_between": 0.02, "reading": "uninformative"}
    pd.DataFrame([row]).to_csv(tmp_path / "mechanism_within.csv", index=False)
    assert len(load(tmp_path, "mechanism_within")) == 1
    pd.DataFrame([row, row]).to_csv(tmp_path / "mechanism_within.csv", index=False)
    with pytest.raises(TableError, match="mechanism_within"):
        load(tmp_path, "mechanism_within")
    pd.DataFrame([{**row, "slope_within": math.nan}]).to_csv(
        tmp_path / "mechanism_within.csv", index=False
    )
    with pytest.raises(TableError):
        load(tmp_path, "mechanism_within")


def test_the_seeds_for_power_grow_with_the_spread_and_never_undercut_the_floor():
    base = {"protocol": "p", "kind": "paired", "n_seeds": 10, "p_raw": 0.01, "p_holm": 0.02}
    verdicts = pd.DataFrame(
        [
            {**base, "comparison": f"c{i}", "part": "effect", "mean_diff": 0.01, "sd_diff": sd}
            for i, sd in enumerate((0.001, 0.006, 0.02))
        ]
    )
    protocols = {"p": {"comparisons": [{"name": f"c{i}"} for i in range(3)]}}
    n = pd.DataFrame(floor_rows(verdicts, protocols))["seeds_for_power"].tolist()
    assert n[0] == seeds_needed(3) and n[0] <= n[1] < n[2]


def _gap(error_share, measure_share, n=10, seed=0):
    """Seeds of a small, a large and an intervention arm closing the given shares of the gaps."""
    rng = np.random.default_rng(seed)
    small_e, small_x = 0.10 + rng.normal(0, 0.002, n), rng.normal(0, 0.05, n)
    large_e, large_x = (
        small_e + 0.02 + rng.normal(0, 0.002, n),
        small_x + 1 + rng.normal(0, 0.05, n),
    )
    arm_e = large_e - error_share * 0.02 + rng.normal(0, 0.0005, n)
    arm_x = large_x - measure_share * 1 + rng.normal(0, 0.05, n)
    error = pd.DataFrame({"small": small_e, "large": large_e, "arm": arm_e})
    return error, pd.DataFrame({"small": small_x, "large": large_x, "arm": arm_x})


def test_an_intervention_that_moves_error_with_sharpness_has_ratio_one():
    got = intervention(*_gap(0.5, 0.5), "arm", "large", "small", n_boot=500)
    assert got["error_closed"] == pytest.approx(0.5, abs=0.1)
    assert got["measure_closed"] == pytest.approx(0.5, abs=0.05)
    assert got["ratio_low"] < 1 < got["ratio_high"]


def test_flattening_without_closing_the_gap_has_ratio_near_zero():
    got = intervention(*_gap(0.0, 1.0), "arm", "large", "small", n_boot=500)
    assert got["measure_closed"] == pytest.approx(1.0, abs=0.05)
    assert got["ratio_low"] < 0.2 and got["ratio_high"] < 0.5
    # by hand: the point estimate is the ratio of the two shares of mean differences
    e, x = _gap(0.0, 1.0)
    share_e = (e["large"] - e["arm"]).mean() / (e["large"] - e["small"]).mean()
    share_x = (x["large"] - x["arm"]).mean() / (x["large"] - x["small"]).mean()
    assert got["ratio"] == pytest.approx(share_e / share_x)


def test_a_declared_intervention_is_read_from_the_runs_and_metrics_tables():
    from experiments.analyse.mechanism import intervention_rows

    error, log_x = _gap(0.5, 0.5)
    runs = pd.DataFrame(
        [{"protocol": "q", "arm": a, "seed": s, "test_error": error.loc[s, a]}
         for a in error for s in error.index]
    )  # fmt: skip
    metrics = pd.DataFrame(
        [{"protocol": "q", "arm": a, "seed": s, "metric": "adaptive_worst_case_sharpness",
          "value": math.exp(log_x.loc[s, a])} for a in log_x for s in log_x.index]
    )  # fmt: skip
    p = {"mechanism": {"primary": "adaptive_worst_case_sharpness",
                       "intervention": {"arm": "arm", "large": "large", "small": "small"}}}  # fmt: skip
    (row,) = intervention_rows("q", p, runs, metrics)
    direct = intervention(error, log_x, "arm", "large", "small")
    assert row["ratio"] == pytest.approx(direct["ratio"]) and row["n"] == 10
    assert intervention_rows("q", {"mechanism": {"primary": "x"}}, runs, metrics) == []


def test_the_jackknife_interval_of_within_minus_between_by_hand():
    from scipy import stats

    x_a, y_a, x_b, y_b = _arms(0.01, 0.03, 0.004, seed=5)
    got = within_arm(x_a, y_a, x_b, y_b, n_perm=100, n_boot=200)

    def diff(k):
        xa, ya, xb, yb = x_a[k], y_a[k], x_b[k], y_b[k]
        m = len(k)
        design = np.column_stack(
            [np.r_[xa, xb], np.r_[np.ones(m), np.zeros(m)], np.r_[np.zeros(m), np.ones(m)]]
        )
        within = np.linalg.lstsq(design, np.r_[ya, yb], rcond=None)[0][0]
        return within - (ya.mean() - yb.mean()) / (xa.mean() - xb.mean())

    n = len(x_a)
    leave = np.array([diff(np.delete(np.arange(n), i)) for i in range(n)])
    se = np.sqrt((n - 1) / n * ((leave - leave.mean()) ** 2).sum())
    centre = diff(np.arange(n))
    q = stats.t.ppf(0.975, n - 1)
    assert got["jack_low"] == pytest.approx(centre - q * se)
    assert got["jack_high"] == pytest.approx(centre + q * se)
