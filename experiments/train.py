"""The training loop: seeded mini-batches from in-memory tensors, per-epoch checkpoints, resume.

Batches are slices of a permutation drawn from a generator seeded by (seed, epoch), and the
learning rate is a pure function of the epoch (of the optimizer step, under a ``max_steps``
budget), so a run resumed from its last checkpoint replays exactly what an uninterrupted run would
have done. The last partial batch of an epoch is kept (every sample is seen once per epoch) unless
``drop_last`` is set or it would hold one sample.

Runs are compared at equal footing (Jiang et al. 2020's stopping criterion): ``train_until_loss``
is checked on a fixed subset of the training set (eval mode) at fixed counts of training samples
seen, the same in every arm, and training stops right after the step at which it is met, so the
final weights are the weights that met it. The checks go to ``criterion.csv``.
"""

from __future__ import annotations

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

from experiments.budget import (  # noqa: F401  (steps_per_epoch, full_epochs: part of train's API)
    check_due,
    epoch_budget,
    epoch_generator,
    full_epochs,
    samples_per_epoch,
    scheduled_lr,
    steps_per_epoch,
)
from experiments.criterion import BUDGET, REACHED
from experiments.data import Dataset
from experiments.history import CRITERION_COLUMNS, HISTORY_COLUMNS, tracked_lambda_max, write_csv
from experiments.optim import SAM
from experiments.store import atomic_torch_save, load_checkpoint
from experiments.train_settings import TrainSettings  # noqa: F401  (part of train's API)
from flatness import evaluate
from flatness.evaluate import Evaluation

log = logging.getLogger(__name__)

# eval_every="auto": about this many train/test evaluations over a run's epoch budget. Evaluating
# every epoch cost a fifth of a short run; the history needs a curve, not every epoch.
EVALS_PER_RUN = 20


@dataclass
class TrainOutcome:
    status: str  # "finished" or "diverged"
    stop_reason: str  # "epochs", "max_steps", "train_until_loss" or "diverged"
    epochs_trained: float  # an int, or completed epochs plus the fraction of an epoch cut short
    history: list[dict[str, float]]
    resumed_from_epoch: int = 0
    seconds: float = 0.0
    steps_trained: int = 0  # optimizer steps
    samples_seen: int = 0  # training samples over all those steps
    criterion_loss: float | None = None  # on the criterion subset at the final weights
    criterion_n: int | None = None  # size of that subset (None: no train_until_loss)
    checks: list[dict[str, float]] = field(default_factory=list)  # the rows of criterion.csv


@dataclass
class _Progress:
    """Where training stands: what a checkpoint holds to resume a run, or to skip a stopped one.
    Training stops only at epoch ends or for good, so ``epoch`` (completed epochs) and the counters
    say where to go on."""

    epoch: int = 0
    steps: int = 0
    samples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    checks: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None
    # the loss sum and samples of the steps an epoch took before training stopped in it: where a
    # run is taken up there (start_from), its epoch's mean batch loss counts them too
    partial: tuple[float, int] = (0.0, 0)


