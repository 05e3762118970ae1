"""What a training run is told: its budget, rate, schedule, stopping criterion and cadences.

Its own module so that the budget arithmetic (:mod:`experiments.budget`) and the loop
(:mod:`experiments.train`) both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainSettings:
    epochs: int | None  # None: max_steps alone ends the run; with both, epochs is a cap
    batch_size: int
    lr: float  # after batch-size scaling
    seed: int
    lr_schedule: str = "constant"
    lr_step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    lr_step_gamma: float = 0.1
    train_until_loss: float | None = None
    criterion_every_samples: int = 4000  # check train_until_loss whenever a multiple is passed
    criterion_samples: int | None = None  # first N training samples (None: all of them)
    max_steps: int | None = None  # the budget in optimizer steps (None: epochs)
    drop_last: bool = False
    eval_batch_size: int = 2048
    checkpoint_every: int = 1
    checkpoint_seconds: float = 0.0  # and at least this long since the last one (0: by epochs only)
    eval_every: int | str = 1  # epochs between history rows; "auto": about EVALS_PER_RUN per run
    save_epochs: list[int] = field(default_factory=list)
    progress: bool = False
    track_sharpness_every: int = 0  # epochs between λmax measurements (0: off)
    track_sharpness_samples: int = 1000
