"""λmax of the mini-batch loss against dense Hessians of a tiny network: each batch's value, the
whole-set value at b = n, and Jensen's inequality over nested batches (the mean can only fall as b
grows), which any correct measurement must satisfy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flatness
from flatness.minibatch import minibatch_lambda_max
from flatness.objective import Objective
from tests.flatness.test_hessian import dense_hessian


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(32, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    return model, x, y


def dense_lambda_max(model, x, y) -> float:
    return float(np.linalg.eigvalsh(dense_hessian(model, x, y, F.cross_entropy))[-1])


def test_each_batch_is_the_dense_lambda_max_of_its_samples():
    model, x, y = tiny()
    got = minibatch_lambda_max(Objective(model, (x, y)), b=8, n_batches=4, tol=1e-8, seed=3)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    want = [
        dense_lambda_max(model, x[order[i : i + 8]], y[order[i : i + 8]]) for i in (0, 8, 16, 24)
    ]
    assert got.extra["values"] == pytest.approx(want, rel=1e-6)
    assert got.value == pytest.approx(sum(want) / 4, rel=1e-6)
    assert got.error_bound == pytest.approx(torch.tensor(want).std().item() / 2, rel=1e-6)


def test_the_mean_falls_over_nested_batches_down_to_the_whole_set():
    model, x, y = tiny()
    obj = Objective(model, (x, y))
    means = [
        minibatch_lambda_max(obj, b=b, n_batches=32 // b, tol=1e-8).value for b in (4, 8, 16, 32)
    ]
    assert means[-1] == pytest.approx(dense_lambda_max(model, x, y), rel=1e-6)
    assert all(small >= large - 1e-9 for small, large in zip(means, means[1:], strict=False))
    assert means[0] > 1.2 * means[-1]  # and by a margin here: small batches are much sharper


def test_it_is_a_registered_metric_with_validated_settings():
    model, x, y = tiny()
    out = flatness.measure(
        model, (x, y), metrics={"minibatch_lambda_max": {"b": 8, "n_batches": 2}}
    )
    assert out["minibatch_lambda_max"].extra["batches"] == 2
    with pytest.raises(ValueError, match="b"):
        flatness.validate({"minibatch_lambda_max": {"b": 0}})
    with pytest.raises(ValueError, match="exceeds"):
        minibatch_lambda_max(Objective(model, (x, y)), b=64)


def test_quadratic_per_sample_loss_has_the_known_batch_lambda_max():
    """Per-sample loss ½(aᵢ·w)²: the Hessian of a batch is its mean of aᵢaᵢᵀ, so λmax(L_1) is ‖aᵢ‖²
    sample by sample and λmax(L_n) is the top eigenvalue of AᵀA/n."""
    torch.manual_seed(0)
    a = torch.randn(24, 6, dtype=torch.float64) * torch.linspace(0.5, 2, 24)[:, None]
    model = nn.Linear(6, 1, bias=False).double()

    def half_square(out, y):
        return 0.5 * (out.squeeze(1) ** 2).mean()

    obj = Objective(model, (a, torch.zeros(24)), half_square)
    one = minibatch_lambda_max(obj, b=1, n_batches=24, tol=1e-10, seed=5)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    assert one.extra["values"] == pytest.approx((a[order] ** 2).sum(1).tolist(), rel=1e-8)
    whole = minibatch_lambda_max(obj, b=24, n_batches=1, tol=1e-10)
    assert whole.value == pytest.approx(torch.linalg.eigvalsh(a.T @ a / 24)[-1].item(), rel=1e-8)
