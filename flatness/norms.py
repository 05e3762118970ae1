"""Norm-based baselines: parameter norm, distance from initialisation, parameter count.

These are the simplest complexity measures in Jiang et al. 2020 ("Fantastic generalization measures
and where to find them"), the baselines that any flatness measure should beat.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from flatness import params as P
from flatness.evaluate import accumulate, eval_mode
from flatness.objective import Objective, jvp


def param_norm(model: nn.Module) -> float:
    """Frobenius (Euclidean) norm of all trainable parameters as one vector."""
    return P.norm(P.named_params(model)).item()


def distance_from_init(model: nn.Module, init: Mapping[str, torch.Tensor]) -> float:
    """Euclidean distance ‖θ − θ₀‖ between the trainable parameters and their initial values."""
    current = P.named_params(model)
    missing = set(current) - set(init)
    if missing:
        raise KeyError(f"initial weights lack parameters {sorted(missing)[:5]}")
    init_on_device = {k: init[k].to(current[k]) for k in current}
    return P.norm(P.sub(current, init_on_device)).item()


def param_count(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return P.count(P.named_params(model))


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of the layers (parameters with two or more dimensions), as (out, rest) matrices."""
    return {
        k: p.detach().reshape(p.shape[0], -1) for k, p in model.named_parameters() if p.dim() >= 2
    }


def frobenius_sum(model: nn.Module) -> float:
    """Σ over layers of ‖W‖_F² (Jiang et al. 2020, "sum of Frobenius norms", unnormalised)."""
    return float(sum(w.double().pow(2).sum() for w in weight_matrices(model).values()))


def frobenius_product(model: nn.Module) -> float:
    """Π over layers of ‖W‖_F² (Jiang et al. 2020, "product of Frobenius norms"), computed in logs."""
    logs = [2 * torch.log(w.double().norm()) for w in weight_matrices(model).values()]
    return float(torch.exp(torch.stack(logs).sum()))


def spectral_product(model: nn.Module) -> float:
    """Π over layers of ‖W‖₂² (Bartlett et al. 2017; Jiang et al. 2020, "product of spectral norms").

    A conv kernel is taken as its (out, in·k·k) matrix, whose spectral norm is the usual proxy for the
    convolution's operator norm (it is not equal to it).
    """
    logs = [
        2 * torch.log(torch.linalg.matrix_norm(w.double(), ord=2))
        for w in weight_matrices(model).values()
    ]
    return float(torch.exp(torch.stack(logs).sum()))


@torch.no_grad()
def path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """ℓ2 path norm (Neyshabur et al. 2015): sqrt of the summed outputs of the network with every
    parameter squared, fed an input of ones (Jiang et al. 2020's computation; biases squared too).

    Meaningful for networks of Linear/Conv layers and ReLUs; in eval mode for anything else.
    """
    squared = {k: p.detach() ** 2 for k, p in model.named_parameters()}
    with eval_mode(model):
        ones = torch.ones(1, *input_shape, device=next(iter(squared.values())).device)
        out = torch.func.functional_call(model, squared, (ones,))
    return float(out.double().sum().clamp_min(0).sqrt())


def fisher_rao_norm(obj: Objective, *, subset: int | None = None) -> float:
    """Fisher-Rao norm (Liang et al. 2019): sqrt(E_i ⟨θ, ∇_θ ℓ_i⟩²) over the objective's data, in
    eval mode.

    For a bias-free ReLU network with L hidden layers, ⟨θ, ∇_θ ℓ⟩ = (L+1)⟨∂ℓ/∂f, f⟩, which is Liang et
    al.'s definition; the directional derivative is computed for each sample by one ``jvp`` with the
    parameters themselves as the tangent, the loss taken per sample (``reduction="none"`` for
    cross-entropy, ``vmap`` over samples for any other loss).
    """
    obj = obj.subset(subset)
    params = {**obj.frozen, **obj.params}

    def per_sample_losses(p, xb, yb):
        out = obj.data.call(obj.model, xb, (p, obj.buffers))
        if obj.loss_fn is F.cross_entropy:
            return F.cross_entropy(out, yb, reduction="none")
        return torch.func.vmap(lambda o, t: obj.loss_fn(o[None], t[None]))(out, yb)

    def per_batch(xb, yb):
        _, directional = jvp(lambda p: per_sample_losses(p, xb, yb), (params,), (params,))
        return directional.double().pow(2).sum()

    with obj.in_mode(derivatives=1):
        total, _ = accumulate(obj.data, per_batch, obj.batch_size, mean=False, device=obj.device)
    return float((total / obj.n).sqrt())
