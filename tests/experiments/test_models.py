import pytest
import torch
from omegaconf import OmegaConf

from experiments.errors import ConfigError
from experiments.models import build_model


def build(name, shape, classes=10, **kw):
    return build_model(OmegaConf.create({"name": name, **kw}), shape, classes)


@pytest.mark.parametrize(
    "name, shape, kw",
    [
        ("mlp", (40,), {}),
        ("mlp", (1, 8, 8), {"batch_norm": True}),
        ("cnn1d", (40,), {}),
        ("cnn", (3, 16, 16), {"batch_norm": True}),
        ("vgg9", (3, 32, 32), {"width": 0.125}),
        ("resnet20", (3, 32, 32), {"width": 4}),
        ("resnet20", (3, 32, 32), {"width": 4, "skip": False}),
    ],
)
def test_models_map_inputs_to_logits(name, shape, kw):
    model = build(name, shape, 7, **kw).eval()
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_default_mlp_is_40_100_100_10():
    model = build("mlp", (40,), width=100, depth=2)
    linear = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(40, 100), (100, 100), (100, 10)]


def test_resnet20_has_the_published_size_and_skip_switch_matters():
    # He et al. 2016 report 0.27M parameters for ResNet-20 (with parameter-free shortcuts); the
    # projection shortcuts used here add two 1x1 convs, a little over 1% more.
    n = sum(p.numel() for p in build("resnet20", (3, 32, 32)).parameters())
    assert 0.26e6 < n < 0.285e6
    torch.manual_seed(0)
    with_skip = build("resnet20", (3, 32, 32), width=4).eval()
    torch.manual_seed(0)
    without = build("resnet20", (3, 32, 32), width=4, skip=False).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(with_skip(x), without(x))


def test_wrong_input_shapes_and_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="image inputs"):
        build("cnn", (40,))
    with pytest.raises(ConfigError, match="model.width"):
        build("mlp", (40,), width=0)
    with pytest.raises(ConfigError, match="unknown model"):
        build("transformer", (40,))


def test_ghost_batch_norm_normalises_each_virtual_batch_separately():
    from experiments.models import GhostBatchNorm1d

    torch.manual_seed(0)
    ghost, plain = GhostBatchNorm1d(3, ghost_batch_size=4), torch.nn.BatchNorm1d(3)
    x = torch.randn(10, 3) * 3 + 1  # chunks of 4, 4 and 2
    out = ghost.train()(x)
    expected = torch.cat([plain.train()(chunk) for chunk in x.split([4, 4, 2])])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(ghost.running_mean, plain.running_mean) and ghost.num_batches_tracked == 3
    assert torch.allclose(ghost.eval()(x), plain.eval()(x))
    odd = GhostBatchNorm1d(3, ghost_batch_size=4).train()(
        torch.randn(9, 3)
    )  # 4, 5: no chunk of one
    assert odd.shape == (9, 3)
    model = build("cnn1d", (40,), batch_norm=True, ghost_batch_size=8)
    assert sum(isinstance(m, GhostBatchNorm1d) for m in model.modules()) == 3
    with pytest.raises(ConfigError, match="ghost_batch_size"):
        build("mlp", (40,), batch_norm=True, ghost_batch_size=1)
