"""The runner's transform step: Dinh et al.'s α-rescaling of the trained network (``transform``
config group), checked before training on the untrained network so that a model the transform cannot
keep equal is refused before any work is done."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiments.errors import ConfigError
from flatness import Rescaled, RescaleError, rescale

TRANSFORMS = ("none", "rescale")


def apply_transform(cfg: dict[str, Any], model: nn.Module, check: torch.Tensor) -> Rescaled:
    """The rescaled copy of ``model`` and how much its logits moved on ``check``."""
    try:
        return rescale(
            model,
            alpha=cfg["alpha"],
            layers=cfg["layers"],
            mode=cfg["mode"],
            spread=cfg["spread"],
            seed=cfg["seed"],
            check=check,
        )
    except RescaleError as exc:
        raise ConfigError(f"transform: {exc}") from None


def check_transform(cfg: dict[str, Any], model: nn.Module, check: torch.Tensor) -> None:
    """Refuse, before training, a transform that cannot keep this model's function equal."""
    if cfg["kind"] == "rescale":
        apply_transform(cfg, model, check[:8])
