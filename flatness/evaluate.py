"""The one loop over data: losses, accuracies and any per-batch sum, at one or many parameter points.

Everything in ``flatness`` that needs a quantity summed over a dataset goes through :func:`accumulate`
(or the grid engines below, which are its batched form), so that batching, the out-of-memory
fallback, the mode and float64 accumulation are decided in one place (DESIGN.md, "One loop over
data"). Data come as ``(inputs, targets)`` tensors or a loader of batches (:mod:`flatness.data`);
each batch is weighted by its number of targets, so a mean does not depend on how the data are cut
into batches. Measurements run in eval mode unless asked otherwise, entered and left through
:func:`eval_mode`; the checks of targets against the loss are :mod:`flatness.task`'s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from flatness import batch as B
from flatness import distributed
from flatness.data import Data, DataLike, as_data
from flatness.progress import bar as progress_bar
from flatness.task import accuracy_reason, batch_loss, check_targets

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
QUANTITIES = ("loss", "acc")
MODES = ("eval", "train")


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and accuracy over ``n`` samples; accuracy is None when the targets are not class
    labels, and ``accuracy_note`` says why."""

    loss: float
    accuracy: float | None
    n: int
    accuracy_note: str | None = None

    @property
    def error(self) -> float | None:
        return None if self.accuracy is None else 1.0 - self.accuracy


@contextlib.contextmanager
def eval_mode(*models: nn.Module, training: bool = False) -> Iterator[None]:
    """Run the block with every module of ``models`` in eval mode (or train mode), then put back
    each submodule's own mode, which ``model.train(was_training)`` alone would not."""
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool (got {training!r})")
    saved = [[(m, m.training) for m in model.modules()] for model in models]
    for model in models:
        model.train(training)
    try:
        yield
    finally:
        for modes in saved:
            for module, mode in modes:
                module.training = mode


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_n [logsumexp(z_n) − z_n,y_n]: the summed cross-entropy for class-index targets.

    Equal to ``F.cross_entropy(logits, target, reduction="sum")`` up to float rounding, and about 3×
    faster on the CPU for few classes, where ``log_softmax`` is measured at 265 µs against 78 µs for
    this form on 4000×10 logits (2 cores, torch 2.14.1). A surface spends up to a third of each point
    in the loss, so the evaluator uses this form whenever the loss is ``F.cross_entropy``.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):  # under autocast; the loss is not
        logits = logits.float()
    return (logits.logsumexp(dim=-1) - logits.gather(-1, target[:, None]).squeeze(-1)).sum()


