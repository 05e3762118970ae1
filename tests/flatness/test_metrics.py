import pytest
import torch
from torch import nn

import flatness
from flatness import params as P
from flatness.objective import Objective


@pytest.fixture
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    train = (torch.randn(50, 4), torch.randint(0, 3, (50,)))
    test = (torch.randn(40, 4), torch.randint(0, 3, (40,)))
    return model, train, test


def test_measure_returns_a_flat_row_with_values_and_settings(problem):
    model, train, test = problem
    init = P.named_params(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    results = flatness.measure(
        model,
        train,
        test,
        metrics=[
            "train_error",
            "test_error",
            "gap",
            "param_norm",
            "distance_from_init",
            "param_count",
        ],
        init=init,
    )
    row = {name: m.value for name, m in results.items()}
    with torch.no_grad():
        train_err = (model(train[0]).argmax(1) != train[1]).sum().item() / 50
        test_err = (model(test[0]).argmax(1) != test[1]).sum().item() / 40
    assert row["gap"] == pytest.approx(test_err - train_err)
    assert row["train_error"] == pytest.approx(train_err)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert row["param_norm"] == pytest.approx(flat.norm().item(), rel=1e-6)
    # every one of the 4*8 + 8 + 8*3 + 3 = 67 parameters moved by exactly 0.5
    assert row["param_count"] == 67
    assert row["distance_from_init"] == pytest.approx(0.5 * 67**0.5, rel=1e-6)


def test_unknown_metric_and_setting_are_clear_errors(problem):
    model, train, test = problem
    with pytest.raises(KeyError, match="known metrics: .*gap"):
        flatness.measure(model, train, metrics=["no_such_metric"])
    with pytest.raises(KeyError, match="has no setting"):
        flatness.measure(model, train, metrics={"param_norm": {"eps": 1}})


def test_metrics_needing_test_data_or_init_say_so(problem):
    model, train, _ = problem
    with pytest.raises(ValueError, match="test data"):
        flatness.measure(model, train, metrics=["test_loss"])
    with pytest.raises(ValueError, match="initial weights"):
        flatness.measure(model, train, metrics=["distance_from_init"])


def bias_free_relu_net(depth_hidden=2, seed=0):
    torch.manual_seed(seed)
    layers, width = [], 5
    fan_in = 4
    for _ in range(depth_hidden):
        layers += [nn.Linear(fan_in, width, bias=False), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 3, bias=False))
    return nn.Sequential(*layers)


def test_homogeneity_identity_behind_the_fisher_rao_norm():
    """⟨θ, ∇θ f⟩ = (L+1) f for a bias-free ReLU net with L hidden layers (Liang et al. 2019)."""
    from flatness.norms import fisher_rao_norm

    net = bias_free_relu_net(depth_hidden=2)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    params = {k: p.detach() for k, p in net.named_parameters()}
    logits, directional = torch.func.jvp(
        lambda p: torch.func.functional_call(net, p, (x,)), (params,), (params,)
    )
    assert torch.allclose(directional, 3 * logits, atol=1e-5)
    # hence the Fisher-Rao norm equals (L+1)·sqrt(E⟨∂ℓ/∂f, f⟩²), with ∂ℓ/∂f = softmax(f) − onehot(y)
    with torch.no_grad():
        f = net(x)
        dl_df = torch.softmax(f, -1) - torch.nn.functional.one_hot(y, 3)
        expected = 3 * ((dl_df * f).sum(-1) ** 2).mean().sqrt().item()
    measured = fisher_rao_norm(Objective(net, (x, y), batch_size=7))
    assert measured == pytest.approx(expected, rel=1e-5)


def test_norm_baselines_against_direct_computations():
    from flatness.norms import frobenius_product, frobenius_sum, path_norm, spectral_product

    net = bias_free_relu_net(depth_hidden=1)
    w1, w2 = net[0].weight.detach().double(), net[2].weight.detach().double()
    assert frobenius_sum(net) == pytest.approx((w1.norm() ** 2 + w2.norm() ** 2).item())
    assert frobenius_product(net) == pytest.approx((w1.norm() ** 2 * w2.norm() ** 2).item())
    s1, s2 = torch.linalg.svdvals(w1)[0], torch.linalg.svdvals(w2)[0]
    assert spectral_product(net) == pytest.approx((s1**2 * s2**2).item(), rel=1e-6)
    # ℓ2 path norm of a one-hidden-layer net: sqrt(Σ_{i,j,k} w1[j,i]² w2[k,j]²)
    paths = ((w2**2) @ (w1**2)).sum()
    assert path_norm(net, (4,)) == pytest.approx(paths.sqrt().item(), rel=1e-6)


def test_every_randomised_metric_is_deterministic_for_a_fixed_seed(problem):
    model, train, test = problem
    names = [
        "lambda_max",
        "hessian_top_k",
        "hessian_trace",
        "hessian_trace_hutchpp",
        "keskar_sharpness",
        "worst_case_sharpness",
        "m_sharpness",
        "average_sharpness",
        "pacbayes_sigma",
    ]
    settings = {n: {} for n in names}
    settings["hessian_top_k"] = {"k": 2}
    settings["m_sharpness"] = {"m": 10, "batches": 3}
    settings["hessian_trace_hutchpp"] = {"products": 12}
    first = flatness.measure(model, train, test, metrics=settings)
    again = flatness.measure(model, train, test, metrics=settings)
    assert first == again
    other = flatness.measure(model, train, metrics={"hessian_trace": {"seed": 1}})
    assert other["hessian_trace"].value != first["hessian_trace"].value


def test_defaults_for_none_and_clear_errors_for_a_module_as_init_or_x_alone(problem):
    model, train, _ = problem
    results = flatness.measure(model, train, metrics=None)
    assert list(results) == list(flatness.DEFAULT_METRICS)
    trace = results["hessian_trace"]
    # the trace says whether it reached its tolerance before running out of probes
    assert trace.extra["converged"] == (trace.extra["relative_stderr"] <= trace.settings["rtol"])
    with pytest.raises(TypeError, match="state_dict"):
        flatness.measure(model, train, metrics=["distance_from_init"], init=model)
    with pytest.raises(TypeError, match=r"\(x, y\)"):
        flatness.measure(model, train[0])
    with pytest.raises(ValueError, match="metrics.hessian_esd.vectors"):
        flatness.Hessian(model, train).density(vectors=0)
