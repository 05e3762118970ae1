"""The loss and the task (issue 25): whether the targets fit the loss, and whether accuracy applies.

The library measures the mean of ``loss_fn(outputs, targets)`` over the data, ``loss_fn`` returning
a batch's mean loss; the default is cross-entropy on class labels. A target that does not fit the
loss gives a number that means nothing: cross-entropy over float regression targets of one column
is 0 whatever the weights, and ``F.mse_loss`` of an ``(N, 1)`` output against ``(N,)`` targets
broadcasts to an ``(N, N)`` difference. These raise here, naming ``loss_fn=``. Accuracy is defined
for class labels (integer targets of one dimension against ``(N, C)`` scores, C ≥ 2) only; on any
other task the accuracy measures are NaN with the reason (:func:`accuracy_reason`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# losses that compare outputs and targets element by element, and so need one shape
_ELEMENTWISE = (
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.huber_loss,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
)
_ELEMENTWISE_MODULES = (
    nn.MSELoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.HuberLoss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
)
REGRESSION_HINT = "for regression pass loss_fn=torch.nn.functional.mse_loss"


def is_cross_entropy(loss_fn: LossFn) -> bool:
    return loss_fn is F.cross_entropy or isinstance(loss_fn, nn.CrossEntropyLoss)


def accuracy_reason(out: torch.Tensor, targets: torch.Tensor) -> str | None:
    """Why accuracy does not apply to these outputs and targets (None when it does)."""
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.is_complex():
        return "accuracy needs integer class labels as targets (the targets are not integers)"
    if targets.dim() != 1:
        return (
            f"accuracy needs one class label per sample (the targets have shape {_shape(targets)})"
        )
    if out.dim() != 2 or out.shape[1] < 2:
        return f"accuracy needs (N, C≥2) class scores (the outputs have shape {_shape(out)})"
    return None


def check_targets(out: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> None:
    """Raise when ``targets`` cannot be what ``loss_fn`` means (see the module docstring)."""
    if is_cross_entropy(loss_fn):
        if out.dim() < 2 or out.shape[1] < 2:
            raise ValueError(
                f"cross-entropy (the default loss) over outputs of shape {_shape(out)} is 0 "
                f"whatever the targets: it needs (N, C≥2) class scores; {REGRESSION_HINT}, or "
                "another loss_fn="
            )
        if targets.is_floating_point():
            if targets.shape != out.shape:
                raise ValueError(
                    f"float targets of shape {_shape(targets)} with cross-entropy (the default "
                    f"loss) against outputs of shape {_shape(out)}: class labels must be integers; "
                    f"{REGRESSION_HINT}, or another loss_fn="
                )
            if not (
                (targets >= 0).all()
                and torch.allclose(targets.sum(1), torch.ones_like(targets.sum(1)))
            ):
                raise ValueError(
                    "float targets with cross-entropy (the default loss) must be class "
                    f"probabilities (non-negative, each row summing to 1); {REGRESSION_HINT}, or "
                    "another loss_fn="
                )
        elif targets.shape != out.shape[:1] + out.shape[2:]:
            raise ValueError(
                f"targets of shape {_shape(targets)} do not fit cross-entropy (the default loss) "
                f"on outputs of shape {_shape(out)}: pass output_fn= or loss_fn="
            )
    elif (
        loss_fn in _ELEMENTWISE or isinstance(loss_fn, _ELEMENTWISE_MODULES)
    ) and targets.shape != out.shape:
        raise ValueError(
            f"the outputs have shape {_shape(out)} and the targets {_shape(targets)}: "
            f"{getattr(loss_fn, '__name__', type(loss_fn).__name__)} would broadcast them "
            "against each other; give the targets the outputs' shape (e.g. y[:, None]) or "
            "pass output_fn= or loss_fn="
        )


def batch_loss(loss_fn: LossFn, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss_fn(out, targets)`` after :func:`check_targets`; the result must be a scalar (the
    batch's mean), and torch's warning that a loss broadcasts targets of another size is an error."""
    check_targets(out, targets, loss_fn)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Using a target size", category=UserWarning)
        try:
            loss = loss_fn(out, targets)
        except UserWarning as exc:
            raise ValueError(f"{exc} (pass loss_fn= or output_fn=)") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = _shape(loss) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn must return the batch's mean loss, a scalar (got {shape}; e.g. use "
            "reduction='mean')"
        )
    return loss.reshape(())


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)
