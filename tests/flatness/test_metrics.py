import pytest
import torch
from torch import nn

import flatness
from flatness import params as P


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
    row = flatness.measure(
        model,
        train=train,
        test=test,
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
        flatness.measure(model, train=train, metrics=["no_such_metric"])
    with pytest.raises(KeyError, match="has no setting"):
        flatness.measure(model, train=train, metrics={"param_norm": {"eps": 1}})


def test_metrics_needing_test_data_or_init_say_so(problem):
    model, train, _ = problem
    with pytest.raises(ValueError, match="test data"):
        flatness.measure(model, train=train, metrics=["test_loss"])
    with pytest.raises(ValueError, match="initial weights"):
        flatness.measure(model, train=train, metrics=["distance_from_init"])
