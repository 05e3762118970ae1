import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatness.evaluate import evaluate


def test_batched_loss_and_accuracy_equal_a_single_dense_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(103, 5), torch.randint(0, 3, (103,))
    result = evaluate(model, (x, y), batch_size=10)  # 103 is not a multiple of 10
    with torch.no_grad():
        out = model(x)
    assert result.loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert result.accuracy == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert result.n == 103


def test_eval_mode_is_used_and_the_mode_is_restored():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    stats = model[1].running_mean.clone()
    evaluate(model, (x, y))
    assert model.training
    assert torch.equal(model[1].running_mean, stats)  # eval mode: running stats untouched


def test_params_evaluates_other_weights_without_touching_the_model():
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    other = nn.Linear(3, 2)
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    before = model.weight.clone()
    via_params = evaluate(model, (x, y), params=dict(other.named_parameters()))
    assert via_params.loss == pytest.approx(evaluate(other, (x, y)).loss, rel=1e-7)
    assert torch.equal(model.weight, before)


def test_empty_data_and_mismatched_lengths_are_errors():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="samples"):
        evaluate(model, (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long)))


def test_fast_cross_entropy_equals_torch_including_extreme_logits():
    from flatness.evaluate import cross_entropy_sum

    torch.manual_seed(2)
    logits = torch.randn(500, 10) * torch.tensor(
        [1.0, 50.0, 1e3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    )
    y = torch.randint(0, 10, (500,))
    ref = F.cross_entropy(logits.double(), y, reduction="sum").item()
    assert cross_entropy_sum(logits, y).item() == pytest.approx(ref, rel=1e-6)
    assert torch.isfinite(cross_entropy_sum(logits * 1e4, y))  # no overflow: logsumexp is stable


def test_an_atomic_write_gets_the_permissions_of_any_new_file(tmp_path):
    import os

    from flatness.io import atomic_write_bytes

    atomic_write_bytes(tmp_path / "a.csv", b"x\n")
    (tmp_path / "b.csv").write_bytes(b"x\n")  # a plain new file, for comparison
    mode = lambda p: os.stat(p).st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "a.csv") == mode(tmp_path / "b.csv")
