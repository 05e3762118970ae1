"""Data-parallel measuring under ``torch.distributed``: each rank holds a shard of the data, and the
sums over data are combined across ranks, so that every rank gets the whole-data value.

Opt-in, through :class:`flatness.Hessian` (``distributed=True``) or ``with sharded():``, because
combining is a collective call: a rank that measures while another does not would wait forever. Inside
the block, the one loop over data (:func:`flatness.evaluate.accumulate`) and the cached-graph
Hessian-vector products end with :func:`combine`: the shard's mean (or sum) weighted by its sample
count, all-reduced, divided by the whole count. Shards may differ in size. Every rank must make the
same calls with the same settings and seeds (the random vectors of Lanczos and Hutchinson are drawn
from the seed, so they agree); each product is then exact over the union of the shards.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch

_SHARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("sharded", default=False)


def is_sharded() -> bool:
    """Whether sums over data are combined across ranks here."""
    return _SHARDED.get()


@contextlib.contextmanager
def sharded(enabled: bool = True) -> Iterator[None]:
    """Within the block, each rank's data are its shard of one dataset (see the module docstring)."""
    if enabled:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True needs torch.distributed initialised on every rank "
                "(torch.distributed.init_process_group) before measuring"
            )
    token = _SHARDED.set(enabled)
    try:
        yield
    finally:
        _SHARDED.reset(token)


def _all_sum(total: Any) -> Any:
    import torch.distributed as dist

    if isinstance(total, dict):
        return {k: _all_sum(v) for k, v in total.items()}
    if isinstance(total, tuple):
        return tuple(_all_sum(v) for v in total)
    out = total.detach().clone()
    dist.all_reduce(out)
    return out


def count(n: int, device: torch.device | str = "cpu") -> int:
    """The number of samples over all shards (``n`` itself when not sharded)."""
    if not is_sharded():
        return n
    return int(_all_sum(torch.tensor([float(n)], dtype=torch.float64, device=device)).item())


def combine(total: Any, n: int, mean: bool) -> Any:
    """A shard's ``total`` (a tensor, or a dict or tuple of them) over all shards: for a mean over
    ``n`` local samples, Σ_r n_r·mean_r / Σ_r n_r (two collective calls, the count and the values,
    whether the mean comes from the loop over data or from a cached graph, so that ranks that took
    different paths still make the same sequence of calls); for a sum, Σ_r sum_r (one call)."""
    if not is_sharded():
        return total
    first = total
    while isinstance(first, dict | tuple):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    whole = count(n, first.device)
    if not mean:
        return _all_sum(total)
    return _scale(_all_sum(_scale(total, float(n))), 1.0 / whole)


def _scale(total: Any, factor: float) -> Any:
    if isinstance(total, dict):
        return {k: _scale(v, factor) for k, v in total.items()}
    if isinstance(total, tuple):
        return tuple(_scale(v, factor) for v in total)
    return total * factor
