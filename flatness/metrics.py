"""``flatness.measure``: every registered measure of a model a user already has, in one call.

A request names metrics (a list, or a mapping name → settings); each comes back as a
:class:`~flatness.registry.Measurement` with the settings that produced it. The registry and its
defaults are in :mod:`flatness.registry` and :mod:`flatness.catalog`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flatness import catalog  # noqa: F401  (fills the registry)
from flatness import params as P
from flatness import progress as progress_bars
from flatness.batch import BatchFn, OutputFn
from flatness.data import DataLike
from flatness.evaluate import LossFn
from flatness.inputs import check_data, check_init, check_model
from flatness.objective import Objective
from flatness.registry import (
    REGISTRY,
    Measurement,
    base_metric,
    get,
    normalise_request,
    resolve_settings,
    settings_text,
    validate,
)

DEFAULT_METRICS = ("train_loss", "train_error", "lambda_max", "hessian_trace")
Request = str | Iterable[str] | Mapping[str, Mapping[str, Any] | None]


def measure(
    model: nn.Module,
    data: DataLike,
    test: DataLike | None = None,
    *,
    metrics: Request | None = DEFAULT_METRICS,
    loss_fn: LossFn = F.cross_entropy,
    init: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 2048,
    on_error: str = "raise",
    mode: str = "eval",
    batch_fn: BatchFn | None = None,
    output_fn: OutputFn | None = None,
    progress: bool | str = "auto",
) -> dict[str, Measurement]:
    """Measure ``metrics`` of ``model`` on its training ``data`` (and ``test`` data, if a metric
    needs it); returns ``{name: Measurement}``.

    ``data`` and ``test`` are ``(x, y)`` tensors or loaders of ``(x, y)`` batches. ``metrics`` is a
    list of registered names or a mapping name → settings (``{"lambda_max": {"tol": 1e-3}}``; a
    ``metric`` key reuses a registered measure under another name). ``init`` is the initial weights
    (a ``state_dict``) for ``distance_from_init`` and the PAC-Bayes bound. Every request is
    validated before any work. The model is never changed. With ``on_error="record"`` a measure that
    raises comes back with ``failure`` set and a NaN value instead of stopping the others.
    ``pandas.DataFrame([flatness.to_row(result)])`` makes a table row.

    ``mode`` is the mode every measure runs the model in: ``"eval"`` (default; batch norm on its
    running statistics, no dropout) or ``"train"`` (batch statistics, running statistics left
    untouched; refused with active dropout): see :class:`~flatness.objective.Objective`. Each
    result records it in its settings. Inputs may be a tensor, a tuple or a mapping of tensors;
    ``batch_fn`` turns a loader's batch of another layout into ``(inputs, targets)`` and
    ``output_fn`` a model output that is not the predictions tensor (a tuple, a dict, an output
    object) into it (:mod:`flatness.batch`). Accuracy measures on targets that are not class labels
    are NaN with the reason in ``extra["not_applicable"]``.

    ``progress`` draws progress bars for the measures that loop (``"auto"``: on a terminal or in a
    notebook, once a loop has run two seconds; ``True`` always; ``False`` never; see
    :mod:`flatness.progress`).
    ``flatness.describe(name)`` lists a measure's settings, defaults and units.
    """
    progress_bars.check(progress)
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record' (got {on_error!r})")
    request = normalise_request(DEFAULT_METRICS if metrics is None else metrics)
    if init is not None and not isinstance(init, Mapping):
        raise TypeError("init must be the initial weights as a state_dict: pass model.state_dict()")
    check_model(model)
    check_data(data, "data")
    if test is not None:
        check_data(test, "test")
    if init is not None:
        check_init(init, model)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    resolved = validate(request, num_params=num_params)  # fail on a bad request before any work
    needs_test = [n for n in request if "test" in get(base_metric(n, request[n])).inputs]
    if needs_test and test is None:
        verb = "needs" if len(needs_test) == 1 else "need"
        raise ValueError(f"{', '.join(needs_test)} {verb} test data: pass test=(x, y) or a loader")
    adapt = {"mode": mode, "batch_fn": batch_fn, "output_fn": output_fn}
    obj = Objective(model, data, loss_fn, batch_size=batch_size, **adapt)
    inputs = {
        "test": None
        if test is None
        else Objective(model, test, loss_fn, batch_size=batch_size, **adapt),
        "init": init,
    }
    out: dict[str, Measurement] = {}
    for name, settings in resolved.items():
        metric = get(base_metric(name, request[name]))
        try:
            with P.restored(model), progress_bars.setting(progress):  # leaves the model as found
                kwargs = {**settings, **{k: inputs[k] for k in metric.inputs}}
                value = metric.fn(obj.model if metric.takes_model else obj, **kwargs)
        except Exception as exc:
            if on_error == "raise":
                raise
            out[name] = Measurement(float("nan"), settings, failure=f"{type(exc).__name__}: {exc}")
            continue
        settings = {**settings, "mode": mode}
        if isinstance(value, Measurement):
            out[name] = Measurement(
                value.value, {**settings, **value.settings}, value.extra, value.error_bound
            )
        else:
            out[name] = Measurement(float(value), settings)
    return out


def to_row(results: Mapping[str, Measurement]) -> dict[str, Any]:
    """One flat dict of every measurement's value, error bound, settings and extras (for pandas)."""
    row: dict[str, Any] = {}
    for name, m in results.items():
        row.update(m.to_row(name))
    return row


def describe(name: str | None = None) -> list[dict[str, Any]] | Description:
    """With a ``name``: that measure's definition, reference, inputs and every setting with its
    default, allowed values and meaning (``print()`` it, or read ``.settings``). Without: one row
    per registered metric (name, definition, reference, inputs, default settings)."""
    if name is not None:
        metric = get(name)
        return Description(
            metric.name,
            metric.description,
            metric.reference,
            metric.inputs,
            {
                key: {
                    "default": default,
                    "allowed": metric.limits[key].text() if key in metric.limits else None,
                    "meaning": metric.notes.get(key),
                }
                for key, default in metric.defaults.items()
            },
            settings_text(metric),
        )
    return [
        {
            "name": m.name,
            "description": m.description,
            "reference": m.reference,
            "needs": ", ".join(m.inputs),
            "defaults": m.defaults,
        }
        for m in REGISTRY.values()
    ]


@dataclass(frozen=True)
class Description:
    """One measure as :func:`describe` tells it; ``str()`` is the text ``help()`` shows too."""

    name: str
    description: str
    reference: str
    needs: tuple[str, ...]
    settings: dict[str, dict[str, Any]]
    text: str

    def __str__(self) -> str:
        head = [f"{self.name}: {self.description}"]
        if self.reference:
            head.append(f"Reference: {self.reference}")
        if self.needs:
            head.append(f"Needs: {', '.join(self.needs)}")
        return "\n".join(head + [self.text])


__all__ = ["DEFAULT_METRICS", "measure", "resolve_settings", "to_row", "describe"]
