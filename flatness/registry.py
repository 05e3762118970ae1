"""The metric registry: name → measure function, with its defaults read from the function's signature.

A measure is a function whose first parameter is ``obj`` (an :class:`~flatness.objective.Objective`
on the training data) or ``model`` (the ``nn.Module``), whose keyword parameters with defaults are its
settings, and which may ask for two inputs by name: ``test`` (an Objective on the test data) and
``init`` (the initial weights). It returns a :class:`Measurement` or a number. Because the defaults
live in the signature only, a default is written once (DESIGN.md); :func:`validate` checks requested
settings against the types of those defaults and the limits given at registration, before any work.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

INPUTS = ("test", "init")  # what a measure may ask for besides the objective


@dataclass(frozen=True)
class Measurement:
    """A measured value with the settings that produced it (DESIGN.md, "Numbers come with their
    settings"), its error bound where the method has one, and what else it found (``extra``).

    ``value`` is a float, or a list (the top-k eigenvalues). ``failure`` holds the error message of a
    measure that raised when :func:`flatness.measure` was asked to record failures.
    """

    value: Any
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    error_bound: Any = None
    failure: str | None = None

    def __float__(self) -> float:
        if isinstance(self.value, list | tuple):
            raise TypeError("this measurement is a list (e.g. top-k eigenvalues): use .value[i]")
        return float(self.value)

    def to_row(self, name: str) -> dict[str, Any]:
        """``{name: value, name.error_bound: …, name.<setting>: …, name.<extra>: …}`` for pandas."""
        row: dict[str, Any] = {name: self.value}
        if self.error_bound is not None:
            row[f"{name}.error_bound"] = self.error_bound
        if self.failure is not None:
            row[f"{name}.failure"] = self.failure
        row.update({f"{name}.{k}": v for k, v in self.settings.items()})
        row.update({f"{name}.{k}": v for k, v in self.extra.items()})
        return row


def records_settings(fn: Callable[..., Measurement]) -> Callable[..., Measurement]:
    """Decorator: the returned Measurement's settings start with every setting of the call, the
    defaults included, so that a direct call reports its settings as ``measure`` does."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        settings = {k: v for k, v in list(bound.arguments.items())[1:] if k not in INPUTS}
        mode = getattr(args[0], "mode", None) if args else None  # an Objective's eval/train
        if mode is not None:
            settings["mode"] = mode
        out = fn(*args, **kwargs)
        return dataclasses.replace(out, settings={**settings, **out.settings})

    return wrapper


def defaults_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The settings of a measure and their defaults, read from its signature."""
    return {
        p.name: p.default
        for p in list(inspect.signature(fn).parameters.values())[1:]
        if p.name not in INPUTS and p.default is not inspect.Parameter.empty
    }


@dataclass(frozen=True)
class Limit:
    """What a setting may be: a number in a range (an integer if ``integer``), optionally None, at
    most the model's parameter count if ``at_most_params``; or one of ``choices``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    at_most_params: bool = False
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        """What the setting may be, in words ("an integer >= 1 or null")."""
        if self.choices:
            return f"one of {list(self.choices)}"
        kind = "an integer" if self.integer else "a finite number"
        rng = [
            f"{'>' if self.low_open else '>='} {self.low}" if self.low is not None else "",
            f"{'<' if self.high_open else '<='} {self.high}" if self.high is not None else "",
        ]
        if self.at_most_params:
            rng.append("<= the parameter count")
        expected = " ".join([kind, " and ".join(r for r in rng if r)]).strip()
        return expected + " or null" if self.optional else expected

    def check(self, key: str, value: Any, num_params: int | None = None) -> None:
        if value is None and self.optional:
            return
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{key}: must be one of {list(self.choices)} (got {value!r})")
            return
        expected = self.text().replace(" and <= the parameter count", "")
        ok = _is_int(value) if self.integer else _is_number(value)
        ok = ok and math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"{key}: expected {expected} (got {value!r})")
        if self.at_most_params and num_params is not None and value > num_params:
            raise ValueError(
                f"{key}: must be <= {num_params}, the model's parameter count (got {value})"
            )


POSITIVE = Limit(low=0, low_open=True)
NON_NEGATIVE = Limit(low=0)
# every generator the library seeds (torch, numpy) accepts [0, 2**32 - 1]
SEED_MAX = 2**32 - 1
SEED = Limit(low=0, high=SEED_MAX, integer=True)
SUBSET = Limit(low=1, integer=True, optional=True)


def at_least(n: int) -> Limit:
    return Limit(low=n, integer=True)


def one_of(*choices: Any) -> Limit:
    return Limit(choices=choices)


