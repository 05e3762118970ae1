import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.errors import ConfigError
from experiments.optim import SAM, build_optimizer, lr_factor, scaled_lr


def test_lr_scaling_follows_the_batch_size_ratio():
    assert scaled_lr(0.1, 512, 128, "none") == 0.1
    assert scaled_lr(0.1, 512, 128, "linear") == pytest.approx(0.4)
    assert scaled_lr(0.1, 512, 128, "sqrt") == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="lr_scaling"):
        scaled_lr(0.1, 512, 128, "cubic")


def test_schedules():
    assert lr_factor("constant", 7, 10, [], 0.1) == 1.0
    assert lr_factor("cosine", 0, 10, [], 0.1) == 1.0
    assert lr_factor("cosine", 5, 10, [], 0.1) == pytest.approx(0.5)
    steps = [lr_factor("step", e, 100, [0.5, 0.75], 0.1) for e in (0, 49, 50, 74, 75, 99)]
    assert steps == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def _quadratic_setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def loss_at(w, b):
        return ((x @ w.T + b - y) ** 2).mean()

    return model, x, y, loss_at


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_equals_the_formula(adaptive):
    """One SAM/ASAM step by hand: w ← w − lr ∇L(w + e), e = ρ T² g/‖T g‖ (T = 1 for SAM)."""
    model, x, y, loss_at = _quadratic_setup()
    rho, eta, lr = 0.05, 0.01, 0.1
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    gw, gb = torch.autograd.grad(loss_at(w, b), (w, b))
    tw = (w0.abs() + eta) if adaptive else torch.ones_like(w0)
    tb = torch.ones_like(b0)  # biases are not rescaled
    norm = torch.cat([(tw * gw).reshape(-1), (tb * gb).reshape(-1)]).norm()
    ew, eb = rho * tw**2 * gw / norm, rho * tb**2 * gb / norm
    w2, b2 = (w0 + ew).requires_grad_(), (b0 + eb).requires_grad_()
    gw2, gb2 = torch.autograd.grad(loss_at(w2, b2), (w2, b2))

    opt = SAM(
        model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, adaptive=adaptive, eta=eta
    )

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(model.weight, w0 - lr * gw2, atol=1e-6)
    assert torch.allclose(model.bias, b0 - lr * gb2, atol=1e-6)


def test_sam_second_pass_leaves_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    twin = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    twin.train()
    twin(x)  # exactly one forward pass at the unperturbed weights
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(model[1], k), getattr(twin[1], k)), k


def test_build_optimizer_uses_the_config():
    model = nn.Linear(2, 2)
    cfg = OmegaConf.create({"name": "momentum", "momentum": 0.9, "nesterov": True})
    opt = build_optimizer(cfg, model, lr=0.3, weight_decay=1e-4)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.3,
        0.9,
        True,
        1e-4,
    )
    sam = build_optimizer(
        OmegaConf.create(
            {
                "name": "asam",
                "base": "adamw",
                "rho": 0.5,
                "eta": 0.01,
                "betas": [0.9, 0.99],
                "eps": 1e-8,
            }
        ),
        model,
        lr=1e-3,
        weight_decay=0.01,
    )
    assert isinstance(sam, SAM) and sam.adaptive and isinstance(sam.base, torch.optim.AdamW)
    assert math.isclose(sam.param_groups[0]["weight_decay"], 0.01)


def test_steps_per_epoch_keeps_partial_batches_but_not_single_samples():
    from experiments.train import steps_per_epoch

    assert steps_per_epoch(100, 32, drop_last=False) == 4  # 32+32+32+4
    assert steps_per_epoch(100, 32, drop_last=True) == 3
    assert steps_per_epoch(97, 32, drop_last=False) == 3  # a remainder of 1 is dropped
    assert steps_per_epoch(64, 64, drop_last=False) == 1
