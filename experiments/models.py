"""The networks of the suite: MLP, the MNIST-1D CNN, a small 2D CNN, VGG-9 and ResNet-20.

VGG-9 and ResNet-20 (with and without skip connections) are the networks Li et al. 2018 use for
their loss-surface figures; the MLP and CNNs are small enough for the CPU. Every model is a plain
``nn.Sequential`` of Linear/Conv/BN/ReLU where possible, so that the α-rescaling of Dinh et al. 2017
can walk it layer by layer.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import torch
from torch import nn

from experiments.errors import ConfigError


def build_model(cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the model that ``cfg`` (the ``model`` config group) names for inputs of ``input_shape``."""
    builders = {"mlp": mlp, "cnn1d": cnn1d, "cnn": cnn, "vgg9": vgg9, "resnet20": resnet20}
    if cfg.name not in builders:
        raise ConfigError(
            f"model.name: unknown model {cfg.name!r}; choose one of {sorted(builders)}"
        )
    settings = {k: v for k, v in cfg.items() if k != "name"}
    accepted = inspect.signature(builders[cfg.name]).parameters
    if unknown := sorted(set(settings) - set(accepted)):
        raise ConfigError(f"model.{unknown[0]}: model={cfg.name} has no such setting")
    return builders[cfg.name](tuple(input_shape), num_classes, **settings)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.{key}: must be an integer >= 1 (got {value!r})")
    return value


class SeededDropout(nn.Dropout):
    """Dropout whose masks come from its own generator, seeded from the run's seed and the layer's
    position, never from the global one. Its state travels in the model's state dict (extra state),
    so a run resumed from a checkpoint draws the same masks as one that never stopped, and adding
    dropout does not change the initial weights of the same seed."""

    def __init__(self, p: float, seed: int):
        super().__init__(p)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p  # on the CPU: reproducible
        return x * keep.to(device=x.device, dtype=x.dtype) / (1 - self.p)

    def get_extra_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def _dropout_seed(layer: int) -> int:
    """A seed for the dropout layer ``layer`` from the run's seed (``torch.initial_seed()``, set by
    the runner before building the model), without drawing from the global generator."""
    text = f"dropout-{torch.initial_seed()}-{layer}".encode()
    return int(hashlib.sha256(text).hexdigest()[:15], 16)


