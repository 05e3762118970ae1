"""``python -m experiments.runs export --tensorboard``: real tiny runs exported, and the event files
read back with TensorBoard's own reader and compared with each run's result.json, config.yaml and
history.csv."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from experiments import runs as R
from experiments.run import main as run
from experiments.store import ADDED_AT_DEFAULT, determining_config, flatten_config
from tests.conftest import CONF, TINY


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    """Runs of sweep "sweep": SGD (seed 0, the default metrics), Adam (seed 1, λmax tracked every
    epoch), one that diverged, one whose result.json is truncated, one whose final.pt is gone; and
    a run of another sweep "other"."""
    root = tmp_path_factory.mktemp("export")
    runs = root / "runs"

    def train(*overrides: str) -> Path:
        base = [f"runs_dir={runs}", f"data_dir={data_dir}", "progress=false", "name=sweep"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=base + TINY + list(overrides))
        return Path(run(cfg)["run_dir"])

    sgd = train()
    adam = train("optimizer=adam", "lr=0.01", "seed=1", "metrics=none", "track_sharpness_every=1")
    diverged = train("lr=1e6", "dataset.separation=100")
    truncated = runs / "sweep" / "aaaaaaaaaaaa"
    shutil.copytree(sgd, truncated)
    text = (truncated / "result.json").read_text()
    (truncated / "result.json").write_text(text[: len(text) // 2])
    no_weights = runs / "sweep" / "bbbbbbbbbbbb"
    shutil.copytree(adam, no_weights)
    (no_weights / "final.pt").unlink()
    shutil.copytree(sgd, runs / "other" / sgd.name)
    return {
        "runs": runs,
        "tb": root / "tb",
        "exported": [sgd, adam, no_weights],
        "diverged": diverged,
        "truncated": truncated,
    }


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def logged_hparams(acc: EventAccumulator) -> dict:
    """The run's hyperparameters as the HParams plugin reads them (its session start info)."""
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)[hp_metadata.SESSION_START_INFO_TAG]
    start = hp_metadata.parse_session_start_info_plugin_data(content)
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def f32(x: float) -> float:
    """TensorBoard keeps scalars in single precision."""
    return float(np.float32(x))


def export(sweep, capsys, *extra: str) -> str:
    args = ["export", "--runs-dir", str(sweep["runs"]), "--tensorboard", str(sweep["tb"])]
    assert R.main([*args, *extra]) == 0
    return capsys.readouterr().out


