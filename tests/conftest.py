"""Shared fixtures: configs composed through Hydra's compose API, and a shared dataset cache."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One dataset cache for the whole session (MNIST-1D is generated once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """``make_cfg(*overrides)`` → a composed config writing runs under this test's tmp_path."""

    def make(*overrides: str, runs_dir: Path | None = None):
        base = [
            f"runs_dir={runs_dir or tmp_path / 'runs'}",
            f"data_dir={data_dir}",
            "progress=false",
        ]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=base + list(overrides))

    return make


# A tiny, fast configuration for tests of the machinery (not of the science).
TINY = ["dataset=synthetic", "epochs=5", "batch_size=32", "model.width=16"]


def refusal(make_cfg, overrides: list[str]) -> str:
    """The one line a bad command line gets, where the command gets it: composing it refuses a
    value of a type the run schema does not take (``batch_size=1.5``), the run's checks the rest
    (``batch_size=0``), before any directory exists."""
    from experiments.command_line import precheck
    from experiments.errors import ConfigError
    from experiments.run import main

    said = precheck(list(overrides))
    if said is not None:
        return said
    with pytest.raises(ConfigError) as err:
        main(make_cfg(*overrides))
    return str(err.value)


@contextlib.contextmanager
def killed_at_epoch(epoch: int):
    """Training raises KeyboardInterrupt, as a kill would, when epoch ``epoch``'s evaluation starts;
    the evaluation is put back on leaving the block."""
    from experiments import train as T

    real = T._evaluate_row

    def crash(*args, **kwargs):
        if kwargs["epoch"] == epoch:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    T._evaluate_row = crash
    try:
        yield
    finally:
        T._evaluate_row = real
