"""What a run costs: seconds per 1,000 training steps and seconds per metric, for the suite's models.

    .venv/bin/python benchmarks/run_costs.py [--device auto] [--models mlp,mlp256,cnn1d]
        [--steps 200] [--repeats 3] [--train-steps 300] [--metrics NAME,...] [--metric-repeats 2] [--threads N]

Models (built by ``experiments.models`` from ``conf/model``, data by ``experiments.data`` from
``conf/dataset/mnist1d.yaml``, optimizer by ``experiments.optim`` from ``conf/optimizer/momentum.yaml``):

- ``mlp``: the default MLP (40-100-100-10) on the default MNIST-1D (4,000 training samples);
- ``mlp256``: a 40-256-256-10 MLP on 16,000 training samples (``dataset.num_samples=20000``);
- ``cnn1d``: the MNIST-1D CNN (``conf/model/cnn1d.yaml``) on the default MNIST-1D.

Training: a step is forward, backward and ``optimizer.step()`` (SGD with momentum) on a batch sliced
from a seeded permutation of the in-memory tensors, as the runner does; timed over ``--steps`` steps
after 20 warm-up steps, best of ``--repeats``, every (model, batch) round-robin, and scaled to 1,000
steps, at batch 64 and at batch = 10% of the training set.

Metrics: every registered metric (``flatness.REGISTRY``) at its default settings, one at a time, through
``flatness.measure(model, (x_train, y_train), (x_test, y_test), metrics=[name], init=...)``, on the
model after ``--train-steps`` steps at batch 64. Each metric first runs once on the first 256 samples
(a warm-up of its code paths), then is timed on the full data, best of ``--metric-repeats``. ``◀ slow``
marks a metric that takes at least 10% of its model's total metric time.
"""

from __future__ import annotations

import argparse
import copy
import functools
import time

import torch
import torch.nn.functional as F
from _common import (
    DATA_DIR,
    add_threads_arg,
    conf,
    describe,
    markdown,
    pick_device,
    set_threads,
    sync_for,
    timed,
)

import flatness
from experiments.data import build_dataset
from experiments.models import build_model
from experiments.optim import build_optimizer

MODELS = {
    "mlp": ("MLP 40-100-100-10", conf("model/mlp"), {}),
    "mlp256": ("MLP 40-256-256-10", conf("model/mlp", width=256), {"num_samples": 20000}),
    "cnn1d": ("MNIST-1D CNN", conf("model/cnn1d"), {}),
}
SLOW_SHARE = 0.10  # a metric taking at least this share of its model's metric time is marked


class Batches:
    """Batches of indices sliced from a seeded permutation, a new one each epoch (the last partial
    batch of an epoch is dropped, so every step has the same size)."""

    def __init__(self, n: int, batch: int, device: torch.device, seed: int = 0):
        self.n, self.batch, self.device = n, batch, device
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.perm, self.pos = None, n

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen, device=self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx


def train_steps(model, opt, x, y, batches: Batches, steps: int) -> None:
    model.train()
    for _ in range(steps):
        idx = batches.next()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def setup(key: str, device: torch.device, seed: int = 0):
    """Data, a freshly initialised model and its optimizer, as the runner builds them."""
    _, model_cfg, data_overrides = MODELS[key]
    data = build_dataset(conf("dataset/mnist1d", **data_overrides), DATA_DIR).to(device)
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.input_shape, data.num_classes).to(device)
    opt_cfg = conf("optimizer/momentum")
    opt = build_optimizer(opt_cfg, model, opt_cfg.lr, opt_cfg.weight_decay)
    return data, model, opt


