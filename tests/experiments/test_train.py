"""The training loop's budget and stopping criterion: train_until_loss checked at fixed sample counts
on a fixed subset, the weights of that moment kept, an exact max_steps budget with the learning-rate
schedule following it, and bit-identical resume after a kill with the new cadence."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments.checks import check_config
from experiments.data import Dataset
from experiments.train import TrainSettings, train
from flatness.evaluate import evaluate
from tests.conftest import ROOT, TINY, killed_at_epoch, refusal

DIM, CLASSES = 10, 3


def blobs(n_train: int = 400, n_test: int = 200, seed: int = 0) -> Dataset:
    """A seeded Gaussian mixture, learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, DIM, generator=g) * 1.5

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(CLASSES, (n,), generator=g)
        return means[y] + torch.randn(n, DIM, generator=g), y

    (x_train, y_train), (x_test, y_test) = draw(n_train), draw(n_test)
    return Dataset("blobs", x_train, y_train, x_test, y_test, CLASSES)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def run(data: Dataset, run_dir: Path | None = None, optimizer: str = "sgd", **settings):
    model = mlp()
    cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = cls(model.parameters(), lr=settings.get("lr", 0.1))
    start_from = settings.pop("start_from", None)
    settings = {"epochs": 20, "batch_size": 50, "lr": 0.1, "seed": 0, **settings}
    return (
        model,
        opt,
        train(model, opt, data, TrainSettings(**settings), run_dir, start_from=start_from),
    )


