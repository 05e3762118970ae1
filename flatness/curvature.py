"""Curvature of the training loss as measures: λmax, top-k eigenpairs, the trace and the spectral
density of the Hessian, and :class:`Hessian`, the PyHessian-style object over a model and its data.

Each measure takes an :class:`~flatness.objective.Objective` and its settings, whose defaults are
written here once: the registry, the configs and :class:`Hessian` read them from these signatures.
λmax follows Keskar et al. 2017 and Ghorbani et al. 2019 (Lanczos with a guaranteed residual bound),
the trace Hutchinson 1989 / Yao et al. 2020 (stopped on its standard error) and Meyer et al. 2021
(Hutch++), the density Ubaru et al. 2017 / Ghorbani et al. 2019 (SLQ).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from flatness import hessian as H
from flatness import params as P
from flatness import progress as progress_bars
from flatness.batch import BatchFn, OutputFn
from flatness.data import DataLike
from flatness.distributed import sharded
from flatness.evaluate import LossFn
from flatness.inputs import check_data, check_model
from flatness.objective import Objective
from flatness.registry import Measurement, defaults_of, records_settings


def _hvp_extra(obj: Objective, res: H.EigenResult) -> dict:
    return {
        "products": res.products,
        "converged": bool(res.converged),
        "hvp_mode": obj.hvp_mode,
        "basis_dtype": res.settings["precision"],
    }


def basis_precision(obj: Objective, precision: str) -> str:
    """The Lanczos basis dtype a ``precision`` setting means: ``"auto"`` is that of the products,
    the parameters' dtype (float64 for a float64 model), but never below float32."""
    if precision != "auto":
        return precision
    return "float64" if next(iter(obj.params.values())).dtype == torch.float64 else "float32"


def _eigen(obj: Objective, k, tol, bound, max_iter, seed, precision) -> H.EigenResult:
    return H.lanczos(
        obj.flat_hvp, obj.dim, k=k, tol=tol, bound=bound, max_iter=max_iter, seed=seed,
        precision=basis_precision(obj, precision), device=obj.device,
    )  # fmt: skip


@records_settings
def lambda_max(
    obj: Objective,
    *,
    tol: float = 1e-3,
    bound: str = "residual",
    max_iter: int = 100,
    seed: int = 0,
    subset: int | None = None,
    precision: str = "auto",
) -> Measurement:
    """The largest Hessian eigenvalue, by Lanczos stopped when its error bound ≤ ``tol``·λ
    (Keskar et al. 2017; Ghorbani et al. 2019).

    The default 1e-3 is PyHessian's tolerance, but on a guaranteed bound instead of a change of the
    running estimate: on the default MLP it costs 9.8 products (PyHessian 11.4) and lands within
    ~1e-6 of the converged value (PyHessian 1.6e-3; benchmarks/hessian.py).

    ``error_bound`` is the residual ‖Hx − λx‖, a guaranteed bound on the error; ``extra`` also holds
    the sharper gap estimate r²/δ and which Hessian-vector-product path ran.
    """
    obj = obj.subset(subset)
    res = _eigen(obj, 1, tol, bound, max_iter, seed, precision)
    extra = {"error_estimate": float(res.gap_estimates[0]), **_hvp_extra(obj, res)}
    return Measurement(
        float(res.eigenvalues[0]), {"n_samples": obj.n}, extra, float(res.residuals[0])
    )


def _top_k(
    obj: Objective, k, tol, bound, max_iter, seed, precision
) -> tuple[Measurement, H.EigenResult]:
    """The top-k eigenvalues as a Measurement (with their residual bounds), and Lanczos's result."""
    res = _eigen(obj, k, tol, bound, max_iter, seed, precision)
    values = Measurement(
        [float(v) for v in res.eigenvalues],
        {"n_samples": obj.n},
        _hvp_extra(obj, res),
        [float(r) for r in res.residuals],
    )
    return values, res


@records_settings
def top_eigenvalues(
    obj: Objective,
    *,
    k: int = 5,
    tol: float = 1e-3,
    bound: str = "residual",
    max_iter: int = 200,
    seed: int = 0,
    subset: int | None = None,
    precision: str = "auto",
) -> Measurement:
    """The ``k`` largest Hessian eigenvalues (descending list) with their residual error bounds
    (Ghorbani et al. 2019; Yao et al. 2020)."""
    return _top_k(obj.subset(subset), k, tol, bound, max_iter, seed, precision)[0]


