"""Loss-surface speed, side by side in one run: points/s for a plain per-point loop, for
``flatness.surface`` (auto, loop and vmap engines) and, when installed, for the ``loss-landscapes``
package's ``random_plane`` on the same model, data and grid.

    .venv/bin/python benchmarks/surface.py [--points 51] [--samples 4000] [--device auto] [--resnet]

The MLP is the 40-100-100-10 network on 4000 (``--samples``) MNIST-1D-sized inputs (training loss only, which is what
``random_plane`` computes). ``--resnet`` adds ResNet-20 on 10,000 CIFAR-shaped inputs (meant for a GPU).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import add_threads_arg, best_of, describe, pick_device, set_threads, sync_for
from torch import nn

from experiments.models import resnet20
from flatness import params as P
from flatness.directions import random_direction
from flatness.surface import surface_2d


def per_point_loop(model, x, y, dirs, xs, ys, batch_size):
    """The baseline: copy θ + αδ + βη into a model and run it, one grid point at a time."""
    work = copy.deepcopy(model).eval()
    theta = P.named_params(model)
    params = dict(work.named_parameters())
    with torch.no_grad():
        for a in xs:
            for b in ys:
                for k, p in params.items():
                    p.copy_(theta[k] + a * dirs[0][k] + b * dirs[1][k])
                total = 0.0
                for i in range(0, len(x), batch_size):
                    total += F.cross_entropy(
                        work(x[i : i + batch_size]), y[i : i + batch_size], reduction="sum"
                    ).item()


def bench(label, model, x, y, points, batch_size, device, repeats, clock=time.perf_counter):
    """Each method on the same grid once (warm-up), then round-robin ``repeats`` times; the best
    time of each is kept, so that a burst of load on a shared machine does not decide a ratio."""
    sync = sync_for(device)
    g = torch.Generator().manual_seed(0)
    dirs = [random_direction(model, generator=g) for _ in range(2)]
    xs = torch.linspace(-1, 1, points).tolist()
    n = points * points
    methods = {
        "per-point loop (reference)": lambda: per_point_loop(model, x, y, dirs, xs, xs, batch_size)
    }
    chosen = {}
    for engine in ("auto", "loop", "vmap"):
        if (
            engine == "vmap"
            and device.type == "cpu"
            and any(isinstance(m, nn.Conv2d) for m in model.modules())
        ):
            continue  # conv under vmap on the CPU: far slower, not a candidate

        def run(engine=engine):
            s = surface_2d(
                model,
                (x, y),
                directions=dirs,
                x_points=points,
                y_points=points,
                engine=engine,
                batch_size=batch_size,
            )
            chosen[engine] = s.settings["engine"]

        methods[f"flatness engine={engine}"] = run
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError:
        loss_landscapes = None
    else:
        metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
        work = copy.deepcopy(model).eval()
        methods["loss-landscapes random_plane"] = lambda: loss_landscapes.random_plane(
            work, metric, distance=1, steps=points, normalization="filter", deepcopy_model=True
        )
    best, _ = best_of(methods, repeats, sync, clock=clock)
    ref = n / best["per-point loop (reference)"]
    what = "CPU time of the process" if clock is time.process_time else "wall time"
    print(
        f"\n{label}: {points}x{points} grid, {len(x)} samples, device {device}, best of {repeats} "
        f"({what})"
    )
    print(f"| {'method':<44} | {'points/s':>9} | {'vs loop':>7} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 9}|")
    for name, seconds in best.items():
        rate = n / seconds
        shown = (
            f"{name} (ran {chosen[name.split('=')[1]]})" if name.startswith("flatness") else name
        )
        print(f"| {shown:<44} | {rate:9.1f} | {rate / ref:6.2f}x |")
    if loss_landscapes is None:
        print(f"| {'loss-landscapes random_plane':<44} | {'not installed':>9} | {'':>7} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=51)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resnet", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=4000, help="inputs of the MLP (default 4000)")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time (one thread, on a machine shared with other jobs)",
    )
    add_threads_arg(ap)
    args = ap.parse_args()
    device = pick_device(args.device)
    set_threads(args.threads, device)
    print(describe(device))
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    ).to(device)
    n = args.samples
    x, y = torch.randn(n, 40, device=device), torch.randint(0, 10, (n,), device=device)
    clock = time.process_time if args.cpu_time else time.perf_counter
    bench("MLP 40-100-100-10", mlp, x, y, args.points, 4096, device, args.repeats, clock)
    if args.resnet:
        net = resnet20((3, 32, 32), 10).to(device).eval()
        xr, yr = (
            torch.randn(10_000, 3, 32, 32, device=device),
            torch.randint(0, 10, (10_000,), device=device),
        )
        bench_precision("ResNet-20", net, xr, yr, min(args.points, 5), 1000, device, args.repeats)


def bench_precision(label, model, x, y, points, batch_size, device, repeats):
    """Conv nets: the lever is precision, not grid batching. fp32 per-point loop vs our loop engine at
    each precision, with the largest relative loss difference from fp32 over the grid."""
    sync = sync_for(device)
    g = torch.Generator().manual_seed(0)
    dirs = [random_direction(model, generator=g) for _ in range(2)]
    xs = torch.linspace(-1, 1, points).tolist()
    n = points * points
    precisions = ["fp32", "tf32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    surfaces = {}
    methods = {
        "per-point loop fp32 (reference)": lambda: per_point_loop(
            model, x, y, dirs, xs, xs, batch_size
        )
    }
    for prec in precisions:

        def run(prec=prec):
            surfaces[prec] = surface_2d(
                model,
                (x, y),
                directions=dirs,
                x_points=points,
                y_points=points,
                engine="loop",
                batch_size=batch_size,
                precision=prec,
            )

        methods[f"flatness precision={prec}"] = run
    best, _ = best_of(methods, repeats, sync, warmup=device.type == "cuda")
    ref = n / best["per-point loop fp32 (reference)"]
    exact = surfaces["fp32"].values["train_loss"]
    print(
        f"\n{label}: {points}x{points} grid, {len(x)} samples, device {device}, best of {repeats}"
    )
    print(f"| {'method':<36} | {'points/s':>9} | {'vs loop':>7} | {'max rel. loss error':>19} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 9}|{'-' * 21}|")
    for name, seconds in best.items():
        rate = n / seconds
        err = ""
        if name.startswith("flatness"):
            prec = name.split("=")[1]
            err = (
                f"{np.max(np.abs(surfaces[prec].values['train_loss'] - exact) / np.abs(exact)):.1e}"
            )
        print(f"| {name:<36} | {rate:9.2f} | {rate / ref:6.2f}x | {err:>19} |")


if __name__ == "__main__":
    main()
