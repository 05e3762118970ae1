"""Measuring leaves the caller's state alone, states its mode, and refuses data that change between
passes (issue 25, items 4 and 9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import flatness
from flatness.data import DataChangedError, as_data


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.0), nn.Linear(6, 3)
    )


def _data(n=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_measuring_between_forward_and_backward_changes_nothing(mode):
    """The caller's forward, then a measure, then the caller's backward: the same gradients as
    without the measure; parameters, buffers, .grad and every submodule's mode unchanged."""
    x, y = _data()
    model = _bn_net()
    model.train()
    model[1].eval()  # a mixed state: a measure must put back each submodule's own mode
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)  # a caller's accumulated gradient
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]

    reference = _bn_net()
    reference.load_state_dict(model.state_dict())
    reference.train()
    reference[1].eval()
    F.cross_entropy(reference(x), y).backward()

    loss = F.cross_entropy(model(x), y)
    metrics = {
        "lambda_max": {"max_iter": 5},
        "train_loss": {},
        "worst_case_sharpness": {"steps": 2},
    }
    flatness.measure(model, (x, y), metrics=metrics, mode=mode)
    flatness.surface_1d(model, (x, y), points=3)
    flatness.evaluate(model, (x, y), mode=mode)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    loss.backward()  # the caller's graph is intact
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad + 0.5, atol=1e-6)


def test_train_mode_uses_batch_statistics_and_leaves_running_statistics():
    x, y = _data()
    model = _bn_net()
    with torch.no_grad():
        model.train()
        model(x * 3 + 1)  # running statistics far from this data's
    model.eval()
    before = model[1].running_mean.clone()
    got = flatness.evaluate(model, (x, y), mode="train", batch_size=64)
    model.train()
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y).item()  # batch statistics of the one batch
    model.eval()
    model[1].running_mean.copy_(before)
    assert got.loss == pytest.approx(expected, rel=1e-6)
    assert got.loss != pytest.approx(flatness.evaluate(model, (x, y)).loss, rel=1e-3)
    assert torch.equal(model[1].running_mean, before)
    results = flatness.measure(model, (x, y), metrics=["train_loss", "lambda_max"], mode="train")
    assert results["train_loss"].value == pytest.approx(expected, rel=1e-6)
    assert {m.settings["mode"] for m in results.values()} == {"train"}
    assert torch.equal(model[1].running_mean, before)


def test_train_mode_with_dropout_is_refused():
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.2), nn.Linear(6, 3))
    with pytest.raises(ValueError, match="mode='train' with dropout.*mode='eval'"):
        flatness.measure(model, _data(), mode="train")
    with pytest.raises(ValueError, match="mode must be"):
        flatness.measure(model, _data(), mode="training")
    assert flatness.measure(model, _data(), metrics=["train_loss"])["train_loss"].value > 0


class _Counting(Dataset):
    """A dataset that counts how many samples were read."""

    def __init__(self, x, y, augment=False):
        self.x, self.y, self.augment, self.reads = x, y, augment, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        noise = torch.randn(self.x.shape[1]) * 0.1 if self.augment else 0
        return self.x[i] + noise, self.y[i]


def test_loader_that_changes_between_passes_is_an_error():
    x, y = _data(30)
    model = _bn_net().eval()
    dropping = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, drop_last=True)
    with pytest.raises(DataChangedError, match="different data on two passes.*tensors"):
        flatness.measure(model, dropping, metrics=["lambda_max"])
    augmenting = DataLoader(_Counting(x, y, augment=True), batch_size=8)
    with pytest.raises(DataChangedError, match="augmentation"):
        flatness.Hessian(model, augmenting).eigenvalues(1)
    # shuffling every sample is fine: the same λmax as in a fixed order
    shuffled = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    fixed = flatness.measure(model, (x, y), metrics={"lambda_max": {"tol": 1e-8}})
    got = flatness.measure(model, shuffled, metrics={"lambda_max": {"tol": 1e-8}})
    assert got["lambda_max"].value == pytest.approx(fixed["lambda_max"].value, rel=1e-5)


def test_subset_reads_a_loader_once_and_only_up_to_the_subset():
    x, y = _data(40)
    data = _Counting(x, y)
    model = _bn_net().eval()
    loader = DataLoader(data, batch_size=8)
    got = flatness.measure(model, loader, metrics={"lambda_max": {"subset": 16, "tol": 1e-8}})
    assert data.reads == 16
    expected = flatness.measure(model, (x[:16], y[:16]), metrics={"lambda_max": {"tol": 1e-8}})
    assert got["lambda_max"].value == pytest.approx(expected["lambda_max"].value, rel=1e-6)


def test_layouts_the_library_cannot_read_name_the_argument():
    x, y = _data(8)
    with pytest.raises(TypeError, match="batch_fn="):
        len(as_data(DataLoader(TensorDataset(x), batch_size=4)))  # batches without targets
    with pytest.raises(ValueError, match="rows but there are 8 targets"):
        as_data(({"a": x, "b": x[:4]}, y))
    with pytest.raises(TypeError, match="batch_fn must return"):
        len(as_data([(x, y)], batch_fn=lambda b: b[0]))
    # a triple is (x, y, weights)? (x1, x2, y)? (x, y, ids)? Not guessed: batch_fn= is named
    triples = [(x, y, torch.arange(8))]
    with pytest.raises(TypeError, match=r"3 entries, not \(inputs, targets\): pass batch_fn="):
        len(as_data(triples))
    assert len(as_data(triples, batch_fn=lambda b: (b[0], b[1]))) == 8