def test_every_run_is_exported_with_its_config_results_and_curves(sweep, capsys):
    out = export(sweep, capsys, "--name", "sweep")
    assert not (sweep["tb"] / "other").exists()  # --name: that sweep only
    for run_dir in sweep["exported"]:
        acc = events(sweep["tb"] / "sweep" / run_dir.name)
        result = json.loads((run_dir / "result.json").read_text())
        config = result["config"]

        # hyperparameters: exactly what the run id hashes (the nested config.yaml through the
        # store's own rule), nulls left out, lists and booleans as JSON text
        hp = logged_hparams(acc)
        nested = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        determining = flatten_config(determining_config(nested))
        # keys the hash leaves out at their old default (model.dropout 0) still set the result
        determining |= {f"{group}.{key}": value for (group, key), value in ADDED_AT_DEFAULT.items()}
        assert set(hp) == {k for k, v in determining.items() if v is not None}
        assert hp["optimizer.name"] == config["optimizer.name"]
        assert hp["lr"] == config["lr"] and hp["seed"] == config["seed"]
        assert hp["batch_size"] == 32 and hp["model.batch_norm"] == "false"
        assert hp["lr_step_milestones"] == json.dumps(config["lr_step_milestones"])
        assert "runs_dir" not in hp and "metrics.lambda_max.tol" not in hp
        # no per-run experiment summary: TensorBoard would take one run's keys for the whole view
        assert hp_metadata.EXPERIMENT_TAG not in acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)

        # results: every number of result.json at the run's last step, settings left out
        tags = set(acc.Tags()["scalars"])
        for key in ("test_error", "train_loss", "gap", "gap_loss", "steps_trained"):
            (last,) = acc.Scalars(key)
            assert last.value == f32(result[key]) and last.step == result["steps_trained"], key
        assert acc.Scalars("timings/train_s")[0].value == f32(result["timings"]["train_s"])
        for name, measured in result["metrics"].items():
            assert acc.Scalars(f"metrics/{name}/value")[0].value == f32(measured["value"])
            assert not any(t.startswith(f"metrics/{name}/settings") for t in tags)
        assert not any(t.startswith("config") for t in tags)

        # curves: one point per epoch of history.csv, over optimizer steps
        history = pd.read_csv(run_dir / "history.csv")
        for column, tag in [
            ("train_loss", "history/train_loss"),
            ("test_acc", "history/test_error"),
        ]:
            points = acc.Scalars(tag)
            assert [p.step for p in points] == history["step"].tolist()
            want = history[column] if column.endswith("loss") else 1 - history[column]
            assert [p.value for p in points] == [f32(v) for v in want]
        assert len(acc.Scalars("history/batch_loss")) == len(history) - 1  # none at epoch 0
        tracked = history["lambda_max"].notna().sum()  # λmax tracked along training, if it was
        if tracked:
            assert len(acc.Scalars("history/lambda_max")) == tracked
        else:
            assert "history/lambda_max" not in tags
    sgd, adam, _ = sweep["exported"]
    assert "metrics/lambda_max/value" in set(
        events(sweep["tb"] / "sweep" / sgd.name).Tags()["scalars"]
    )
    adam_history = pd.read_csv(adam / "history.csv")
    # tracked at the initial weights and after each of TINY's 5 epochs
    assert adam_history["lambda_max"].notna().sum() == 6
    assert len(events(sweep["tb"] / "sweep" / adam.name).Scalars("history/lambda_max")) == 6
    assert f"exported 3 runs (2 skipped) to {sweep['tb']}; view with: tensorboard --logdir" in out


def test_diverged_and_damaged_runs_are_named_and_only_unusable_ones_skipped(sweep, capsys):
    out = export(sweep, capsys, "--name", "sweep")
    assert f"skipped, diverged: {sweep['diverged']} diverged at epoch" in out
    assert f"skipped, unreadable: {sweep['truncated']}" in out
    assert not (sweep["tb"] / "sweep" / sweep["diverged"].name).exists()
    assert not (sweep["tb"] / "sweep" / sweep["truncated"].name).exists()
    # lost weights do not make result.json's numbers wrong: exported, and named
    no_weights = sweep["exported"][2]
    assert f"damaged: {no_weights} final.pt" in out and f"skipped, damaged: {no_weights}" not in out


def test_exporting_again_replaces_each_runs_events_not_appends(sweep, capsys):
    export(sweep, capsys)
    export(sweep, capsys)  # every sweep this time
    for run_dir in sweep["exported"]:
        folder = sweep["tb"] / "sweep" / run_dir.name
        assert len(list(folder.iterdir())) == 1
        steps = len(pd.read_csv(run_dir / "history.csv"))
        assert len(events(folder).Scalars("history/train_loss")) == steps
    assert (sweep["tb"] / "other" / sweep["exported"][0].name).is_dir()


def test_the_runs_directory_itself_is_refused_and_left_untouched(sweep, capsys):
    runs = sweep["runs"]
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        R.main(["export", "--runs-dir", str(runs), "--tensorboard", str(runs)])
    assert exit_.value.code == 2
    assert "not only TensorBoard event files" in capsys.readouterr().err
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before


def test_a_sweep_that_does_not_exist_is_one_line(sweep, capsys):
    with pytest.raises(SystemExit):
        R.main(["export", "--runs-dir", str(sweep["runs"]), "--name", "nope", "--tensorboard", "x"])
    assert "--name" in capsys.readouterr().err
