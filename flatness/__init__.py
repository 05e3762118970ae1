"""flatness: measure how flat a trained PyTorch model's minimum is, and whether it matters.

Framework-free: give it a model and data as ``(x, y)`` tensors or a ``DataLoader`` (inputs a tensor, a
tuple or a dict of tensors; ``batch_fn=`` and ``output_fn=`` for other layouts), get numbers with
their settings back::

    results = flatness.measure(model, (x, y))                  # {name: Measurement}
    flatness.Hessian(model, (x, y)).eigenvalues(3).value       # PyHessian-style
    flatness.surface_2d(model, (x, y))                         # Li et al. 2018's plane

``import flatness`` needs torch, numpy and scipy only; the plotting functions import matplotlib
when first called.
"""

from flatness import distributed, progress
from flatness.curvature import Hessian
from flatness.data import Data, DataChangedError, as_data
from flatness.directions import direction_between, pca_directions, random_direction
from flatness.evaluate import Evaluation, eval_mode, evaluate
from flatness.metrics import DEFAULT_METRICS, Description, describe, measure, to_row
from flatness.objective import Objective
from flatness.registry import REGISTRY, Measurement, register, validate
from flatness.reparam import Rescaled, RescaleError, rescale
from flatness.surface import Surface, interpolate, surface_1d, surface_2d

_PLOTS = ("plot_1d", "plot_2d", "plot_spectral_density", "plot_sharpness_history", "save_figure")

__all__ = [
    "DEFAULT_METRICS",
    "REGISTRY",
    "Data",
    "DataChangedError",
    "Description",
    "Evaluation",
    "Hessian",
    "Measurement",
    "Objective",
    "RescaleError",
    "Rescaled",
    "Surface",
    "as_data",
    "describe",
    "direction_between",
    "distributed",
    "eval_mode",
    "evaluate",
    "interpolate",
    "measure",
    "pca_directions",
    "progress",
    "random_direction",
    "register",
    "rescale",
    "surface_1d",
    "surface_2d",
    "to_row",
    "validate",
    *_PLOTS,
]
__version__ = "0.3.0"  # the one source: pyproject.toml reads it


def __getattr__(name: str):
    # Plotting lives behind a lazy import so that `import flatness` does not load matplotlib.
    if name in _PLOTS:
        from flatness import plot

        return getattr(plot, name)
    raise AttributeError(f"module 'flatness' has no attribute {name!r}")
