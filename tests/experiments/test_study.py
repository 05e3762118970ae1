"""A correlation study end to end on a tiny synthetic grid: every configuration x seed trained once
(never again), a level's lr_factor multiplying the rate another level sets, the ranking written with
the study's own axes, and malformed studies refused with one line naming the key."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from experiments import study as S
from experiments.errors import ProtocolError


def tiny(tmp_path, **changes) -> str:
    s = {
        "name": "tinystudy",
        "base": {
            "dataset": "synthetic",
            "dataset.val_split": 0.25,
            "model": "mlp",
            "epochs": None,
            "max_steps": 60,
            "train_until_loss": 0.5,
            "criterion_every_samples": 192,
            "metrics": {
                "lambda_max": {"tol": 1e-3, "max_iter": 20, "subset": 64},
                "param_norm": {},
            },
        },  # fmt: skip
        "axes": {
            "width": {"8": {"model.width": 8}, "16": {"model.width": 16}},
            "opt": {
                "sgd": {"optimizer": "sgd", "lr": 0.2},
                "slow": {"optimizer": "sgd", "lr": 0.2, "lr_factor": 0.5},
            },
            "batch": {"32": {"batch_size": 32}, "64": {"batch_size": 64}},
        },  # fmt: skip
        "seeds": [0, 1],
        "min_train_acc": 0.0,
        **changes,
    }
    path = tmp_path / "tinystudy.yaml"
    path.write_text(yaml.safe_dump(s))
    return str(path)


def test_specs_cover_the_grid_and_lr_factor_scales_the_rate(tmp_path):
    s = S.load_study(tiny(tmp_path))
    specs = S.study_specs(s)
    assert len(specs) == 2 * 2 * 2 * 2 and len({sp.arm for sp in specs}) == 8
    rates = {sp.arm.split(",")[1]: sp.lr for sp in specs}
    assert rates == {"opt=sgd": 0.2, "opt=slow": pytest.approx(0.1)}
    assert all(sp.values["name"] == "tinystudy" for sp in specs)


def test_a_study_runs_once_and_ranks_over_its_own_axes(tmp_path, capsys):
    path = tiny(tmp_path)
    args = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
            "--out", str(tmp_path / "t"), "--jobs", "1"]  # fmt: skip
    assert S.main(["run", path, *args]) == 0
    assert len(list((tmp_path / "runs" / "tinystudy").glob("*/result.json"))) == 16
    assert S.main(["run", path, *args]) == 0  # every run already done: nothing retrained
    assert S.main(["rank", path, *args, "--bootstrap", "10"]) == 0
    table = pd.read_csv(tmp_path / "t" / "study_tinystudy_ranking.csv")
    assert {"lambda_max", "param_norm", "baseline.random"} <= set(table["measure"])
    assert {"psi[width]", "psi[opt]", "psi[batch]"} <= set(table.columns)
    assert (table["models"] <= 16).all()
    dropped = pd.read_csv(tmp_path / "t" / "study_tinystudy_dropped.csv")
    assert set(dropped["axis"]) == {"width", "opt", "batch"}
    models = pd.read_csv(tmp_path / "t" / "study_tinystudy_models.csv")
    kept = int(
        dropped.groupby("axis")["runs"].sum().iloc[0]
        - dropped.groupby("axis")["dropped"].sum().iloc[0]
    )
    assert len(models) == kept and {"width", "seed", "gap", "metric.lambda_max"} <= set(models)
    described = json.loads((tmp_path / "t" / "study_tinystudy.json").read_text())
    assert described["models"] == 16 and set(described["axes"]) == {"width", "opt", "batch"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"axes": {"width": {"8": {"model.width": 8}}}}, "axes.width needs at least two levels"),
        ({"colour": 1}, "unknown key"),
        ({"axes": {"a": {"x": {"seed": 1}, "y": {"seed": 2}}}}, "seed and name"),
        ({"axes": {"a": {"x": {"lr_factor": 0}, "y": {"lr": 1}}}}, "lr_factor"),
        ({"min_train_acc": 2}, "min_train_acc"),
        ({"seeds": ["2", 3]}, "seeds must be distinct integers"),
        ({"seeds": [2.7, 3]}, "seeds must be distinct integers"),
        ({"seeds": [True, 3]}, "seeds must be distinct integers"),
        ({"seeds": [-1, 3]}, "seeds must be distinct integers"),
    ],
)
def test_malformed_studies_are_refused_naming_the_key(tmp_path, change, message):
    with pytest.raises(ProtocolError, match=message):
        S.load_study(tiny(tmp_path, **change))


def test_the_jiang_study_file_loads_and_its_corner_configurations_compose():
    from experiments.checks import check_config
    from experiments.config import RunConfig
    from experiments.plan import configure

    s = S.load_study("jiang")
    specs = S.study_specs(s)
    assert len(specs) == 64 * 2 and len(s["axes"]) == 6
    for spec in (specs[0], specs[-1]):
        rc = RunConfig.from_hydra(configure(spec, {"runs_dir": "runs"}))
        check_config(rc.values)
        assert rc.train_until_loss == 0.01 and rc.max_steps and rc.epochs is None


@pytest.mark.parametrize("flag", ["--jobs", "--bootstrap"])
def test_a_count_below_one_is_one_line_before_anything_is_written(tmp_path, capsys, flag):
    path = tiny(tmp_path)
    assert S.main(["rank", path, "--out", str(tmp_path / "t"), flag, "0"]) == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
