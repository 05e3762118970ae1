"""Data as users hold it: ``(inputs, targets)`` tensors or any re-iterable of batches.

Every function of the library that needs data (``measure``, ``Hessian``, the surfaces, ``evaluate``)
accepts either form and turns it into :class:`Data`, so that one calling convention serves a
notebook user with two tensors, a PyHessian user with a ``DataLoader`` and a Hugging Face user with
batches of dicts. Inputs may be a tensor, a tuple or a mapping of tensors (:mod:`flatness.batch`);
the sample count is the targets' length; ``batch_fn`` reads another batch layout and ``output_fn``
another model output. Tensors are cut into batches of the caller's ``batch_size``; a loader's batches
are used as the loader gives them.

A loader must give the same samples on every pass: a measure that reads the data many times (the
Hessian's eigenvalues, sharpness) would otherwise mix different datasets. The first two complete
passes are compared by a fingerprint (the sample count and the sums and sums of squares of targets
and inputs, which do not depend on the order) and a difference raises :class:`DataChangedError`,
as curvlinops checks a loader before trusting an operator. A shuffling loader that keeps every
sample passes (exact quantities stay exact, only their float rounding changes); one that drops a
different last batch each pass, or augments at random, does not.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from flatness import batch as B

Batch = tuple[B.Inputs, torch.Tensor]
Tensors = Batch  # the former name, for callers that import it


class DataChangedError(ValueError):
    """A loader gave different data on two passes."""


class Data:
    """A dataset seen as batches of ``(inputs, targets)``; build it with :func:`as_data`."""

    def __init__(
        self,
        x: B.Inputs | None = None,
        y: torch.Tensor | None = None,
        loader: Any = None,
        *,
        batch_fn: B.BatchFn | None = None,
        output_fn: B.OutputFn | None = None,
    ):
        if (loader is None) == (x is None):
            raise ValueError("Data needs either tensors x, y or a loader")
        if x is not None:
            if not isinstance(y, torch.Tensor):
                raise TypeError("data=(x, y) needs the targets y as a tensor")
            if y.dim() == 0:
                raise ValueError("data=(x, y): y is a scalar, need one target per sample")
            x = B.normalise(x)
            B.check_inputs(x, len(y), "data")
            if len(y) == 0:
                raise ValueError("the data are empty: no sample")
        self.x, self.y, self.loader = x, y, loader
        self.batch_fn, self.output_fn = batch_fn, output_fn
        self._n: int | None = None if loader is not None else len(y)
        self._prints: list[tuple] = []  # fingerprints of a loader's first two complete passes

    @property
    def is_tensors(self) -> bool:
        return self.loader is None

    def __len__(self) -> int:
        """The number of samples, counted by the targets (a loader is counted by one pass)."""
        if self._n is None:
            n = sum(len(yb) for _, yb in self._loader_batches())
            if n == 0:
                raise ValueError("the data loader gave no sample")
            self._n = n
        return self._n

    def batches(self, batch_size: int, device: torch.device | None = None) -> Iterator[Batch]:
        """``(inputs, targets)`` batches covering every sample once, moved to ``device`` if given;
        ``batch_size`` applies to tensors."""
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
        if self.loader is not None:
            for xb, yb in self._loader_batches():
                yield B.to(xb, device), B.to(yb, device)
            return
        for start in range(0, len(self.y), batch_size):
            part = slice(start, start + batch_size)
            yield B.to(B.index(self.x, part), device), B.to(self.y[part], device)

    def _loader_batches(self) -> Iterator[Batch]:
        fingerprint = _Fingerprint() if len(self._prints) < 2 else None
        for batch in self.loader:
            xb, yb = B.split(batch, self.batch_fn)
            if fingerprint is not None:
                fingerprint.add(xb, yb)
            yield xb, yb
        if fingerprint is not None:  # only a complete pass gets here
            self._record(fingerprint.value())

    def _record(self, fingerprint: tuple) -> None:
        self._prints.append(fingerprint)
        if self._n is None:
            self._n = fingerprint[0]
        if len(self._prints) == 2 and not _same(*self._prints):
            first, second = self._prints
            raise DataChangedError(
                f"the data loader gave different data on two passes ({_show(first)} then "
                f"{_show(second)}): a measure that reads the data many times would mix different "
                "datasets. Use a loader with a fixed set of samples (shuffle=False, or "
                "drop_last=False) and no random augmentation, or pass (x, y) tensors"
            )

    def call(self, model: torch.nn.Module, inputs: B.Inputs, state: Any = None) -> torch.Tensor:
        """The model's predictions on a batch's ``inputs`` (:func:`flatness.batch.call` with this
        data's ``output_fn``)."""
        return B.call(model, inputs, state, self.output_fn)

    def tensors(self) -> Batch:
        """All samples as ``(inputs, targets)`` (a loader's batches are concatenated)."""
        if self.loader is None:
            return self.x, self.y
        xs, ys = zip(*self._loader_batches(), strict=True)
        return B.cat(xs), torch.cat(ys)

    def _tensor_data(self, x: B.Inputs, y: torch.Tensor) -> Data:
        return Data(x, y, output_fn=self.output_fn)

    def head(self, n: int | None) -> Data:
        """The first ``n`` samples (all of them for None). A loader is read only up to them."""
        if n is None:
            return self
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"subset must be a positive integer or None (got {n!r})")
        if self.loader is None:
            if n >= len(self.y):
                return self
            return self._tensor_data(B.index(self.x, slice(0, n)), self.y[:n])
        xs, ys, have = [], [], 0
        for xb, yb in self._loader_batches():
            xs.append(xb)
            ys.append(yb)
            have += len(yb)
            if have >= n:
                break  # a partial pass: the rest of the loader is not read
        return self._tensor_data(B.index(B.cat(xs), slice(0, n)), torch.cat(ys)[:n])

    def select(self, idx: torch.Tensor) -> Data:
        """The samples at positions ``idx``, as tensors."""
        x, y = self.tensors()
        idx = idx.to(y.device)
        return self._tensor_data(B.index(x, idx), y[idx])

    def with_adapters(
        self, batch_fn: B.BatchFn | None = None, output_fn: B.OutputFn | None = None
    ) -> Data:
        """This data with ``batch_fn`` / ``output_fn`` set (those given; the others kept)."""
        if batch_fn is None and output_fn is None:
            return self
        if batch_fn is not None and self.loader is None:
            raise ValueError(
                "batch_fn applies to a loader's batches; tensors are (inputs, targets)"
            )
        out = copy.copy(self)
        out.batch_fn = batch_fn if batch_fn is not None else self.batch_fn
        out.output_fn = output_fn if output_fn is not None else self.output_fn
        out._n, out._prints = (self._n, []) if batch_fn is None else (None, [])
        return out

    def _first_inputs(self) -> B.Inputs:
        return self.x if self.loader is None else next(iter(self._loader_batches()))[0]

    @property
    def device(self) -> torch.device:
        return B.leaves(self._first_inputs())[0].device

    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one input (the inputs must be one tensor)."""
        x = self._first_inputs()
        if not isinstance(x, torch.Tensor):
            raise TypeError("this measure needs the inputs as one tensor, not a tuple or mapping")
        return tuple(x.shape[1:])

    def sample_numel(self) -> int:
        """Input numbers per sample, all input tensors together."""
        return B.per_sample_numel(self._first_inputs())


class _Fingerprint:
    """Order-free sums over one pass: count; Σ and Σ² of the targets and of the inputs."""

    def __init__(self):
        self.n = 0
        self.sums: list[torch.Tensor] = []

    def add(self, inputs: B.Inputs, targets: torch.Tensor) -> None:
        self.n += len(targets)
        with torch.no_grad():
            parts = [targets, *B.leaves(inputs)]
            row = torch.stack(
                [s for t in parts for s in (t.double().sum(), t.double().square().sum())]
            )
        self.sums.append(row)

    def value(self) -> tuple:
        if not self.sums or any(len(r) != len(self.sums[0]) for r in self.sums):
            return (self.n,)
        return (self.n, *torch.stack(self.sums).sum(0).tolist())


def _same(a: tuple, b: tuple) -> bool:
    if len(a) != len(b) or a[0] != b[0]:
        return False
    for u, v in zip(a[1:], b[1:], strict=True):
        if math.isnan(u) and math.isnan(v):
            continue
        # float64 sums of the same numbers in another order differ by rounding only
        if not math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9 * (abs(u) + abs(v) + 1.0)):
            return False
    return True


def _show(fingerprint: tuple) -> str:
    n, *sums = fingerprint
    target = f", targets summing to {sums[0]:.6g}" if sums else ""
    return f"{n} samples{target}"


DataLike = Data | Batch | Iterable


def _is_inputs(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, Mapping):
        return bool(x) and all(isinstance(v, torch.Tensor) for v in x.values())
    if isinstance(x, tuple | list):
        return bool(x) and all(isinstance(v, torch.Tensor) for v in x)
    return False


def as_data(
    data: DataLike | None,
    name: str = "data",
    *,
    batch_fn: B.BatchFn | None = None,
    output_fn: B.OutputFn | None = None,
) -> Data:
    """``(inputs, targets)`` tensors, a re-iterable of batches (a ``DataLoader``) or :class:`Data`;
    ``batch_fn`` and ``output_fn`` as in :mod:`flatness.batch`."""
    if isinstance(data, Data):
        return data.with_adapters(batch_fn, output_fn)
    if data is None:
        raise ValueError(f"{name} is required: pass (x, y) tensors or a DataLoader of (x, y)")
    if (
        isinstance(data, list | tuple)
        and len(data) == 2
        and isinstance(data[1], torch.Tensor)
        and _is_inputs(data[0])
    ):
        if batch_fn is not None:
            raise ValueError(f"{name}: batch_fn applies to a loader; tensors are (inputs, targets)")
        return Data(data[0], data[1], output_fn=output_fn)
    if isinstance(data, torch.Tensor):
        raise TypeError(f"{name}: pass the inputs with their targets, (x, y), not x alone")
    if isinstance(data, Mapping):
        raise TypeError(
            f"{name}: got a mapping; pass (inputs, targets) with the mapping as inputs, or a "
            "loader of batches (with batch_fn= if its batches are mappings)"
        )
    if isinstance(data, Iterator):
        # A generator is spent after one pass; measures need several.
        raise TypeError(f"{name}: pass a re-iterable such as a DataLoader, not a one-shot iterator")
    if isinstance(data, Iterable):
        return Data(loader=data, batch_fn=batch_fn, output_fn=output_fn)
    raise TypeError(f"{name}: expected (x, y) tensors or a DataLoader (got {type(data).__name__})")
