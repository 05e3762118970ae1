"""Directions in parameter space for loss surfaces: random, normalised, between models, and PCA.

Filter normalisation follows Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets": each
filter d_ij of a random Gaussian direction (an output channel of a conv weight, an output row of a
linear weight) is rescaled to the norm of the same filter of the weights, d_ij ← d_ij/‖d_ij‖·‖θ_ij‖,
which removes the scale ambiguity that makes raw plots incomparable (Dinh et al. 2017). Biases and
batch-norm parameters (every parameter with at most one dimension) are zero unless asked for.
PCA directions of a training trajectory follow Li et al. 2018, Section 7.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flatness import params as P

NORMALIZATIONS = ("filter", "layer", "weight", "none")
IGNORE = ("biasbn", "none")


def _as_params(source: nn.Module | Mapping[str, torch.Tensor]) -> P.Params:
    return P.named_params(source) if isinstance(source, nn.Module) else dict(source)


def random_direction(
    source: nn.Module | Mapping[str, torch.Tensor],
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    normalization: str = "filter",
    ignore: str = "biasbn",
) -> P.Params:
    """A Gaussian direction shaped like the parameters, normalised as asked.

    ``normalization``: ``filter`` (per output filter/unit, Li et al. 2018), ``layer`` (per parameter
    tensor), ``weight`` (elementwise by |θ|) or ``none``. ``ignore="biasbn"`` zeroes every parameter
    with at most one dimension (biases, batch-norm scales and shifts).
    """
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed= or generator=")
    theta = _as_params(source)
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    # Draw on the CPU so that the same seed gives the same direction on any device.
    d = {k: torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for k, t in theta.items()}
    return normalize_direction(d, theta, normalization=normalization, ignore=ignore)


def normalize_direction(
    direction: Mapping[str, torch.Tensor],
    theta: Mapping[str, torch.Tensor],
    *,
    normalization: str = "filter",
    ignore: str = "biasbn",
) -> P.Params:
    """Rescale ``direction`` relative to the weights ``theta`` (see :func:`random_direction`)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {list(NORMALIZATIONS)} (got {normalization!r})"
        )
    if ignore not in IGNORE:
        raise ValueError(f"ignore must be one of {list(IGNORE)} (got {ignore!r})")
    out: P.Params = {}
    for k, d in direction.items():
        w = theta[k]
        if ignore == "biasbn" and w.dim() <= 1:
            out[k] = torch.zeros_like(w)
        elif normalization == "filter":
            # A 1-D parameter kept in the direction is treated as a single filter.
            d2, w2 = (
                (d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1))
                if w.dim() > 1
                else (d[None], w[None])
            )
            scale = w2.norm(dim=1, keepdim=True) / (d2.norm(dim=1, keepdim=True) + 1e-10)
            out[k] = (d2 * scale).reshape(w.shape)
        elif normalization == "layer":
            out[k] = d * (w.norm() / (d.norm() + 1e-10))
        elif normalization == "weight":
            out[k] = d * w.abs()
        else:
            out[k] = d.clone()
    return out


def direction_between(
    a: nn.Module | Mapping[str, torch.Tensor], b: nn.Module | Mapping[str, torch.Tensor]
) -> P.Params:
    """θ_b − θ_a: the direction from model ``a`` to model ``b`` (same architecture)."""
    return P.sub(_as_params(b), _as_params(a))


def plane_through(
    a: nn.Module | Mapping[str, torch.Tensor],
    b: nn.Module | Mapping[str, torch.Tensor],
    c: nn.Module | Mapping[str, torch.Tensor],
) -> list[P.Params]:
    """Directions [θ_b − θ_a, θ_c − θ_a]: the plane through three models, centred on ``a``.

    A 2D surface around ``a`` with these directions passes through ``b`` at (1, 0) and ``c`` at (0, 1)
    (Garipov et al. 2018 draw minima this way).
    """
    return [direction_between(a, b), direction_between(a, c)]


@dataclass
class PCADirections:
    """The top principal directions of a trajectory around its final point (Li et al. 2018, §7)."""

    directions: list[P.Params]
    explained_variance_ratio: np.ndarray
    projection: np.ndarray  # (len(trajectory), n_components): coordinates of each saved point


def pca_directions(
    trajectory: Sequence[Mapping[str, torch.Tensor]],
    final: Mapping[str, torch.Tensor],
    n_components: int = 2,
    *,
    ignore: str = "none",
) -> PCADirections:
    """PCA of the matrix [θ_i − θ_final] over saved points θ_i of a training trajectory.

    The directions are orthonormal (in the flattened parameter space, over the parameters kept by
    ``ignore``), so the projection of each point is its inner product with them.
    """
    if len(trajectory) < n_components:
        raise ValueError(f"need at least {n_components} trajectory points (got {len(trajectory)})")
    keys = [k for k, t in final.items() if not (ignore == "biasbn" and t.dim() <= 1)]
    kept = {k: final[k] for k in keys}
    rows = torch.stack(
        [P.flatten(P.sub({k: p[k] for k in keys}, kept)) for p in trajectory]
    ).double()
    _, s, vh = torch.linalg.svd(rows.cpu(), full_matrices=False)
    variance = s.numpy() ** 2
    ratio = (
        variance[:n_components] / variance.sum() if variance.sum() > 0 else np.zeros(n_components)
    )
    dirs = []
    for i in range(n_components):
        vec = P.unflatten(vh[i].to(dtype=next(iter(final.values())).dtype), kept)
        full = {
            k: (vec[k].to(final[k].device) if k in vec else torch.zeros_like(final[k]))
            for k in final
        }
        dirs.append(full)
    projection = (rows @ vh[:n_components].T).numpy()
    return PCADirections(dirs, ratio, projection)
