"""What a run writes as it trains, besides checkpoints: the columns of ``history.csv`` (per epoch)
and ``criterion.csv`` (per check of the stopping criterion), and λmax tracked along training for
the edge-of-stability plot (Cohen et al. 2021)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from experiments.data import Dataset
from experiments.store import atomic_write_text
from flatness import Objective
from flatness.curvature import lambda_max

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
    "step",
    "samples",
)
# One row per check of train_until_loss: where it happened and the loss on the criterion subset.
# criterion_loss is NaN where the check stopped early: criterion_at_least, a lower bound, then
# already exceeded train_until_loss (experiments.train._criterion_check)
CRITERION_COLUMNS = (
    "step",
    "samples",
    "epoch",
    "criterion_loss",
    "criterion_acc",
    "criterion_at_least",
)


def tracked_lambda_max(model, data: Dataset, loss_fn, s) -> float:
    """λmax of the training loss on the first ``track_sharpness_samples`` samples (Lanczos, 1e-3),
    for the edge-of-stability plot of Cohen et al. 2021."""
    n = s.track_sharpness_samples
    obj = Objective(
        model, (data.x_train[:n], data.y_train[:n]), loss_fn, batch_size=s.eval_batch_size
    )
    # Looser than lambda_max's default tolerance: one measurement per tracked epoch, for a plot; the
    # float64 basis the suite pins (experiments.measurements.PINNED), as the recorded curves had
    return float(lambda_max(obj, tol=1e-3, max_iter=50, precision="float64").value)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, float]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(path, out.getvalue())


def read_history(run_dir: Path):
    """A run's ``history.csv`` as a pandas frame, one row per epoch (empty when the run has none);
    a damaged file raises pandas' ``ValueError``."""
    import pandas as pd  # here, not at the top: training writes the history and never reads it

    path = Path(run_dir) / "history.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(HISTORY_COLUMNS))
