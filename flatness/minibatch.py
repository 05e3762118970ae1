"""The sharpness of the mini-batch loss, as a function of the batch size it is computed on.

The deck explains the batch-size effect as "each sample has a sharp minimum; if the batch is big, this
sharpness is averaged into a flat minimum". Its testable form: the largest Hessian eigenvalue of the
loss on a batch of B samples, λmax(L_B), averaged over batches. Because λmax is convex in the matrix
and the Hessian of a batch is the mean of its samples' Hessians, E λmax(L_B) can only fall as B grows
over nested batches, down to λmax(L) of the whole set (Jensen); that fall is a property of the
measurement, not evidence. What the explanation adds is whether small-B sharpness separates minima
that full-batch sharpness does not; the experiment of issue 13 judges that.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flatness.curvature import lambda_max
from flatness.objective import Objective
from flatness.registry import Measurement, records_settings


@records_settings
def minibatch_lambda_max(
    obj: Objective,
    *,
    b: int = 64,
    n_batches: int = 16,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    subset: int | None = None,
    precision: str = "auto",
) -> Measurement:
    """Mean of λmax(L_B) over ``n_batches`` disjoint batches of ``b`` samples drawn without
    replacement (a seeded permutation, consecutive slices of it), each by Lanczos to ``tol``.

    ``value`` is the mean; ``error_bound`` its standard error over the batches (the spread between
    batches, which dominates the Lanczos error at ``tol``); ``extra`` holds every batch's value.
    Fewer batches are used when the data hold fewer than ``n_batches * b`` samples. ``precision``
    is that of each Lanczos basis (see :func:`flatness.curvature.lambda_max`).
    """
    obj = obj.subset(subset)
    count = min(n_batches, obj.n // b)
    if count < 1:
        raise ValueError(f"b: {b} exceeds the {obj.n} samples measured on")
    whole = obj.on(obj.data.tensors())  # the loader read once, not once per batch
    order = torch.randperm(obj.n, generator=torch.Generator().manual_seed(seed))
    values = []
    for i in range(count):
        # the same parameters, mode, output_fn and graph memory as the whole-set objective
        batch = whole.on(whole.data.select(order[i * b : (i + 1) * b]))
        values.append(
            lambda_max(batch, tol=tol, max_iter=max_iter, seed=seed + i, precision=precision).value
        )
    mean = float(np.mean(values))
    stderr = float(np.std(values, ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    extra = {"values": values, "batches": count, "stderr": stderr}
    return Measurement(mean, {"n_samples": obj.n, "b": b}, extra, stderr)
