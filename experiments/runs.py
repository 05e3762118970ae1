"""``python -m experiments.runs export --tensorboard DIR``: every run in TensorBoard's HParams view.

Every usable run (finished with a complete ``result.json``: the runs ``experiments.analyse.aggregate``
tabulates) is written to TensorBoard's HParams view under ``DIR/<name>/<run_id>``: its
result-determining configuration as hyperparameters (:func:`hparams_of`), every number of its
``result.json`` as metrics (:func:`result_scalars`), and its ``history.csv`` as scalar curves over
optimizer steps (:func:`history_curves`), so runs can be sorted and filtered beside their curves.
Runs left out (diverged, failed, unfinished, unreadable) are named with the reason, as
``experiments.analyse.aggregate`` names them. Exporting again replaces each run's event files.

TensorBoard keeps scalars in single precision (its data server reads no double-precision ones), so
the metrics it shows agree with ``result.json`` to about seven significant digits; hyperparameters
are exact. ``result.json`` stays the record.

:func:`run_records` is the reading (which runs, their config, result and history); the export only
consumes it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from omegaconf import OmegaConf

from experiments.criterion import reached
from experiments.data import build_dataset
from experiments.errors import ConfigError
from experiments.history import read_history
from experiments.measurements import CORE
from experiments.models import build_model
from experiments.status import damage
from experiments.store import NON_DETERMINING_KEYS, determining_key, load_result, run_dirs

VALIDATION = ("val_loss", "val_acc", "val_error")  # present when the dataset has a validation split
GAP = "gap"
# Config keys that never define a configuration axis (bookkeeping) besides the non-determining ones.
IGNORED_CONFIG = {f"config.{k}" for k in NON_DETERMINING_KEYS} | {"config.seed"}
EVENTS_PREFIX = "events.out.tfevents."
# Parts of result.json that are not results: the run's config (the hyperparameters) and the
# settings each measurement ran with (they are in the config as metrics.*; numbers carry them).
NOT_RESULTS = frozenset({"config", "settings"})
# history.csv column → curve tag; error curves are 1 − accuracy (the project reports errors).
CURVES = {
    "train_loss": "history/train_loss",
    "test_loss": "history/test_loss",
    "train_acc": "history/train_error",
    "test_acc": "history/test_error",
    "lr": "history/lr",
    "batch_loss": "history/batch_loss",
    "lambda_max": "history/lambda_max",
}


# --- the runs of a sweep as one tidy table ---------------------------------------------------------


def load_runs(roots: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finished runs as rows (``config.*``, core numbers, ``metric.*``), and every other run directory
    with its status and reason."""
    rows, problems = [], []
    for root in roots:
        for run_dir in run_dirs(root):
            result, found = usable_result(run_dir)
            problems.extend(found)
            if result is None:
                continue
            row: dict[str, Any] = {"run_dir": str(run_dir), "run_id": result["run_id"]}
            row.update({f"config.{k}": _hashable(v) for k, v in result["config"].items()})
            row.update({k: result.get(k) for k in CORE})
            row.update({k: result[k] for k in VALIDATION if k in result})
            row.update(
                {k: result.get(k) for k in ("stop_reason", "epochs_trained", "steps_trained")}
            )
            row.update({f"metric.{k}": v["value"] for k, v in result.get("metrics", {}).items()})
            rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(problems, columns=["run_dir", "status", "reason"])


