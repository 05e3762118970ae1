"""``python -m experiments.status runs/<experiment>``: how a sweep stands.

Counts the runs that are done, running, failed, diverged and incomplete, and lists every run that is
not done with its directory and why. Exits 1 when any run failed, so that scripts can check a sweep.

- done: ``result.json`` says finished (metric failures, if any, are listed: the run itself is kept);
- diverged: the loss became NaN or infinite; the run is recorded and not retried;
- failed: ``result.json`` says failed (a transform beyond its tolerance), or is unreadable;
- running: no result yet and the run's lock is held by a live process;
- incomplete: no result and no live owner: killed or crashed; running the sweep again resumes it
  from its last checkpoint (or starts over when the checkpoint is damaged);
- damaged: a finished run whose final.pt or config.yaml is missing or unreadable; running the sweep
  again trains it again (final.pt) or writes the config back (config.yaml).

Run directories are found by any of their files (:func:`experiments.store.run_dirs`), so a run
that lost its config.yaml is listed, not hidden.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from experiments.lock import is_locked
from experiments.store import load_checkpoint, load_result, run_dirs, same_weights
from experiments.train import CHECKPOINT_KEYS

DONE = ("finished", "diverged")
STATES = ("done", "running", "failed", "diverged", "incomplete", "damaged")


def classify(run_dir: Path) -> tuple[str, str]:
    """The state of one run directory and a one-line reason."""
    result_file = run_dir / "result.json"
    if result_file.exists():
        result = load_result(result_file)
        if result is None:
            return (
                "failed",
                "result.json is unreadable or not a result (truncated? a list?); rerunning the "
                "sweep trains this run again",
            )
        status = result.get("status")
        if status in DONE and not {"run_id", "config", "stop_reason"} <= set(result):
            return "failed", "result.json is incomplete; rerunning the sweep trains this run again"
        if status in DONE and (why := damage(run_dir)):
            return "damaged", why
        if status == "finished":
            failures = result.get("metric_failures") or {}
            return "done", (
                "; ".join(f"metric {k} failed: {v}" for k, v in failures.items())
                if failures
                else ""
            )
        if status == "diverged":
            return "diverged", f"loss not finite at epoch {result.get('diverged_epoch')}"
        if status != "failed":  # not a status a run writes
            return "failed", (
                f"result.json says status {status!r}, which no run writes; rerunning the sweep "
                "trains this run again"
            )
        return "failed", str(result.get("error") or "failed")
    if is_locked(run_dir / ".lock"):
        return "running", "in progress"
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt", CHECKPOINT_KEYS)
    if checkpoint is not None and not same_weights(checkpoint["model"], _shapes(run_dir)):
        checkpoint = None  # another model's: training ignores it too
    where = f"resumes from epoch {checkpoint['epoch']}" if checkpoint else "starts over"
    return "incomplete", f"killed or crashed (no result.json); a rerun {where}"


def _shapes(run_dir: Path) -> dict | None:
    """The run's own weights at initialisation (``init.pt``), whose names and shapes its
    checkpoint and final weights must have; None when it is missing or unreadable."""
    init = load_checkpoint(run_dir / "init.pt")
    return init if same_weights(init, None) else None


def damage(run_dir: Path) -> str:
    """What is wrong with a finished run's files ("" when nothing): final.pt must hold the run's
    weights (the names and shapes of its init.pt), config.yaml must exist."""
    if not same_weights(load_checkpoint(run_dir / "final.pt"), _shapes(run_dir)):
        return "final.pt missing, unreadable or not this run's weights; a rerun trains it again"
    if not (run_dir / "config.yaml").exists():
        return "config.yaml missing; a rerun writes it again"
    return ""


def sweep_status(root: Path) -> tuple[Counter, list[tuple[str, str, str]]]:
    counts: Counter = Counter()
    details = []
    for run_dir in run_dirs(root):
        state, reason = classify(run_dir)
        counts[state] += 1
        if state != "done" or reason:
            details.append((state, str(run_dir), reason))
    return counts, details


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.status", description=__doc__.splitlines()[0]
    )
    ap.add_argument("root", type=Path, help="a sweep directory, e.g. runs/batch_size")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory", file=sys.stderr)
        return 2
    counts, details = sweep_status(args.root)
    total = sum(counts.values())
    print(f"{args.root}: {total} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATES))
    for state, run_dir, reason in details:
        print(f"  {state:<10} {run_dir}  {reason}")
    return 1 if counts["failed"] or counts["damaged"] else 0


if __name__ == "__main__":
    sys.exit(main())
