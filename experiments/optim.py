"""Optimizers, learning-rate scaling and schedules, and SAM/ASAM.

SGD, heavy-ball momentum, Adam and AdamW come from ``torch.optim``. SAM (Foret et al. 2021) and
ASAM (Kwon et al. 2021) wrap any of them: an ascent step to ``w + e(w)``, a second gradient there,
then the base optimizer's step from ``w``. Batch-norm running statistics are updated by the first
forward pass only; the second pass, at perturbed weights, must not leak into them (the behaviour the
reference implementation documents as "disable running stats for the second pass").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from experiments.errors import ConfigError

BASE_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
OPTIMIZERS = (*BASE_OPTIMIZERS, "sam", "asam")
LR_SCHEDULES = ("constant", "cosine", "step")
LR_SCALINGS = ("none", "linear", "sqrt")


def scaled_lr(lr: float, batch_size: int, base_batch_size: int, scaling: str) -> float:
    """The learning rate after scaling with the batch size relative to ``base_batch_size``.

    ``linear``: lr·B/B₀ (Goyal et al. 2017); ``sqrt``: lr·√(B/B₀) (Krizhevsky 2014, Hoffer et al. 2017).
    """
    ratio = batch_size / base_batch_size
    factors = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}
    if scaling not in factors:
        raise ConfigError(f"lr_scaling: must be one of {list(LR_SCALINGS)} (got {scaling!r})")
    return lr * factors[scaling]


def lr_factor(
    schedule: str, epoch: int, epochs: int, milestones: list[float], gamma: float
) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based) of ``epochs``.

    A pure function of the epoch, so that a resumed run needs no scheduler state. ``step`` multiplies
    by ``gamma`` at each milestone, given as fractions of ``epochs``; ``cosine`` anneals to 0.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step":
        return gamma ** sum(epoch >= round(m * epochs) for m in milestones)
    raise ConfigError(f"lr_schedule: must be one of {list(LR_SCHEDULES)} (got {schedule!r})")


def stability_threshold(cfg: Any, lr: float) -> float | None:
    """The sharpness above which gradient descent on a quadratic diverges: 2/η for plain SGD and
    (2 + 2β)/η for heavy-ball momentum β (Cohen et al. 2021, "edge of stability"); None where no such
    simple threshold exists (Nesterov, Adam, SAM)."""
    if cfg.name == "sgd":
        return 2.0 / lr
    if cfg.name == "momentum" and not cfg.nesterov:
        return (2.0 + 2.0 * cfg.momentum) / lr
    return None


def build_optimizer(cfg: Any, model: nn.Module, lr: float, weight_decay: float):
    """The optimizer that ``cfg`` (the ``optimizer`` config group) names, over ``model``'s parameters."""
    name = cfg.name
    if name in ("sam", "asam"):
        base = _base_optimizer(cfg.base, cfg, model.parameters(), lr, weight_decay)
        adaptive = name == "asam"
        return SAM(model, base, rho=cfg.rho, adaptive=adaptive, eta=cfg.get("eta", 0.0))
    return _base_optimizer(name, cfg, model.parameters(), lr, weight_decay)


def _base_optimizer(
    name: str, cfg: Any, params, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=cfg.momentum,
            nesterov=bool(cfg.nesterov),
            weight_decay=weight_decay,
        )
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=weight_decay)
    raise ConfigError(f"optimizer.base: must be one of {list(BASE_OPTIMIZERS)} (got {name!r})")


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Run a forward pass in training mode without changing any batch-norm running statistics."""
    saved = [
        (
            m,
            {
                k: getattr(m, k).clone()
                for k in ("running_mean", "running_var", "num_batches_tracked")
                if getattr(m, k, None) is not None
            },
        )
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in saved:
                for k, v in buffers.items():
                    getattr(module, k).copy_(v)


class SAM:
    """Sharpness-aware minimisation around any base optimizer.

    Plain SAM (Foret et al. 2021): e = ρ g / ‖g‖. Adaptive SAM (Kwon et al. 2021):
    e = ρ T² g / ‖T g‖ with T = |w| + η elementwise for weights (parameters named ``*weight``, as in the
    authors' code) and T = 1 for biases. ``step(closure)`` needs a closure that zeroes the gradients,
    computes the loss, calls ``backward`` and returns the loss.
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        rho: float,
        adaptive: bool = False,
        eta: float = 0.0,
    ):
        if not rho > 0:
            raise ConfigError(f"optimizer.rho: must be > 0 (got {rho!r})")
        if adaptive and eta < 0:
            raise ConfigError(f"optimizer.eta: must be >= 0 (got {eta!r})")
        self.model, self.base, self.rho, self.adaptive, self.eta = model, base, rho, adaptive, eta
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    def _scale(self, name: str, p: torch.Tensor) -> torch.Tensor | None:
        if self.adaptive and name.endswith("weight"):
            return p.abs() + self.eta
        return None

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        loss = closure()
        with torch.no_grad():
            scaled = []
            for name, p in self._named:
                t = self._scale(name, p) if p.grad is not None else None
                scaled.append(None if p.grad is None else (p.grad if t is None else t * p.grad))
            norm = torch.norm(torch.stack([s.norm() for s in scaled if s is not None]))
            originals = []
            for (name, p), s in zip(self._named, scaled, strict=True):
                if s is None:
                    originals.append(None)
                    continue
                t = self._scale(name, p)
                e = s * (self.rho / (norm + 1e-12))
                originals.append(p.detach().clone())  # restored exactly, not by subtracting e
                p.add_(e if t is None else t * e)
        with frozen_bn_statistics(self.model):
            closure()
        with torch.no_grad():
            for (_, p), original in zip(self._named, originals, strict=True):
                if original is not None:
                    p.copy_(original)
        self.base.step()
        return loss