def usable_result(run_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """A run directory's ``result.json`` when its numbers are to be used (a finished, complete
    result), else None; and its problems (``run_dir``, ``status``, ``reason``): why it is left out,
    or what is wrong with a run that is still used (damaged weights, failed metrics)."""
    result = load_result(run_dir / "result.json")
    if result is None:
        state, reason = ("unreadable", "result.json unreadable or not a result") if (
            run_dir / "result.json").exists() else ("unfinished", "no result.json")  # fmt: skip
        return None, [{"run_dir": str(run_dir), "status": state, "reason": reason}]
    if result.get("status") == "finished" and not {"run_id", "config"} <= set(result):
        return None, [{"run_dir": str(run_dir), "status": "incomplete result",
                       "reason": "result.json lacks run_id or config"}]  # fmt: skip
    problems = []
    if result.get("status") == "finished" and (why := damage(run_dir)):
        # listed, and still used: its numbers are in result.json, not in its weights
        problems.append({"run_dir": str(run_dir), "status": "damaged",
                         "reason": why + " (its numbers in result.json are still used)"})  # fmt: skip
    if result.get("status") != "finished":
        reason = result.get("error") or (
            f"diverged at epoch {result.get('diverged_epoch')}"
            if result.get("status") == "diverged"
            else ""
        )
        problems.append({"run_dir": str(run_dir), "status": result.get("status"), "reason": reason})
        return None, problems
    failures = result.get("metric_failures") or {}
    problems.extend(
        {"run_dir": str(run_dir), "status": "metric failed", "reason": f"{k}: {v}"}
        for k, v in failures.items()
    )
    return result, problems


def _hashable(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def config_columns(runs: pd.DataFrame) -> list[str]:
    """Configuration columns that identify a configuration (seed and bookkeeping excluded)."""
    return [
        c
        for c in runs.columns
        if c.startswith("config.") and c not in IGNORED_CONFIG and not c.startswith("config.hydra")
    ]


def axes(runs: pd.DataFrame) -> list[str]:
    """The hyperparameter axes of a sweep: configuration columns that take more than one value."""
    # map(str), not astype(str): pandas keeps a missing value missing under astype, so a setting
    # that is null in some runs (e.g. ghost_batch_size) would not count as varying
    return [c for c in config_columns(runs) if runs[c].map(str).nunique() > 1]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: mean and std over seeds of every number, and the seed count."""
    keys = axes(runs)
    numbers = [c for c in runs.columns if c in CORE or c in VALIDATION or c.startswith("metric.")]
    if not keys:
        keys = ["config.name"] if "config.name" in runs else []
    grouped = (
        runs.groupby(keys, dropna=False, sort=True) if keys else runs.assign(_all=0).groupby("_all")
    )
    mean = grouped[numbers].mean().add_suffix(" mean")
    std = grouped[numbers].std(ddof=1).add_suffix(" std")
    count = grouped.size().rename("seeds")
    return pd.concat([count, mean, std], axis=1).reset_index()


# --- what a run's record says ----------------------------------------------------------------------


class NotTrained(ValueError):
    """A run that cannot be loaded as a trained model (unfinished, or off its criterion)."""


def load_trained(run_dir: str | Path, require_criterion: bool = True):
    """A finished run's config, model (final weights, eval mode), data and initial weights; refuses
    a run whose training stopped before its criterion when ``require_criterion``."""
    run_dir = Path(run_dir)
    result = load_result(run_dir / "result.json")
    if result is None or not (run_dir / "final.pt").exists():
        raise NotTrained(f"{run_dir} is not a finished run (no result.json or final.pt)")
    if require_criterion and not reached(result):
        raise NotTrained(
            f"{run_dir} stopped by {result.get('stop_reason')!r} at train loss "
            f"{result.get('train_loss')}, not at its criterion: the audit compares minima only"
        )
    cfg = OmegaConf.load(run_dir / "config.yaml")
    data = build_dataset(cfg.dataset, cfg.data_dir)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(run_dir / "final.pt", weights_only=True))
    init = torch.load(run_dir / "init.pt", weights_only=True)
    init = {k: v for k, v in init.items() if k in dict(model.named_parameters())}
    return cfg, model.eval(), data, init


# --- reading a sweep -----------------------------------------------------------------------------


class RunRecord(NamedTuple):
    """One usable run: its directory, flat config (as ``result.json`` holds it), ``result.json``,
    and ``history.csv`` (None when that file is unreadable; empty when there is none)."""

    run_dir: Path
    config: dict[str, Any]
    result: dict[str, Any]
    history: pd.DataFrame | None


def run_records(
    runs_dir: str | Path, name: str | None = None
) -> tuple[list[RunRecord], list[dict[str, str]]]:
    """The usable runs under ``runs_dir`` (only the sweep ``runs_dir/<name>`` when given), and the
    problems (``run_dir``, ``status``, ``reason``) of every run left out or used with a fault."""
    root = Path(runs_dir) / name if name else Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"{'--name' if name else '--runs-dir'}: {root} is not a directory")
    records, problems = [], []
    for run_dir in run_dirs(root):
        result, found = usable_result(run_dir)
        problems.extend(found)
        if result is None:
            continue
        try:
            history = read_history(run_dir)
        except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            history = None
            problems.append(
                {
                    "run_dir": str(run_dir),
                    "status": "history unreadable",
                    "reason": f"history.csv: {exc}; its results are used, without curves",
                }
            )
        records.append(RunRecord(run_dir, result["config"], result, history))
    return records, problems


def hparams_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The result-determining keys of a flat config (:func:`experiments.store.determining_key`) as
    HParams values: numbers and strings as they are; booleans, lists and mappings as JSON text
    (booleans would otherwise become 0/1 numbers); nulls left out (the HParams view has no null)."""
    out = {}
    for key, value in config.items():
        if not determining_key(key) or value is None:
            continue
        if isinstance(value, bool | list | dict):
            value = json.dumps(value)
        elif not isinstance(value, int | float | str):
            value = str(value)
        out[key] = value
    return out


def result_scalars(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in ``result.json`` but the config and measurement settings, keyed by its path
    joined with ``/`` (``test_error``, ``metrics/lambda_max/value``, ``timings/train_s``);
    booleans (``converged``) as 0/1. Text and lists are left out."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if key in NOT_RESULTS:
            continue
        if isinstance(value, Mapping):
            out.update(result_scalars(value, prefix=f"{prefix}{key}/"))
        elif isinstance(value, int | float):
            out[f"{prefix}{key}"] = float(value)
    return out


def history_curves(history: pd.DataFrame) -> dict[str, tuple[list[int], list[float]]]:
    """The per-epoch curves of a history frame, tag → (optimizer steps, values); empty entries
    (λmax where it was not tracked, the mini-batch loss at epoch 0) are left out. Histories
    without a ``step`` column (older runs) are plotted over epochs."""
    axis = "step" if "step" in history and history["step"].notna().all() else "epoch"
    curves = {}
    for column, tag in CURVES.items():
        if column not in history:
            continue
        rows = history[[axis, column]].dropna()
        values = rows[column].astype(float)
        if column.endswith("_acc"):
            values = 1.0 - values
        if len(rows):
            curves[tag] = ([int(s) for s in rows[axis]], values.tolist())
    return curves


def export_tensorboard(
    runs_dir: str | Path, out: str | Path, name: str | None = None
) -> tuple[list[Path], list[dict[str, str]]]:
    """Write every usable run under ``runs_dir`` (or its sweep ``name``) into ``out``, at the run
    directory's path relative to ``runs_dir``; returns the run directories exported and the
    problems (:func:`run_records`)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    runs_dir, out = Path(runs_dir), Path(out)
    records, problems = run_records(runs_dir, name)
    exported = []
    for rec in records:
        target = out / rec.run_dir.relative_to(runs_dir)
        _clear(target)
        metrics = result_scalars(rec.result)
        # The experiment summary hparams() also returns is not written: TensorBoard picks one
        # run's arbitrarily, and runs differ in keys; without it TensorBoard takes the union of
        # every run's hyperparameters and scalar tags.
        _, start, end = hparams(hparams_of(rec.config), metrics)
        final_step = int(rec.result.get("steps_trained") or 0)
        with SummaryWriter(log_dir=str(target)) as writer:
            writer.file_writer.add_summary(start)
            writer.file_writer.add_summary(end)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, final_step)
            history = rec.history if rec.history is not None else pd.DataFrame()
            for tag, (steps, values) in history_curves(history).items():
                for step, value in zip(steps, values, strict=True):
                    writer.add_scalar(tag, value, step)
        exported.append(rec.run_dir)
    return exported, problems


def _clear(target: Path) -> None:
    """Remove a run's earlier export, so that exporting again does not append a second copy;
    refuse a folder that holds anything but event files (a run directory, when DIR is the runs
    directory itself)."""
    if not target.exists():
        return
    foreign = sorted(p.name for p in target.iterdir() if not p.name.startswith(EVENTS_PREFIX))
    if foreign:
        raise ConfigError(
            f"--tensorboard: {target} holds {foreign[0]}, not only TensorBoard event files; "
            "pass a folder of its own (not the runs directory)"
        )
    shutil.rmtree(target)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.runs", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write every run's config, results and curves elsewhere")
    ex.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ex.add_argument("--name", help="one sweep, runs/<name> (default: every sweep)")
    ex.add_argument(
        "--tensorboard", type=Path, required=True, metavar="DIR", help="TensorBoard log folder"
    )
    args = ap.parse_args(argv)
    try:
        exported, problems = export_tensorboard(args.runs_dir, args.tensorboard, args.name)
    except ConfigError as exc:
        ex.error(str(exc))
    except ImportError as exc:  # torch.utils.tensorboard without the tensorboard package
        print(f"error: {exc}; install the suite: pip install -e '.[suite]'", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    skipped = {p["run_dir"] for p in problems} - {str(r) for r in exported}
    for p in problems:
        left_out = "skipped, " if p["run_dir"] in skipped else ""
        print(f"  {left_out}{p['status']}: {p['run_dir']} {p['reason']}")
    print(
        f"exported {len(exported)} runs ({len(skipped)} skipped) to {args.tensorboard}; "
        f"view with: tensorboard --logdir {args.tensorboard}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
