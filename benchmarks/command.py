"""The used-by command's wall time: ``python -m experiments.run optimizer=adam batch_size=1024``.

    .venv/bin/python benchmarks/command.py [--repeats 5] [--baseline REF] [--args "k=v ..."]

Each repetition is a fresh process (``force=true``, runs in a temporary directory), so the time is
what a user waits for: Python start-up, imports, composing the config, building data and model,
training, measuring and writing the run. One warm-up run first (the page cache, MNIST-1D generated
once). ``--baseline REF`` also times the same command at a git revision (checked out into a
temporary worktree whose own ``experiments`` and ``flatness`` packages are imported), alternating
with the working tree's runs so that both see the same load. Printed: median, best, slowest and
slowest/median per tree (stable means slowest within 1.5x the median), and the median phases that
``result.json`` records.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import markdown

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "experiments.run", "optimizer=adam", "batch_size=1024"]


def timed_run(tree: Path, runs: Path, data: Path, extra: list[str]) -> tuple[float, dict]:
    """One fresh process of the command in ``tree``; its wall time and its result.json timings."""
    args = [*COMMAND, *extra, f"runs_dir={runs}", f"data_dir={data}", "force=true"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the command failed in {tree}:\n{done.stderr[-2000:]}")
    result = json.loads(next(runs.rglob("result.json")).read_text())
    return seconds, result.get("timings", {})


def summary(name: str, times: list[float], phases: list[dict]) -> dict:
    median = statistics.median(times)
    row = {
        "tree": name,
        "median s": median,
        "best s": min(times),
        "slowest s": max(times),
        "slowest / median": max(times) / median,
    }
    for key in ("data_s", "train_s", "measure_s", "total_s"):
        values = [p[key] for p in phases if p.get(key) is not None]
        if values:
            row[f"{key} (median)"] = statistics.median(values)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", default=None, help="a git revision to time side by side")
    ap.add_argument("--args", default="", help="extra overrides for both trees")
    args = ap.parse_args()
    extra = shlex.split(args.args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"working tree": ROOT}
        if args.baseline:
            base = tmp / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(base), args.baseline],
                cwd=ROOT,
                check=True,
            )
            trees[f"baseline {args.baseline}"] = base
        try:
            data = tmp / "data"
            times: dict[str, list[float]] = {name: [] for name in trees}
            phases: dict[str, list[dict]] = {name: [] for name in trees}
            for tree in trees.values():  # warm-up: data generated, files cached
                timed_run(tree, tmp / "warm", data, extra)
            for i in range(args.repeats):
                for name, tree in trees.items():
                    seconds, timing = timed_run(
                        tree, tmp / f"runs-{i}-{len(times[name])}", data, extra
                    )
                    times[name].append(seconds)
                    phases[name].append(timing)
            print(f"`python {' '.join(COMMAND + extra)}`, {args.repeats} fresh processes per tree")
            print(f"(after one warm-up each; {os.cpu_count()} CPUs; OMP_NUM_THREADS unset)\n")
            print(markdown([summary(name, times[name], phases[name]) for name in trees], ".3g"))
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False
                )


if __name__ == "__main__":
    main()
