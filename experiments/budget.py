"""The training budget and its cadences: batches per epoch, the epochs a step budget covers, the
learning rate at a step, and when the criterion is due. Pure functions of the settings, so that a
resumed run replays exactly what an uninterrupted run would have done."""

from __future__ import annotations

import torch

from experiments.optim import lr_factor
from experiments.train_settings import TrainSettings


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Mini-batches per epoch. A last partial batch is kept (every sample seen once per epoch) unless
    ``drop_last``, or unless it would hold a single sample, which batch norm cannot train on."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 and not drop_last else 0)


def samples_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Training samples one epoch feeds the optimizer (all of them, less a dropped remainder)."""
    return min(steps_per_epoch(n, batch_size, drop_last) * batch_size, n)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch ``epoch``'s samples; independent of anything run before it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def full_epochs(
    epochs: int | None, max_steps: int | None, n: int, batch_size: int, drop_last: bool
) -> int:
    """Whole epochs the budget covers: ``epochs``, or those completed within ``max_steps``."""
    if max_steps is None:
        return epochs or 0
    whole = max_steps // steps_per_epoch(n, batch_size, drop_last)
    return whole if epochs is None else min(whole, epochs)


def epoch_budget(s: TrainSettings, steps: int) -> int:
    """Epochs the run may begin: ``epochs``, or as many as ``max_steps`` reaches into (``epochs``
    capping it when both are given)."""
    if s.max_steps is None:
        if s.epochs is None:
            raise ValueError("TrainSettings: set epochs or max_steps")
        return s.epochs
    reach = -(-s.max_steps // steps)
    return reach if s.epochs is None else min(reach, s.epochs)


def scheduled_lr(s: TrainSettings, epoch: int, step: int) -> float:
    """The learning rate during ``epoch`` or, under a ``max_steps`` budget, during optimizer step
    ``step`` (both 0-based): the schedule runs over the fraction of the budget done, so cosine ends
    at 0 and step milestones fall at their fractions of the budget however it splits into epochs."""
    done, budget = (epoch, s.epochs) if s.max_steps is None else (step, s.max_steps)
    return s.lr * lr_factor(s.lr_schedule, done, budget, s.lr_step_milestones, s.lr_step_gamma)


def check_due(samples_before: int, samples_after: int, every: int) -> bool:
    """Whether the step that took the sample count from ``samples_before`` to ``samples_after``
    reached the next multiple of ``every``. Arms whose batches all hold a divisor of ``every``
    therefore check at exactly the multiples, the same counts in each."""
    return samples_after // every > samples_before // every