@records_settings
def hessian_trace(
    obj: Objective,
    *,
    rtol: float = 0.05,
    min_probes: int = 30,
    max_probes: int = 200,
    seed: int = 0,
    subset: int | None = None,
) -> Measurement:
    """tr(H) by Hutchinson with Rademacher probes, stopped once its standard error ≤ ``rtol``·|tr|
    (Hutchinson 1989; Yao et al. 2020); ``error_bound`` is that standard error."""
    obj = obj.subset(subset)
    res = H.hutchinson_trace(
        obj.flat_hvp, obj.dim, rtol=rtol, min_probes=min_probes, max_probes=max_probes, seed=seed,
        device=obj.device,
    )  # fmt: skip
    reached = res.stderr / max(abs(res.trace), 1e-300)
    extra = {
        "products": res.products,
        "hvp_mode": obj.hvp_mode,
        "relative_stderr": reached,
        "converged": bool(reached <= rtol),  # False: max_probes ran out first
    }
    return Measurement(res.trace, {"n_samples": obj.n}, extra, res.stderr)


@records_settings
def hessian_trace_hutchpp(
    obj: Objective, *, products: int = 90, seed: int = 0, subset: int | None = None
) -> Measurement:
    """tr(H) by Hutch++ (Meyer et al. 2021): exact on a sketched top subspace, Hutchinson on the
    rest, with ``products`` Hessian-vector products in all."""
    obj = obj.subset(subset)
    res = H.hutchpp_trace(obj.flat_hvp, obj.dim, products=products, seed=seed, device=obj.device)
    extra = {"products": res.products, "hvp_mode": obj.hvp_mode}
    return Measurement(res.trace, {"n_samples": obj.n}, extra, res.stderr)


@records_settings
def spectral_density(
    obj: Objective,
    *,
    vectors: int = 3,
    steps: int = 60,
    seed: int = 0,
    subset: int | None = None,
    precision: str = "auto",
    memory: float = 2.0,
) -> Measurement:
    """The eigenvalue spectral density by SLQ (Ubaru et al. 2017; Ghorbani et al. 2019); the value
    is its mean (an estimate of tr(H)/n), the quadrature nodes and weights (one row per random
    vector) are kept in ``extra``.

    The stored basis takes ``steps``·4 bytes per parameter in float32 (2.7 GB for ResNet-18's 11.2M
    parameters at 60 steps; 5.4 GB in float64, and a copy of it on every step in 0.2); beyond
    ``memory`` GiB each step is reorthogonalised against the most recent vectors that fit
    (``extra["window"]`` says how many; see :func:`flatness.hessian.slq`).
    """
    obj = obj.subset(subset)
    esd = H.slq(
        obj.flat_hvp, obj.dim, vectors=vectors, steps=steps, seed=seed, memory=memory,
        precision=basis_precision(obj, precision), device=obj.device,
    )  # fmt: skip
    extra = {
        "nodes": esd.nodes.tolist(),
        "weights": esd.weights.tolist(),
        "hvp_mode": obj.hvp_mode,
        "window": esd.settings["window"],
        "basis_dtype": esd.settings["precision"],
    }
    return Measurement(esd.mean(), {"n_samples": obj.n}, extra, esd.mean_stderr())


def density_of(measurement: Measurement) -> H.SpectralDensity:
    """The :class:`~flatness.hessian.SpectralDensity` behind a ``spectral_density`` measurement."""
    import numpy as np

    return H.SpectralDensity(
        np.array(measurement.extra["nodes"]),
        np.array(measurement.extra["weights"]),
        dict(measurement.settings),
    )


def _shows_settings_of(measure, *leading: str):
    """Gives a ``**settings`` method the signature of ``measure``'s settings, so that ``help()`` and
    editors show each setting and its default, still written once, in ``measure``'s signature."""

    def decorate(method):
        params = list(inspect.signature(measure).parameters.values())[1:]
        own = inspect.signature(method)
        first = [own.parameters[name] for name in ("self", *leading)]  # the method's own defaults
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params
                if p.name not in leading]  # fmt: skip
        method.__signature__ = own.replace(parameters=[*first, *rest])
        return method

    return decorate


