"""α-rescaling of ReLU networks (Dinh et al. 2017, "Sharp Minima Can Generalize For Deep Nets").

Multiplying layer k's weights by α_k with ∏α_k = 1 (biases by the running product α_1⋯α_k) leaves a
ReLU network's function unchanged but changes its curvature: for the diagonal reparametrisation
θ' = Dθ the Hessian becomes D⁻¹HD⁻¹. The transform walks the network as a chain of modules and keeps
track of the scale of every feature of the activation: Linear/Conv layers set it, ReLU, max- and
average-pooling, dropout and flattening carry it (all are positively homogeneous per feature), and
batch norm absorbs it (its output does not depend on the scale of its input once its running
statistics move with it). Anything else — tanh, residual blocks, layer norm — cannot carry a scale,
and the transform refuses it rather than return a different function.

Modes: ``layer`` (one α per weight layer) and ``neuron`` (each unit j of one layer by its own α_j,
compensated by 1/α_j on the next layer's inputs, or absorbed by a following batch norm).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from flatness.data import DataLike, as_data
from flatness.evaluate import eval_mode

CARRIES_SCALE = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
)
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class RescaleError(ValueError):
    """The network cannot be rescaled without changing its function (or the factors are invalid)."""


@dataclass
class Rescaled:
    """The rescaled copy, the factors used, and how much the logits moved on the check data."""

    model: nn.Module
    mode: str
    factors: list[torch.Tensor]  # per weight layer: a scalar (layer mode) or one factor per unit
    max_abs_change: float = math.nan
    relative_change: float = math.nan  # max |Δlogits| / max |logits|
    settings: dict = field(default_factory=dict)


def chain(model: nn.Module) -> list[nn.Module]:
    """The model as a flat list of leaf modules, if it is (nested) ``nn.Sequential``; else refuse."""
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in chain(child)]
    if len(list(model.children())) == 0:
        return [model]
    raise RescaleError(
        f"cannot rescale through {type(model).__name__}: only chains of layers (nn.Sequential) keep the "
        "function provably equal; residual and other branching blocks are refused"
    )


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in chain(model) if isinstance(m, WEIGHT_LAYERS)]


def layer_factors(n_layers: int, alpha: float, layers: Sequence[int]) -> list[float]:
    """Dinh's simple form: ×α on ``layers[0]`` and ×1/α on ``layers[1]``, 1 elsewhere."""
    if len(layers) != 2 or layers[1] != layers[0] + 1:
        raise RescaleError(
            f"layers must be two adjacent weight-layer indices like [0, 1] (got {list(layers)})"
        )
    if not (layers[0] >= 0 and layers[1] < n_layers):
        raise RescaleError(f"layers must index the {n_layers} weight layers (got {list(layers)})")
    factors = [1.0] * n_layers
    factors[layers[0]], factors[layers[1]] = alpha, 1.0 / alpha
    return factors


def neuron_factors(width: int, alpha: float, spread: float, seed: int) -> torch.Tensor:
    """Per-unit factors α·exp(spread·z), z ~ N(0, 1) seeded: every unit its own scale around α."""
    g = torch.Generator().manual_seed(seed)
    return alpha * torch.exp(spread * torch.randn(width, generator=g, dtype=torch.float64))


def rescale(
    model: nn.Module,
    factors: Sequence[float] | None = None,
    *,
    alpha: float | None = None,
    layers: Sequence[int] = (0, 1),
    mode: str = "layer",
    spread: float = 1.0,
    seed: int = 0,
    check: torch.Tensor | None = None,
) -> Rescaled:
    """A rescaled copy of ``model`` computing the same function (``model`` itself is untouched).

    Layer mode: ``factors`` gives α_k for every weight layer, or ``alpha`` with two adjacent
    ``layers`` gives Dinh's ×α, ×1/α. The factors after the last batch norm must multiply to 1.
    Neuron mode: ``alpha`` and ``spread`` give each unit of weight layer ``layers[0]`` its own factor.
    ``check`` inputs measure how much the logits moved (eval mode).
    """
    if mode not in ("layer", "neuron"):
        raise RescaleError(f"mode must be 'layer' or 'neuron' (got {mode!r})")
    if alpha is not None and not (
        isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0
    ):
        raise RescaleError(f"alpha must be a finite number > 0 (got {alpha!r})")
    original = weight_layers(model)  # refuses non-chains before anything is copied
    if not original:
        raise RescaleError("the model has no Linear or Conv layer to rescale")
    if mode == "layer":
        if factors is None:
            if alpha is None:
                raise RescaleError("pass factors= (one per weight layer) or alpha= with layers=")
            factors = layer_factors(len(original), alpha, layers)
        if len(factors) != len(original):
            raise RescaleError(
                f"need one factor per weight layer: {len(original)} (got {len(factors)})"
            )
        per_layer = [torch.tensor(float(a), dtype=torch.float64) for a in factors]
    else:
        if alpha is None or len(layers) < 1:
            raise RescaleError(
                "neuron mode needs alpha= and the layer whose units to scale (layers=[k])"
            )
        k = layers[0]
        if not 0 <= k < len(original) - 1:
            raise RescaleError(
                f"neuron mode scales a hidden layer: layers[0] in [0, {len(original) - 2}] (got {k})"
            )
        per_layer = [torch.tensor(1.0, dtype=torch.float64) for _ in original]
        per_layer[k] = neuron_factors(_out_units(original[k]), alpha, spread, seed)
    if any(bool((f <= 0).any()) or not bool(torch.isfinite(f).all()) for f in per_layer):
        raise RescaleError(
            "every factor must be a finite number > 0 (α ≤ 0 flips or kills ReLU units)"
        )

    new = copy.deepcopy(model)
    shapes = _input_shapes(new, check)
    _apply(chain(new), per_layer, shapes)
    out = Rescaled(
        new,
        mode,
        per_layer,
        settings={
            "mode": mode,
            "alpha": alpha,
            "layers": list(layers),
            "spread": spread if mode == "neuron" else None,
            "seed": seed,
        },
    )
    if check is not None:
        out.max_abs_change, out.relative_change = logit_change(model, new, check)
    return out


