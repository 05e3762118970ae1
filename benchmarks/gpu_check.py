"""The library's GPU checks in one short run: every Hessian measure, ``measure`` and a surface on
CUDA, each against the same computation on the CPU (same weights, same data).

    python benchmarks/gpu_check.py        # exits 1 if a check fails; prints a table either way
"""

from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn

import flatness


def main() -> int:
    # GPU_CHECK_DEVICES=cpu,cpu runs the script's own checks without a GPU
    devices = os.environ.get("GPU_CHECK_DEVICES", "cpu,cuda").split(",")
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )
    x, y = torch.randn(4000, 40), torch.randint(0, 10, (4000,))
    # a start point for the barrier (a perturbation of the weights), drawn once on the CPU
    start_cpu = {k: v + 0.3 * torch.randn_like(v) for k, v in model.state_dict().items()}
    rows, ok = [], True
    results = []
    for device in devices:
        m = model.to(device)
        data = (x.to(device), y.to(device))
        t0 = time.perf_counter()
        hessian = flatness.Hessian(m, data)
        top = hessian.eigenvalues(3)
        trace = hessian.trace(min_probes=30, max_probes=30)
        density = hessian.density(vectors=2, steps=30)
        measured = flatness.measure(
            m, data, metrics=["lambda_max", "keskar_sharpness", "fisher_rao_norm"]
        )
        surface = flatness.surface_2d(m, data, x_points=11, y_points=11)
        # issue 13's measures: the barrier from a start point, mini-batch λmax, m-sharpness
        start = {k: v.to(device) for k, v in start_cpu.items()}
        explained = flatness.measure(
            m,
            data,
            init=start,
            metrics={
                "linear_barrier": {"points": 11},
                "minibatch_lambda_max": {"b": 16, "n_batches": 8, "tol": 1e-6},
                "m_sharpness": {"m": 64, "batches": 4},
            },
        )
        if device == "cuda":
            torch.cuda.synchronize()
        results.append(
            {
                "top-3 eigenvalues": top.value,
                "trace (30 probes)": trace.value,
                "density mean": density.mean(),
                "lambda_max": measured["lambda_max"].value,
                "keskar_sharpness": measured["keskar_sharpness"].value,
                "fisher_rao_norm": measured["fisher_rao_norm"].value,
                "surface centre": float(surface.values["train_loss"][5, 5]),
                "barrier path max": max(explained["linear_barrier"].extra["loss"]),
                "minibatch_lambda_max b=16": explained["minibatch_lambda_max"].value,
                "m_sharpness m=64": explained["m_sharpness"].value,
                "seconds": time.perf_counter() - t0,
                "hvp_mode": measured["lambda_max"].extra["hvp_mode"],
                "engine": surface.settings["engine"],
            }
        )
    for key in results[0]:
        a, b = results[0][key], results[1][key]
        if key in ("seconds", "hvp_mode", "engine"):
            rows.append((key, a, b, ""))
            continue
        va, vb = (a, b) if isinstance(a, list) else ([a], [b])
        rel = max(abs(p - q) / max(abs(p), 1e-12) for p, q in zip(va, vb, strict=True))
        good = rel < 1e-3
        ok &= good
        rows.append((key, a, b, f"{rel:.1e} {'ok' if good else 'FAIL'}"))
    name = torch.cuda.get_device_name() if "cuda" in devices else "CPU only"
    print(f"torch {torch.__version__}, {name}")
    for row in rows:
        print(" | ".join(str(v) for v in row))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
