"""The loss barrier on the straight path between two weight vectors (Frankle et al. 2020).

``barrier = max_t [L((1 − t) w_a + t w_b) − ((1 − t) L(w_a) + t L(w_b))]`` over ``points`` evenly
spaced t in [0, 1]: the largest rise of the loss on the segment above the straight line through its
end values. It is 0 at the ends, so the maximum is never negative; on a convex loss it is exactly 0
(the loss lies below its chords), and two minima with a barrier near 0 are linearly connected (one
basin, in Frankle et al.'s sense). Used by the deck's explanation "Adam falls into a local minimum
and cannot get out" (issue 13): does a continuation cross a barrier on its way out?
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from flatness.objective import Objective
from flatness.registry import Measurement, records_settings


def path_losses(
    obj: Objective,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor] | None = None,
    points: int = 21,
) -> tuple[np.ndarray, np.ndarray]:
    """(t, L(t)) on ``points`` evenly spaced t in [0, 1] of the segment from ``start`` to ``end``
    (default: the objective's own parameters). ``start`` and ``end`` map the objective's parameter
    names to tensors of their shapes; buffers (batch-norm statistics) stay the model's."""
    if not (isinstance(points, int) and points >= 2):
        raise ValueError(f"points must be an integer >= 2 (got {points!r})")
    end = obj.params if end is None else end
    for name, ref in (("start", start), ("end", end)):
        missing = [k for k in obj.names if k not in ref]
        if missing:
            raise ValueError(f"{name}: lacks parameter(s) {missing[:3]} of the model")
        wrong = [k for k in obj.names if tuple(ref[k].shape) != tuple(obj.params[k].shape)]
        if wrong:
            k = wrong[0]
            raise ValueError(
                f"{name}: parameter {k} has shape {tuple(ref[k].shape)}, the model's is "
                f"{tuple(obj.params[k].shape)}"
            )
    device = obj.device
    a = {k: start[k].detach().to(device, obj.params[k].dtype) for k in obj.names}
    b = {k: end[k].detach().to(device, obj.params[k].dtype) for k in obj.names}
    ts = np.linspace(0.0, 1.0, points)
    losses = np.array([obj.value({k: (1 - t) * a[k] + t * b[k] for k in a}) for t in ts])
    return ts, losses


def barrier_of(ts: np.ndarray, losses: np.ndarray) -> float:
    """The largest rise of ``losses`` above the chord through its end values (never below 0)."""
    chord = (1 - ts) * losses[0] + ts * losses[-1]
    return float(max(0.0, np.max(losses - chord)))


@records_settings
def linear_barrier(
    obj: Objective,
    *,
    init: Mapping[str, torch.Tensor] | None = None,
    points: int = 21,
    subset: int | None = None,
) -> Measurement:
    """The loss barrier on the straight path from ``init`` (the weights training started from; for a
    continuation, the minimum it left) to the model's weights (Frankle et al. 2020). ``extra`` holds
    the path's t and losses and where the maximum rise is."""
    if init is None:
        raise ValueError("linear_barrier needs the starting weights: pass init=")
    obj = obj.subset(subset)
    ts, losses = path_losses(obj, init, None, points)
    value = barrier_of(ts, losses)
    chord = (1 - ts) * losses[0] + ts * losses[-1]
    extra = {
        "t": ts.tolist(),
        "loss": losses.tolist(),
        "t_at_max": float(ts[int(np.argmax(losses - chord))]),
    }
    return Measurement(value, {"n_samples": obj.n}, extra)
