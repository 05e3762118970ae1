"""The runner's measurement step: what a run measures on its weights, kept as records.

A run directory is identified by what determines its trained weights; each measurement is a record
inside it, ``measurements/<weights>/<metric>-<hash of its settings>.json``, keyed by the metric, its
settings and which saved weights it measured (``final``, or ``transformed-<hash>``). Asking for a
measurement that exists reuses it; asking for a new one adds a record and trains nothing. A failing
metric is recorded too (with its error, in result.json's ``metric_failures``); delete its record to
try it again. ``python -m experiments.measure`` (:mod:`experiments.measure`) measures finished runs
again through the runner.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import flatness
from experiments.data import Dataset
from experiments.optim import stability_threshold
from experiments.store import atomic_write_json, digest

log = logging.getLogger(__name__)

# The numbers every run records, measured before the requested metrics; the one definition.
CORE = (
    "train_loss",
    "train_acc",
    "train_error",
    "test_loss",
    "test_acc",
    "test_error",
    "gap",
    "gap_loss",
)


def settings_hash(settings: dict[str, Any]) -> str:
    return digest(settings, 10)


class Records:
    """The measurement records of one run directory for one set of weights."""

    def __init__(self, run_dir: Path, weights: str = "final"):
        self.folder = Path(run_dir) / "measurements" / weights
        self.weights = weights

    def path(self, name: str, settings: dict[str, Any]) -> Path:
        return self.folder / f"{name}-{settings_hash(settings)}.json"

    def load(self, name: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        path = self.path(name, settings)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("measurement record %s is unreadable (%s); measuring again", path, exc)
            return None
        return record if record.get("settings") == settings else None

    def save(self, name: str, settings: dict[str, Any], entry: dict[str, Any]) -> None:
        record = {"name": name, "weights": self.weights, **entry, "settings": settings}
        atomic_write_json(self.path(name, settings), record)

    def latest(self) -> dict[str, dict[str, Any]]:
        """Every recorded metric by name; of two records of one name, the newer."""
        out: dict[str, tuple[int, dict]] = {}
        for path in self.folder.glob("*.json"):
            if path.name.startswith("surface-"):
                continue
            try:
                record, stamp = json.loads(path.read_text()), path.stat().st_mtime_ns
            except (OSError, ValueError):
                continue
            name = record.get("name")
            if name and (name not in out or stamp > out[name][0]):
                out[name] = (stamp, record)
        return {name: record for name, (_, record) in out.items()}

    def has_all(self, requested: dict[str, Any]) -> bool:
        """Whether every requested metric is recorded with its settings."""
        return all(
            self.load(name, record_key(name, requested, settings)) is not None
            for name, settings in flatness.validate(requested).items()
        )


# Settings a measure gained after records of it existed, at the value that reproduces what those
# records measured: left out of a record's key at that value, so that the records stay valid (as
# store.ADDED_AT_DEFAULT does for run ids), while any other value makes a new record.
ADDED_SETTINGS = {
    "average_sharpness": {"norm": "l2"},
    # flatness 0.3's Lanczos settings, at what flatness 0.2 did (the suite pins it: PINNED)
    "lambda_max": {"precision": "float64"},
    "minibatch_lambda_max": {"precision": "float64"},
    "hessian_top_k": {"precision": "float64"},
    "hessian_esd": {"precision": "float64", "memory": 2.0},
}
# The suite measures with the float64 Lanczos basis unless a request says otherwise: the numbers
# its committed records hold, bit for bit (the library's default basis is the parameters' dtype,
# float32 here, which moves λmax in its 7th digit). Recorded in each measurement's settings.
PINNED = {"precision": "float64"}


def pinned(resolved: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """``asked`` (a metric's request) with the suite's pinned settings it takes and does not set."""
    return {**{k: v for k, v in PINNED.items() if k in resolved and k not in asked}, **asked}


def record_key(name: str, requested: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """What identifies a measurement: the registered metric behind ``name`` and every setting."""
    metric = (requested.get(name) or {}).get("metric", name)
    added = ADDED_SETTINGS.get(metric, {})
    kept = {k: v for k, v in resolved.items() if k not in added or v != added[k]}
    return {**kept, "metric": metric}


def _entry(m: flatness.Measurement, seconds: float) -> dict[str, Any]:
    return {
        "value": m.value,
        "error_bound": m.error_bound,
        "measured_settings": m.settings,
        "extra": m.extra,
        "failure": m.failure,
        "seconds": seconds,
    }


def _result_entry(record: dict[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in record["settings"].items() if k != "metric"}
    measured = record.get("measured_settings") or {}
    settings.update({k: measured[k] for k in PINNED if k in measured})  # keyed without, ran with
    return {
        "value": record["value"],
        "settings": settings,
        "error_bound": record.get("error_bound"),
        "extra": record.get("extra", {}),
    }


def measure_model(
    model: nn.Module,
    data: Dataset,
    init: dict[str, torch.Tensor],
    requested: dict[str, Any],
    batch_size: int,
    records: Records | None = None,
) -> dict[str, Any]:
    """The core numbers, plus ``metrics`` and ``metric_failures`` for the requested ones; with
    ``records``, existing measurements are reused and new ones saved one by one (so a kill loses at
    most the metric in progress), and ``metrics`` also holds every other metric recorded earlier, so
    that a narrower request never hides what a wider one measured. The seconds each measurement took
    are in ``metric_seconds``."""
    train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)
    resolved = flatness.validate(requested)
    # Requested settings as given (with `metric:` kept) identify a record; resolved ones fill it.
    core = flatness.measure(model, train, test, metrics=CORE, batch_size=batch_size)
    out: dict[str, Any] = {k: core[k].value for k in CORE}
    out["metrics"], out["metric_failures"], out["metric_seconds"] = {}, {}, {}
    if records:
        for name, record in sorted(records.latest().items()):
            if name not in resolved and not record.get("failure"):
                out["metrics"][name] = _result_entry(record)
    for name, settings in resolved.items():
        asked = pinned(settings, requested.get(name) or {})
        settings = {**settings, **asked}
        key = record_key(name, requested, settings)
        record = records.load(name, key) if records else None
        if record is None:
            t0 = time.perf_counter()
            result = flatness.measure(
                model,
                train,
                test,
                metrics={name: asked},
                init=init,
                batch_size=batch_size,
                on_error="record",
            )[name]
            record = {"settings": key, **_entry(result, time.perf_counter() - t0)}
            if records:
                records.save(name, key, record)
        if record.get("failure"):  # a metric's failure must not lose the trained run
            log.warning("metric %s failed: %s", name, record["failure"])
            out["metric_failures"][name] = record["failure"]
            continue
        out["metrics"][name] = _result_entry(record)
        out["metric_seconds"][name] = record.get("seconds")
    out["metrics"] = dict(sorted(out["metrics"].items()))
    return out


def plot_spectral_densities(values: dict, requested: dict, run_dir: Path, suffix: str = "") -> None:
    """One ESD figure per ``hessian_esd`` metric (Ghorbani et al. 2019, Fig. 1 style)."""
    for name, entry in values.items():
        if (requested.get(name) or {}).get("metric", name) != "hessian_esd":
            continue
        esd = flatness.curvature.density_of(
            flatness.Measurement(entry["value"], {}, entry["extra"])
        )
        fig = flatness.plot_spectral_density(
            esd, title=f"Hessian eigenvalue density ({name}, SLQ){suffix}"
        )
        path = run_dir / f"{name}{suffix.replace(' ', '_')}.png"
        entry["figure"] = flatness.save_figure(fig, path).name


def plot_sharpness_history(history: list[dict], opt_cfg: Any, run_dir: Path) -> None:
    """λmax along training against the stability threshold of the optimizer (Cohen et al. 2021)."""
    rows = [r for r in history if np.isfinite(r["lambda_max"])]
    epochs = [r["epoch"] for r in rows]
    thresholds = [stability_threshold(opt_cfg, r["lr"]) for r in rows]
    fig = flatness.plot_sharpness_history(epochs, [r["lambda_max"] for r in rows], thresholds)
    flatness.save_figure(fig, run_dir / "sharpness.png")


def not_trained(run_dir: Path) -> str:
    where = run_dir.resolve()  # the run where it is now, even if moved since it was configured
    return (
        f"{run_dir}: not trained (no finished result.json and final.pt); experiments.measure only "
        f"measures. Train it with: python -m experiments.run --config-path={where} "
        f"--config-name=config runs_dir={where.parent.parent} name={where.parent.name}"
    )
