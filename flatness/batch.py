"""One batch as users hold it, and the model's call on it (issue 25).

A batch is ``(inputs, targets)``: ``inputs`` a tensor, a tuple/list of tensors (passed to the model
as positional arguments) or a mapping of tensors (passed as keyword arguments, the Hugging Face
way); ``targets`` a tensor whose length is the batch's sample count. Any other layout (a mapping
that holds its ``labels``, a triple with sample weights...) goes through a ``batch_fn`` that returns
``(inputs, targets)``; a model whose output is not the prediction tensor (a tuple, a dict, an output
object) goes through an ``output_fn`` that returns it. A layout or an output the library cannot read
raises an error naming the argument to pass, never a silently wrong number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils import _pytree as pytree

Inputs = Any  # a tensor, a tuple/list of tensors or a mapping of tensors
BatchFn = Callable[[Any], tuple[Inputs, torch.Tensor]]
OutputFn = Callable[[Any], torch.Tensor]


def leaves(inputs: Inputs) -> list[torch.Tensor]:
    """The tensors of ``inputs``."""
    return [t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]


def check_inputs(inputs: Inputs, n: int, argument: str = "data") -> None:
    """``inputs`` is a tensor, a tuple/list or a mapping of tensors, each with ``n`` rows (the
    number of targets)."""
    if isinstance(inputs, torch.Tensor):
        tensors = [("inputs", inputs)]
    elif isinstance(inputs, Mapping | list | tuple):
        items = inputs.items() if isinstance(inputs, Mapping) else enumerate(inputs)
        tensors = [(f"inputs[{k!r}]", v) for k, v in items]
        if not tensors:
            raise ValueError(f"{argument}: the inputs hold no tensor")
    else:
        raise TypeError(
            f"{argument}: the inputs are a {type(inputs).__name__}; expected a tensor, a tuple or a "
            "mapping of tensors (pass batch_fn= to turn each batch into (inputs, targets))"
        )
    for name, t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{argument}: {name} is a {type(t).__name__}, not a tensor (pass batch_fn= to "
                "turn each batch into (inputs, targets) of tensors)"
            )
        if t.dim() == 0 or len(t) != n:
            if isinstance(inputs, torch.Tensor) and t.dim() > 0:
                raise ValueError(f"{argument}: {len(t)} inputs but {n} targets (samples differ)")
            rows = "a scalar" if t.dim() == 0 else f"{len(t)} rows"
            raise ValueError(
                f"{argument}: {name} has {rows} but there are {n} targets (every input tensor "
                "needs one row per target; pass batch_fn= for another layout)"
            )


def split(batch: Any, batch_fn: BatchFn | None = None) -> tuple[Inputs, torch.Tensor]:
    """A loader's batch as ``(inputs, targets)``, through ``batch_fn`` when given."""
    if batch_fn is not None:
        out = batch_fn(batch)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise TypeError("batch_fn must return (inputs, targets)")
        inputs, targets = out
    elif isinstance(batch, list | tuple) and len(batch) == 2:
        inputs, targets = batch
    elif isinstance(batch, list | tuple) and len(batch) > 2:
        # (x, y, w), (x1, x2, y), (x, y, index): which entries are the targets and which the inputs
        # cannot be guessed, and a wrong guess would be a silently wrong number
        raise TypeError(
            f"a batch has {len(batch)} entries, not (inputs, targets): pass batch_fn= saying which "
            "are the inputs and which the targets, e.g. batch_fn=lambda b: ((b[0], b[1]), b[2]) "
            "for two inputs, or batch_fn=lambda b: (b[0], b[1]) to leave out sample weights"
        )
    elif isinstance(batch, Mapping):
        keys = ", ".join(repr(k) for k in list(batch)[:6])
        raise TypeError(
            f"a batch is a mapping ({keys}), not (inputs, targets): pass batch_fn= saying which "
            "entries are the targets, e.g. batch_fn=lambda b: ({k: v for k, v in b.items() "
            "if k != 'labels'}, b['labels'])"
        )
    else:
        raise TypeError(
            f"a batch is a {type(batch).__name__}, not (inputs, targets): pass batch_fn= that "
            "returns (inputs, targets)"
        )
    if not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"the targets of a batch are a {type(targets).__name__}, not a tensor: pass batch_fn= "
            "that returns (inputs, targets) with the targets as a tensor"
        )
    if targets.dim() == 0:
        raise ValueError("the targets of a batch are a scalar: need one target per sample")
    inputs = normalise(inputs)
    check_inputs(inputs, len(targets), "batch")
    return inputs, targets


