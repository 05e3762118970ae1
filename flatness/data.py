"""Data as users hold it: ``(x, y)`` tensors or any re-iterable of ``(x, y)`` batches.

Every function of the library that needs data (``measure``, ``Hessian``, the surfaces) accepts
either form and turns it into :class:`Data`, so that one calling convention serves a notebook user
with two tensors and a PyHessian user with a ``DataLoader``. Tensors are cut into batches of the
caller's ``batch_size``; a loader's batches are used as the loader gives them. A loader that
shuffles gives different batches each pass: exact quantities (losses, Hessian products) stay exact,
only their float rounding changes; pass ``shuffle=False`` loaders for bit-reproducible numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

Tensors = tuple[torch.Tensor, torch.Tensor]


class Data:
    """A dataset seen as batches of ``(x, y)``; build it with :func:`as_data`."""

    def __init__(
        self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, loader: Any = None
    ):
        if (loader is None) == (x is None):
            raise ValueError("Data needs either tensors x, y or a loader")
        if x is not None:
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                raise TypeError("data=(x, y) needs two tensors")
            if len(x) != len(y):
                raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
            if len(x) == 0:
                raise ValueError("the data are empty: no sample")
        self.x, self.y, self.loader = x, y, loader
        self._n: int | None = None if loader is not None else len(x)

    @property
    def is_tensors(self) -> bool:
        return self.loader is None

    def __len__(self) -> int:
        """The number of samples (a loader is counted once, by one pass over it)."""
        if self._n is None:
            self._n = sum(len(xb) for xb, _ in self._loader_batches())
            if self._n == 0:
                raise ValueError("the data loader gave no sample")
        return self._n

    def batches(self, batch_size: int) -> Iterator[Tensors]:
        """``(xb, yb)`` batches covering every sample once; ``batch_size`` applies to tensors."""
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
        if self.loader is not None:
            yield from self._loader_batches()
            return
        for start in range(0, len(self.x), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def _loader_batches(self) -> Iterator[Tensors]:
        for batch in self.loader:
            if not (isinstance(batch, list | tuple) and len(batch) >= 2):
                raise TypeError("each batch of a data loader must be (x, y)")
            yield batch[0], batch[1]

    def tensors(self) -> Tensors:
        """All samples as two tensors (a loader's batches are concatenated)."""
        if self.loader is None:
            return self.x, self.y
        xs, ys = zip(*self._loader_batches(), strict=True)
        return torch.cat(xs), torch.cat(ys)

    def head(self, n: int | None) -> Data:
        """The first ``n`` samples (all of them for None)."""
        if n is None:
            return self
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"subset must be a positive integer or None (got {n!r})")
        x, y = self.tensors()
        return Data(x[:n], y[:n])

    @property
    def device(self) -> torch.device:
        x = self.x if self.loader is None else next(iter(self._loader_batches()))[0]
        return x.device

    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one input."""
        x = self.x if self.loader is None else next(iter(self._loader_batches()))[0]
        return tuple(x.shape[1:])


DataLike = Data | Tensors | Iterable


def as_data(data: DataLike | None, name: str = "data") -> Data:
    """``(x, y)`` tensors, a re-iterable of ``(x, y)`` batches (a ``DataLoader``) or :class:`Data`."""
    if isinstance(data, Data):
        return data
    if data is None:
        raise ValueError(f"{name} is required: pass (x, y) tensors or a DataLoader of (x, y)")
    if isinstance(data, list | tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return Data(data[0], data[1])
    if isinstance(data, torch.Tensor):
        raise TypeError(f"{name}: pass the inputs with their targets, (x, y), not x alone")
    if isinstance(data, Iterator):
        # A generator is spent after one pass; measures need several.
        raise TypeError(f"{name}: pass a re-iterable such as a DataLoader, not a one-shot iterator")
    if isinstance(data, Iterable):
        return Data(loader=data)
    raise TypeError(f"{name}: expected (x, y) tensors or a DataLoader (got {type(data).__name__})")
