"""``python -m experiments.analyse.wilson``: Wilson et al. 2017's counter-example to adaptive methods (§3.3).

A linearly separable least-squares problem: n points in d = 6n dimensions; label y = +1 with
probability p > 1/2; features x₁ = y, x₂ = x₃ = 1, and a block of features unique to each point (one
when y = +1, five when y = −1). From w₀ = 0, gradient descent and heavy ball converge to the
minimum-norm solution, which puts its weight on x₁ and classifies new points perfectly; AdaGrad,
RMSProp and Adam converge to a solution proportional to sign(Xᵀy), which leans on the always-on
features x₂, x₃ and predicts the majority class: test error ≈ 1 − p. A new point shares only the
first three features with the training set (its unique features were never seen, so their weights
stay 0), so its prediction is sign(w₁y + w₂ + w₃).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from experiments.store import write_table

OPTIMIZERS = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "heavy_ball": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
}
LEARNING_RATES = {"sgd": 0.1, "heavy_ball": 0.02, "adagrad": 0.1, "rmsprop": 0.005, "adam": 0.005}


def make_problem(n: int, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set of Wilson et al. (their §3.3), as float64 tensors."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < p, 1.0, -1.0)
    x = np.zeros((n, 6 * n))
    x[:, 0], x[:, 1], x[:, 2] = y, 1.0, 1.0
    for i in range(n):
        start = 3 + 5 * i
        x[i, start : start + (1 if y[i] > 0 else 5)] = 1.0
    return torch.from_numpy(x), torch.from_numpy(y)


def train(
    name: str, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float
) -> tuple[torch.Tensor, float]:
    """Full-batch training on ½‖Xw − y‖²/n from w = 0; returns w and the final training loss."""
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS[name]([w], lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
    return w.detach(), float(0.5 * ((x @ w.detach() - y) ** 2).mean())


def test_error(w: torch.Tensor, p: float, n_test: int, seed: int) -> float:
    """Error on fresh points: their prediction is sign(w₁y + w₂ + w₃)."""
    rng = np.random.default_rng(seed + 10_000)
    y = np.where(rng.random(n_test) < p, 1.0, -1.0)
    score = w[0].item() * y + w[1].item() + w[2].item()
    return float(np.mean(np.sign(score) != y))


def run(
    n: int = 50, p: float = 0.7, seeds: int = 5, steps: int = 2000, n_test: int = 2000
) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        x, y = make_problem(n, p, seed)
        for name in OPTIMIZERS:
            w, loss = train(name, x, y, steps, LEARNING_RATES[name])
            train_err = float(np.mean(np.sign((x @ w).numpy()) != y.numpy()))
            rows.append(
                {
                    "optimizer": name,
                    "seed": seed,
                    "train_loss": loss,
                    "train_error": train_err,
                    "test_error": test_error(w, p, n_test, seed),
                    "majority_error": 1 - p,
                    "w1": w[0].item(),
                    "w2+w3": (w[1] + w[2]).item(),
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.analyse.wilson", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--p", type=float, default=0.7)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("results/tables"))
    args = ap.parse_args(argv)
    if not 0.5 < args.p < 1:
        ap.error("--p must be in (0.5, 1): the positive class is the majority")
    runs = run(args.n, args.p, args.seeds, args.steps)
    write_table(runs, args.out, "wilson_runs")
    summary = runs.groupby("optimizer", sort=False)[
        ["train_loss", "train_error", "test_error"]
    ].agg(["mean", "std"])
    summary.columns = [f"{a} {b}" for a, b in summary.columns]
    summary = summary.reset_index()
    write_table(summary, args.out, "wilson")
    print(summary.to_string(index=False))
    return runs


if __name__ == "__main__":
    main()
