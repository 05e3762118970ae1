"""A run's record (``result.json``) checked against the run it is read for, before any analysis
trusts it: the record must name the run (its id and seed), and every value the analysis reads must
have its type and range. A record copied from another run, edited by hand or written by a damaged
run is refused with the file and the first thing wrong, never counted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Any

STATUSES = ("finished", "diverged", "failed")
RATES = ("train_error", "test_error", "val_error", "train_acc", "test_acc", "val_acc")
LOSSES = ("train_loss", "test_loss", "val_loss", "criterion_loss")
COUNTS = ("steps_trained", "samples_seen", "num_train", "num_test", "num_val")


class RecordError(ValueError):
    """A record that does not belong to its run or holds a value of the wrong type or range."""


def _real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def problems(result: Mapping[str, Any], folder: Path, seed: int | None = None) -> list[str]:
    """What is wrong with ``result`` as the record of the run in ``folder`` (with ``seed``)."""
    found = []
    if result.get("run_id") != folder.name:
        found.append(f"it names run {result.get('run_id')!r}, not {folder.name!r} (copied?)")
    config = result.get("config")
    if not isinstance(config, Mapping):
        found.append("it has no config")
    elif seed is not None and (config.get("seed") != seed or isinstance(config.get("seed"), bool)):
        found.append(f"its seed is {config.get('seed')!r}, not {seed!r}")
    if result.get("status") not in STATUSES:
        found.append(f"status is {result.get('status')!r}, not one of {list(STATUSES)}")
    finished = result.get("status") == "finished"
    for key in RATES:
        value = result.get(key)
        if value is None and not (finished and key in ("train_error", "test_error")):
            continue
        if not (_real(value) and 0 <= value <= 1):
            found.append(f"{key} is {value!r}, not a rate in [0, 1]")
    for key in LOSSES:
        value = result.get(key)
        if value is not None and not (_real(value) and (math.isnan(value) or value >= 0)):
            found.append(f"{key} is {value!r}, not a loss >= 0")
    for key in COUNTS:
        value = result.get(key)
        is_count = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if value is not None and not is_count:
            found.append(f"{key} is {value!r}, not a count")
    gap = result.get("gap")
    if gap is not None and not (_real(gap) and -1 <= gap <= 1):
        found.append(f"gap is {gap!r}, not a difference of rates in [-1, 1]")
    for name, entry in (result.get("metrics") or {}).items():
        value = entry.get("value") if isinstance(entry, Mapping) else entry
        if isinstance(value, (bool, str)):  # a number, or a spectrum's list of them
            found.append(f"metrics.{name} is {value!r}, not a number")
    return found


def check(result: Mapping[str, Any], folder: Path, seed: int | None = None) -> None:
    """Raise RecordError naming ``folder/result.json`` and the first problem, if any."""
    if found := problems(result, folder, seed):
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RecordError(f"{folder / 'result.json'}: {found[0]}{more}")
