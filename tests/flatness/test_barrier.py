"""The loss barrier on a straight path (Frankle et al. 2020) against answers known in closed form: 0 on
a convex loss whatever the two end points, and the exact rise of a double well between its minima."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flatness
from flatness.barrier import barrier_of, linear_barrier, path_losses
from flatness.objective import Objective


def test_barrier_is_zero_on_a_convex_loss_between_any_two_points():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()  # softmax regression: cross-entropy is convex in the weights
    x, y = torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,))
    start = {k: torch.randn_like(v) * 3 for k, v in model.named_parameters()}
    got = linear_barrier(Objective(model, (x, y)), init=start, points=41)
    losses = np.array(got.extra["loss"])
    assert losses[0] > losses[-1] + 0.1  # the two ends really differ
    assert got.value == pytest.approx(0.0, abs=1e-12)


class Well(nn.Module):
    """loss(w) = (w² − 1)² through a model whose output is the loss itself."""

    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=torch.float64))

    def forward(self, x):
        return ((self.w**2 - 1) ** 2).expand(len(x), 1)


def identity_loss(out, y):
    return out.mean()


def test_barrier_of_a_double_well_is_its_height_between_the_minima():
    model = Well(1.0)
    obj = Objective(model, (torch.zeros(2, 1), torch.zeros(2)), identity_loss)
    got = linear_barrier(obj, init={"w": torch.tensor([-1.0])}, points=21)
    assert got.value == pytest.approx(1.0, abs=1e-12)  # (0² − 1)² at t = 1/2, ends at 0
    assert got.extra["t_at_max"] == pytest.approx(0.5)
    # ends at unequal heights: the rise is measured above the chord, not above the larger end
    model.w.data.fill_(0.5)
    ts, losses = path_losses(
        Objective(model, (torch.zeros(2, 1), torch.zeros(2)), identity_loss),
        {"w": torch.tensor([-1.0])},
        points=31,
    )
    want = max(((-1 + 1.5 * t) ** 2 - 1) ** 2 - t * 0.5625 for t in ts)
    assert barrier_of(ts, losses) == pytest.approx(want, abs=1e-12)


def test_barrier_through_measure_uses_init_and_refuses_mismatched_weights():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    same = flatness.measure(model, (x, y), metrics=["linear_barrier"], init=init)
    assert same["linear_barrier"].value == pytest.approx(0.0, abs=1e-7)  # a path of one point
    bad = dict(init, **{"0.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="0.weight"):
        linear_barrier(Objective(model, (x, y)), init=bad)
    with pytest.raises(ValueError, match="init"):
        linear_barrier(Objective(model, (x, y)))
    assert F.cross_entropy(model(x), y).item() == pytest.approx(
        same["linear_barrier"].extra["loss"][-1], rel=1e-5
    )
