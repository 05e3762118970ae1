"""A slice of a correlation study's grid (issue 14), timed: the corner configurations of
``conf/study/<name>.yaml`` (every axis at its first or last level, the hardest to train to the
criterion), one seed each, trained and measured as the study would, ``--jobs`` at a time, in a
scratch directory. Prints a table (steps, whether the criterion was met, training and measuring
seconds per run) and the wall time the whole grid implies at a given number of parallel jobs, so a
grid is sized from a measured throughput rather than a guess. Run it on the machine the grid will
run on (on a GPU machine, ``device=auto`` picks CUDA).

    python benchmarks/grid_slice.py jiang_full --corners 8 --jobs 2
    python benchmarks/grid_slice.py jiang_cnn_full --corners 8 --jobs 16 --grid-jobs 16
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import pandas as pd

from experiments.execute import execute
from experiments.plan import load_result
from experiments.study import configurations, load_study, study_specs


def corners(s: dict, n: int, seed: int = 0) -> list[str]:
    """``n`` of the grid's corner configurations (a fixed random choice), as the specs' arm names."""
    axes = s["axes"]
    ends = {a: [list(levels)[0], list(levels)[-1]] for a, levels in axes.items()}
    every = [
        c for c in configurations(s) if all(c[a] in ends[a] for a in axes)
    ]  # 2^k corners of the 3^k grid (all of a 2^k grid)
    chosen = random.Random(seed).sample(every, min(n, len(every)))
    return [",".join(f"{a}={v}" for a, v in c.items()) for c in chosen]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="a name in conf/study/ or a path")
    ap.add_argument("--corners", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--grid-jobs", type=int, default=16, help="parallel jobs of the full grid's machine"
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/grid_slice"))
    args = ap.parse_args()
    s = load_study(args.study)
    every = study_specs(s)
    arms = corners(s, args.corners)
    specs = [sp for sp in every if sp.arm in arms and sp.seed == s["seeds"][0]]
    common = {"runs_dir": str(args.out), "data_dir": "data", "progress": False}
    start = time.perf_counter()
    execute(specs, common, args.jobs, f"{s['name']} slice")
    wall = time.perf_counter() - start
    rows = []
    for sp in specs:
        result, _ = load_result(sp, common)
        result = result or {}
        timings = result.get("timings") or {}
        rows.append({
            "configuration": sp.arm,
            "status": result.get("status"),
            "met criterion": result.get("stop_reason") == "train_until_loss",
            "steps": result.get("steps_trained"),
            "train acc": result.get("train_acc"),
            "train s": round(timings.get("train_s", float("nan")), 1),
            "measure s": round(timings.get("measure_s", float("nan")), 1),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    per_run = (table["train s"] + table["measure s"]).mean()
    print(
        f"\n{len(specs)} corner runs of {s['name']} in {wall:.0f} s wall at --jobs {args.jobs}; "
        f"{int(table['met criterion'].sum())}/{len(table)} met the criterion. Mean "
        f"{per_run:.1f} s of one core per run (training + measuring; corners are the slow end): "
        f"the grid's {len(every)} runs ≈ {per_run * len(every) / 3600:.1f} core-hours, "
        f"≈ {per_run * len(every) / args.grid_jobs / 3600:.1f} h at {args.grid_jobs} jobs"
    )
    return 0 if table["met criterion"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
