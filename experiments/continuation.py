"""A run taken up where another stopped: when ``start_from`` may stand in for training from scratch.

A run trained to training loss c₂ passes, on its way down, through every state of the run with the
same settings trained to a higher c₁ > c₂: the criterion checks read the model without changing it,
and the data order, schedule and budget depend on neither criterion. So the run to c₂ can start from
the c₁ run's checkpoint where it stopped (``experiments.train`` takes it up, mid-epoch if need be)
and come out bit-identical to training from scratch; its run id is the one training from scratch
would have, since ``start_from`` only says where to begin, not what is computed. This module checks
that the two runs do share their settings; anything else is refused with the key that differs. A run
with no criterion (trained to its step budget) passes through the states of every run of its
settings to any criterion, so it may start from any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.errors import ConfigError
from experiments.store import determining_config, flatten_config


def check_shortcut(start_from: str | Path, values: Mapping[str, Any]) -> None:
    """ConfigError unless ``start_from`` is the checkpoint of a run whose result-determining
    settings equal ``values``' (a resolved run config) except a higher ``train_until_loss`` (or
    any, where ``values`` has none: a run to its step budget)."""
    if not isinstance(values, dict):  # a DictConfig: compared as plain values
        values = OmegaConf.to_container(OmegaConf.create(dict(values)), resolve=True)
    path = Path(start_from)
    config = path.parent / "config.yaml"
    if not path.is_file() or not config.is_file():
        raise ConfigError(
            f"start_from: {path} is not a run's checkpoint (expected <run_dir>/checkpoint.pt "
            "beside its config.yaml)"
        )
    parent = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    mine_c, theirs_c = values.get("train_until_loss"), parent.get("train_until_loss")
    # a run without a criterion trains to its budget: every run of its settings to a criterion
    # passes through its states on the way (the checks read the model without changing it)
    if theirs_c is None or (mine_c is not None and not theirs_c > mine_c):
        raise ConfigError(
            f"start_from: the run at {path.parent} stopped at train_until_loss={theirs_c}; it can "
            f"stand in only for runs to a lower criterion or to the budget (this one: {mine_c})"
        )
    mine, theirs = (
        flatten_config({k: v for k, v in determining_config(c).items() if k != "train_until_loss"})
        for c in (values, parent)
    )
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        raise ConfigError(
            f"start_from: the run at {path.parent} differs in {', '.join(differ)}; only "
            "train_until_loss may differ"
        )
