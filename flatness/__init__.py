"""flatness: measure how flat a trained PyTorch model's minimum is, and whether it matters.

Framework-free: give it a model, a loss and data as tensors, get numbers back. See
:func:`flatness.measure` for the one-line entry point.
"""

from flatness.evaluate import Evaluation, evaluate
from flatness.metrics import REGISTRY, measure

__all__ = ["REGISTRY", "Evaluation", "evaluate", "measure"]
__version__ = "0.1.0"