@dataclass(frozen=True)
class Metric:
    """A registered measure: its function, one-line definition, reference, setting limits and what
    each setting means (``notes``: meaning and unit, one line each)."""

    name: str
    fn: Callable[..., Any]
    description: str
    reference: str = ""
    limits: Mapping[str, Limit] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], None] | None = None
    notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """The settings and their defaults, read from the function's signature."""
        return defaults_of(self.fn)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Which of ``test`` and ``init`` the measure needs."""
        return tuple(p for p in inspect.signature(self.fn).parameters if p in INPUTS)

    @property
    def takes_model(self) -> bool:
        return next(iter(inspect.signature(self.fn).parameters)) == "model"


REGISTRY: dict[str, Metric] = {}


def register(
    name: str,
    fn: Callable[..., Any],
    *,
    description: str,
    reference: str = "",
    limits: Mapping[str, Limit] | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
    notes: Mapping[str, str] | None = None,
) -> Metric:
    """Add the measure ``fn`` to the registry under ``name`` (see the module docstring).

    ``notes`` says what each setting means and its unit; :func:`flatness.describe` shows them with
    the defaults (read from ``fn``'s signature) and the limits."""
    if name in REGISTRY:
        raise ValueError(f"metric {name!r} is already registered")
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name not in ("obj", "model"):
        raise TypeError(f"metric {name!r}: the first parameter must be 'obj' or 'model'")
    for p in params[1:]:
        if p.name not in INPUTS and p.default is inspect.Parameter.empty:
            raise TypeError(f"metric {name!r}: setting {p.name!r} needs a default")
    metric = Metric(name, fn, description, reference, dict(limits or {}), check, dict(notes or {}))
    for what, keys in (("limits", metric.limits), ("notes", metric.notes)):
        unknown = set(keys) - set(metric.defaults)
        if unknown:
            raise TypeError(f"metric {name!r}: {what} for unknown settings {sorted(unknown)}")
    REGISTRY[name] = metric
    if metric.notes and fn.__doc__ is not None and SETTINGS_HEADING not in fn.__doc__:
        # help(fn) then lists what describe(name) does: one source, the registration
        fn.__doc__ = inspect.cleandoc(fn.__doc__) + "\n\n" + settings_text(metric)
    return metric


SETTINGS_HEADING = "Settings (default; allowed values; meaning):"


def settings_text(metric: Metric) -> str:
    """The settings of ``metric`` as text: each one's default, its limits and what it means."""
    lines = [SETTINGS_HEADING]
    for key, default in metric.defaults.items():
        limit = metric.limits.get(key)
        allowed = f"; {limit.text()}" if limit is not None else ""
        lines.append(f"    {key} = {default!r}{allowed}")
        if key in metric.notes:
            lines += textwrap.wrap(
                metric.notes[key], 96, initial_indent=" " * 8, subsequent_indent=" " * 8
            )
    return "\n".join(lines)


def get(name: str) -> Metric:
    """The registered metric called ``name``; the error lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(REGISTRY))}"
        ) from None


def base_metric(name: str, settings: Mapping[str, Any] | None) -> str:
    """The registered metric behind a requested name: ``settings["metric"]`` when given, so that one
    request can hold the same metric twice, e.g. ``keskar_5e-4: {metric: keskar_sharpness, ...}``."""
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


def normalise_request(metrics: str | Iterable[str] | Mapping[str, Any]) -> dict[str, dict]:
    """A list of names, one name, or a mapping name → settings, as a mapping."""
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        out = {}
        for name, s in metrics.items():
            if s is not None and not isinstance(s, Mapping):
                raise ValueError(f"metrics.{name}: expected a mapping of settings (got {s!r})")
            out[name] = dict(s or {})
        return out
    return {name: {} for name in metrics}


def validate(
    metrics: str | Iterable[str] | Mapping[str, Any], *, num_params: int | None = None
) -> dict[str, dict[str, Any]]:
    """Check a request before any work: names, setting names, types (those of the defaults), ranges
    and limits; NaN and infinity are refused everywhere. Returns the resolved settings per name.

    Raises ``ValueError`` (``KeyError`` for unknown names) with one line naming
    ``metrics.<name>.<setting>``.
    """
    resolved = {}
    for name, settings in normalise_request(metrics).items():
        try:
            full = resolve_settings(name, settings)
        except KeyError as exc:
            raise KeyError(f"metrics.{name}: {exc.args[0]}") from None
        metric = get(base_metric(name, settings))
        for key, value in full.items():
            where = f"metrics.{name}.{key}"
            limit = metric.limits.get(key)
            if limit is not None:
                limit.check(where, value, num_params)
            else:
                _check_type(where, value, metric.defaults[key])
        if metric.check is not None:
            try:
                metric.check(full)
            except ValueError as exc:
                raise ValueError(f"metrics.{name}.{exc}") from None
        resolved[name] = full
    return resolved


def _check_type(key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, numbers.Integral):
        ok = _is_int(value)
    elif isinstance(default, numbers.Real):
        ok = _is_number(value) and math.isfinite(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ValueError(f"{key}: expected a value like {default!r} (got {value!r})")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