def _out_units(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _input_shapes(model: nn.Module, check: torch.Tensor | None) -> dict[int, torch.Size]:
    """Each leaf module's input shape (one sample), for mapping channel scales through Flatten."""
    if check is None:
        return {}
    shapes: dict[int, torch.Size] = {}

    def record(module, inputs):  # returns None: a pre-hook's return value would replace the input
        shapes.setdefault(id(module), inputs[0].shape[1:])

    hooks = [m.register_forward_pre_hook(record) for m in chain(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(check[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


@torch.no_grad()
def _apply(
    modules: list[nn.Module], per_layer: list[torch.Tensor], shapes: dict[int, torch.Size]
) -> None:
    scale = torch.tensor(1.0, dtype=torch.float64)  # per-feature scale of the current activation
    layer_index = 0
    for m in modules:
        if isinstance(m, WEIGHT_LAYERS):
            # A scalar incoming scale is carried on (the running product α_1⋯α_k of layer mode);
            # a per-feature one is undone here (the 1/α_j compensation of neuron mode).
            factor = per_layer[layer_index]
            s_out = factor * scale if scale.dim() == 0 else factor
            _scale_weight(m, scale, s_out)
            scale = s_out
            layer_index += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = scale if scale.dim() == 1 else scale.expand(m.num_features)
            c = c.to(m.running_var.device)
            var = m.running_var.double()
            # keep c / sqrt(var' + eps) = 1 / sqrt(var + eps) exactly
            new_var = c**2 * (var + m.eps) - m.eps
            short = (
                new_var < 0
            )  # c so small that eps alone exceeds c²(var + eps): fold the rest into γ
            if bool(short.any()):
                if not m.affine:
                    raise RescaleError(
                        f"a factor is too small for batch norm's eps={m.eps} (it has no γ)"
                    )
                gamma_factor = torch.where(
                    short, math.sqrt(m.eps) / (c * torch.sqrt(var + m.eps)), 1.0
                )
                m.weight.mul_(gamma_factor.to(m.weight.dtype))
                new_var = new_var.clamp_min(0.0)
            m.running_mean.mul_(c.to(m.running_mean.dtype))
            m.running_var.copy_(new_var.to(m.running_var.dtype))
            scale = torch.tensor(1.0, dtype=torch.float64)  # the normalised output carries no scale
        elif isinstance(m, nn.Flatten):
            if scale.dim() == 1 and id(m) in shapes:
                per_channel = shapes[id(m)].numel() // scale.numel()
                scale = scale.repeat_interleave(per_channel)
            elif scale.dim() == 1:
                raise RescaleError(
                    "per-channel scales through Flatten need check= inputs to know the sizes"
                )
        elif isinstance(m, nn.Unflatten):
            if scale.dim() == 1 and not bool(torch.allclose(scale, scale[0].expand_as(scale))):
                raise RescaleError("cannot carry per-feature scales through Unflatten")
            scale = scale[0] if scale.dim() == 1 else scale
        elif not isinstance(m, CARRIES_SCALE):
            raise RescaleError(
                f"cannot rescale through {type(m).__name__}: it is not positively homogeneous, so the "
                "function would change (only Linear/Conv, ReLU, pooling, dropout, flatten and batch norm)"
            )
    if not bool(torch.allclose(scale, torch.ones_like(scale), rtol=1e-9, atol=0)):
        raise RescaleError(
            "the factors after the last batch norm must multiply to 1, or the output is scaled"
        )


def _scale_weight(layer: nn.Module, s_in: torch.Tensor, s_out: torch.Tensor) -> None:
    """W[o, i, …] ← W[o, i, …]·s_out[o]/s_in[i]; b[o] ← b[o]·s_out[o]."""
    w = layer.weight
    out_shape = [-1] + [1] * (w.dim() - 1)
    factor = s_out.reshape(out_shape) if s_out.dim() == 1 else s_out
    if s_in.dim() == 1:
        factor = factor / s_in.reshape([1, -1] + [1] * (w.dim() - 2))
    else:
        factor = factor / s_in
    w.copy_((w.double() * factor.to(w.device)).to(w.dtype))
    if layer.bias is not None:
        b = s_out if s_out.dim() == 1 else s_out.expand(layer.bias.shape)
        layer.bias.copy_((layer.bias.double() * b.to(layer.bias.device)).to(layer.bias.dtype))


@torch.no_grad()
def logit_change(
    a: nn.Module, b: nn.Module, x: torch.Tensor | DataLike, batch_size: int = 2048
) -> tuple[float, float]:
    """max |f_a(x) − f_b(x)| and that divided by max |f_a(x)|, in eval mode (``x``: inputs, or data)."""
    data = as_data((x, x) if isinstance(x, torch.Tensor) else x)
    diff, scale = 0.0, 0.0
    with eval_mode(a, b):
        # A maximum, not a sum, so the batches are walked here rather than summed by accumulate.
        for xb, _ in data.batches(batch_size):
            fa, fb = a(xb), b(xb)
            diff = max(diff, (fa - fb).abs().max().item())
            scale = max(scale, fa.abs().max().item())
    return diff, diff / max(scale, 1e-30)
