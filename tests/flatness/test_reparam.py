"""Dinh et al.'s α-rescaling: the function is unchanged, the Hessian transforms as D⁻¹HD⁻¹, the
filter-normalised slice is unchanged by layer-wise α, and what cannot be kept equal is refused."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.models import build_model
from flatness import params as P
from flatness.objective import Objective
from flatness.reparam import RescaleError, rescale
from flatness.surface import surface_1d

MODELS = [
    ("mlp", (40,), {}),
    ("cnn", (1, 8, 8), {"channels": 4}),
    ("cnn", (1, 8, 8), {"channels": 4, "batch_norm": True}),
]


def built(name, shape, kw, seed=0):
    torch.manual_seed(seed)
    model = build_model(OmegaConf.create({"name": name, **kw}), shape, 5)
    x = torch.randn(64, *shape)
    model.train()
    with torch.no_grad():
        model(x)  # batch-norm running statistics that are not the defaults
    return model.eval(), x


@pytest.mark.parametrize("name, shape, kw", MODELS)
@pytest.mark.parametrize("mode", ["layer", "neuron"])
@pytest.mark.parametrize("alpha", [1e-2, 1e2])
def test_logits_are_unchanged_and_the_input_model_untouched(name, shape, kw, mode, alpha):
    model, x = built(name, shape, kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = rescale(model, alpha=alpha, layers=[0, 1] if mode == "layer" else [0], mode=mode, check=x)
    with torch.no_grad():
        assert torch.allclose(out.model(x), model(x), rtol=1e-4, atol=1e-5)
    assert out.relative_change < 1e-5
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    changed = P.flatten(P.named_params(out.model)) - P.flatten(P.named_params(model))
    assert changed.abs().max() > 1e-3  # the weights did move


@pytest.mark.parametrize("mode", ["layer", "neuron"])
def test_hessian_transforms_as_d_inverse_h_d_inverse(mode):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(30, 3), torch.randint(0, 2, (30,))
    out = rescale(
        net, alpha=3.0, layers=[1, 2] if mode == "layer" else [1], mode=mode, spread=0.5, check=x
    )
    theta, theta2 = (
        P.flatten(P.named_params(net)).double(),
        P.flatten(P.named_params(out.model)).double(),
    )
    d = theta2 / theta  # the diagonal reparametrisation θ' = Dθ, read off the weights
    assert not torch.allclose(d, torch.ones_like(d))
    h, h2 = Objective(net, (x, y)).flat_hvp, Objective(out.model, (x, y)).flat_hvp
    for seed in range(3):
        v = torch.randn(len(d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        np.testing.assert_allclose(h2(v).numpy(), (h(v / d) / d).numpy(), rtol=1e-4, atol=1e-6)


def test_filter_normalised_slice_is_identical_after_a_layerwise_rescale():
    model, x = built("mlp", (40,), {})
    y = torch.randint(0, 5, (64,))
    out = rescale(model, alpha=10.0, layers=[0, 1], check=x)
    a = surface_1d(model, (x, y), points=9, seed=3)
    b = surface_1d(out.model, (x, y), points=9, seed=3)
    np.testing.assert_allclose(a.values["train_loss"], b.values["train_loss"], rtol=1e-4)
    raw_a = surface_1d(model, (x, y), points=9, seed=3, normalization="none")
    raw_b = surface_1d(out.model, (x, y), points=9, seed=3, normalization="none")
    assert not np.allclose(raw_a.values["train_loss"], raw_b.values["train_loss"], rtol=1e-2)


def test_what_cannot_be_kept_equal_is_refused():
    resnet = build_model(OmegaConf.create({"name": "resnet20", "width": 4}), (3, 8, 8), 5)
    with pytest.raises(RescaleError, match="BasicBlock"):
        rescale(resnet, alpha=10.0)
    with pytest.raises(RescaleError, match="Tanh"):
        rescale(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)), alpha=10.0)
    model, _ = built("mlp", (40,), {})
    with pytest.raises(RescaleError, match="> 0"):
        rescale(model, alpha=-1.0)
    with pytest.raises(RescaleError, match="adjacent"):
        rescale(model, alpha=2.0, layers=[0, 2])
    with pytest.raises(RescaleError, match="multiply to 1"):
        rescale(model, factors=[2.0, 1.0, 1.0])
    with pytest.raises(RescaleError, match="hidden layer"):
        rescale(model, alpha=2.0, mode="neuron", layers=[2])
