"""Checks at the library's door (issue 16): a model with parameters and finite weights, data that
are tensors or loaders of finite inputs, initial weights that match the model. Each error names the
argument, so that a bad input fails here and not deep inside numpy or a Lanczos iteration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flatness import batch as B


def check_model(model: Any, argument: str = "model") -> None:
    """``model`` is a module with at least one trainable parameter, every parameter finite."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{argument}: expected a torch.nn.Module (got {type(model).__name__})")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{argument}: the model has no trainable parameter")
    for name, p in params:
        if not torch.isfinite(p).all():
            raise ValueError(f"{argument}: parameter {name} holds NaN or infinity")


def check_data(data: Any, argument: str = "data") -> None:
    """``(x, y)`` tensors with finite floating inputs and as many targets as inputs (``x`` a
    tensor, a tuple or a mapping of tensors); a loader is checked batch by batch as it is read
    (:func:`flatness.batch.split`)."""
    if isinstance(data, Mapping):
        raise TypeError(
            f"{argument}: expected (x, y) tensors or a loader of (x, y) batches, got a mapping "
            "(metric settings go in metrics=...)"
        )
    if not (isinstance(data, tuple | list) and len(data) == 2):
        return  # a loader: its batches are read later
    x, y = data
    if not isinstance(y, torch.Tensor):
        if isinstance(x, torch.Tensor):
            raise TypeError(f"{argument}: expected (x, y) as tensors")
        return  # a list of two batches: a loader
    if not isinstance(x, torch.Tensor | tuple | list | Mapping):
        raise TypeError(f"{argument}: expected (x, y) as tensors")
    B.check_inputs(B.normalise(x), len(y), argument)
    for t in B.leaves(x):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{argument}: the inputs x hold NaN or infinity")


def check_init(init: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """``init`` (a state dict of initial weights) holds every trainable parameter of ``model``
    with its shape, finite; extra entries (buffers) are allowed."""
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in init:
            raise ValueError(f"init: lacks the parameter {name} (pass model.state_dict() at init)")
        value = init[name]
        if not isinstance(value, torch.Tensor) or value.shape != p.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"init: {name} has shape {shape}, the model's is {tuple(p.shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"init: {name} holds NaN or infinity")
