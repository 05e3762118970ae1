"""Dropout drawn from each layer's own seeded generator: masks reproducible from the run's seed, the
initial weights of a seed unchanged by adding dropout, the generator's state carried in the state dict
so that a crashed run resumes bit-identically, run ids unchanged for every run without dropout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments import store
from experiments.errors import ConfigError
from experiments.models import SeededDropout, build_model
from experiments.train import TrainSettings, train
from tests.conftest import killed_at_epoch
from tests.experiments.test_train import CLASSES, DIM, blobs


def model(dropout: float, seed: int = 0):
    torch.manual_seed(seed)
    cfg = OmegaConf.create({"name": "mlp", "width": 16, "depth": 2, "dropout": dropout})
    return build_model(cfg, (DIM,), CLASSES)


def test_dropout_does_not_change_a_seeds_initial_weights_and_its_masks_are_reproducible():
    plain, dropped = model(0.0), model(0.3)
    assert not any(isinstance(m, SeededDropout) for m in plain)
    assert sum(isinstance(m, SeededDropout) for m in dropped) == 2
    pairs = list(zip(plain.parameters(), dropped.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)  # dropout layers shift names, not weights
    x = torch.randn(64, DIM)
    dropped.train()
    first = dropped(x)
    again = model(0.3).train()
    torch.rand(5)  # the global generator's state does not matter
    assert torch.equal(again(x), first)
    assert not torch.equal(dropped(x), first)  # the next call draws new masks
    assert torch.equal(model(0.3).eval()(x), plain.eval()(x))  # no dropout at evaluation
    assert not torch.equal(model(0.3, seed=1).train()(x), model(0.3, seed=0).train()(x))


def test_the_rate_is_kept_in_expectation():
    layer = SeededDropout(0.25, seed=3).train()
    out = layer(torch.ones(200_000))
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.005)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)


def test_the_generator_state_travels_in_the_state_dict():
    a = model(0.3).train()
    x = torch.randn(8, DIM)
    a(x)
    state = a.state_dict()
    b = model(0.3).train()
    b.load_state_dict(state)
    assert torch.equal(a(x), b(x))


def test_a_crashed_run_with_dropout_resumes_bit_identically(tmp_path):

    data = blobs()
    settings = {"epochs": 6, "batch_size": 50, "lr": 0.1, "seed": 0, "checkpoint_every": 2}

    def go(run_dir: Path):
        m = model(0.3)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return m, train(m, opt, data, TrainSettings(**settings), run_dir)

    clean, _ = go(tmp_path / "clean")
    with killed_at_epoch(3), pytest.raises(KeyboardInterrupt):
        go(tmp_path / "killed")
    resumed, outcome = go(tmp_path / "killed")
    assert outcome.resumed_from_epoch == 2
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in clean.state_dict().items())


def test_run_ids_ignore_dropout_at_zero_and_the_rate_is_checked():
    cfg = {"seed": 0, "model": {"name": "mlp", "width": 16, "dropout": 0.0}}
    before = {"seed": 0, "model": {"name": "mlp", "width": 16}}  # a config from before the key
    assert store.run_id(cfg) == store.run_id(before)
    assert store.run_id({**cfg, "model": {**cfg["model"], "dropout": 0.1}}) != store.run_id(before)
    for bad in (1.0, -0.1, True, "half"):
        with pytest.raises(ConfigError, match="model.dropout"):
            model(bad)


def test_a_setting_the_model_does_not_have_is_one_line():
    cfg = OmegaConf.create({"name": "cnn1d", "channels": 4, "dropout": 0.2})
    with pytest.raises(ConfigError, match="model.dropout: model=cnn1d has no such setting"):
        build_model(cfg, (40,), 10)