def accumulate(
    data: Data,
    per_batch: Callable[[torch.Tensor, torch.Tensor], Any],
    batch_size: int,
    *,
    mean: bool = True,
    detach: bool = True,
    on_retry: Callable[[], None] | None = None,
    device: torch.device | None = None,
) -> tuple[Any, int]:
    """Σ over batches of ``per_batch(xb, yb)`` weighted by the batch's share of the samples (or
        unweighted with ``mean=False``); results may be tensors or dicts/tuples of them, detached
    unless ``detach=False`` (a sum of gradients that keep their graph).

        A batch's weight is its number of targets over the total. On out-of-memory with tensor data
        the batch is halved and the sum started again (the result is the same, only slower);
        ``on_retry`` lets the caller drop caches. Batches are moved to ``device`` when given.
        Returns the sum and the batch size that worked.
    """
    n = len(data)
    while True:
        try:
            total = None
            for xb, yb in data.batches(batch_size, device):
                weight = len(yb) / n if mean else 1.0
                total = _weighted_sum(total, per_batch(xb, yb), weight, detach)
            # sharded data (flatness.distributed): the whole data's sum or mean, on every rank
            return (distributed.combine(total, n, mean) if detach else total), batch_size
        except torch.OutOfMemoryError:
            if batch_size == 1 or not data.is_tensors:
                raise
            batch_size = max(1, batch_size // 2)
            if on_retry is not None:
                on_retry()
            if data.device.type == "cuda":
                torch.cuda.empty_cache()


def _batch_stats(out: torch.Tensor, yb: torch.Tensor, loss_fn: LossFn):
    """Summed loss (float64), the number of correct predictions (None where accuracy does not
    apply) and the reason it does not."""
    reason = accuracy_reason(out, yb)
    if loss_fn is F.cross_entropy and reason is None:
        check_targets(out, yb, loss_fn)
        loss = cross_entropy_sum(out, yb).double()
    else:
        loss = batch_loss(loss_fn, out, yb).double() * len(yb)
    correct = (out.argmax(dim=-1) == yb).sum() if reason is None else None
    return loss, correct, reason


def model_device(model: nn.Module) -> torch.device | None:
    """Where the model's parameters are (None for a model without any)."""
    first = next(iter(model.parameters()), None)
    return None if first is None else first.device


def check_mode(mode: str) -> bool:
    """Whether ``mode`` (one of :data:`MODES`) is training mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'eval' or 'train' (got {mode!r})")
    return mode == "train"


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataLike,
    loss_fn: LossFn = F.cross_entropy,
    *,
    batch_size: int = 2048,
    params: Mapping[str, torch.Tensor] | None = None,
    mode: str = "eval",
    train_mode: bool = False,
    batch_fn: B.BatchFn | None = None,
    output_fn: B.OutputFn | None = None,
) -> Evaluation:
    """Mean of ``loss_fn`` (which must return a batch mean) and accuracy of ``model`` over ``data``.

    ``params`` evaluates the model at other parameter values through ``functional_call`` without
    touching its own. ``mode="eval"`` (default) runs every module in eval mode; ``mode="train"``
    (or the older ``train_mode=True``) in training mode: batch norm normalises by each batch's own
    statistics, and its running statistics are left as they were; dropout draws from torch's
    global generator (seed it for a repeatable number). ``batch_fn`` and ``output_fn`` read other
    batch layouts and model outputs (:mod:`flatness.batch`).
    """
    training = check_mode(mode) or train_mode
    data = as_data(data, batch_fn=batch_fn, output_fn=output_fn)
    if training:  # the model's own running statistics must not move: the forward sees copies
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        params = {**buffers, **(params or {})}
    with eval_mode(model, training=training):
        return evaluate_as_is(model, data, loss_fn, batch_size=batch_size, params=params)


@torch.no_grad()
def evaluate_as_is(
    model: nn.Module,
    data: DataLike,
    loss_fn: LossFn = F.cross_entropy,
    *,
    batch_size: int = 2048,
    params: Mapping[str, torch.Tensor] | None = None,
    batch_fn: B.BatchFn | None = None,
    output_fn: B.OutputFn | None = None,
) -> Evaluation:
    """:func:`evaluate` in whatever mode the model is in already.

    For hot loops (a surface evaluates thousands of points) that set the mode once: switching modes
    walks every submodule, which for a small MLP costs about a tenth of a forward pass.
    """
    data = as_data(data, batch_fn=batch_fn, output_fn=output_fn)
    counts: dict[str, Any] = {"correct": 0, "reason": None}

    def per_batch(xb, yb):
        out = data.call(model, xb, None if params is None else dict(params))
        loss, correct, reason = _batch_stats(out, yb, loss_fn)
        if correct is None:
            counts["reason"] = counts["reason"] or reason
        else:
            counts["correct"] += correct
        return loss

    total, _ = accumulate(data, per_batch, batch_size, mean=False, device=model_device(model))
    n = distributed.count(len(data))
    reason = counts["reason"]
    correct = distributed.combine(torch.as_tensor(counts["correct"]), len(data), mean=False)
    accuracy = int(correct) / n if reason is None else None
    return Evaluation(loss=total.item() / n, accuracy=accuracy, n=n, accuracy_note=reason)


# --- many parameter points: the grid engines of flatness.surface ---------------------------------


def evaluate_points_loop(
    model: nn.Module,
    theta: Mapping[str, torch.Tensor],
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: np.ndarray,
    splits: Mapping[str, Data],
    loss_fn: LossFn,
    batch_size: int,
    *,
    bn_data: Data | None = None,
    progress: bool | str = False,
) -> dict[str, np.ndarray]:
    """Loss and accuracy at θ + Σ_k coords[n, k]·directions[k], one point at a time.

    Each point's weights are written into the model in place (the caller restores it): on the CPU
    this is measurably faster than ``functional_call`` with a fresh dict per point. With
    ``bn_data``, batch-norm statistics are re-estimated at every point.
    """
    values = {f"{s}_{q}": np.empty(len(coords)) for s in splits for q in QUANTITIES}
    model.eval()  # once for the whole grid; the caller restores the mode
    # .data: writes that do not bump the parameters' version counters, so that an autograd graph
    # the caller holds stays usable once the weights are restored
    targets = {k: p.data for k, p in model.named_parameters() if k in theta}
    dest, start = list(targets.values()), [theta[k] for k in targets]
    dir_lists = [[d[k] for k in targets] for d in directions]
    for n, c in enumerate(progress_bar(progress, iterable=coords, desc="surface", unit="pt")):
        with torch.no_grad():  # one fused call per term instead of one small op per tensor
            torch._foreach_copy_(dest, start)
            for coef, d in zip(c, dir_lists, strict=True):
                torch._foreach_add_(dest, d, alpha=float(coef))
        if bn_data is not None:
            recompute_bn_statistics(model, bn_data, batch_size)  # leaves the model in eval mode
        for s, data in splits.items():
            e = evaluate_as_is(model, data, loss_fn, batch_size=batch_size)
            values[f"{s}_loss"][n] = e.loss
            values[f"{s}_acc"][n] = math.nan if e.accuracy is None else e.accuracy
    return values


def evaluate_points_vmap(
    model: nn.Module,
    theta: Mapping[str, torch.Tensor],
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: np.ndarray,
    splits: Mapping[str, Data],
    loss_fn: LossFn,
    batch_size: int,
    *,
    chunk_size: int | None = None,
    progress: bool | str = False,
) -> tuple[dict[str, np.ndarray], int]:
    """The same as :func:`evaluate_points_loop` with chunks of points in one ``vmap``-ed forward,
    halving the chunk on out-of-memory. Returns the values and the chunk size that worked."""
    model.eval()
    names = list(theta)
    d_stack = [torch.stack([d[k] for d in directions]) for k in names]  # (K, *shape) per parameter

    def point_stats(flat_params, xb, yb, data):
        out = data.call(model, xb, dict(zip(names, flat_params, strict=True)))
        loss, correct, _ = _batch_stats(out, yb, loss_fn)
        return loss, correct if correct is not None else torch.zeros((), dtype=torch.int64)

    def batched(data):
        return vmap(lambda p, xb, yb: point_stats(p, xb, yb, data), in_dims=(0, None, None))

    chunk = chunk_size or _default_chunk(theta, splits, batch_size)
    values = {f"{s}_{q}": np.empty(len(coords)) for s in splits for q in QUANTITIES}
    dtype = next(iter(theta.values())).dtype
    device = next(iter(theta.values())).device
    bar = progress_bar(progress, total=len(coords), desc="surface", unit="pt")
    start = 0
    while start < len(coords):
        c = torch.as_tensor(coords[start : start + chunk], dtype=dtype, device=device)
        try:
            stacked = [
                theta[k][None] + torch.tensordot(c, d_stack[i], dims=([1], [0]))
                for i, k in enumerate(names)
            ]
            with torch.no_grad():
                for s, data in splits.items():
                    fn = batched(data)
                    (loss, correct), _ = accumulate(
                        data,
                        lambda xb, yb, p=stacked, f=fn: f(p, xb, yb),
                        batch_size,
                        mean=False,
                        device=device,
                    )
                    n = len(data)
                    values[f"{s}_loss"][start : start + len(c)] = (loss / n).cpu().numpy()
                    values[f"{s}_acc"][start : start + len(c)] = (
                        (correct.double() / n).cpu().numpy()
                    )
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)  # halve and retry the same points
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        start += len(c)
        bar.update(len(c))
    bar.close()
    return values, chunk


def _default_chunk(theta: Mapping[str, torch.Tensor], splits: Mapping[str, Data], batch_size: int):
    """Grid points per batched forward: what fits in half the free accelerator memory, at most 1024."""
    device = next(iter(theta.values())).device
    if device.type != "cuda":
        return 64
    free, _ = torch.cuda.mem_get_info(device)
    param_bytes = sum(t.numel() * t.element_size() for t in theta.values())
    data = next(iter(splits.values()))
    features = data.sample_numel()
    # Per point: its weights, plus a generous guess at activations (10 floats per input feature).
    act_bytes = min(batch_size, len(data)) * features * 4 * 10
    return int(max(1, min(1024, 0.5 * free // (param_bytes + act_bytes))))


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, data: DataLike, batch_size: int = 4096) -> None:
    """Re-estimate every batch-norm layer's running statistics as the exact average over the
    inputs of ``data`` (tensors ``x`` alone are accepted too). Leaves the model in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    if isinstance(data, torch.Tensor):
        data = Data(data, torch.zeros(len(data)))
    data = as_data(data)
    saved_momentum = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the mean over all batches seen
    model.train()
    try:
        accumulate(
            data,
            lambda xb, _: data.call(model, xb).sum(),
            batch_size,
            mean=False,
            device=model_device(model),
        )
    finally:
        model.eval()
        for m, mom in zip(bns, saved_momentum, strict=True):
            m.momentum = mom


def _weighted_sum(total: Any, part: Any, weight: float, detach: bool = True) -> Any:
    """``total + weight * part`` for a tensor, or a dict or tuple of them (``total`` may be None)."""
    if isinstance(part, dict):
        return {
            k: _weighted_sum(None if total is None else total[k], v, weight, detach)
            for k, v in part.items()
        }
    if isinstance(part, tuple):
        return tuple(
            _weighted_sum(None if total is None else t, p, weight, detach)
            for t, p in zip(total or [None] * len(part), part, strict=True)
        )
    part = part.detach() if detach else part
    scaled = part * weight if weight != 1.0 else part
    return scaled if total is None else total + scaled
