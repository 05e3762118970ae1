"""Metrics in the runner: the full group records every registered metric, settings are overridable,
and a metric that raises is recorded as failed while the run and the other metrics survive."""

import json
from pathlib import Path

import pytest

import flatness
from experiments.errors import ConfigError
from experiments.measurements import pinned
from experiments.run import main
from flatness import registry as M
from tests.conftest import TINY


def test_full_group_records_every_registered_metric(make_cfg):
    result = main(
        make_cfg(
            *TINY,
            "metrics=full",
            "metrics.pacbayes_sigma.samples=2",
            "metrics.pacbayes_mag_sigma.samples=2",
            "metrics.m_sharpness.m=32",
        )
    )
    run_dir = Path(result["run_dir"])
    assert result["metric_failures"] == {}
    bases = {M.base_metric(name, entry["settings"]) for name, entry in result["metrics"].items()}
    # every registered metric except the per-split losses, which every run records at the top level
    expected = set(flatness.REGISTRY) - {
        "train_loss",
        "test_loss",
        "train_acc",
        "test_acc",
        "train_error",
        "test_error",
        "gap",
        "gap_loss",
    }
    named = {n for n in result["metrics"]} | bases
    assert expected <= named
    assert result["metrics"]["keskar_sharpness_5e-4"]["settings"]["epsilon"] == 5e-4
    assert (run_dir / "hessian_esd.png").exists()


def test_metric_settings_are_overridable_and_checked(make_cfg, tmp_path):
    result = main(make_cfg(*TINY, "metrics.lambda_max.max_iter=3", "metrics.lambda_max.tol=1e-12"))
    lam = result["metrics"]["lambda_max"]
    assert (
        lam["settings"]["max_iter"] == 3
        and lam["extra"]["products"] == 3
        and not lam["extra"]["converged"]
    )
    with pytest.raises(ConfigError, match="metrics.lambda_max"):
        main(make_cfg(*TINY, "+metrics.lambda_max.iterations=3"))
    assert not (tmp_path / "runs" / "default" / "x").exists()


def test_a_failing_metric_is_recorded_and_the_rest_survive(make_cfg, monkeypatch):
    real = M.REGISTRY["hessian_trace"]

    def broken(obj, *, rtol=0.05, min_probes=30, max_probes=200, seed=0, subset=None):
        raise RuntimeError("injected")

    monkeypatch.setitem(M.REGISTRY, "hessian_trace", M.Metric("hessian_trace", broken, "x"))
    assert M.REGISTRY["hessian_trace"].defaults == real.defaults
    result = main(make_cfg(*TINY))
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    assert on_disk["status"] == "finished"
    assert on_disk["metric_failures"] == {"hessian_trace": "RuntimeError: injected"}
    assert on_disk["metrics"]["lambda_max"]["value"] > 0


@pytest.mark.parametrize("group", ["default", "full", "audit"])
def test_metric_groups_list_every_setting_so_any_can_be_overridden(group):
    import yaml

    entries = yaml.safe_load(
        (Path(__file__).parents[2] / "conf" / "metrics" / f"{group}.yaml").read_text()
    )
    for name, settings in entries.items():
        base = M.base_metric(name, settings)
        listed = set(settings) - {"metric"}
        defaults = M.get(base).defaults
        assert listed == set(defaults), name
        if base == name:  # a plain entry states the defaults themselves: one source, checked here,
            # but for what the suite pins (the float64 Lanczos basis of its committed numbers)
            assert settings == {**defaults, **pinned(defaults, {})}, name


def test_sharpness_is_tracked_along_training_against_the_stability_threshold(make_cfg):
    import csv
    import math

    import torch

    from experiments.data import build_dataset
    from experiments.models import build_model
    from flatness.hessian import lanczos
    from flatness.objective import Objective

    cfg = make_cfg(
        *TINY, "track_sharpness_every=2", "track_sharpness_samples=100", "epochs=4", "metrics=none"
    )
    result = main(cfg)
    run_dir = Path(result["run_dir"])
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    tracked = [int(r["epoch"]) for r in rows if not math.isnan(float(r["lambda_max"]))]
    assert tracked == [0, 2, 4]
    data = build_dataset(cfg.dataset, cfg.data_dir)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(run_dir / "final.pt", weights_only=True))
    obj = Objective(model, (data.x_train[:100], data.y_train[:100]))
    independent = lanczos(obj.flat_hvp, obj.dim, k=1, tol=1e-3, max_iter=50).eigenvalues[0]
    assert float(rows[-1]["lambda_max"]) == pytest.approx(independent, rel=1e-6)
    assert (run_dir / "sharpness.png").exists()


def test_stability_thresholds():
    from omegaconf import OmegaConf

    from experiments.optim import stability_threshold

    assert stability_threshold(OmegaConf.create({"name": "sgd"}), 0.5) == 4.0
    heavy_ball = OmegaConf.create({"name": "momentum", "momentum": 0.9, "nesterov": False})
    assert stability_threshold(heavy_ball, 0.1) == pytest.approx(38.0)
    assert stability_threshold(OmegaConf.create({"name": "adam"}), 0.1) is None


def test_the_suite_pins_the_float64_basis_and_keys_records_as_before(make_cfg):
    """The suite's λmax is the float64 basis's (flatness 0.2's numbers, bit for bit), recorded in the
    measurement's settings, under the record key it had before the setting existed."""
    result = main(make_cfg(*TINY, "metrics=none", "+metrics.lambda_max={tol: 1.0e-3}"))
    record = next((Path(result["run_dir"]) / "measurements" / "final").glob("lambda_max-*.json"))
    saved = json.loads(record.read_text())
    assert "precision" not in saved["settings"]  # the key: as before
    assert saved["measured_settings"]["precision"] == "float64"
    assert saved["extra"]["basis_dtype"] == "float64"
