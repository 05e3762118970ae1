"""The runner's surface step: ``surface=1d|2d|pca`` writes the surface, its plots and its settings."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.errors import ConfigError
from experiments.run import main
from flatness.evaluate import evaluate
from flatness.surface import Surface
from tests.conftest import TINY


def test_surface_2d_is_saved_plotted_and_centred_on_the_final_weights(make_cfg):
    result = main(
        make_cfg(
            *TINY,
            "surface=2d",
            "surface.x_points=5",
            "surface.y_points=3",
            "surface.plots=[contour,heatmap]",
        )
    )
    run_dir = Path(result["run_dir"])
    entry = json.loads((run_dir / "result.json").read_text())["surface"]
    assert entry["kind"] == "2d" and entry["settings"]["normalization"] == "filter"
    assert set(entry["files"]) >= {
        "surface_2d.npz",
        "surface_2d.json",
        "surface_2d_contour.png",
        "surface_2d_heatmap.png",
    }
    surf = Surface.load(run_dir / "surface_2d")
    assert surf.values["test_loss"].shape == (5, 3)
    # the centre of the grid (0, 0) is the trained model itself
    assert surf.coords[0][2] == 0 and surf.coords[1][1] == 0
    assert surf.values["train_loss"][2, 1] == pytest.approx(result["train_loss"], rel=1e-6)


def test_surface_pca_projects_the_trajectory(make_cfg):
    result = main(make_cfg(*TINY, "surface=pca", "surface.points=4", "surface.plots=[filled]"))
    run_dir = Path(result["run_dir"])
    assert len(list((run_dir / "weights").glob("epoch_*.pt"))) == 5  # every epoch of 5
    surf = Surface.load(run_dir / "surface_pca")
    traj = np.array(surf.settings["trajectory"])
    assert traj.shape == (6, 2) and np.allclose(traj[-1], 0, atol=1e-5)  # ends at the final weights
    assert 0.5 < sum(surf.settings["explained_variance_ratio"]) <= 1 + 1e-9
    # the grid covers the trajectory
    assert (
        surf.coords[0].max() >= np.abs(traj[:, 0]).max()
        and surf.coords[1].max() >= np.abs(traj[:, 1]).max()
    )
    final = torch.load(run_dir / "final.pt", weights_only=True)
    assert set(final) and (run_dir / "surface_pca_filled.png").exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["surface=2d", "surface.points=1"], "surface.points"),
        (["surface=1d", "surface.span=[1,-1]"], "surface.span"),
        (["surface=2d", "surface.normalization=unit"], "surface.normalization"),
        (["surface=2d", "surface.plots=[pie]"], "surface.plots"),
        (["surface=1d", "surface.bn_policy=live"], "surface.bn_policy"),
    ],
)
def test_bad_surface_settings_fail_before_training(make_cfg, tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        main(make_cfg(*TINY, *overrides))
    assert not (tmp_path / "runs").exists()


def test_evaluate_reference_for_surface_centre(make_cfg):
    """The 1D surface's centre equals an independent evaluation of final.pt."""
    result = main(make_cfg(*TINY, "surface=1d", "surface.points=3"))
    run_dir = Path(result["run_dir"])
    surf = Surface.load(run_dir / "surface_1d")
    from experiments.data import build_dataset
    from experiments.models import build_model

    cfg = make_cfg(*TINY)
    data = build_dataset(cfg.dataset, cfg.data_dir)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(run_dir / "final.pt", weights_only=True))
    assert surf.values["test_loss"][1] == pytest.approx(
        evaluate(model, (data.x_test, data.y_test)).loss, rel=1e-6
    )


def test_a_failing_surface_is_recorded_and_the_run_kept(make_cfg, monkeypatch):
    import experiments.run as run

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(run, "compute_surface", broken)
    result = main(make_cfg(*TINY, "surface=1d", "surface.points=3"))
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    assert (
        on_disk["status"] == "finished"
        and on_disk["surface"]["failed"] == "RuntimeError: injected failure"
    )
