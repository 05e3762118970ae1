"""``python -m experiments.status runs/<experiment>``: how a sweep stands.

Counts the runs that are done, running, failed, diverged and incomplete, and lists every run that is
not done with its directory and why. Exits 1 when any run failed, so that scripts can check a sweep.

- done: ``result.json`` says finished (metric failures, if any, are listed: the run itself is kept);
- diverged: the loss became NaN or infinite; the run is recorded and not retried;
- failed: ``result.json`` says failed (a transform beyond its tolerance), or is unreadable;
- running: no result yet and the run's lock is held by a live process;
- incomplete: no result and no live owner: killed or crashed; running the sweep again resumes it
  from its last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from experiments.lock import held_by_live_process
from experiments.store import load_checkpoint, load_result

STATES = ("done", "running", "failed", "diverged", "incomplete")


def classify(run_dir: Path) -> tuple[str, str]:
    """The state of one run directory and a one-line reason."""
    result_file = run_dir / "result.json"
    if result_file.exists():
        result = load_result(result_file)
        if result is None:
            return (
                "failed",
                "result.json is unreadable (truncated?); rerunning the sweep redoes this run",
            )
        status = result.get("status")
        if status == "finished":
            failures = result.get("metric_failures") or {}
            return "done", (
                "; ".join(f"metric {k} failed: {v}" for k, v in failures.items())
                if failures
                else ""
            )
        if status == "diverged":
            return "diverged", f"loss not finite at epoch {result.get('diverged_epoch')}"
        return "failed", str(result.get("error") or status)
    if held_by_live_process(run_dir / ".lock"):
        return "running", "in progress"
    checkpoint = (
        load_checkpoint(run_dir / "checkpoint.pt") if (run_dir / "checkpoint.pt").exists() else None
    )
    where = f"resumes from epoch {checkpoint['epoch']}" if checkpoint else "starts over"
    return "incomplete", f"killed or crashed (no result.json); a rerun {where}"


def sweep_status(root: Path) -> tuple[Counter, list[tuple[str, str, str]]]:
    counts: Counter = Counter()
    details = []
    for config_file in sorted(Path(root).rglob("config.yaml")):
        run_dir = config_file.parent
        if ".multirun" in run_dir.parts:
            continue
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
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
