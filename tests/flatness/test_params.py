import torch
from torch import nn

from flatness import params as P


def test_flatten_unflatten_round_trip_and_vector_ops_match_flat_vectors():
    torch.manual_seed(0)
    a = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    b = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    fa, fb = P.flatten(a), P.flatten(b)
    back = P.unflatten(fa, a)
    assert all(torch.equal(back[k], a[k]) for k in a)
    assert torch.allclose(P.dot(a, b).float(), fa @ fb)
    assert torch.allclose(P.norm(a).float(), fa.norm())
    assert torch.allclose(P.flatten(P.axpy(2.0, a, b)), 2 * fa + fb)
    assert P.count(a) == 16


def test_restored_puts_back_parameters_buffers_and_mode_exactly():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with P.restored(model):
        model.train()
        model(torch.randn(8, 3)).sum().backward()
        with torch.no_grad():
            model[0].weight.add_(1.0)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
