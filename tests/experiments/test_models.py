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