def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 100,
    depth: int = 2,
    batch_norm: bool = False,
    ghost_batch_size: int | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` ReLU units (the default is the 40-100-100-10 MLP), each
    followed by dropout of rate ``dropout`` when it is above 0 (Jiang et al. 2020's dropout axis)."""
    width, depth = _positive_int("width", width), _positive_int("depth", depth)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout: must be a rate in [0, 1) (got {dropout!r})")
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = int(torch.tensor(input_shape).prod())
    for i in range(depth):
        layers.append(nn.Linear(fan_in, width))
        if batch_norm:
            layers.append(batch_norm_layer(1, width, ghost_batch_size))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(SeededDropout(float(dropout), _dropout_seed(i)))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def cnn1d(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int = 25,
    batch_norm: bool = False,
    ghost_batch_size: int | None = None,
) -> nn.Sequential:
    """The MNIST-1D convolutional network of Greydanus 2020: three strided convs and a linear head."""
    if len(input_shape) not in (1, 2):
        raise ConfigError(
            f"model=cnn1d needs 1D inputs (length or channels×length); got shape {input_shape}"
        )
    in_channels = 1 if len(input_shape) == 1 else input_shape[0]
    channels = _positive_int("channels", channels)
    layers: list[nn.Module] = [nn.Unflatten(1, (in_channels, -1))] if len(input_shape) == 1 else []
    specs = [(in_channels, 5), (channels, 3), (channels, 3)]
    for c_in, k in specs:
        layers.append(nn.Conv1d(c_in, channels, kernel_size=k, stride=2, padding=1))
        if batch_norm:
            layers.append(batch_norm_layer(1, channels, ghost_batch_size))
        layers.append(nn.ReLU())
    layers.append(nn.Flatten())
    return _with_linear_head(nn.Sequential(*layers), input_shape, num_classes)


class _GhostBatchNorm:
    """Ghost batch norm (Hoffer et al. 2017): in training, statistics over virtual batches of
    ``ghost_batch_size`` samples, so a large batch sees the noisier statistics of small ones. The
    running statistics are updated once per virtual batch; evaluation is ordinary batch norm."""

    ghost_batch_size: int | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.ghost_batch_size
        if not self.training or g is None or x.shape[0] <= g:
            return super().forward(x)
        sizes = [g] * (x.shape[0] // g) + ([x.shape[0] % g] if x.shape[0] % g else [])
        if sizes[-1] < 2:  # batch norm cannot train on one sample: fold it into the previous chunk
            sizes[-2] += sizes.pop()
        return torch.cat([super(_GhostBatchNorm, self).forward(chunk) for chunk in x.split(sizes)])


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    def __init__(self, num_features: int, ghost_batch_size: int | None = None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.ghost_batch_size = ghost_batch_size


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    def __init__(self, num_features: int, ghost_batch_size: int | None = None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.ghost_batch_size = ghost_batch_size


def batch_norm_layer(dims: int, features: int, ghost_batch_size: int | None) -> nn.Module:
    """Batch norm over ``dims``-D feature maps (1: vectors and sequences, 2: images), ghost if asked."""
    if ghost_batch_size is None:
        return nn.BatchNorm1d(features) if dims == 1 else nn.BatchNorm2d(features)
    g = _positive_int("ghost_batch_size", ghost_batch_size)
    if g < 2:
        raise ConfigError(f"model.ghost_batch_size: must be >= 2 (got {g})")
    return GhostBatchNorm1d(features, g) if dims == 1 else GhostBatchNorm2d(features, g)


def _with_linear_head(
    body: nn.Sequential, input_shape: tuple[int, ...], num_classes: int
) -> nn.Sequential:
    """Append a Linear head sized by running the body once on a dummy input."""
    with torch.no_grad():
        features = body.eval()(torch.zeros(2, *input_shape)).shape[1]
    body.train()
    body.append(nn.Linear(features, num_classes))
    return body


def _image_shape(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ConfigError(f"model={name} needs image inputs (C×H×W); got shape {input_shape}")


def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int = 32,
    batch_norm: bool = False,
    ghost_batch_size: int | None = None,
) -> nn.Sequential:
    """A small 2D CNN: two conv-ReLU-maxpool stages (c, 2c channels) and a linear head."""
    _image_shape("cnn", input_shape)
    c = _positive_int("channels", channels)
    layers: list[nn.Module] = []
    for c_in, c_out in ((input_shape[0], c), (c, 2 * c)):
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(batch_norm_layer(2, c_out, ghost_batch_size))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    layers.append(nn.Flatten())
    return _with_linear_head(nn.Sequential(*layers), input_shape, num_classes)


# VGG-9 of Li et al. 2018: seven 3×3 conv layers and two fully connected ones ("M" = 2×2 max-pool).
_VGG9 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, "M"]


def vgg9(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    batch_norm: bool = True,
    ghost_batch_size: int | None = None,
) -> nn.Sequential:
    """VGG-9 (Li et al. 2018), with a width multiplier for CPU-sized runs."""
    _image_shape("vgg9", input_shape)
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
        raise ConfigError(f"model.width: must be a number > 0 (got {width!r})")
    layers: list[nn.Module] = []
    c_in = input_shape[0]
    for spec in _VGG9:
        if spec == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        c_out = max(1, round(spec * width))
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(batch_norm_layer(2, c_out, ghost_batch_size))
        layers.append(nn.ReLU())
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, c_in), nn.ReLU()]
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3×3 convs; with ``skip`` the input is added back (option-B 1×1 projection when shapes change)."""

    def __init__(self, c_in: int, c_out: int, stride: int, skip: bool, batch_norm: bool):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=not batch_norm)
        self.bn2 = norm(c_out)
        self.relu = nn.ReLU()
        self.skip = skip
        self.shortcut: nn.Module = nn.Identity()
        if skip and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batch_norm), norm(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)
        return self.relu(out)


def resnet20(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    skip: bool = True,
    batch_norm: bool = True,
) -> nn.Sequential:
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages × 3 blocks; ``skip=False`` is Li et al.'s no-short."""
    _image_shape("resnet20", input_shape)
    w = _positive_int("width", width)
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], w, 3, padding=1, bias=not batch_norm)]
    layers += [nn.BatchNorm2d(w) if batch_norm else nn.Identity(), nn.ReLU()]
    c_in = w
    for stage, c_out in enumerate((w, 2 * w, 4 * w)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(c_in, c_out, stride, bool(skip), bool(batch_norm)))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)
