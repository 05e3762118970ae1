"""The report's pictures of minima and paths (issue 15): the verdicts step exports what the runs
recorded (experiments.exports) and the figures draw exactly that, with its data beside them, only
runs that met their criterion, each arm in one colour and marker across every figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments import exports
from experiments.report import landscape as L
from experiments.report.figures import _protocol_arms, arm_style, use_protocols
from flatness.surface import Surface
from tests.conftest import ROOT


def reached(arm, result):
    return result.get("stop_reason") == "train_until_loss"


def result(train_loss=0.01, stop="train_until_loss", **extra):
    return {"status": "finished", "stop_reason": stop, "train_loss": train_loss, **extra}


def test_every_arm_keeps_one_colour_and_marker_and_the_arms_of_a_protocol_differ_in_both():
    # the protocols as the committed tables judged them: the report styles those, never conf/
    use_protocols(json.loads((ROOT / "results" / "tables" / "protocols.json").read_text()))
    for group in _protocol_arms():
        arms = [a for a, _ in group]
        styles = [arm_style(a) for a in arms]
        assert len({c for c, _ in styles}) == len(arms), arms  # told apart by colour ...
        assert len({m for _, m in styles}) == len(arms), arms  # ... and by marker
    # an arm named in two protocols (one style by name) still differs from the other arms of both
    assert sum("momentum" in dict(group) for group in _protocol_arms()) >= 2
    # an arm that reuses another protocol's runs looks like that arm
    reused = [(a, source) for group in _protocol_arms() for a, source in group if source]
    assert reused and all(arm_style(a) == arm_style(source) for a, source in reused)


def test_the_tracked_sharpness_carries_the_stability_threshold_of_the_optimizer(tmp_path):
    """(2 + 2β)/η for heavy-ball momentum, 2/η for plain SGD (Cohen et al. 2021); untracked epochs
    and untracked runs are not rows."""
    runs = {}
    for arm, (optimizer, momentum, lr) in {
        "m": ("momentum", 0.9, 0.05),
        "s": ("sgd", 0.0, 0.2),
    }.items():
        folder = tmp_path / arm
        folder.mkdir()
        opt = f"optimizer: {{name: {optimizer}, momentum: {momentum}, nesterov: false}}\n"
        (folder / "config.yaml").write_text(opt)
        pd.DataFrame({"epoch": [0, 1, 2], "step": [0, 10, 20], "lr": [lr] * 3,
                      "train_loss": [2.3, 1.0, 0.5], "lambda_max": [1.0, np.nan, 3.0]}).to_csv(
            folder / "history.csv", index=False)  # fmt: skip
        runs[arm, 0] = (result(tracked_sharpness=True), folder)
    runs["untracked", 0] = (result(), tmp_path / "nowhere")
    frame = exports.tracked_frame(runs, reached)
    assert list(frame["epoch"]) == [0, 2, 0, 2]
    threshold = frame.groupby("arm")["threshold"].first()
    assert threshold["m"] == pytest.approx((2 + 2 * 0.9) / 0.05)
    assert threshold["s"] == pytest.approx(2 / 0.2)
    made = L.tracked_figure(frame, tmp_path / "figures", "t_tracked")
    drawn = pd.read_csv(tmp_path / "figures" / "t_tracked.csv")
    assert made == "t_tracked.png" and len(drawn) == 4
    assert drawn["run_train_loss"].tolist() == [0.01] * 4


def test_the_spectra_keep_every_vector_of_the_quadrature_even_when_lanczos_stopped_early(tmp_path):
    nodes = [[-0.1, 0.0, 2.0], [0.0, 5.0]]  # the second vector's Lanczos stopped after 2 steps
    weights = [[0.2, 0.5, 0.3], [0.6, 0.4]]
    entry = {"value": 1.0, "extra": {"nodes": nodes, "weights": weights}}
    runs = {("a", 0): (result(metrics={"hessian_esd": entry}), tmp_path),
            ("b", 0): (result(metrics={}), tmp_path)}  # fmt: skip
    frame = exports.spectra_frame(runs, reached)
    assert len(frame) == 5 and frame.groupby("vector")["weight"].sum().tolist() == [1.0, 1.0]


def test_a_density_curve_is_the_mean_over_vectors_of_weighted_gaussians():
    """Analytic: one node per vector, weight 1, gives a Gaussian of width σ at the node; two
    vectors average; the curve integrates to 1."""
    spectra = pd.DataFrame({"arm": "a", "seed": 0, "reached": True, "run_train_loss": 0.01,
                            "vector": [0, 1], "node": [1.0, 3.0], "weight": [1.0, 1.0]})  # fmt: skip
    grid = np.linspace(-5, 9, 2801)
    sigma = 0.5
    curve = L.density_curves(spectra, grid, sigma)["density"].to_numpy()
    gauss = np.exp(-0.5 * ((grid[:, None] - [1.0, 3.0]) / sigma) ** 2) / (
        sigma * np.sqrt(2 * np.pi)
    )
    assert curve == pytest.approx(gauss.mean(axis=1))
    assert np.trapezoid(curve, grid) == pytest.approx(1.0, abs=1e-6)


def test_the_spectra_figure_draws_each_panel_s_arms_and_only_runs_that_met_the_criterion(tmp_path):
    rows = []
    for arm, top in (("small", 2.0), ("large", 8.0)):
        for seed in (0, 1, 2):
            ok = not (arm == "large" and seed == 2)
            for node in (0.0, top + seed):
                rows.append({"arm": arm, "seed": seed, "reached": ok, "run_train_loss": 0.01,
                             "vector": 0, "node": node, "weight": 0.5})  # fmt: skip
    made = L.spectra_figure(pd.DataFrame(rows), [("sgd", ["small", "large"])], tmp_path, "t_esd")
    drawn = pd.read_csv(tmp_path / "t_esd.csv")
    assert made == "t_esd.png"
    assert drawn.groupby("arm")["seed"].unique().map(sorted).to_dict() == {
        "large": [0, 1], "small": [0, 1, 2]}  # fmt: skip
    assert L.spectra_figure(pd.DataFrame(rows), [("one arm", ["small"])], tmp_path, "no") is None


def test_the_pca_path_is_exported_from_the_runs_surface_and_drawn_with_its_variance(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    xs = np.linspace(-1, 1, 5)
    loss = 0.01 + xs[:, None] ** 2 + xs[None, :] ** 2
    settings = {"trajectory": [[1.0, 0.5], [0.4, -0.1], [0.0, 0.0]], "trajectory_epochs": [0, 1, 2],
                "explained_variance_ratio": [0.9, 0.07]}  # fmt: skip
    Surface([xs, xs], {"train_loss": loss, "test_loss": loss + 0.2}, settings).save(
        folder / "surface_pca"
    )
    assert json.loads((folder / "surface_pca.json").read_text())["trajectory_epochs"] == [0, 1, 2]
    pd.DataFrame({"epoch": [0, 1, 2], "step": [0, 250, 500]}).to_csv(folder / "history.csv")
    planes, paths = exports.pca_frames({("m", 3): (result(), folder)}, reached)
    assert len(planes) == 25 and paths["step"].tolist() == [0, 250, 500]
    assert paths["pc1"].tolist() == [1.0, 0.4, 0.0] and paths["pc1_variance"].iloc[0] == 0.9
    made = L.pca_figure(planes, paths, tmp_path, "t_pca")
    drawn = pd.read_csv(tmp_path / "t_pca.csv")
    assert made == "t_pca.png" and set(drawn["part"]) == {"path", "plane"}
    assert set(drawn["seed"]) == {3}


def test_the_slices_compare_the_arms_that_differ_only_in_batch_size(tmp_path):
    p = {"arms": {"small_wd0": {"batch_size": 64, "weight_decay": 0.0, "max_steps": 9},
                  "large_wd0": {"batch_size": 1600, "weight_decay": 0.0, "max_steps": 3},
                  "small_wd5e4": {"batch_size": 64, "weight_decay": 5e-4, "max_steps": 9},
                  "large_wd5e4": {"batch_size": 1600, "weight_decay": 5e-4, "max_steps": 3,
                                  "track_sharpness_every": 2}}}  # fmt: skip
    panels = L.contrast_panels(p)
    assert panels == [("weight_decay 0", ["small_wd0", "large_wd0"]),
                      ("weight_decay 0.0005", ["small_wd5e4", "large_wd5e4"])]  # fmt: skip
    xs = np.linspace(-1, 1, 5)
    rows = []
    for arm, steep in (("small_wd0", 1.0), ("large_wd0", 4.0)):
        for seed in (0, 1):
            for x in xs:
                rows.append({"arm": arm, "seed": seed, "reached": True, "run_train_loss": 0.05,
                             "x": x, "y": 0.0, "train_loss": 0.05 + steep * x**2,
                             "test_loss": 0.3 + steep * x**2})  # fmt: skip
    made = L.slices_figure(pd.DataFrame(rows), panels, tmp_path, "t_slices")
    drawn = pd.read_csv(tmp_path / "t_slices.csv")
    assert made == "t_slices.png" and set(drawn["arm"]) == {"small_wd0", "large_wd0"}
    rise = L._rise(drawn, "train_loss")
    assert rise["large_wd0"] == pytest.approx(4 * 0.25) and rise["small_wd0"] == pytest.approx(0.25)


def test_a_figure_names_each_run_it_draws(tmp_path):
    """figure_sources reads the runs off each figure's own CSV and finds their ids."""
    from experiments.report.document import figure_sources

    (tmp_path / "tables").mkdir()
    (tmp_path / "figures").mkdir()
    pd.DataFrame({"protocol": ["p", "p", "p"], "arm": ["a", "b", "a"], "seed": [0, 0, 1],
                  "run_dir": ["runs/p/aaa", "runs/p/bbb", "runs/p/ccc"],
                  "stop_reason": ["train_until_loss", "max_steps", "train_until_loss"],
                  # the rest of the runs table's declared columns (experiments.analyse.schemas)
                  "lr": 0.1, "status": "finished", "train_error": 0.0, "test_error": 0.1,
                  "steps_trained": 100}).to_csv(
        tmp_path / "tables" / "protocol_runs.csv", index=False)  # fmt: skip
    pd.DataFrame({"arm": ["a", "b"], "seed": [0, 0], "value": [1, 2]}).to_csv(
        tmp_path / "figures" / "p_fig.csv", index=False
    )
    pd.DataFrame({"model": ["a_seed1"], "alpha": [1.0]}).to_csv(
        tmp_path / "figures" / "audit_a_seed1.csv", index=False
    )
    lines = ["![x](figures/p_fig.png)", "text", "![y](figures/audit_a_seed1.png)"]
    sources = figure_sources(lines, tmp_path)
    drawn = sources[sources["figure"] == "p_fig"]
    assert drawn["run_id"].tolist() == ["aaa", "bbb"]
    assert drawn["met_criterion"].tolist() == [True, False]  # b's run used its whole budget
    # an audit figure names its model; the audited runs are the batch_size protocol's
    assert sources[sources["figure"] == "audit_a_seed1"]["source"].tolist() == [
        "protocol batch_size"
    ]
