"""The training loop: seeded mini-batches from in-memory tensors, per-epoch checkpoints, resume.

Batches are slices of a permutation drawn from a generator seeded by (seed, epoch), and the
learning rate is a pure function of the epoch, so a run resumed from its last checkpoint replays
exactly what an uninterrupted run would have done. The last partial batch of an epoch is kept
(every sample is seen once per epoch) unless ``drop_last`` is set or it would hold one sample.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from experiments.data import Dataset
from experiments.optim import SAM, lr_factor
from experiments.store import atomic_torch_save, atomic_write_text, load_checkpoint
from flatness.evaluate import Objective, evaluate
from flatness.hessian import lanczos

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "batch_loss",
    "lambda_max",
    "seconds",
)


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float  # after batch-size scaling
    seed: int
    lr_schedule: str = "constant"
    lr_step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    lr_step_gamma: float = 0.1
    train_until_loss: float | None = None
    drop_last: bool = False
    eval_batch_size: int = 2048
    checkpoint_every: int = 1
    save_epochs: list[int] = field(default_factory=list)
    progress: bool = False
    track_sharpness_every: int = 0  # epochs between λmax measurements (0: off)
    track_sharpness_samples: int = 1000


@dataclass
class TrainOutcome:
    status: str  # "finished" or "diverged"
    stop_reason: str  # "epochs", "train_until_loss" or "diverged"
    epochs_trained: int
    history: list[dict[str, float]]
    resumed_from_epoch: int = 0
    seconds: float = 0.0


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Mini-batches per epoch. A last partial batch is kept (every sample seen once per epoch) unless
    ``drop_last``, or unless it would hold a single sample, which batch norm cannot train on."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 and not drop_last else 0)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch ``epoch``'s samples; independent of anything run before it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train(
    model: nn.Module,
    optimizer: Any,
    data: Dataset,
    settings: TrainSettings,
    run_dir: Path | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> TrainOutcome:
    """Train ``model`` in place; with ``run_dir``, checkpoint every epoch and resume from the last one."""
    s = settings
    history: list[dict[str, float]] = []
    start_epoch, stop_reason = 0, None
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt") if run_dir else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, history = checkpoint["epoch"], checkpoint["history"]
        stop_reason = checkpoint.get("stop_reason")
        log.info("resuming from epoch %d (%s)", start_epoch, run_dir / "checkpoint.pt")
    else:
        history.append(
            _evaluate_row(
                model, data, loss_fn, s, epoch=0, lr=s.lr, batch_loss=math.nan, seconds=0.0
            )
        )
        if run_dir:
            _write_history(run_dir, history)
        if s.train_until_loss is not None and history[-1]["train_loss"] <= s.train_until_loss:
            stop_reason = "train_until_loss"

    steps = steps_per_epoch(data.num_train, s.batch_size, s.drop_last)
    t0 = time.perf_counter()
    bar = tqdm(
        total=s.epochs,
        initial=start_epoch,
        desc="train",
        unit="epoch",
        disable=not s.progress,
        leave=False,
    )
    try:
        for epoch in range(start_epoch, s.epochs):
            if stop_reason is not None:
                break
            epoch_start = time.perf_counter()
            lr = s.lr * lr_factor(
                s.lr_schedule, epoch, s.epochs, s.lr_step_milestones, s.lr_step_gamma
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch_loss = _train_epoch(model, optimizer, data, s, epoch, steps, loss_fn)
            row = _evaluate_row(
                model,
                data,
                loss_fn,
                s,
                epoch=epoch + 1,
                lr=lr,
                batch_loss=batch_loss,
                seconds=time.perf_counter() - epoch_start,
            )
            history.append(row)
            if not (math.isfinite(batch_loss) and math.isfinite(row["train_loss"])):
                log.warning("loss is not finite at epoch %d: the run diverged", epoch + 1)
                if run_dir:
                    _write_history(run_dir, history)
                return TrainOutcome(
                    "diverged",
                    "diverged",
                    epoch + 1,
                    history,
                    start_epoch,
                    time.perf_counter() - t0,
                )
            if s.train_until_loss is not None and row["train_loss"] <= s.train_until_loss:
                stop_reason = "train_until_loss"
            bar.update(1)
            bar.set_postfix(
                train_loss=f"{row['train_loss']:.4f}", test_acc=f"{row['test_acc']:.3f}"
            )
            if run_dir:
                _write_history(run_dir, history)
                if epoch + 1 in s.save_epochs:
                    atomic_torch_save(
                        run_dir / "weights" / f"epoch_{epoch + 1:04d}.pt", model.state_dict()
                    )
                last = stop_reason is not None or epoch + 1 == s.epochs
                if last or (epoch + 1) % s.checkpoint_every == 0:
                    _save_checkpoint(run_dir, model, optimizer, epoch + 1, history, stop_reason)
    finally:
        bar.close()
    epochs_trained = int(history[-1]["epoch"]) if history else 0
    return TrainOutcome(
        "finished",
        stop_reason or "epochs",
        epochs_trained,
        history,
        start_epoch,
        time.perf_counter() - t0,
    )


def _train_epoch(
    model, optimizer, data: Dataset, s: TrainSettings, epoch: int, steps: int, loss_fn
) -> float:
    """One pass over a seeded permutation of the training set; returns the mean mini-batch loss."""
    model.train()
    order = torch.randperm(data.num_train, generator=epoch_generator(s.seed, epoch)).to(
        data.x_train.device
    )
    total = torch.zeros((), dtype=torch.float64, device=data.x_train.device)
    seen = 0
    for step in range(steps):
        idx = order[step * s.batch_size : (step + 1) * s.batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]

        def closure(xb=xb, yb=yb) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            return loss

        if isinstance(optimizer, SAM):
            loss = optimizer.step(closure)
        else:
            loss = closure()
            optimizer.step()
        total += loss.detach().double() * len(idx)
        seen += len(idx)
    return total.item() / max(seen, 1)  # one device sync per epoch, not per step


def _evaluate_row(
    model,
    data: Dataset,
    loss_fn,
    s: TrainSettings,
    *,
    epoch: int,
    lr: float,
    batch_loss: float,
    seconds: float,
) -> dict[str, float]:
    train = evaluate(model, data.x_train, data.y_train, loss_fn, batch_size=s.eval_batch_size)
    test = evaluate(model, data.x_test, data.y_test, loss_fn, batch_size=s.eval_batch_size)
    row = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train.loss,
        "train_acc": train.accuracy,
        "test_loss": test.loss,
        "test_acc": test.accuracy,
        "batch_loss": batch_loss,
        "lambda_max": math.nan,
        "seconds": seconds,
    }
    every = s.track_sharpness_every
    if every and epoch % every == 0 and math.isfinite(train.loss):
        row["lambda_max"] = tracked_lambda_max(model, data, loss_fn, s)
    return row


def tracked_lambda_max(model, data: Dataset, loss_fn, s: TrainSettings) -> float:
    """λmax of the training loss on the first ``track_sharpness_samples`` samples (Lanczos, 1e-3),
    for the edge-of-stability plot of Cohen et al. 2021."""
    n = s.track_sharpness_samples
    obj = Objective(
        model, data.x_train[:n], data.y_train[:n], loss_fn, batch_size=s.eval_batch_size
    )
    return float(lanczos(obj.flat_hvp, obj.dim, k=1, tol=1e-3, max_iter=50).eigenvalues[0])


def _save_checkpoint(
    run_dir: Path, model, optimizer, epoch: int, history, stop_reason: str | None
) -> None:
    atomic_torch_save(
        run_dir / "checkpoint.pt",
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "stop_reason": stop_reason,
        },
    )


def _write_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in history:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(run_dir / "history.csv", out.getvalue())