def train(
    model: nn.Module,
    optimizer: Any,
    data: Dataset,
    settings: TrainSettings,
    run_dir: Path | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    start_from: Path | None = None,
) -> TrainOutcome:
    """Train ``model`` in place; with ``run_dir``, checkpoint every ``checkpoint_every`` epochs and
    where training stops, and resume from the last checkpoint.

    Training stops after the epoch budget, after exactly ``max_steps`` optimizer steps, or right
    after the step at whose check ``train_until_loss`` is met (mid-epoch if need be); the model then
    holds the weights of that moment, and a rerun finds the run stopped.

    ``start_from``: the checkpoint where a run stopped at a *higher* training-loss criterion, every
    other setting equal (:func:`experiments.continuation.check_shortcut` checks that). Such a run
    passed through exactly the states this one passes through on its way down, so this run takes up
    from there (mid-epoch if need be) instead of training those steps again; the weights, history and
    checks come out bit-identical to training from scratch (tested). Used only when ``run_dir`` holds
    no checkpoint of its own.
    """
    s = settings
    steps = steps_per_epoch(data.num_train, s.batch_size, s.drop_last)
    total_epochs = epoch_budget(s, steps)
    criterion = s.train_until_loss is not None
    n_crit = min(s.criterion_samples or data.num_train, data.num_train)
    crit_data = (data.x_train[:n_crit], data.y_train[:n_crit])

    def check() -> None:
        if p.samples % s.criterion_every_samples and not any(
            c["samples"] % s.criterion_every_samples for c in p.checks
        ):
            log.info(
                "batches of %d do not land on multiples of criterion_every_samples=%d: the check "
                "follows the step that passes one (%d samples)",
                s.batch_size,
                s.criterion_every_samples,
                p.samples,
            )
        ev = _criterion_check(model, crit_data, loss_fn, s)
        p.checks.append(
            {
                "step": p.steps,
                "samples": p.samples,
                "epoch": _epoch_at(p.steps, steps),
                "criterion_loss": ev.loss,
                "criterion_acc": ev.accuracy,
                "criterion_at_least": ev.at_least,
            }
        )
        if run_dir:
            write_csv(run_dir / "criterion.csv", CRITERION_COLUMNS, p.checks)
        if not math.isfinite(ev.at_least):
            log.warning("criterion loss is not finite after %d steps: the run diverged", p.steps)
            p.stop_reason = "diverged"
        elif ev.loss <= s.train_until_loss:
            p.stop_reason = REACHED

    def before_step() -> None:
        _set_lr(optimizer, scheduled_lr(s, 0, p.steps))

    def after_step(batch: int) -> bool:
        p.steps += 1
        p.samples += batch
        if criterion and check_due(p.samples - batch, p.samples, s.criterion_every_samples):
            check()
        return p.stop_reason is not None

    p = _Progress()
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt", CHECKPOINT_KEYS) if run_dir else None
    if checkpoint is not None and not _resume_from(checkpoint, model, optimizer):
        log.warning(
            "%s does not fit this run's model or optimizer; starting over",
            run_dir / "checkpoint.pt",
        )
        checkpoint = None
    if checkpoint is None and start_from is not None:
        checkpoint = _shortcut(start_from, model, optimizer, s, steps)
    if checkpoint is not None:
        p = _progress_from(
            checkpoint, steps, samples_per_epoch(data.num_train, s.batch_size, s.drop_last)
        )
        log.info("resuming from epoch %d (%s)", p.epoch, run_dir / "checkpoint.pt")
        write_csv(run_dir / "history.csv", HISTORY_COLUMNS, p.history)
        if criterion:  # drop any check written after the checkpoint: it is about to be replayed
            write_csv(run_dir / "criterion.csv", CRITERION_COLUMNS, p.checks)
    else:
        p.history.append(
            _evaluate_row(
                model, data, loss_fn, s, p, epoch=0, lr=s.lr, batch_loss=math.nan, seconds=0.0
            )
        )
        if run_dir:
            write_csv(run_dir / "history.csv", HISTORY_COLUMNS, p.history)
        if criterion:
            check()
        if run_dir and p.stop_reason is not None:
            _save_checkpoint(run_dir, model, optimizer, p)
    resumed_from_epoch = p.epoch
    eval_every = _eval_cadence(s.eval_every, total_epochs)
    last_checkpoint = time.perf_counter()

    t0 = time.perf_counter()
    bar = tqdm(
        total=total_epochs,
        initial=p.epoch,
        desc="train",
        unit="epoch",
        disable=not s.progress,
        leave=False,
    )
    try:
        for epoch in range(p.epoch, total_epochs):
            if p.stop_reason is not None:
                break
            epoch_start = time.perf_counter()
            if s.max_steps is None:
                _set_lr(optimizer, scheduled_lr(s, epoch, p.steps))
            # steps of this epoch already taken: 0 except where a run taken up by start_from
            # stopped mid-epoch
            start = p.steps - epoch * steps
            left = steps - start
            budget = left if s.max_steps is None else min(left, s.max_steps - p.steps)
            carried = p.partial if start else (0.0, 0)
            loss_sum, seen, taken = _train_epoch(
                model,
                optimizer,
                data,
                s,
                epoch,
                budget,
                loss_fn,
                before_step=None if s.max_steps is None else before_step,
                after_step=after_step,
                start=start,
                carried=carried,
            )
            batch_loss = loss_sum / max(seen, 1)
            p.partial = (loss_sum, seen) if start + taken < steps else (0.0, 0)
            if start + taken == steps:
                p.epoch = epoch + 1
            ends = (
                p.stop_reason is not None
                or epoch + 1 == total_epochs
                or not math.isfinite(batch_loss)
                or (s.max_steps is not None and p.steps >= s.max_steps)
            )
            row = None
            if ends or _evaluation_due(epoch + 1, eval_every, s):
                row = _evaluate_row(
                    model,
                    data,
                    loss_fn,
                    s,
                    p,
                    epoch=_epoch_at(p.steps, steps),
                    lr=optimizer.param_groups[0]["lr"],
                    batch_loss=batch_loss,
                    seconds=time.perf_counter() - epoch_start,
                )
                p.history.append(row)
                bar.set_postfix(
                    train_loss=f"{row['train_loss']:.4f}", test_acc=f"{row['test_acc']:.3f}"
                )
            if not (
                math.isfinite(batch_loss) and (row is None or math.isfinite(row["train_loss"]))
            ):
                log.warning("loss is not finite at epoch %s: the run diverged", epoch + 1)
                p.stop_reason = "diverged"
            elif p.stop_reason is None and s.max_steps is not None and p.steps >= s.max_steps:
                p.stop_reason = BUDGET
            bar.update(1)
            if run_dir:
                if (
                    start + taken == steps
                    and p.stop_reason != "diverged"
                    and p.epoch in s.save_epochs
                ):
                    atomic_torch_save(
                        run_dir / "weights" / f"epoch_{p.epoch:04d}.pt", model.state_dict()
                    )
                last = p.stop_reason is not None or epoch + 1 == total_epochs
                waited = time.perf_counter() - last_checkpoint >= s.checkpoint_seconds
                if last or (p.epoch % s.checkpoint_every == 0 and waited):
                    # history.csv goes with the checkpoint: a resumed run rewrites it from there
                    write_csv(run_dir / "history.csv", HISTORY_COLUMNS, p.history)
                    _save_checkpoint(run_dir, model, optimizer, p)
                    last_checkpoint = time.perf_counter()
    finally:
        bar.close()
    criterion_loss = None
    if criterion:
        at_end = bool(p.checks) and p.checks[-1]["step"] == p.steps
        if at_end and math.isfinite(p.checks[-1]["criterion_loss"]):
            loss = p.checks[-1]["criterion_loss"]
        else:  # no check at the end, or one that stopped early: the loss itself is recorded
            loss = _evaluate(model, crit_data, loss_fn, s).loss
        criterion_loss = loss if math.isfinite(loss) else None
    return TrainOutcome(
        "diverged" if p.stop_reason == "diverged" else "finished",
        p.stop_reason or "epochs",
        p.history[-1]["epoch"],
        p.history,
        resumed_from_epoch,
        time.perf_counter() - t0,
        steps_trained=p.steps,
        samples_seen=p.samples,
        criterion_loss=criterion_loss,
        criterion_n=n_crit if criterion else None,
        checks=p.checks,
    )


