import pytest
import torch
from torch import nn

from flatness import params as P
from flatness.directions import direction_between, pca_directions, random_direction


def convnet():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)
    )


def test_filter_normalisation_matches_every_filter_norm():
    model = convnet()
    d = random_direction(model, seed=1)
    theta = P.named_params(model)
    for k in ("0.weight", "4.weight"):  # a conv (per output channel) and a linear (per output row)
        dn = d[k].reshape(d[k].shape[0], -1).norm(dim=1)
        wn = theta[k].reshape(theta[k].shape[0], -1).norm(dim=1)
        assert torch.allclose(dn, wn, rtol=1e-5)
    for k in ("0.bias", "1.weight", "1.bias", "4.bias"):  # biases and BN: zero when ignored
        assert torch.count_nonzero(d[k]) == 0


def test_kept_biases_other_normalisations_and_seeding():
    model = convnet()
    theta = P.named_params(model)
    kept = random_direction(model, seed=1, ignore="none")
    assert kept["0.bias"].norm() == pytest.approx(theta["0.bias"].norm().item(), rel=1e-5)
    layer = random_direction(model, seed=1, normalization="layer")
    assert layer["4.weight"].norm() == pytest.approx(theta["4.weight"].norm().item(), rel=1e-5)
    weight = random_direction(model, seed=1, normalization="weight")
    raw = random_direction(model, seed=1, normalization="none")
    assert torch.allclose(weight["0.weight"], raw["0.weight"] * theta["0.weight"].abs())
    again = random_direction(model, seed=1)
    other = random_direction(model, seed=2)
    assert torch.equal(again["0.weight"], random_direction(model, seed=1)["0.weight"])
    assert not torch.equal(again["0.weight"], other["0.weight"])
    with pytest.raises(ValueError, match="normalization must be one of"):
        random_direction(model, seed=1, normalization="unit")


def test_direction_between_models_and_pca_of_a_straight_path():
    a, b = convnet(), convnet()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)
    d = direction_between(a, b)
    assert all(torch.allclose(v, torch.ones_like(v)) for v in d.values())
    # A trajectory along one straight line has one principal direction with all the variance.
    final = P.named_params(a)
    unit = {k: v / P.norm(d).float() for k, v in d.items()}
    traj = [P.axpy(float(t), unit, final) for t in (3.0, 2.0, 1.0, 0.5)]
    pca = pca_directions(traj, final, n_components=2)
    assert pca.explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-6)
    cos = P.dot(pca.directions[0], unit).abs().item()
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert abs(pca.projection[:, 0]) == pytest.approx([3.0, 2.0, 1.0, 0.5], abs=1e-4)
