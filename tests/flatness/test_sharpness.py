"""Sharpness against exact answers: at the minimum of a quadratic, the worst case over an ℓ2 ball is
½ρ²λmax and the Gaussian average is ½ρ² tr(H); Keskar's maximiser against brute force on a
two-parameter model; PAC-Bayes σ where the Monte Carlo error rise crosses the target."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatness import params as P
from flatness.objective import Objective
from flatness.sharpness import (
    average_sharpness,
    keskar_sharpness,
    m_sharpness,
    pacbayes_sigma,
    worst_case_sharpness,
)


def mse(out, y):
    return ((out - y) ** 2).mean()


@pytest.fixture
def quadratic_at_minimum():
    torch.manual_seed(0)
    n, d = 64, 6
    x = torch.randn(n, d) * torch.linspace(0.5, 2.0, d)
    y = torch.randn(n, 1)
    design = torch.cat([x, torch.ones(n, 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution  # the exact minimiser
    model = nn.Linear(d, 1)
    with torch.no_grad():
        model.weight.copy_(solution[:d].T)
        model.bias.copy_(solution[d])
    H = ((2.0 / n) * design.T @ design).numpy()
    return Objective(model, (x, y), mse), H


def test_worst_case_l2_sharpness_at_a_minimum_is_half_rho_squared_lambda_max(quadratic_at_minimum):
    obj, H = quadratic_at_minimum
    rho = 0.05
    res = worst_case_sharpness(obj, rho, norm="l2", steps=100)
    exact = 0.5 * rho**2 * np.linalg.eigvalsh(H).max()
    assert res.value == pytest.approx(exact, rel=1e-2)
    linf = worst_case_sharpness(obj, rho, norm="linf", steps=100)
    assert linf.value >= res.value * (1 - 1e-3)  # the ℓ2 ball lies inside the ℓ∞ box


def test_average_sharpness_at_a_minimum_is_half_rho_squared_trace(quadratic_at_minimum):
    obj, H = quadratic_at_minimum
    rho = 0.05
    res = average_sharpness(obj, rho, samples=400, seed=1)
    exact = 0.5 * rho**2 * np.trace(H)
    assert abs(res.value - exact) <= 4 * res.error_bound  # the standard error


def test_box_average_sharpness_at_a_minimum_is_a_third_of_the_gaussian_one(quadratic_at_minimum):
    # δ uniform in [−ρ, ρ] has variance ρ²/3 per coordinate, so E rise = ½(ρ²/3) tr(H)
    obj, H = quadratic_at_minimum
    rho = 0.05
    res = average_sharpness(obj, rho, norm="linf", samples=400, seed=1)
    exact = 0.5 * rho**2 / 3 * np.trace(H)
    assert abs(res.value - exact) <= 4 * res.error_bound
    with pytest.raises(ValueError, match="norm"):
        average_sharpness(obj, rho, norm="l1")


def test_m_sharpness_with_one_batch_of_everything_is_worst_case_sharpness(quadratic_at_minimum):
    obj, _ = quadratic_at_minimum
    m = m_sharpness(obj, 0.05, m=obj.n, batches=1, seed=0, steps=10)
    plain = worst_case_sharpness(obj, 0.05, steps=10, seed=0)
    # equal up to float32 summation order (the batch is a permutation of the data)
    assert m.value == pytest.approx(plain.value, rel=1e-3)


def test_adaptive_sharpness_is_invariant_to_relu_rescaling_and_plain_is_not():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    scaled = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    with torch.no_grad():
        scaled[0].weight.copy_(net[0].weight * 10.0)
        scaled[2].weight.copy_(net[2].weight / 10.0)
    a, b = Objective(net, (x, y)), Objective(scaled, (x, y))
    assert a.value() == pytest.approx(b.value(), rel=1e-5)  # the same function
    ada = [average_sharpness(o, 0.1, adaptive=True, samples=10, seed=2).value for o in (a, b)]
    assert ada[0] == pytest.approx(ada[1], rel=1e-4)
    plain = [average_sharpness(o, 0.1, samples=10, seed=2).value for o in (a, b)]
    assert plain[1] > 2 * plain[0]  # the 1/10-scaled layer is far more sensitive to the same noise


def test_keskar_maximiser_stays_in_the_box_and_matches_brute_force():
    """Two parameters: y = tanh(w·x + b) with MSE; brute force over a 301×301 grid of the box."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(1, 1), nn.Tanh())
    with torch.no_grad():
        model[0].weight.fill_(0.7)
        model[0].bias.fill_(-0.2)
    x = torch.linspace(-2, 2, 50)[:, None]
    y = torch.sin(2 * x)
    obj = Objective(model, (x, y), mse)
    eps = 0.2
    res = keskar_sharpness(obj, eps, max_iter=50)
    assert res.extra["max_box_violation"] == 0.0
    w0 = P.flatten(obj.params).double()
    hw = eps * (w0.abs() + 1)
    grid = [np.linspace(-h, h, 301) for h in hw.tolist()]
    f0 = obj.value()
    best = max(
        obj.value(
            {
                "0.weight": torch.tensor([[w0[0] + a]]).float(),
                "0.bias": torch.tensor([w0[1] + b]).float(),
            }
        )
        for a in grid[0][::10]
        for b in grid[1][::10]
    )
    brute = 100 * (best - f0) / (1 + f0)
    assert res.value >= brute * (1 - 1e-3)
    assert res.value <= brute * 1.01  # the coarse grid may miss a little, never much
    pga = keskar_sharpness(obj, eps, method="pga", max_iter=50)
    assert pga.extra["max_box_violation"] == 0.0 and pga.value == pytest.approx(res.value, rel=1e-2)
    sub = keskar_sharpness(obj, eps, subspace_dim=1, seed=0)
    assert sub.value >= 0 and sub.settings["subspace_dim"] == 1


def test_pacbayes_sigma_lands_where_the_error_rise_crosses_the_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(300, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    init = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for magnitude_aware in (False, True):
        res = pacbayes_sigma(
            Objective(model, (x, y)),
            target_rise=0.1,
            rel_tol=0.01,
            samples=8,
            magnitude_aware=magnitude_aware,
            init=init,
        )
        assert res.extra["status"] == "ok"
        assert res.extra["rise_at_sigma"] <= 0.1
        assert res.extra["sigma_upper"] / res.value <= 1.01 + 1e-9
        upper = pacbayes_sigma(
            Objective(model, (x, y)),
            target_rise=0.1,
            samples=8,
            magnitude_aware=magnitude_aware,
            sigma_min=res.extra["sigma_upper"],
            sigma_max=10 * res.extra["sigma_upper"],
        )
        assert (
            upper.extra["status"] == "below sigma_min"
        )  # just above σ the rise exceeds the target
        assert res.extra["inverse_sigma_squared"] == pytest.approx(1 / res.value**2)
        assert np.isfinite(res.extra["bound_term"])
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        pacbayes_sigma(Objective(model, (x, y)), sigma_min=1.0, sigma_max=0.1)
