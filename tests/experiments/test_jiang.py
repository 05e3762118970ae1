"""Jiang et al. 2020's conditional mutual information on hand-made data with known answers: the gap
itself scores 1 under every conditioning set, an independent measure about 0, a measure that only
echoes a hyperparameter 0 once that hyperparameter is conditioned on, and a three-model case worked
out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.analyse.jiang import jiang_cmi, normalized_cmi


def grid(seed: int = 0, seeds_per_config: int = 3) -> pd.DataFrame:
    """Models on a 2 x 2 x 2 grid of axes (lr, width, wd), several seeds each."""
    rng = np.random.default_rng(seed)
    rows = []
    for lr in (0.1, 0.01):
        for width in (64, 256):
            for wd in (0.0, 1e-4):
                for s in range(seeds_per_config):
                    rows.append({"lr": lr, "width": width, "wd": wd, "seed": s})
    models = pd.DataFrame(rows)
    models["gap"] = (
        2.0 * (models["lr"] == 0.1) + 0.5 * (models["width"] == 256) + rng.normal(0, 1, len(models))
    )
    return models


AXES = ["lr", "width", "wd"]


@pytest.mark.parametrize("subset", [(), ("lr",), ("lr", "width"), ("width", "wd")])
def test_the_gap_itself_and_its_negative_score_one_under_any_conditioning(subset):
    models = grid()
    models["same"], models["flipped"] = models["gap"], -models["gap"]
    assert normalized_cmi(models, "same", "gap", subset) == pytest.approx(1.0)
    assert normalized_cmi(models, "flipped", "gap", subset) == pytest.approx(1.0)


def test_an_independent_measure_scores_about_zero():
    # pairs share models, so the plug-in estimate's bias and spread shrink with the number of
    # models (about τ² of a null Kendall τ), not of pairs: 320 models
    models = grid(seed=1, seeds_per_config=40)
    models["noise"] = np.random.default_rng(7).normal(size=len(models))
    value, _ = jiang_cmi(models, "noise", "gap", AXES)
    assert 0 <= value < 0.01
    assert normalized_cmi(models, "noise", "gap", ()) < 0.01


def test_a_measure_that_only_echoes_a_hyperparameter_is_explained_away_by_it():
    models = grid(seed=2, seeds_per_config=40)
    rng = np.random.default_rng(3)
    models["echo"] = (models["lr"] == 0.1) + rng.normal(0, 0.05, len(models))
    unconditioned = normalized_cmi(models, "echo", "gap", ())
    value, where = jiang_cmi(models, "echo", "gap", AXES)
    assert unconditioned > 0.1  # it does track the gap, through lr
    assert value < 0.01 and "lr" in where
    # a measure that tracks the gap within each setting too is not explained away
    models["tracks"] = models["gap"] + rng.normal(0, 0.3, len(models))
    assert jiang_cmi(models, "tracks", "gap", AXES)[0] > 0.3


def test_three_models_by_hand():
    # ordered pairs: (g, μ) signs (−,−) twice, (+,+) twice, (−,+) once, (+,−) once
    models = pd.DataFrame({"gap": [0.0, 1.0, 2.0], "m": [0.0, 2.0, 1.0], "a": [1, 1, 1]})
    h_joint = 2 / 3 * math.log(3) + 1 / 3 * math.log(6)
    want = (2 * math.log(2) - h_joint) / math.log(2)
    assert normalized_cmi(models, "m", "gap", ()) == pytest.approx(want)
    # conditioning on an axis with one value changes nothing
    assert normalized_cmi(models, "m", "gap", ("a",)) == pytest.approx(want)


def test_ties_of_the_gap_carry_no_sign_and_missing_values_are_left_out():
    models = pd.DataFrame({"gap": [0.0, 0.0, 1.0, np.nan], "m": [0.0, 5.0, 1.0, 3.0]})
    # pairs left: (0,2), (2,0), (1,2), (2,1); V_μ agrees in the first two, not the last two
    assert normalized_cmi(models, "m", "gap", ()) == pytest.approx(0.0)
    models["m2"] = [0.0, 0.5, 1.0, 3.0]
    assert normalized_cmi(models, "m2", "gap", ()) == pytest.approx(1.0)


def test_ranking_orders_measures_with_bootstrap_intervals_over_configurations_and_seeds():
    from experiments.analyse.jiang import ranking

    models = grid(seed=4, seeds_per_config=6)
    rng = np.random.default_rng(5)
    models["test_error"] = models["gap"] + 0.1
    models["tracks"] = models["gap"] + rng.normal(0, 0.3, len(models))
    models["echo"] = (models["lr"] == 0.1) + rng.normal(0, 0.05, len(models))
    models["noise"] = rng.normal(size=len(models))
    table = ranking(models, ["noise", "echo", "tracks"], "gap", AXES, test="test_error",
                    n_boot=30, seed=0)  # fmt: skip
    assert table["measure"].tolist()[0] == "tracks"  # the one the hyperparameters do not explain
    row = table.set_index("measure")
    assert row.loc["tracks", "tau_gap"] == pytest.approx(row.loc["tracks", "tau_test"])
    for m in ("noise", "echo", "tracks"):
        for key in ("tau_gap", "psi"):
            assert row.loc[m, f"{key}_lo"] <= row.loc[m, key] + 1e-9
            assert row.loc[m, key] <= row.loc[m, f"{key}_hi"] + 1e-9
        # K(μ) is a plug-in estimate, biased upwards near 0, so its percentile interval need not
        # hold the point estimate; only its order is checked
        assert 0 <= row.loc[m, "cmi_lo"] <= row.loc[m, "cmi_hi"] <= 1
    assert row.loc["noise", "tau_gap_lo"] < 0 < row.loc["noise", "tau_gap_hi"]
    assert row.loc["echo", "psi[lr]"] > 0.5  # within an lr pair of configurations it ranks the gap
    assert "lr" in row.loc["echo", "cmi_given"]
    again = ranking(models, ["noise"], "gap", AXES, n_boot=30, seed=0)
    assert again["cmi_lo"].iloc[0] == row.loc["noise", "cmi_lo"]  # seeded
    assert row.loc["tracks", "rank"] == 1 and row.loc["tracks", "rank_lo"] == 1
    for m in ("noise", "echo", "tracks"):
        assert 1 <= row.loc[m, "rank_lo"] <= row.loc[m, "rank"] <= row.loc[m, "rank_hi"] <= 3
        assert row.loc[m, "rank_lo"] == int(row.loc[m, "rank_lo"])  # a place that occurred
        assert row.loc[m, "rank_hi"] == int(row.loc[m, "rank_hi"])
    models["inverse"] = 1 / (models["tracks"] - models["tracks"].min() + 1)  # monotone: same K
    tied = ranking(models, ["tracks", "inverse"], "gap", AXES, n_boot=20, seed=0).set_index(
        "measure"
    )
    assert tied.loc["tracks", "rank"] == tied.loc["inverse", "rank"] == 1
    assert tied.loc["tracks", "rank_hi"] == tied.loc["inverse", "rank_hi"] == 1
    parallel = ranking(models, ["noise"], "gap", AXES, n_boot=30, seed=0, jobs=2)
    pd.testing.assert_frame_equal(parallel, again)  # the same resamples, whatever the jobs


def test_the_fast_psi_equals_aggregates_granulated_psi():
    """granulated_psi_all forms the groups once and computes τ-b by pairwise signs; it must give
    aggregate.granulated_psi's numbers (scipy's τ-b), ties and missing values included."""
    from experiments.analyse.aggregate import granulated_psi
    from experiments.analyse.jiang import granulated_psi_all

    models = grid(seed=6, seeds_per_config=1)
    rng = np.random.default_rng(8)
    models["a"] = models["gap"] + rng.normal(0, 1, len(models))
    models["b"] = np.round(rng.normal(size=len(models)))  # ties
    models.loc[3, "a"] = np.nan
    configs = models.groupby(AXES, as_index=False)[["a", "b", "gap"]].mean()
    fast = granulated_psi_all(configs, ["a", "b"], "gap", AXES)
    for m in ("a", "b"):
        psi, per_axis = granulated_psi(configs, m, "gap", AXES)
        assert fast[m][0] == pytest.approx(psi, nan_ok=True)
        assert fast[m][1] == pytest.approx(per_axis, nan_ok=True)


def test_the_null_floor_of_k_is_near_0_and_far_below_the_gap_itself():
    from experiments.analyse.jiang import jiang_cmi, null_k

    models = grid(seed=6, seeds_per_config=4)
    null = null_k(models, "gap", AXES, n=60, seed=1)
    assert len(null) == 60 and (null >= 0).all()
    assert np.quantile(null, 0.95) < 0.05  # knowing nothing scores about 0
    models["copy"] = models["gap"]
    assert jiang_cmi(models, "copy", "gap", AXES)[0] == pytest.approx(1.0)  # the gap itself: 1
    assert (null_k(models, "gap", AXES, n=60, seed=1) == null).all()  # seeded
