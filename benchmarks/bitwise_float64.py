"""Checks that ``precision="float64"`` reproduces the numbers of flatness 0.2 (the code on ``main``
before the float32 basis) bit for bit: ``flatness.measure`` of λmax, top-k, mini-batch λmax and the
spectral density on a small MLP, run once with ``git archive <ref> flatness`` on the path and once
with this checkout, in fresh processes; the default (``precision="auto"``, float32 here) is shown
beside them.

    .venv/bin/python benchmarks/bitwise_float64.py [--ref main]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO

from _common import ROOT

CHILD = r"""
import json, sys, torch
from torch import nn
import flatness
torch.set_num_threads(1)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
x, y = torch.randn(600, 40), torch.randint(0, 10, (600,))
extra = json.loads(sys.argv[1])
request = {
    "lambda_max": {"tol": 1e-4, **extra},
    "hessian_top_k": {"k": 3, **extra},
    "minibatch_lambda_max": {"b": 64, "n_batches": 3, **extra},
    "hessian_esd": {"vectors": 2, "steps": 30, **extra},
}
out = flatness.measure(model, (x, y), metrics=request)
print(json.dumps({k: [m.value, m.error_bound] for k, m in out.items()}))
"""


def run(path: str, settings: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings)], env=env, cwd=tempfile.gettempdir(),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main")
    args = ap.parse_args()
    archive = subprocess.run(
        ["git", "archive", args.ref, "flatness"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    old_dir = tempfile.mkdtemp()
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(old_dir, filter="data")
    old = run(old_dir, {})
    new64 = run(str(ROOT), {"precision": "float64"})
    new = run(str(ROOT), {})
    print(f"| measure | {args.ref} | precision=float64 | identical | default (auto) | rel. diff |")
    print("|---|---|---|---|---|---|")
    same = True
    for name, (value, _) in old.items():
        first = lambda v: v[0] if isinstance(v, list) else v  # noqa: E731
        equal = old[name] == new64[name]  # values and error bounds, as floats: bit for bit
        same &= equal
        rel = abs(first(new[name][0]) - first(value)) / abs(first(value))
        print(
            f"| {name} | {first(value)!r} | {first(new64[name][0])!r} | "
            f"{'yes' if equal else 'NO'} | {first(new[name][0])!r} | {rel:.1e} |"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
