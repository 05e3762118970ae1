"""Norm-based baselines: parameter norm, distance from initialisation, parameter count.

These are the simplest complexity measures in Jiang et al. 2020 ("Fantastic generalization measures
and where to find them"), the baselines that any flatness measure should beat.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from flatness import params as P


def param_norm(model: nn.Module) -> float:
    """Frobenius (Euclidean) norm of all trainable parameters as one vector."""
    return P.norm(P.named_params(model)).item()


def distance_from_init(model: nn.Module, init: Mapping[str, torch.Tensor]) -> float:
    """Euclidean distance ‖θ − θ₀‖ between the trainable parameters and their initial values."""
    current = P.named_params(model)
    missing = set(current) - set(init)
    if missing:
        raise KeyError(f"initial weights lack parameters {sorted(missing)[:5]}")
    init_on_device = {k: init[k].to(current[k]) for k in current}
    return P.norm(P.sub(current, init_on_device)).item()


def param_count(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return P.count(P.named_params(model))