def read_csv(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def test_the_criterion_is_checked_at_the_same_sample_counts_in_arms_with_different_batches():
    data = blobs()  # 400 samples: a check every 1000 falls mid-epoch (after 2.5 epochs)
    outcomes = {}
    for batch in (50, 200):
        _, _, outcomes[batch] = run(
            data, batch_size=batch, train_until_loss=1e-9, criterion_every_samples=1000
        )
    for batch, o in outcomes.items():
        assert o.stop_reason == "epochs" and o.samples_seen == 20 * 400
        assert [c["samples"] for c in o.checks] == list(range(0, 8001, 1000))
        assert [c["step"] for c in o.checks] == [s // batch for s in range(0, 8001, 1000)]
    # met: both arms stop right at a multiple of 1000 samples, mid-epoch if that is where it falls
    for batch in (50, 200):
        _, _, o = run(data, batch_size=batch, train_until_loss=0.25, criterion_every_samples=1000)
        assert o.stop_reason == "train_until_loss"
        assert o.samples_seen % 1000 == 0 and o.samples_seen == o.checks[-1]["samples"]
        assert o.steps_trained * batch == o.samples_seen
        assert o.checks[-1]["criterion_loss"] <= 0.25 < o.checks[-2]["criterion_loss"]
        assert o.criterion_loss == o.checks[-1]["criterion_loss"] and o.criterion_n == 400
        assert o.history[-1]["samples"] == o.samples_seen  # the last row is the final weights
        assert o.epochs_trained == pytest.approx(o.samples_seen / 400)
    # a batch that does not divide the cadence checks after the step that passes each multiple
    _, _, o = run(
        data, batch_size=300, epochs=6, train_until_loss=1e-9, criterion_every_samples=1000
    )
    assert [c["samples"] for c in o.checks][:3] == [0, 1100, 2000]  # steps of 300, 100, 300, ...


def test_the_saved_weights_are_the_weights_that_met_the_criterion(tmp_path):
    data = blobs()
    kw = {"batch_size": 200, "train_until_loss": 0.2, "criterion_every_samples": 1000}
    model, _, o = run(data, tmp_path, criterion_samples=100, **kw)
    assert o.stop_reason == "train_until_loss" and o.samples_seen % 400 != 0  # mid-epoch
    assert o.criterion_n == 100 and o.criterion_loss <= 0.2
    subset = (data.x_train[:100], data.y_train[:100])
    assert evaluate(model, subset).loss == o.criterion_loss
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())
    assert saved["stop_reason"] == "train_until_loss" and saved["steps"] == o.steps_trained
    rows = read_csv(tmp_path / "criterion.csv")
    assert float(rows[-1]["criterion_loss"]) == o.criterion_loss
    assert int(rows[-1]["samples"]) == o.samples_seen
    history = read_csv(tmp_path / "history.csv")
    assert int(history[-1]["samples"]) == o.samples_seen
    assert float(history[-1]["epoch"]) == o.samples_seen / 400
    # a rerun finds the run stopped: no training, the same weights and the same outcome
    again_model, _, again = run(data, tmp_path, criterion_samples=100, **kw)
    assert again.stop_reason == "train_until_loss" and again.steps_trained == o.steps_trained
    assert again.resumed_from_epoch == o.samples_seen // 400
    assert again.criterion_loss == o.criterion_loss and repr(again.history) == repr(o.history)
    assert all(torch.equal(again_model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert read_csv(tmp_path / "criterion.csv") == rows


def test_the_criterion_may_be_met_by_the_initial_weights(tmp_path):
    _, _, o = run(blobs(), tmp_path, train_until_loss=10.0)
    assert o.stop_reason == "train_until_loss" and o.steps_trained == 0 and o.epochs_trained == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["stop_reason"] is not None


def test_max_steps_stops_after_exactly_that_many_optimizer_steps():
    data = blobs()  # batch 64: 7 steps per epoch (the last of 16 samples)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    s = TrainSettings(epochs=None, max_steps=17, batch_size=64, lr=1e-2, seed=0)
    o = train(model, opt, data, s)
    assert len(calls) == 17 and o.steps_trained == 17 and o.stop_reason == "max_steps"
    assert all(int(state["step"]) == 17 for state in opt.state.values())
    assert o.samples_seen == 400 + 400 + 3 * 64 and o.epochs_trained == pytest.approx(17 / 7)
    # epochs caps max_steps when TrainSettings gets both (the config allows only one)
    _, _, capped = run(data, epochs=2, max_steps=17, batch_size=64)
    assert capped.steps_trained == 14 and capped.stop_reason == "epochs"


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_the_lr_schedule_follows_the_step_budget(schedule):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lrs = []
    opt.register_step_pre_hook(lambda o, *_: lrs.append(o.param_groups[0]["lr"]))
    s = TrainSettings(
        epochs=None, max_steps=20, batch_size=64, lr=0.1, seed=0, lr_schedule=schedule
    )
    train(model, opt, blobs(), s)
    if schedule == "cosine":
        expected = [0.05 * (1 + math.cos(math.pi * k / 20)) for k in range(20)]
    else:  # milestones at 0.5 and 0.75 of the budget: steps 10 and 15
        expected = [0.1] * 10 + [0.1 * 0.1] * 5 + [0.1 * 0.1 * 0.1] * 5
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_a_crash_after_a_mid_epoch_check_resumes_bit_identically(tmp_path):

    data = blobs()
    kw = {"batch_size": 50, "train_until_loss": 0.05, "criterion_every_samples": 300}
    clean_model, _, clean = run(data, tmp_path / "clean", **kw)
    assert clean.stop_reason == "train_until_loss" and clean.samples_seen % 400 != 0

    with killed_at_epoch(3), pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "killed", checkpoint_every=2, **kw)
    # checkpoint after epoch 2, but criterion.csv already holds the checks at 900 and 1200 samples
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert int(read_csv(tmp_path / "killed" / "criterion.csv")[-1]["samples"]) == 1200
    model, _, resumed = run(data, tmp_path / "killed", checkpoint_every=2, **kw)
    assert resumed.resumed_from_epoch == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in clean_model.state_dict().items())
    for key in ("stop_reason", "steps_trained", "samples_seen", "criterion_loss", "checks"):
        assert getattr(resumed, key) == getattr(clean, key), key
    drop = ("seconds",)
    for name in ("history.csv", "criterion.csv"):
        a = read_csv(tmp_path / "killed" / name, drop)
        assert a == read_csv(tmp_path / "clean" / name, drop), name


# 800 samples, checks every half epoch on the first 400; the criterion is met after 9.5 epochs.
KILLED_RUN = {
    "batch_size": 8,
    "epochs": 60,
    "lr": 0.01,
    "train_until_loss": 0.04,
    "criterion_every_samples": 400,
    "criterion_samples": 400,
}
TRAIN_SCRIPT = """
import sys
from pathlib import Path
from tests.experiments.test_train import KILLED_RUN, blobs, run
run(blobs(800, 200), Path(sys.argv[1]), **KILLED_RUN)
"""


def test_sigkill_then_resume_equals_an_uninterrupted_run_with_mid_epoch_checks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(killed)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        history = killed / "history.csv"
        if history.exists() and len(history.read_text().splitlines()) >= 5:  # 3 epochs done
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoint = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert checkpoint["stop_reason"] is None, "the run stopped before it could be killed"

    model, _, resumed = run(blobs(800, 200), killed, **KILLED_RUN)
    assert resumed.resumed_from_epoch >= 2 and resumed.stop_reason == "train_until_loss"
    assert resumed.samples_seen % 800 != 0  # it stopped mid-epoch, after the kill
    clean_model, _, uninterrupted = run(blobs(800, 200), clean, **KILLED_RUN)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in clean_model.state_dict().items())
    for key in ("steps_trained", "samples_seen", "criterion_loss", "checks"):
        assert getattr(resumed, key) == getattr(uninterrupted, key), key
    for name in ("history.csv", "criterion.csv"):
        assert read_csv(killed / name, ("seconds",)) == read_csv(clean / name, ("seconds",)), name


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        ("train_until_loss=nan", "train_until_loss"),
        ("train_until_loss=inf", "train_until_loss"),
        ("criterion_every_samples=nan", "criterion_every_samples"),
        ("criterion_every_samples=inf", "criterion_every_samples"),
        ("criterion_every_samples=0", "criterion_every_samples"),
        ("criterion_samples=nan", "criterion_samples"),
        ("criterion_samples=-inf", "criterion_samples"),
        ("criterion_samples=0", "criterion_samples"),
        ("max_steps=nan epochs=null", "max_steps"),
        ("max_steps=inf epochs=null", "max_steps"),
        ("max_steps=0 epochs=null", "max_steps"),
        ("max_steps=100", "epochs"),  # epochs must be null under a step budget
        ("epochs=null", "epochs"),
        ("epochs=inf", "epochs"),
    ],
)
def test_bad_budget_and_criterion_settings_are_one_line_errors(make_cfg, tmp_path, overrides, key):
    message = refusal(make_cfg, [*TINY, *overrides.split()])  # an integer key's NaN: composing
    assert message.startswith(f"{key}:") and "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_a_step_budget_with_null_epochs_is_accepted(make_cfg):
    from omegaconf import OmegaConf

    cfg = make_cfg(*TINY, "max_steps=100", "epochs=null", "criterion_samples=64")
    check_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_run_records_the_criterion_and_saves_the_weights_that_met_it(make_cfg):
    from experiments.run import main

    result = main(
        make_cfg(
            *TINY,
            "metrics=none",
            "epochs=null",
            "max_steps=2000",
            "train_until_loss=0.3",
            "dataset.separation=2",
            "criterion_every_samples=96",
            "criterion_samples=100",
        )
    )
    run_dir = Path(result["run_dir"])
    assert result["stop_reason"] == "train_until_loss" and result["criterion_n"] == 100
    assert (
        result["samples_seen"] % 96 == 0 and result["steps_trained"] * 32 == result["samples_seen"]
    )
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["criterion_loss"] == result["criterion_loss"] <= 0.3
    data = torch.load(run_dir / "final.pt", weights_only=True)
    from experiments.data import build_dataset
    from experiments.models import build_model

    cfg = make_cfg(*TINY, "dataset.separation=2")
    ds = build_dataset(cfg.dataset, cfg.data_dir)
    model = build_model(cfg.model, ds.input_shape, ds.num_classes)
    model.load_state_dict(data)
    subset = (ds.x_train[:100], ds.y_train[:100])
    assert evaluate(model, subset).loss == result["criterion_loss"]
    rows = read_csv(run_dir / "criterion.csv")
    assert [int(r["samples"]) for r in rows] == list(range(0, result["samples_seen"] + 1, 96))


