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


def select(model: nn.Module, params) -> list[str] | None:
    """The qualified names of the trainable parameters that ``params`` chooses, in the model's
    order: None (all of them: returns None), a parameter name, a submodule of ``model``, or a list
    mixing both. An unknown name, a module outside ``model`` or a choice with no trainable
    parameter is an error that lists what can be chosen."""
    if params is None:
        return None
    chosen = [params] if isinstance(params, str | nn.Module) else list(params)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    owner = {id(m): prefix for prefix, m in model.named_modules()}
    wanted: set[str] = set()
    for item in chosen:
        if isinstance(item, nn.Module):
            if id(item) not in owner:
                raise ValueError(
                    f"params: a {type(item).__name__} that is not a submodule of the model; pass "
                    "one of model.named_modules() or parameter names"
                )
            prefix = owner[id(item)]
            wanted |= {k for k in trainable if not prefix or k.startswith(prefix + ".")}
        elif isinstance(item, str):
            if item not in trainable:
                shown = ", ".join(trainable[:8]) + (", …" if len(trainable) > 8 else "")
                raise ValueError(f"params: {item!r} is not a trainable parameter ({shown})")
            wanted.add(item)
        else:
            raise TypeError(
                f"params: expected parameter names or modules (got {type(item).__name__})"
            )
    if not wanted:
        raise ValueError("params: the choice holds no trainable parameter")
    return [k for k in trainable if k in wanted]
