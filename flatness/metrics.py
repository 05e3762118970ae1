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

from flatness.evaluate import Evaluation, LossFn, Objective, evaluate

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
    _objectives: dict[int, Objective] = field(default_factory=dict, repr=False)

    def data(self, split: str) -> Data:
        if split == "train":
            return self.train
        if split == "test":
            if self.test is None:
                raise ValueError("this metric needs test data: pass test=(x, y)")
            return self.test
        raise ValueError(f"split must be 'train' or 'test' (got {split!r})")

    def objective(self, subset: int | None = None) -> Objective:
        """The training loss as a function of the parameters, on the first ``subset`` samples."""
        if subset is not None and not (isinstance(subset, int) and subset >= 1):
            raise ValueError(f"subset must be a positive integer or None (got {subset!r})")
        key = subset or len(self.train[0])
        if key not in self._objectives:
            x, y = self.train
            self._objectives[key] = Objective(
                self.model, x[:subset], y[:subset], self.loss_fn, batch_size=self.batch_size
            )
        return self._objectives[key]

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
    """A metric's value, the settings that produced it, and what else it measured (error bars,
    iteration counts) under ``extra``."""

    value: float
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, Metric] = {}


def register(name: str, *, description: str, reference: str = "", **defaults: Any):
    """Decorator: add ``fn(ctx, **settings)`` to the registry under ``name``; it returns a float, or a
    float and a dict of extras (error bars, iteration counts)."""

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


def base_metric(name: str, settings: Mapping[str, Any] | None) -> str:
    """The registered metric behind a requested name: ``settings["metric"]`` when given.

    This lets one configuration ask for the same metric twice under two names, e.g.
    ``keskar_5e-4: {metric: keskar_sharpness, epsilon: 5e-4}``.
    """
    return (settings or {}).get("metric", name)


def resolve_settings(name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metric's default settings overridden by ``settings``; unknown keys are an error."""
    metric = get(base_metric(name, settings))
    settings = {k: v for k, v in (settings or {}).items() if k != "metric"}
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
    out = get(base_metric(name, settings)).fn(ctx, **resolved)
    value, extra = out if isinstance(out, tuple) else (out, {})
    return MetricValue(float(value), resolved, dict(extra))


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
    ``{name: value}``, ``{f"{name}.{setting}": value}`` for every setting it used, and
    ``{f"{name}.{key}": value}`` for each scalar extra (standard errors, iteration counts).
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
        row.update(
            {f"{name}.{k}": v for k, v in result.extra.items() if not isinstance(v, list | dict)}
        )
    return row


from flatness import catalog  # noqa: E402, F401  (registers the metrics; needs the names above)