def test_evaluation_cadence_writes_fewer_rows_and_never_changes_the_weights(tmp_path):
    """eval_every thins history.csv (every 4th epoch, the saved epoch 6 and the last one) and
    leaves the trained weights bit-identical to evaluating every epoch."""
    data = blobs()
    every_model, _, every = run(data, tmp_path / "every", epochs=10)
    thin_model, _, thin = run(data, tmp_path / "thin", epochs=10, eval_every=4, save_epochs=[6])
    assert [r["epoch"] for r in every.history] == list(range(11))
    assert [r["epoch"] for r in thin.history] == [0, 4, 6, 8, 10]
    for k, v in every_model.state_dict().items():
        assert torch.equal(thin_model.state_dict()[k], v), k
    rows = {r["epoch"]: r for r in every.history}
    for row in thin.history:  # the same numbers at the epochs both evaluated
        assert row["train_loss"] == rows[row["epoch"]]["train_loss"]
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "thin" / "history.csv")] == [
        0,
        4,
        6,
        8,
        10,
    ]
    auto = run(data, None, epochs=100, eval_every="auto")[2]
    assert [r["epoch"] for r in auto.history] == list(range(0, 101, 5))  # about 20 rows


def test_checkpoints_wait_checkpoint_seconds_and_a_killed_run_then_starts_over(tmp_path):
    """With checkpoint_seconds longer than the run, a kill before the end leaves no checkpoint; the
    rerun starts over and ends with the same weights as an uninterrupted run."""
    data = blobs()
    clean_model, _, _ = run(data, tmp_path / "clean", epochs=6)
    with killed_at_epoch(4), pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "killed", epochs=6, checkpoint_seconds=3600)
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()
    model, _, again = run(data, tmp_path / "killed", epochs=6, checkpoint_seconds=3600)
    assert again.resumed_from_epoch == 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in clean_model.state_dict().items())
    # the run's end is always checkpointed, whatever the cadence
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 6