def _eval_cadence(every: int | str, total_epochs: int) -> int:
    """Epochs between history rows: ``every``, or for ``"auto"`` about EVALS_PER_RUN rows."""
    if every == "auto":
        return max(1, math.ceil(total_epochs / EVALS_PER_RUN))
    return int(every)


def _evaluation_due(epoch: int, every: int, s: TrainSettings) -> bool:
    """Whether completed epoch ``epoch`` gets a history row: on the cadence, and wherever a row
    is read back (λmax tracking, saved weights, whose PCA path maps epochs to steps by it)."""
    track = s.track_sharpness_every
    return epoch % every == 0 or bool(track and epoch % track == 0) or epoch in s.save_epochs


def _epoch_at(steps_done: int, steps: int) -> float:
    """Epochs done after ``steps_done`` steps: an int at an epoch's end, else a fraction. Exact
    because training only ever stops mid-epoch for good."""
    whole, rest = divmod(steps_done, steps)
    return whole if rest == 0 else steps_done / steps


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _shortcut(path: Path, model, optimizer, s: TrainSettings, steps: int) -> dict[str, Any]:
    """The checkpoint of a run stopped at a higher criterion, made this run's starting point: the
    stop undone, and the history row that only the stop wrote (an evaluation off the cadence)
    dropped, since a run trained straight through would not have written it."""
    checkpoint = load_checkpoint(Path(path), CHECKPOINT_KEYS)
    if checkpoint is None or checkpoint.get("stop_reason") != REACHED:
        raise ValueError(
            f"start_from: {path} is not the checkpoint of a run stopped at its criterion"
        )
    if not _resume_from(checkpoint, model, optimizer):
        raise ValueError(f"start_from: {path} does not fit this run's model or optimizer")
    history = list(checkpoint["history"])
    every = _eval_cadence(s.eval_every, epoch_budget(s, steps))
    last = history[-1]["epoch"] if history else 0
    if history and not (float(last).is_integer() and _evaluation_due(int(last), every, s)):
        history.pop()
    return {**checkpoint, "history": history, "stop_reason": None}