def time_training(keys, device, steps: int, repeats: int) -> dict[tuple[str, str], float]:
    """Seconds per 1,000 steps for each (model, "64" | "10%"), round-robin, best of ``repeats``."""
    sync = sync_for(device)
    cases = {}
    for key in keys:
        data, model, opt = setup(key, device)
        for label, batch in (("64", 64), ("10%", data.num_train // 10)):
            batches = Batches(data.num_train, batch, device)
            run = functools.partial(
                train_steps, model, opt, data.x_train, data.y_train, batches, steps
            )
            train_steps(model, opt, data.x_train, data.y_train, batches, 20)  # warm-up
            cases[(key, label)] = run
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for case, run in cases.items():
            best[case] = min(best[case], timed(run, sync)[1])
    return {case: seconds * 1000 / steps for case, seconds in best.items()}


def time_metrics(key, device, names, train_steps_before: int, repeats: int):
    """Seconds and result of each metric (best of ``repeats``, after a warm-up on 256 samples)."""
    sync = sync_for(device)
    data, model, opt = setup(key, device)
    init = copy.deepcopy(model.state_dict())
    train_steps(
        model,
        opt,
        data.x_train,
        data.y_train,
        Batches(data.num_train, 64, device),
        train_steps_before,
    )
    train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)
    small = tuple(t[:256] for t in train), tuple(t[:256] for t in test)
    for name in names:  # warm-up: every code path once, cheaply
        flatness.measure(model, *small, metrics=[name], init=init, on_error="record")
    seconds = dict.fromkeys(names, float("inf"))
    values = {}
    for _ in range(repeats):
        for name in names:
            out, t = timed(
                lambda name=name: flatness.measure(
                    model, train, test, metrics=[name], init=init, on_error="record"
                ),
                sync,
            )
            seconds[name] = min(seconds[name], t)
            values[name] = out[name]
    return seconds, values, data, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}"
    )
    ap.add_argument("--steps", type=int, default=200, help="timed training steps per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the training timings")
    ap.add_argument("--train-steps", type=int, default=300, help="training before the metrics")
    ap.add_argument(
        "--metrics", default=None, help="comma-separated names (default: all registered)"
    )
    ap.add_argument("--metric-repeats", type=int, default=2, help="timed runs of each metric")
    add_threads_arg(ap)
    args = ap.parse_args()
    device = pick_device(args.device)
    set_threads(args.threads, device)
    keys = [k for k in args.models.split(",") if k]
    unknown = set(keys) - set(MODELS)
    if unknown:
        ap.error(f"unknown model(s) {sorted(unknown)}; choose from {list(MODELS)}")
    names = args.metrics.split(",") if args.metrics else list(flatness.REGISTRY)
    flatness.validate(names)
    started = time.perf_counter()
    print(describe(device))

    training = time_training(keys, device, args.steps, args.repeats)
    rows, failures = {}, {}
    for key in keys:
        seconds, values, data, model = time_metrics(
            key, device, names, args.train_steps, args.metric_repeats
        )
        column = MODELS[key][0]
        ok = [n for n in names if values[n].failure is None]
        total = sum(seconds[n] for n in ok)
        n_params = sum(p.numel() for p in model.parameters())
        cells = {
            "parameters": f"{n_params:,}",
            "training samples": f"{data.num_train:,}",
            "train s/1000 steps, batch 64": f"{training[(key, '64')]:.2f}",
            "train s/1000 steps, batch 10%": (
                f"{training[(key, '10%')]:.2f} (B={data.num_train // 10})"
            ),
        }
        if "train_loss" in values:
            cells[f"train loss after {args.train_steps} steps"] = (
                f"{float(values['train_loss']):.3f}"
            )

        for name in names:
            mark = " ◀ slow" if seconds[name] >= SLOW_SHARE * total else ""
            m = values[name]
            products = m.extra.get("products")
            if products is None and {"vectors", "steps"} <= m.settings.keys():  # SLQ
                products = m.settings["vectors"] * m.settings["steps"]
            hvps = f" ({products} HVPs)" if products is not None else ""
            cells[f"metric {name}"] = f"{seconds[name]:.3g}{hvps}{mark}"
            if m.failure is not None:  # recorded, not raised: the other metrics still run
                cells[f"metric {name}"] = f"FAILED ({m.failure.split(':')[0]})"
                failures[name] = m.failure
        cells["metrics, all (s)"] = f"{total:.3g}" + (
            " (failed ones left out)" if len(ok) < len(names) else ""
        )
        if "lambda_max" in values:
            cells["HVP path (lambda_max)"] = values["lambda_max"].extra.get("hvp_mode", "")
        for row, cell in cells.items():
            rows.setdefault(row, {})[column] = cell
    table = [{"": row, **cells} for row, cells in rows.items()]
    print(
        f"\nRun costs on {device}: training at batch 64 and 10% of the training set (SGD, momentum "
        f"0.9), {args.steps} steps × best of {args.repeats}, scaled to 1,000 steps; each metric at "
        f"its defaults after {args.train_steps} training steps, best of {args.metric_repeats} after a "
        f"warm-up on 256 samples (seconds; ◀ slow: ≥ {SLOW_SHARE:.0%} of the model's metric time)"
    )
    print(markdown(table))
    for name, failure in failures.items():
        print(f"FAILED {name}: {failure.splitlines()[0][:200]}")
    print(f"\n(run_costs.py took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
