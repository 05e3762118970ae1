"""The library checks its inputs at the door (issue 16): each bad model, data or init fails with an
error naming the argument, before any measuring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flatness


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    return model, x, y


def bad_x():
    model, x, y = tiny()
    x[3, 1] = float("nan")
    return (model, (x, y), {}), "data: the inputs x hold NaN"


def inf_x():
    model, x, y = tiny()
    x[0, 0] = float("inf")
    return (model, (x, y), {}), "data: the inputs x hold NaN or infinity"


def inf_weight():
    model, x, y = tiny()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    return (model, (x, y), {}), "model: parameter 0.weight holds NaN or infinity"


def no_params():
    _, x, y = tiny()
    return (nn.ReLU(), (x, y), {}), "model: the model has no trainable parameter"


def not_a_module():
    _, x, y = tiny()
    return (lambda v: v, (x, y), {}), "model: expected a torch.nn.Module"


def lengths():
    model, x, y = tiny()
    return (model, (x, y[:5]), {}), "data: 32 inputs but 5 targets"


def settings_as_test():
    model, x, y = tiny()
    return (model, (x, y), {"test": {"lambda_max": {"tol": 1e-3}}}), "test: expected (x, y)"


def init_shape():
    model, x, y = tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    init["0.weight"] = init["0.weight"][:1]  # would broadcast into a wrong distance
    kw = {"init": init, "metrics": ["distance_from_init"]}
    return (model, (x, y), kw), "init: 0.weight has shape (1, 4), the model's is (8, 4)"


def init_missing():
    model, x, y = tiny()
    init = {k: v for k, v in model.state_dict().items() if k != "2.bias"}
    return (model, (x, y), {"init": init, "metrics": ["distance_from_init"]}), "init: lacks"


def big_seed():
    model, x, y = tiny()
    kw = {"metrics": {"lambda_max": {"seed": 2**64}}}
    return (model, (x, y), kw), "metrics.lambda_max.seed"


CASES = [bad_x, inf_x, inf_weight, no_params, not_a_module, lengths, settings_as_test, init_shape,
         init_missing, big_seed]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_a_bad_input_is_named_before_any_measuring(case):
    (model, data, kwargs), said = case()
    with pytest.raises((ValueError, TypeError)) as err:
        flatness.measure(model, data, **kwargs)
    assert str(err.value).startswith(said.split(" hold")[0]), str(err.value)
    assert said in str(err.value)


def test_a_surface_of_a_model_without_parameters_is_refused_by_name():
    _, x, y = tiny()
    with pytest.raises(ValueError, match="^model: the model has no trainable parameter"):
        flatness.surface_1d(nn.ReLU(), (x, y), points=3)


def test_good_inputs_still_measure_and_init_gives_the_distance():
    model, x, y = tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)  # moved by 1 in each of its 32 entries
    out = flatness.measure(model, (x, y), metrics=["distance_from_init"], init=init)
    assert out["distance_from_init"].value == pytest.approx(32**0.5)
