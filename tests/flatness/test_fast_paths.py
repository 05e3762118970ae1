"""The fast paths that the speed work added, each against the plain computation it replaces."""

import importlib

import pytest
import torch
import torch.nn.functional as F

E = importlib.import_module("flatness.evaluate")  # the module (flatness.evaluate is the function)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_fused_cross_entropy_and_accuracy_equal_the_plain_ones(scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * scale
    logits[:50] = 0.0  # ties everywhere: argmax takes the first index, and so must we
    logits[50:60, 3] = logits[50:60, 7] = 100.0 * scale  # a tie between two classes at the top
    y = torch.randint(0, 10, (500,), generator=g)
    loss, correct = E.cross_entropy_sum_and_correct(logits, y)
    ref = F.cross_entropy(logits.double(), y, reduction="sum").item()
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    assert int(correct) == int((logits.argmax(dim=-1) == y).sum())
    assert int(correct) >= int((y[:50] == 0).sum())  # the tied rows predicted class 0


def test_grid_engines_agree_with_plain_evaluation_through_the_fused_path():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 4))
    x, y = torch.randn(64, 5), torch.randint(0, 4, (64,))
    with torch.no_grad():
        out = model(x)
    e = E.evaluate(model, (x, y), batch_size=20)
    assert e.loss == pytest.approx(F.cross_entropy(out.double(), y).item(), rel=1e-6)
    assert e.accuracy == (out.argmax(-1) == y).double().mean().item()
