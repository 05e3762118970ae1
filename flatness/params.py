"""The parameter space: named parameter dicts and the vector operations on them.

Metrics and surfaces treat a network's parameters as data — a ``dict[str, Tensor]`` fed to
``torch.func.functional_call`` — so that no measurement ever has to mutate the model it is given
(DESIGN.md, "Parameters are data"). Batch-norm running statistics are buffers, not parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

Params = dict[str, torch.Tensor]


def named_params(model: nn.Module, *, trainable_only: bool = True) -> Params:
    """Detached copies of the model's parameters, keyed by their qualified names."""
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if p.requires_grad or not trainable_only
    }


def dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Euclidean inner product of two parameter dicts with the same keys (accumulated in float64)."""
    _check_same_keys(a, b)
    return sum((a[k].double() * b[k].double()).sum() for k in a)


def norm(a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of a parameter dict seen as one flat vector."""
    return dot(a, a).sqrt()


def axpy(alpha: float, x: Mapping[str, torch.Tensor], y: Mapping[str, torch.Tensor]) -> Params:
    """Return ``alpha * x + y`` key by key (new tensors; the inputs are untouched)."""
    _check_same_keys(x, y)
    return {k: y[k] + alpha * x[k] for k in y}


def sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
    """Return ``a - b`` key by key."""
    return axpy(-1.0, b, a)


def flatten(a: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate a parameter dict into one vector (in the dict's key order)."""
    return torch.cat([t.reshape(-1) for t in a.values()])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """Split a flat vector back into a dict shaped like ``like``."""
    numel = sum(t.numel() for t in like.values())
    if vector.numel() != numel:
        raise ValueError(f"vector has {vector.numel()} entries, the parameters have {numel}")
    out, start = {}, 0
    for k, t in like.items():
        out[k] = vector[start : start + t.numel()].view_as(t)
        start += t.numel()
    return out


def count(a: Mapping[str, torch.Tensor]) -> int:
    """Number of scalar entries in a parameter dict."""
    return sum(t.numel() for t in a.values())


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may change the model, then put back its exact parameters, buffers and mode.

    Only what changed is written back, through ``.data``: a write to the tensor itself would bump
    its version counter and break the backward pass of a graph the caller built before the block
    (measuring between a caller's forward and backward must leave that backward working).
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    modes = {name: m.training for name, m in model.named_modules()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                if not torch.equal(v.data, saved[k]):
                    v.data.copy_(saved[k])
        for name, m in model.named_modules():
            m.training = modes[name]


def _check_same_keys(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))
        raise KeyError(f"parameter dicts differ in keys: {missing[:5]}")
