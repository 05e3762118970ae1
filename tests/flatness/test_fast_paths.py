"""The fast paths that the speed work added, each against the plain computation it replaces."""

import importlib

import pytest
import torch
import torch.nn.functional as F

E = importlib.import_module("flatness.evaluate")  # the module (flatness.evaluate is the function)


def test_evaluation_agrees_with_a_plain_loss_and_argmax():
    # (a fused max-based cross-entropy was tried for surfaces and left out: it rounds otherwise
    # than the criterion checks' loss, whose every bit decides where training stops)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 4))
    x, y = torch.randn(64, 5), torch.randint(0, 4, (64,))
    with torch.no_grad():
        out = model(x)
    e = E.evaluate(model, (x, y), batch_size=20)
    assert e.loss == pytest.approx(F.cross_entropy(out.double(), y).item(), rel=1e-6)
    assert e.accuracy == (out.argmax(-1) == y).double().mean().item()