class Hessian:
    """The Hessian of the mean loss of ``model`` over ``data`` (``(x, y)`` tensors or a loader).

    Like PyHessian's ``hessian(model, criterion, data=...)``, with error bounds::

        H = flatness.Hessian(model, (x, y))
        H.eigenvalues(3).value        # the three largest, descending
        H.eigenvalues(3).error_bound  # guaranteed bounds on each
        H.trace().value, H.trace().error_bound

    Every method takes the settings of the measure it calls (same names, same defaults; its
    signature shows them, and ``flatness.describe(name)`` their meaning). ``progress`` as in
    :func:`flatness.measure`. ``mode``, ``batch_fn`` and ``output_fn`` are
    :class:`~flatness.objective.Objective`'s: the model runs in eval mode unless ``mode="train"``.

    ``distributed=True`` measures data-parallel under ``torch.distributed``: each rank passes its
    shard of the data (shards may differ in size) and makes the same calls, and every rank gets the
    value of the whole data (:mod:`flatness.distributed`); ``n_samples`` in the settings is then the
    rank's own shard.

    ``params`` chooses a part of the model: parameter names, submodules, or a list of both (None:
    every trainable parameter). The Hessian is then the block of those parameters, the others
    held at their values, e.g. per layer::

        {name: flatness.Hessian(model, (x, y), params=layer).eigenvalues(1).value[0]
         for name, layer in model.named_children() if list(layer.parameters())}
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataLike,
        loss_fn: LossFn = F.cross_entropy,
        *,
        batch_size: int = 2048,
        mode: str = "eval",
        batch_fn: BatchFn | None = None,
        output_fn: OutputFn | None = None,
        params: str | nn.Module | list | None = None,
        progress: bool | str = "auto",
        distributed: bool = False,
    ):
        check_model(model)
        check_data(data, "data")
        progress_bars.check(progress)
        self.names = P.select(model, params)  # None: all
        self.objective = Objective(
            model,
            data,
            loss_fn,
            batch_size=batch_size,
            names=self.names,
            mode=mode,
            batch_fn=batch_fn,
            output_fn=output_fn,
        )
        self.progress = progress
        self.distributed = distributed
        if distributed:
            with sharded():  # refuses an uninitialised process group now, not at the first product
                pass

    @contextlib.contextmanager
    def _running(self):
        with progress_bars.setting(self.progress), sharded(self.distributed):
            yield

    def _part(self, measured: Measurement) -> Measurement:
        """The measurement with the chosen parameters among its settings, when a part was chosen."""
        if self.names is None:
            return measured
        return dataclasses.replace(measured, settings={**measured.settings, "params": self.names})

    def _checked(self, metric: str, settings: dict) -> dict:
        from flatness.registry import validate

        validate({metric: settings}, num_params=self.objective.dim)  # one-line errors, as measure
        return settings

    @_shows_settings_of(top_eigenvalues, "k")
    def eigenvalues(self, k: int = 1, **settings) -> Measurement:
        """The ``k`` largest eigenvalues (:func:`top_eigenvalues`)."""
        settings = self._checked("hessian_top_k", {"k": k, **settings})
        with self._running():
            return self._part(top_eigenvalues(self.objective, **settings))

    @_shows_settings_of(top_eigenvalues, "k")
    def eigenvectors(self, k: int = 1, **settings) -> tuple[Measurement, list[P.Params]]:
        """The ``k`` largest eigenvalues and their unit eigenvectors as parameter dicts."""
        self._checked("hessian_top_k", {"k": k, **settings})
        obj = self.objective.subset(settings.pop("subset", None))
        defaults = {
            key: value
            for key, value in defaults_of(top_eigenvalues).items()
            if key not in ("k", "subset")
        }
        used = {**defaults, **settings}
        with self._running():
            measured, res = _top_k(obj, k, **used)
        values = self._part(
            dataclasses.replace(measured, settings={"k": k, **used, **measured.settings})
        )
        dtype = next(iter(obj.params.values())).dtype
        vectors = [P.unflatten(v.to(dtype), obj.params) for v in res.eigenvectors]
        return values, vectors

    def trace(self, method: str = "hutchinson", **settings) -> Measurement:
        """tr(H) by ``hutchinson`` (:func:`hessian_trace`: ``rtol``, ``min_probes``,
        ``max_probes``, ``seed``, ``subset``) or ``hutch++`` (:func:`hessian_trace_hutchpp`:
        ``products``, ``seed``, ``subset``); ``flatness.describe("hessian_trace")`` lists them."""
        if method not in ("hutchinson", "hutch++"):
            raise ValueError(f"method must be 'hutchinson' or 'hutch++' (got {method!r})")
        name, fn = (
            ("hessian_trace", hessian_trace)
            if method == "hutchinson"
            else ("hessian_trace_hutchpp", hessian_trace_hutchpp)
        )
        settings = self._checked(name, settings)
        with self._running():
            return self._part(fn(self.objective, **settings))

    @_shows_settings_of(spectral_density)
    def density(self, **settings) -> H.SpectralDensity:
        """The spectral density (:func:`spectral_density`); ``.error_bound`` on the result is the
        standard error of its mean over the random vectors."""
        settings = self._checked("hessian_esd", settings)
        with self._running():
            measured = spectral_density(self.objective, **settings)
        esd = density_of(self._part(measured))
        esd.error_bound = measured.error_bound
        return esd

    def hvp(self, v: P.Params) -> P.Params:
        """H v for a parameter dict ``v``."""
        with self._running():
            return self.objective.hvp(v)
