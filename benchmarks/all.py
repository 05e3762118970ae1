"""Every benchmark in one go, with small settings: hessian.py, surface.py and run_costs.py, each in
its own process, each table printed under a header, then a summary of what ran.

    .venv/bin/python benchmarks/all.py [--device auto] [--only hessian,surface,run_costs] [--full]
        [--threads N]

``--device auto`` takes CUDA when present, else the CPU; the device and torch version head each
script's output. ``--full`` runs each script at its own defaults instead of the small settings below
(the small settings take a few minutes on a 2-core CPU; the full ones about 15).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import describe, markdown, pick_device, set_threads

HERE = Path(__file__).resolve().parent
# Small settings: enough repeats to time after a warm-up, few enough to finish in minutes.
SMALL = {
    "hessian": ["--seeds", "3", "--repeats", "2"],
    "surface": ["--points", "21", "--repeats", "2"],
    "run_costs": [
        "--steps",
        "100",
        "--repeats",
        "2",
        "--train-steps",
        "200",
        "--metric-repeats",
        "1",
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default=",".join(SMALL), help=f"comma-separated: {', '.join(SMALL)}")
    ap.add_argument("--full", action="store_true", help="each script at its own defaults")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads, passed to each script")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(SMALL)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(SMALL)}")
    device = pick_device(args.device)
    set_threads(args.threads, device)  # as each script will: the header then names their threads
    print(f"# benchmarks on {device}: {describe(device)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    summary = []
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--device", str(device)]
        cmd += [] if args.full else SMALL[name]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print(f"\n## {name}.py {' '.join(cmd[2:])}\n", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=HERE.parent).returncode
        summary.append(
            {
                "benchmark": f"{name}.py",
                "exit status": rc,
                "seconds": time.perf_counter() - t0,
            }
        )
    print("\n## summary\n")
    print(markdown(summary, floatfmt=".0f"))
    sys.exit(max(row["exit status"] for row in summary))


if __name__ == "__main__":
    main()
