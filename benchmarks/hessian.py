"""λmax side by side in one run: Lanczos (ours) against power iteration at tol 1e-3 (PyHessian's
method, ours and, when installed, the ``pyhessian`` package itself), with Hessian-vector products,
wall time and the error against a tightly converged reference. Also times the two HVP modes.

    .venv/bin/python benchmarks/hessian.py [--device auto] [--resnet] [--repeats 3]

The MLP is the default 40-100-100-10 network trained on MNIST-1D by the runner's default recipe
(SGD, lr 0.1, batch 128, 100 epochs), measured on 4000 training samples; ``--resnet`` adds an
untrained ResNet-20 on 1000 CIFAR-shaped inputs (meant for a GPU).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import describe, pick_device
from omegaconf import OmegaConf

from experiments.data import build_dataset
from experiments.models import resnet20
from experiments.optim import build_optimizer
from experiments.train import TrainSettings, train
from flatness.evaluate import Objective
from flatness.hessian import lanczos, power_iteration


def trained_mlp(device):
    cfg = OmegaConf.create(
        {
            "name": "mnist1d",
            "num_samples": 5000,
            "train_split": 0.8,
            "seed": 42,
            "num_train": None,
            "num_test": None,
        }
    )
    data = build_dataset(cfg, "data").to(device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(40, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    ).to(device)
    opt = build_optimizer(OmegaConf.create({"name": "sgd"}), model, 0.1, 0.0)
    train(model, opt, data, TrainSettings(epochs=100, batch_size=128, lr=0.1, seed=0))
    return model, data.x_train, data.y_train


def timed(fn, sync):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def bench(label, model, x, y, device, repeats, batch_size):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    obj = Objective(model, x, y, batch_size=batch_size)
    exact = lanczos(obj.flat_hvp, obj.dim, k=1, tol=1e-10, max_iter=300).eigenvalues[0]
    hvp_times = {}
    v = torch.randn(obj.dim, dtype=torch.float64, device=x.device)
    modes = ["forward-over-reverse", "reverse-over-reverse"] + (
        ["cached-graph"] if len(x) <= batch_size else []
    )
    for mode in modes:
        obj.flat_hvp(v, mode=mode)  # warm-up: the first forward-mode call pays one-off set-up costs
        _, seconds = timed(lambda mode=mode: [obj.flat_hvp(v, mode=mode) for _ in range(5)], sync)
        hvp_times[mode] = 1000 * seconds / 5
    methods = {
        "Lanczos tol 1e-3, residual bound (ours)": lambda: lanczos(
            obj.flat_hvp, obj.dim, k=1, tol=1e-3, max_iter=200
        ),
        "Lanczos tol 1e-3, gap estimate (ours)": lambda: lanczos(
            obj.flat_hvp, obj.dim, k=1, tol=1e-3, bound="gap", max_iter=200
        ),
        "power iteration tol 1e-3 (ours)": lambda: power_iteration(
            obj.flat_hvp, obj.dim, tol=1e-3, max_iter=200
        ),
    }
    try:
        import importlib

        # The package re-exports the class under the module's name; take the module itself.
        ph = importlib.import_module("pyhessian.hessian")
    except ImportError:
        ph = None
    else:
        counter = {"n": 0}
        real_hvp = ph.hessian_vector_product

        def counting(*args, **kwargs):
            counter["n"] += 1
            return real_hvp(*args, **kwargs)

        ph.hessian_vector_product = counting

        def run_pyhessian():
            counter["n"] = 0
            torch.manual_seed(0)
            h = ph.hessian(model.eval(), F.cross_entropy, data=(x, y), cuda=device.type == "cuda")
            eig, _ = h.eigenvalues(maxIter=200, tol=1e-3, top_n=1)
            return eig[0], counter["n"]

        methods["pyhessian 0.1 eigenvalues tol 1e-3"] = run_pyhessian
    best, outputs = dict.fromkeys(methods, float("inf")), {}
    for _ in range(repeats):
        for name, fn in methods.items():
            out, seconds = timed(fn, sync)
            best[name], outputs[name] = min(best[name], seconds), out
    print(
        f"\n{label}: {obj.dim} parameters, {len(x)} samples, device {device}, best of {repeats}; "
        f"reference λmax {exact:.6g} (Lanczos tol 1e-10)"
    )
    print(f"| {'method':<40} | {'λmax':>10} | {'rel. error':>10} | {'HVPs':>5} | {'seconds':>8} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 12}|{'-' * 7}|{'-' * 10}|")
    for name, out in outputs.items():
        lam, products = (out.eigenvalues[0], out.products) if hasattr(out, "eigenvalues") else out
        print(
            f"| {name:<40} | {lam:10.6g} | {abs(lam - exact) / abs(exact):10.1e} | {products:5d} | "
            f"{best[name]:8.3f} |"
        )
    print("HVP cost: " + ", ".join(f"{mode} {ms:.1f} ms" for mode, ms in hvp_times.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resnet", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = pick_device(args.device)
    print(describe(device))
    model, x, y = trained_mlp(device)
    bench("MLP 40-100-100-10 (trained)", model, x, y, device, args.repeats, 4096)
    if args.resnet:
        torch.manual_seed(0)
        net = resnet20((3, 32, 32), 10).to(device).eval()
        xr, yr = (
            torch.randn(1000, 3, 32, 32, device=device),
            torch.randint(0, 10, (1000,), device=device),
        )
        bench("ResNet-20 (untrained)", net, xr, yr, device, args.repeats, 1000)


if __name__ == "__main__":
    main()
