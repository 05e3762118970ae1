"""The report's study section reads only what ``study rank`` saved: on a hand-made grid whose gap is
driven by one axis, the ranking figure and its CSV hold every measure, the scatter picks the best
measures and colours each by the axis that moves it (η² of ranks, checked on exact cases), and the
sharpness dissection lists each kind at its radius."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments.analyse.correlate import rank_models
from experiments.report import study as R
from experiments.store import write_table


def grid(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for a in ("lo", "hi"):
        for b in ("x", "y"):
            for c in ("p", "q"):
                for s in range(3):
                    gap = 0.2 * (a == "hi") + 0.02 * (b == "y") + rng.normal(0, 0.005)
                    rows.append({
                        "a": a, "b": b, "c": c, "seed": s, "run_id": f"{a}{b}{c}{s}", "gap": gap,
                        "test_error": gap, "train_acc": 1.0, "train_loss": 0.01,
                        "steps_trained": 1000 + s, "reached": True,
                        "metric.good": gap + rng.normal(0, 0.001),
                        "metric.sharp_l2": float(c == "q") + rng.normal(0, 0.01),
                        "metric.noise": rng.normal(),
                    })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def saved(tmp_path):
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    tables.mkdir()
    rank_models(grid(), ["a", "b", "c"], tables, "study_t", 0.99, 20, write_table)
    metrics = {"good": {}, "noise": {},
               "sharp_l2": {"metric": "worst_case_sharpness", "rho": 0.1, "norm": "l2"}}  # fmt: skip
    study = {"name": "t", "axes": {k: {"l1": {}, "l2": {}} for k in "abc"}, "seeds": [0, 1, 2],
             "base": {"model": "mlp", "metrics": metrics, "train_until_loss": 0.01,
                      "max_steps": 5000, "dataset.num_samples": 100, "dataset.train_split": 0.8},
             "min_train_acc": 0.99, "models": 24, "missing": 0, "bootstrap": 20}  # fmt: skip
    (tables / "study_t.json").write_text(json.dumps(study))
    return tables, figures


def test_the_section_draws_what_rank_saved(saved):
    tables, figures = saved
    lines = "\n".join(R.study_lines(tables, figures, "t"))
    ranking = pd.read_csv(tables / "study_t_ranking.csv")
    drawn = pd.read_csv(figures / "study_t_ranking.csv")
    assert list(drawn["measure"]) == list(ranking["measure"])  # every measure, in K order
    assert drawn.loc[0, "measure"] == "good" and (figures / "study_t_ranking.png").exists()
    scatter = pd.read_csv(figures / "study_t_scatter.csv")
    best = [m for m in ranking["measure"] if not m.startswith("baseline.")][:3]
    assert list(dict.fromkeys(scatter["measure"])) == best
    good = scatter[scatter["measure"] == "good"]
    assert set(good["axis"]) == {"a"} and len(good) == 24  # the gap's own axis moves it
    assert set(scatter.loc[scatter["measure"] == "sharp_l2", "axis"]) == {"c"}
    models = pd.read_csv(tables / "study_t_models.csv")
    assert sorted(good["value"]) == pytest.approx(sorted(models["metric.good"]))
    (row,) = R.dissection(
        ranking, {"sharp_l2": {"metric": "worst_case_sharpness", "rho": 0.1}}
    ).to_dict("records")
    assert (row["kind"], row["adaptive"], row["norm"], row["ρ"]) == (
        "worst case",
        "plain",
        "ℓ2",
        "0.1",
    )
    assert (
        row["K(μ)"] == ranking.set_index("measure").loc["sharp_l2", "cmi"]
        and "| worst case |" in lines
    )
    assert "24 models, all ranked" in lines and "`good`" in lines


def test_signs_follow_each_measures_theory_and_the_gap_is_decomposed():
    metrics = {"pb": {"metric": "pacbayes_sigma"}}
    row = {"tau_gap_lo": -0.6, "tau_gap_hi": -0.4}
    assert R.sign_mark({"measure": "pb", **row}, metrics) == "✓"  # larger σ, flatter, smaller gap
    assert R.sign_mark({"measure": "pb.inv_sq", **row}, metrics) == "✗"  # 1/σ² must rise with it
    assert R.sign_mark({"measure": "norm", "tau_gap_lo": -0.1, "tau_gap_hi": 0.2}, {}) == "?"
    assert R.sign_mark({"measure": "baseline.steps", **row}, {}) == "–"
    d = R.gap_drivers(grid(), ["a", "b", "c"], n_test=1000)
    assert list(d["axes"])[0] == "a" and d["axes"]["a"] > 0.9 and d["between"] > d["axes"]["a"]
    assert d["axes"]["c"] < 0.05 and 0 < d["close_pairs"] < 1
    assert d["se"] == pytest.approx(
        np.sqrt(grid()["test_error"].mean() * (1 - grid()["test_error"].mean()) / 1000)
    )


def test_moving_axis_is_the_share_of_rank_variance_an_axis_explains():
    m = pd.DataFrame({"a": [0, 0, 1, 1] * 2, "b": [0, 1] * 4, "v": [1.0, 2, 3, 4, 1, 2, 3, 4]})
    axis, share = R.moving_axis(m, "v", ["a", "b"])
    # ranks 1.5, 3.5, 5.5, 7.5 (ties in pairs): a splits them 2.5 vs 6.5, b 4.5 vs 5.5
    assert axis == "a" and share == pytest.approx(16 / 20)
    m["v"] = [1.0, 1, 1, 1, 2, 2, 2, 2]  # moved by neither axis: each explains nothing
    assert R.moving_axis(m, "v", ["a", "b"]) == ("", 0.0)


def test_before_the_study_ran_the_section_says_how_to_run_it(tmp_path):
    lines = R.study_lines(tmp_path, tmp_path / "figures", "jiang")
    assert "python -m experiments.study run jiang" in "\n".join(lines)


def test_seed_agreement_is_one_for_the_gap_and_about_zero_for_noise():
    rng = np.random.default_rng(3)
    g = grid()
    two = g[g["seed"] < 2].copy()  # 8 configurations x 2 seeds
    two["metric.copy"] = two["gap"]
    two["metric.noise"] = rng.normal(size=len(two))
    measures = pd.DataFrame({"measure": ["copy", "noise"]})
    (line,) = R.seed_lines(two, measures, {}, ["a", "b", "c"])
    assert "+1.00 (`copy` highest)" in line and "8 configurations" in line
    assert "1 of the 2 measures looked at" in line  # the copy, at 1, beyond 2.5 standard errors


def test_the_sections_optional_sentences_follow_what_was_saved(saved):
    tables, figures = saved
    study = json.loads((tables / "study_t.json").read_text())
    study["notes"] = "A note of the study.  "
    study["axes"]["a"]["l1"] = {"lr_factor": 2}  # the learning rate is an axis
    (tables / "study_t.json").write_text(json.dumps(study))
    ranking = pd.read_csv(tables / "study_t_ranking.csv")
    ranking.loc[ranking["measure"] == "noise", "at_bound"] = 3
    ranking.to_csv(tables / "study_t_ranking.csv", index=False)
    without_floor = "\n".join(R.study_lines(tables, figures, "t"))
    (tables / "study_t_null.csv").unlink()
    text = "\n".join(R.study_lines(tables, figures, "t"))
    assert "`results/tables/study_t_dropped.csv`). A note of the study.\n" in text
    assert "the learning rate tied to the optimizer" not in text
    assert "3 searches did (the `at bound` column)." in text and "| at bound" in text
    assert "that is the floor" in without_floor and "random floor" in without_floor
    assert "that is the floor" not in text and "random floor" not in text
    assert text.startswith("\n## Which measure predicts generalisation?") and "{{" not in text
