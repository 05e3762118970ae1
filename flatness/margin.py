"""Output margin, Jiang et al. 2020 (App. C.1, "output & margin based measures"): the margin of a
sample is f(x)_y − max_{j≠y} f(x)_j; γ is its 10th percentile over the training set (a percentile
rather than the minimum, which one outlier would set), and the measure is 1/γ², larger meaning a
model predicted to generalise worse, as every complexity measure of that study."""

from __future__ import annotations

import numpy as np
import torch

from flatness.objective import Objective
from flatness.registry import Measurement, records_settings
from flatness.task import accuracy_reason


def margins(obj: Objective) -> torch.Tensor:
    """Every sample's margin f(x)_y − max_{j≠y} f(x)_j at the objective's parameters, in its mode."""
    parts = []
    # per-sample values, not a sum over batches, so the loop is data.batches and not accumulate
    with obj.in_mode(), torch.no_grad():
        for xb, yb in obj.data.batches(obj.batch_size, obj.device):
            logits = obj.data.call(obj.model, xb, obj._state(obj.params))
            reason = accuracy_reason(logits, yb)
            if reason is not None:
                raise ValueError(f"the output margin does not apply: {reason}")
            logits = logits.double()
            own = logits.gather(1, yb[:, None]).squeeze(1)
            others = logits.scatter(1, yb[:, None], float("-inf")).amax(dim=1)
            parts.append(own - others)
    return torch.cat(parts)


@records_settings
def inverse_margin(
    obj: Objective, quantile: float = 0.1, *, subset: int | None = None
) -> Measurement:
    """1/γ², γ the ``quantile`` of the training margins (Jiang et al. 2020, eq. 22 and App. C.1).

    A model whose ``quantile`` margin is not positive misclassifies more than that share of the
    training set, and 1/γ² is not defined: that is an error, recorded as a failure, never a value.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1) (got {quantile!r})")
    obj = obj.subset(subset)
    m = margins(obj).cpu().numpy()
    gamma = float(np.quantile(m, quantile))
    if not gamma > 0:
        raise ValueError(
            f"the {quantile:g}-quantile of the training margins is {gamma:.3g} ≤ 0 (more than "
            f"{quantile:.0%} of the samples misclassified): 1/γ² is undefined"
        )
    return Measurement(1.0 / gamma**2, {"n_samples": obj.n}, {"margin": gamma})