def normalise(inputs: Inputs) -> Inputs:
    """A mapping of any kind (e.g. Hugging Face's ``BatchEncoding``) as a plain dict, which
    ``torch.utils._pytree`` knows how to walk."""
    return dict(inputs) if isinstance(inputs, Mapping) and type(inputs) is not dict else inputs


def index(inputs: Inputs, idx: slice | torch.Tensor) -> Inputs:
    """The rows ``idx`` of every tensor of ``inputs``."""
    return pytree.tree_map(lambda t: t[idx] if isinstance(t, torch.Tensor) else t, inputs)


def to(inputs: Inputs, device: torch.device | None) -> Inputs:
    """``inputs`` on ``device`` (unchanged for None, and for tensors already there)."""
    if device is None:
        return inputs
    return pytree.tree_map(
        lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t, inputs
    )


def cat(parts: Sequence[Inputs]) -> Inputs:
    """The batches ``parts`` (of one layout) as one."""
    flat = [pytree.tree_flatten(p) for p in parts]
    spec = flat[0][1]
    if any(s != spec for _, s in flat):
        raise ValueError("the batches of the data have different layouts (keys or lengths)")
    columns = zip(*(f for f, _ in flat), strict=True)
    return pytree.tree_unflatten([torch.cat(list(c)) for c in columns], spec)


def per_sample_numel(inputs: Inputs) -> int:
    """Input numbers per sample (all tensors together)."""
    return sum(t[0].numel() for t in leaves(inputs))


def call(
    model: nn.Module,
    inputs: Inputs,
    state: Any = None,
    output_fn: OutputFn | None = None,
) -> torch.Tensor:
    """The model's prediction tensor on ``inputs``: ``model(x)``, ``model(*x)`` for a tuple or
    ``model(**x)`` for a mapping, through ``functional_call`` with ``state`` (parameters and
    buffers) when given, then ``output_fn``."""
    if isinstance(inputs, Mapping):
        args, kwargs = (), dict(inputs)
    elif isinstance(inputs, list | tuple):
        args, kwargs = tuple(inputs), None
    else:
        args, kwargs = (inputs,), None
    if state is None:
        out = model(*args, **(kwargs or {}))
    else:
        out = functional_call(model, state, args, kwargs)
    if output_fn is not None:
        out = output_fn(out)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"output_fn returned a {type(out).__name__}, not a tensor")
        return out
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(f"the model returned {_describe(out)}: pass output_fn= {_hint(out)}")


def _describe(out: Any) -> str:
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)}, not a tensor"
    if isinstance(out, Mapping):
        return f"a mapping with keys {list(out)[:6]}, not a tensor"
    return f"a {type(out).__name__}, not a tensor"


def _hint(out: Any) -> str:
    """A suggested ``output_fn`` for an output that is not a tensor."""
    if isinstance(out, Mapping):
        key = "logits" if "logits" in out else next(iter(out), "logits")
        return f"that picks the predictions, e.g. output_fn=lambda out: out[{key!r}]"
    if isinstance(out, tuple | list):
        return "that picks the predictions, e.g. output_fn=lambda out: out[0]"
    if hasattr(out, "logits"):
        return "that picks the predictions, e.g. output_fn=lambda out: out.logits"
    return "that returns the predictions tensor"
