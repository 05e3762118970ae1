"""Checks that ``precision="float64"`` reproduces the library's λmax, top-k and SLQ numbers from
before the float32 basis bit for bit: the old ``flatness/hessian.py`` (``git show <ref>:...``,
default ``main``) against the current one, on the same Objective (a small trained-shape MLP).

    .venv/bin/python benchmarks/bitwise_float64.py [--ref main]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import ROOT
from torch import nn

from flatness import hessian as new
from flatness.objective import Objective


def old_module(ref: str):
    text = subprocess.run(
        ["git", "show", f"{ref}:flatness/hessian.py"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "old_hessian.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_hessian", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_hessian"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main")
    args = ap.parse_args()
    old = old_module(args.ref)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )
    x, y = torch.randn(500, 40), torch.randint(0, 10, (500,))
    obj = Objective(model, (x, y))
    rows, same = [], True
    for label, run in [
        (
            "lambda_max tol 1e-3",
            lambda m, **p: m.lanczos(obj.flat_hvp, obj.dim, 1, max_iter=100, tol=1e-3, **p),
        ),
        (
            "top-5 tol 1e-4",
            lambda m, **p: m.lanczos(obj.flat_hvp, obj.dim, 5, max_iter=200, tol=1e-4, **p),
        ),
    ]:
        a, b = run(old), run(new, precision="float64")
        equal = np.array_equal(a.eigenvalues, b.eigenvalues) and np.array_equal(
            a.residuals, b.residuals
        )
        equal = equal and torch.equal(a.eigenvectors, b.eigenvectors)
        c = run(new)  # float32, the default
        rel = float(np.max(np.abs(c.eigenvalues - a.eigenvalues) / np.abs(a.eigenvalues)))
        rows.append((label, equal, rel))
        same &= equal
    a = old.slq(obj.flat_hvp, obj.dim, vectors=3, steps=60, seed=0)
    b = new.slq(obj.flat_hvp, obj.dim, vectors=3, steps=60, seed=0, precision="float64", memory=2.0)
    equal = np.array_equal(a.nodes, b.nodes) and np.array_equal(a.weights, b.weights)
    c = new.slq(obj.flat_hvp, obj.dim, vectors=3, steps=60, seed=0)
    rows.append(("slq 3×60 (mean)", equal, abs(c.mean() - a.mean()) / abs(a.mean())))
    same &= equal
    print(
        f"| computation | float64 bit-identical to {args.ref} | float32: max relative difference |"
    )
    print("|---|---|---|")
    for label, equal, rel in rows:
        print(f"| {label} | {'yes' if equal else 'NO'} | {rel:.1e} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
