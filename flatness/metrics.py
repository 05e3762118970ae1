"""The metric registry: metric name → function, so that configs and notebooks can name metrics.

A metric is a function ``fn(ctx, **settings) -> float`` registered with its default settings. The
registry returns each value together with the settings that produced it (DESIGN.md, "Numbers come
with their settings"). :func:`measure` is the one-line entry point for a model a user already has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flatness import norms
from flatness.evaluate import Evaluation, LossFn, evaluate

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass
class MetricContext:
    """What a metric may look at: the model, the loss, the data and (optionally) the initial weights.

    Evaluations are cached per split so that the loss-based metrics share one pass over the data.
    """

    model: nn.Module
    loss_fn: LossFn
    train: Data
    test: Data | None = None
    init: Mapping[str, torch.Tensor] | None = None
    batch_size: int = 2048
    _evaluations: dict[str, Evaluation] = field(default_factory=dict, repr=False)

    def data(self, split: str) -> Data:
        if split == "train":
            return self.train
        if split == "test":
            if self.test is None:
                raise ValueError("this metric needs test data: pass test=(x, y)")
            return self.test
        raise ValueError(f"split must be 'train' or 'test' (got {split!r})")

    def evaluation(self, split: str) -> Evaluation:
        if split not in self._evaluations:
            x, y = self.data(split)
            self._evaluations[split] = evaluate(
                self.model, x, y, self.loss_fn, batch_size=self.batch_size
            )
        return self._evaluations[split]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, default settings and a one-line definition."""

    name: str
    fn: Callable[..., float]
    defaults: Mapping[str, Any]
    description: str
    reference: str = ""


@dataclass(frozen=True)
class MetricValue:
    value: float
    settings: dict[str, Any]


REGISTRY: dict[str, Metric] = {}


def register(name: str, *, description: str, reference: str = "", **defaults: Any):
    """Decorator: add ``fn(ctx, **settings) -> float`` to the registry under ``name``."""

    def wrap(fn: Callable[..., float]) -> Callable[..., float]:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} is already registered")
        REGISTRY[name] = Metric(name, fn, dict(defaults), description, reference)
        return fn

    return wrap


def get(name: str) -> Metric:
    """The registered metric called ``name``; the error lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(REGISTRY))}"
        ) from None


def resolve_settings(name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metric's default settings overridden by ``settings``; unknown keys are an error."""
    metric = get(name)
    settings = dict(settings or {})
    unknown = set(settings) - set(metric.defaults)
    if unknown:
        allowed = ", ".join(sorted(metric.defaults)) or "none"
        raise KeyError(f"metric {name!r} has no setting {sorted(unknown)}; its settings: {allowed}")
    return {**metric.defaults, **settings}


def compute(
    name: str, ctx: MetricContext, settings: Mapping[str, Any] | None = None
) -> MetricValue:
    """Compute one registered metric and return its value with the settings used."""
    resolved = resolve_settings(name, settings)
    value = get(name).fn(ctx, **resolved)
    return MetricValue(float(value), resolved)


def _normalise_request(metrics: Iterable[str] | Mapping[str, Mapping | None]) -> dict[str, dict]:
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        return {name: dict(s or {}) for name, s in metrics.items()}
    return {name: {} for name in metrics}


def measure(
    model: nn.Module,
    loss_fn: LossFn = F.cross_entropy,
    train: Data | None = None,
    test: Data | None = None,
    metrics: Iterable[str] | Mapping[str, Mapping | None] = ("train_loss", "test_loss", "gap"),
    *,
    init: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Measure ``metrics`` of ``model`` and return one flat dict, ready to be a pandas row.

    ``metrics`` is a list of names or a mapping name → settings. Each metric contributes
    ``{name: value}`` and ``{f"{name}.{setting}": value}`` for every setting it used.
    """
    if train is None:
        raise ValueError("measure needs the training data: train=(x, y)")
    request = _normalise_request(metrics)
    for name, settings in request.items():  # fail on a bad name before any work is done
        resolve_settings(name, settings)
    ctx = MetricContext(model, loss_fn, train, test, init, batch_size)
    row: dict[str, Any] = {}
    for name, settings in request.items():
        result = compute(name, ctx, settings)
        row[name] = result.value
        row.update({f"{name}.{k}": v for k, v in result.settings.items()})
    return row


# --- loss, accuracy and the generalisation gap -------------------------------------------------


def _register_split_metrics(split: str) -> None:
    @register(f"{split}_loss", description=f"mean loss on the {split} set (eval mode)")
    def _loss(ctx: MetricContext) -> float:
        return ctx.evaluation(split).loss

    @register(f"{split}_acc", description=f"classification accuracy on the {split} set")
    def _acc(ctx: MetricContext) -> float:
        return _require_accuracy(ctx.evaluation(split).accuracy)

    @register(
        f"{split}_error", description=f"classification error (1 − accuracy) on the {split} set"
    )
    def _error(ctx: MetricContext) -> float:
        return 1.0 - _require_accuracy(ctx.evaluation(split).accuracy)


def _require_accuracy(accuracy: float | None) -> float:
    if accuracy is None:
        raise ValueError("accuracy needs integer class labels as targets")
    return accuracy


_register_split_metrics("train")
_register_split_metrics("test")


@register("gap", description="generalisation gap: test error − train error")
def _gap(ctx: MetricContext) -> float:
    train, test = ctx.evaluation("train"), ctx.evaluation("test")
    return _require_accuracy(train.accuracy) - _require_accuracy(test.accuracy)


@register("gap_loss", description="loss gap: test loss − train loss")
def _gap_loss(ctx: MetricContext) -> float:
    return ctx.evaluation("test").loss - ctx.evaluation("train").loss


# --- norm baselines ------------------------------------------------------------------------------


@register(
    "param_norm",
    description="Euclidean norm of all trainable parameters",
    reference="Jiang et al. 2020 (norm baselines)",
)
def _param_norm(ctx: MetricContext) -> float:
    return norms.param_norm(ctx.model)


@register(
    "distance_from_init",
    description="Euclidean distance of the parameters from their initial values",
    reference="Nagarajan & Kolter 2019; Jiang et al. 2020",
)
def _distance_from_init(ctx: MetricContext) -> float:
    if ctx.init is None:
        raise ValueError("distance_from_init needs the initial weights: pass init=")
    return norms.distance_from_init(ctx.model, ctx.init)


@register("param_count", description="number of trainable parameters")
def _param_count(ctx: MetricContext) -> float:
    return norms.param_count(ctx.model)
