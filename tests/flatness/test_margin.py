"""The output margin (Jiang et al. 2020): 1/γ² of the 10th-percentile margin, against margins
worked out by hand on a linear model whose logits are its inputs."""

import numpy as np
import pytest
import torch
from torch import nn

import flatness
from flatness.margin import inverse_margin, margins


def identity_model(classes: int = 3) -> nn.Module:
    model = nn.Linear(classes, classes, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(classes))
    return model


def test_margins_are_own_logit_minus_best_other():
    x = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.5], [1.0, 1.0, -4.0]])
    y = torch.tensor([0, 1, 2])
    m = margins(flatness.Objective(identity_model(), (x, y), batch_size=2))
    assert m.tolist() == pytest.approx([2.0, -0.5, -5.0])


def test_value_is_inverse_square_of_the_quantile_margin_and_scales_with_the_output():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x.argmax(1)
    x[y == 0, 0] += 1.0  # every sample right, with margins of various sizes
    x[y == 1, 1] += 1.0
    x[y == 2, 2] += 1.0
    own = x.gather(1, y[:, None]).squeeze(1)
    best_other = x.scatter(1, y[:, None], float("-inf")).amax(1)
    gamma = np.quantile((own - best_other).double().numpy(), 0.1)
    model = identity_model()
    got = inverse_margin(flatness.Objective(model, (x, y), batch_size=64))
    assert got.value == pytest.approx(1 / gamma**2, rel=1e-6)
    assert got.extra["margin"] == pytest.approx(gamma, rel=1e-6)
    assert got.settings["quantile"] == 0.1
    with torch.no_grad():
        model.weight.mul_(2.0)  # outputs twice as large: 1/γ² falls by 4
    assert inverse_margin(flatness.Objective(model, (x, y))).value == pytest.approx(
        got.value / 4, rel=1e-6
    )


def test_undefined_when_too_many_samples_are_misclassified():
    x = torch.tensor([[1.0, 0.0, 0.0]] * 5 + [[0.0, 1.0, 0.0]] * 5)
    y = torch.zeros(10, dtype=torch.long)  # half wrong: the 10th percentile margin is −1
    obj = flatness.Objective(identity_model(), (x, y))
    with pytest.raises(ValueError, match="undefined"):
        inverse_margin(obj)
    recorded = flatness.measure(
        identity_model(), (x, y), metrics={"inverse_margin": {}}, on_error="record"
    )
    assert recorded["inverse_margin"].failure and "undefined" in recorded["inverse_margin"].failure
