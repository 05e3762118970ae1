"""A slice of a correlation grid (issue 14), timed: train each configuration of a small factorial
slice to the criterion, ``--jobs`` at a time, and print a table of steps and seconds per run, the wall
time, and the throughput it implies for a full grid. Sizes the grid from a measured throughput rather
than a guess (run it on the machine the grid will run on; on a GPU, ``--device cuda``).

    python benchmarks/grid_slice.py --device cpu --jobs 2 --out /tmp/slice
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE = [
    "dataset=mnist1d",
    "dataset.num_samples=6250",  # 4k training / 1k validation / 1.25k test samples
    "dataset.train_split=0.8",
    "dataset.val_split=0.2",
    "model=mlp",
    "model.width=256",
    "model.depth=2",
    "epochs=null",
    "max_steps=20000",
    "train_until_loss=0.01",
    "criterion_every_samples=2048",
    "metrics=none",
    "progress=false",
]
# the slice: batch size x optimizer (with its rate) x dropout
AXES = {
    "batch_size": ["batch_size=64", "batch_size=256"],
    "optimizer": ["optimizer=momentum lr=0.05", "optimizer=adam lr=0.001"],
    "dropout": ["model.dropout=0.0", "model.dropout=0.1"],
}


def one(overrides: list[str], out: Path, device: str) -> dict:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "experiments.run", *BASE, *overrides]
    cmd += [f"device={device}", f"runs_dir={out}", "name=slice"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    result = {}
    for line in done.stdout.splitlines():
        if "-> " in line and line.strip().endswith("result.json"):
            result = json.loads(Path(line.split("-> ")[-1].strip()).read_text())
    return {
        "config": " ".join(overrides),
        "rc": done.returncode,
        "stop": result.get("stop_reason"),
        "steps": result.get("steps_trained"),
        "train_acc": result.get("train_acc"),
        "seconds": round(seconds, 1),
        "error": done.stderr.strip().splitlines()[-1] if done.returncode else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/grid_slice"))
    ap.add_argument(
        "--grid", type=int, default=128 * 2, help="runs in the full grid, to extrapolate"
    )
    args = ap.parse_args()
    configs = [" ".join(c).split() for c in itertools.product(*AXES.values())]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: one(c, args.out, args.device), configs))
    wall = time.perf_counter() - start
    for r in rows:
        print(
            " | ".join(
                str(r[k])
                for k in ("config", "rc", "stop", "steps", "train_acc", "seconds", "error")
            )
        )
    per_run = wall / len(rows)
    print(
        f"{len(rows)} runs in {wall:.0f} s wall at --jobs {args.jobs} on {args.device}: {per_run:.1f} s "
        f"per run; a grid of {args.grid} runs would take about {per_run * args.grid / 60:.0f} min"
    )
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
