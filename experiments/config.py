"""The run configuration, typed: built once from Hydra's resolved config and passed around instead
of the raw config. The groups (dataset, model, optimizer, metrics, surface, transform) stay mappings,
since each builder reads its own group; everything else is a named field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.errors import ConfigError, config_error_line
from experiments.schema import check_run


@dataclass(frozen=True)
class RunConfig:
    name: str
    seed: int
    batch_size: int
    lr: float
    weight_decay: float
    epochs: int | None
    max_steps: int | None
    lr_schedule: str
    lr_step_milestones: list[float]
    lr_step_gamma: float
    lr_scaling: str
    base_batch_size: int
    train_until_loss: float | None
    criterion_every_samples: int
    criterion_samples: int | None
    drop_last: bool
    device: str
    eval_batch_size: int
    progress: bool
    data_dir: str
    runs_dir: str
    force: bool
    save_epochs: list[int]
    checkpoint_every: int
    checkpoint_seconds: float
    eval_every: int | str
    threads: int | None
    track_sharpness_every: int
    track_sharpness_samples: int
    dataset: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    metrics: dict[str, Any]
    surface: dict[str, Any]
    transform: dict[str, Any]
    init_from: str | None  # weights to start from instead of the seed's initialisation
    start_from: str | None  # a checkpoint this run passes through (experiments.continuation)
    values: dict[str, Any]  # the whole resolved config: what run ids hash and result.json records

    @classmethod
    def from_hydra(cls, cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
        """Resolve ``cfg`` and name its keys; a key the run schema does not have, a value of
        another type, a missing or unresolvable key is a ConfigError naming it. The fields are the
        schema's view (a saved config of an older run reads with the defaults of the keys added
        since); ``values`` is the config as resolved, untouched: what the run id hashes."""
        try:
            values = (
                OmegaConf.to_container(cfg, resolve=True)
                if isinstance(cfg, DictConfig)
                else dict(cfg)
            )
        except OmegaConfBaseException as exc:
            raise ConfigError(config_error_line(exc)) from None
        typed = check_run(values)
        kwargs = {f.name: typed[f.name] for f in fields(cls) if f.name != "values"}
        for group in ("metrics", "surface", "transform"):
            kwargs[group] = kwargs[group] or ({} if group == "metrics" else {"kind": "none"})
        return cls(**kwargs, values=values)

    def group(self, name: str) -> DictConfig:
        """A config group as a DictConfig, for the builders that read attributes."""
        return OmegaConf.create(getattr(self, name))

    def yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.create(self.values))

    @property
    def runs_root(self) -> Path:
        return Path(self.runs_dir) / self.name