def test_a_criterion_check_stops_early_only_where_it_cannot_be_met(tmp_path, monkeypatch):
    """Checks far above the criterion stop after a chunk (NaN loss, a lower bound above the
    criterion); the stopping step, the final criterion loss and the weights are bit-identical to
    those of checks that always evaluate the whole subset."""
    from experiments import train as T

    data = blobs(n_train=800)
    kw = {"batch_size": 50, "train_until_loss": 0.05, "criterion_every_samples": 400, "epochs": 60}
    model, _, chunked = run(data, tmp_path / "chunked", eval_batch_size=100, **kw)

    def whole_subset(model, xy, loss_fn, s):
        ev = T._evaluate(model, xy, loss_fn, s)
        return T._Check(ev.loss, ev.accuracy, ev.loss)

    monkeypatch.setattr(T, "_criterion_check", whole_subset)
    full_model, _, full = run(data, tmp_path / "full", eval_batch_size=100, **kw)
    assert chunked.stop_reason == full.stop_reason == "train_until_loss"
    assert chunked.steps_trained == full.steps_trained
    assert chunked.criterion_loss == full.criterion_loss
    for k, v in full_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    early = [c for c in chunked.checks if math.isnan(c["criterion_loss"])]
    assert early, "no check stopped early"
    whole = {c["step"]: c["criterion_loss"] for c in full.checks}
    for c in early:  # a true lower bound, above the criterion
        assert 0.05 < c["criterion_at_least"] <= whole[c["step"]] + 1e-12
    for c in chunked.checks:
        if not math.isnan(c["criterion_loss"]):
            assert c["criterion_loss"] == whole[c["step"]]


@pytest.mark.parametrize(
    ("optimizer", "lr", "high", "low"), [("sgd", 0.05, 0.3, 0.1), ("adam", 0.01, 0.35, 0.1)]
)
def test_a_run_taken_up_from_a_higher_criterion_equals_one_trained_straight_down(
    tmp_path, optimizer, lr, high, low
):
    """start_from: a run to a lower criterion, taken up where a run of the same settings stopped at a
    higher one (mid-epoch), gives bit for bit the weights, steps, checks and history of training
    straight down (issue 26: a second endpoint inside the same run, no training from scratch)."""
    data = blobs()
    kw = {"batch_size": 200, "criterion_every_samples": 600, "epochs": 40, "lr": lr}
    _, _, first = run(data, tmp_path / "first", optimizer, train_until_loss=high, **kw)
    assert first.stop_reason == "train_until_loss" and first.samples_seen % 400 != 0  # mid-epoch
    taken_up, _, lower = run(
        data, tmp_path / "taken_up", optimizer, train_until_loss=low,
        start_from=tmp_path / "first" / "checkpoint.pt", **kw,
    )  # fmt: skip
    straight, _, direct = run(data, tmp_path / "straight", optimizer, train_until_loss=low, **kw)
    assert direct.stop_reason == "train_until_loss" and direct.steps_trained > first.steps_trained
    assert lower.steps_trained == direct.steps_trained and lower.checks == direct.checks
    for a, b in zip(taken_up.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    drop = ("seconds",)
    assert read_csv(tmp_path / "taken_up" / "history.csv", drop) == read_csv(
        tmp_path / "straight" / "history.csv", drop
    )
    assert read_csv(tmp_path / "taken_up" / "criterion.csv") == read_csv(
        tmp_path / "straight" / "criterion.csv"
    )


def test_start_from_refuses_a_checkpoint_not_stopped_at_its_criterion(tmp_path):
    data = blobs()
    run(data, tmp_path / "budget", epochs=2)
    with pytest.raises(ValueError, match="not the checkpoint of a run stopped at its criterion"):
        run(data, tmp_path / "next", train_until_loss=0.1,
            start_from=tmp_path / "budget" / "checkpoint.pt")  # fmt: skip