def _progress_from(checkpoint: dict[str, Any], steps: int, epoch_samples: int) -> _Progress:
    epoch = checkpoint["epoch"]
    return _Progress(
        epoch=epoch,
        steps=checkpoint.get("steps", epoch * steps),
        samples=checkpoint.get("samples", epoch * epoch_samples),
        history=checkpoint["history"],
        checks=checkpoint.get("checks", []),
        stop_reason=checkpoint.get("stop_reason"),
        partial=tuple(checkpoint.get("partial", (0.0, 0))),
    )


def _train_epoch(
    model,
    optimizer,
    data: Dataset,
    s: TrainSettings,
    epoch: int,
    steps: int,
    loss_fn,
    *,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[int], bool] | None = None,
    start: int = 0,
    carried: tuple[float, int] = (0.0, 0),
) -> tuple[float, int, int]:
    """Up to ``steps`` mini-batches of a seeded permutation of the training set, from its
    ``start``-th batch on. ``after_step`` is told each step's batch size and may end the epoch there
    by returning True. Returns the sum of the mini-batch losses (each times its batch's size) and
    the samples over the epoch's steps, ``carried`` (those taken before ``start``) included, and the
    number of steps taken."""
    model.train()
    order = torch.randperm(data.num_train, generator=epoch_generator(s.seed, epoch)).to(
        data.x_train.device
    )
    total = torch.full((), carried[0], dtype=torch.float64, device=data.x_train.device)
    seen, taken = carried[1], 0
    for step in range(start, start + steps):
        if before_step is not None:
            before_step()
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
        taken += 1
        if after_step is not None and after_step(len(idx)):
            break
    return total.item(), seen, taken  # one device sync per epoch, not per step


def _evaluate(model, xy, loss_fn, s: TrainSettings) -> Evaluation:
    return evaluate(model, xy, loss_fn, batch_size=s.eval_batch_size)


@dataclass
class _Check:
    loss: float  # the criterion loss; NaN where the check stopped early
    accuracy: float | None
    at_least: float  # a lower bound on the loss: the loss itself unless the check stopped early


def _criterion_check(model, xy, loss_fn, s: TrainSettings) -> _Check:
    """The criterion loss, or NaN with a lower bound once the bound already exceeds the criterion.

    A loss of samples is never negative (cross-entropy, squared error), so the sum over the first
    chunks divided by the whole subset's size bounds the mean from below; once it passes
    ``train_until_loss`` the check cannot be met and the rest of the subset is not evaluated (a
    quarter of the MLP protocols' training was such checks). A check that runs through is
    evaluated as one pass, as before, so its value and the stopping step are bit-identical."""
    x, y = xy
    n, chunk = len(y), s.eval_batch_size
    if n > chunk:
        partial = 0.0
        for start in range(0, n - chunk, chunk):  # the last chunk never decides: the full pass does
            part = _evaluate(
                model, (x[start : start + chunk], y[start : start + chunk]), loss_fn, s
            )
            partial += part.loss * part.n
            if not math.isfinite(partial) or partial / n > s.train_until_loss:
                return _Check(math.nan, None, partial / n)
    ev = _evaluate(model, xy, loss_fn, s)
    return _Check(ev.loss, ev.accuracy, ev.loss)


def _evaluate_row(
    model,
    data: Dataset,
    loss_fn,
    s: TrainSettings,
    p: _Progress,
    *,
    epoch: float,
    lr: float,
    batch_loss: float,
    seconds: float,
) -> dict[str, float]:
    train = _evaluate(model, (data.x_train, data.y_train), loss_fn, s)
    test = _evaluate(model, (data.x_test, data.y_test), loss_fn, s)
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
        "step": p.steps,
        "samples": p.samples,
    }
    every = s.track_sharpness_every
    if every and epoch % every == 0 and math.isfinite(train.loss):
        row["lambda_max"] = tracked_lambda_max(model, data, loss_fn, s)
    return row


CHECKPOINT_KEYS = ("epoch", "steps", "samples", "model", "optimizer", "history", "checks",
                   "stop_reason")  # fmt: skip


def _resume_from(checkpoint: dict, model, optimizer) -> bool:
    """Load a checkpoint's model and optimizer state; on a mismatch put both back as they were
    and say so (False), so that a damaged checkpoint means starting over, not a traceback."""
    import copy

    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        return True
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError):
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        return False


def _save_checkpoint(run_dir: Path, model, optimizer, p: _Progress) -> None:
    atomic_torch_save(
        run_dir / "checkpoint.pt",
        {
            "epoch": p.epoch,
            "steps": p.steps,
            "samples": p.samples,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": p.history,
            "checks": p.checks,
            "stop_reason": p.stop_reason,
            "partial": list(p.partial),
        },
    )
