"""start_from stands in for training from scratch only where the two runs share every setting that
determines the weights but the criterion, and the run it starts from stopped at a higher one."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments.continuation import check_shortcut
from experiments.errors import ConfigError
from tests.conftest import TINY


def _parent(tmp_path, cfg):
    folder = tmp_path / "parent"
    folder.mkdir(parents=True)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    return folder / "checkpoint.pt"


def _values(cfg):
    return OmegaConf.to_container(cfg, resolve=True)


def test_only_a_run_of_the_same_settings_at_a_higher_criterion_stands_in(make_cfg, tmp_path):
    parent = _parent(tmp_path, make_cfg(*TINY, "train_until_loss=0.1", "checkpoint_every=2"))
    # the same settings to a lower criterion (what only says how to run it may differ)
    check_shortcut(parent, _values(make_cfg(*TINY, "train_until_loss=0.01", "progress=true")))
    with pytest.raises(ConfigError, match="differs in lr; only train_until_loss may differ"):
        check_shortcut(parent, _values(make_cfg(*TINY, "train_until_loss=0.01", "lr=0.2")))
    with pytest.raises(ConfigError, match="only for runs to a lower criterion"):
        check_shortcut(parent, _values(make_cfg(*TINY, "train_until_loss=0.1")))
    # no criterion at all: a run to its step budget passes through the parent's states (issue 26)
    check_shortcut(parent, _values(make_cfg(*TINY)))
    # but a parent trained to its budget stands in for nothing
    budget = _parent(tmp_path / "b", make_cfg(*TINY, "checkpoint_every=2"))
    with pytest.raises(ConfigError, match="stopped at train_until_loss=None"):
        check_shortcut(budget, _values(make_cfg(*TINY)))
    with pytest.raises(ConfigError, match="is not a run's checkpoint"):
        check_shortcut(tmp_path / "nowhere.pt", _values(make_cfg(*TINY, "train_until_loss=0.01")))
