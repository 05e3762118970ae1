"""Loss surfaces: 1D lines and 2D planes through a model's weights, and interpolation between models.

Follows Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets"): the loss and accuracy at
θ + α·δ (+ β·η) over a grid, with δ, η random filter-normalised directions by default (see
:mod:`flatness.directions`), and the 1D linear interpolation (1−t)·θ_a + t·θ_b of Goodfellow et al.
2015 and Keskar et al. 2017.

Two engines evaluate the grid. ``loop`` evaluates one point at a time through
:func:`flatness.evaluate.evaluate`; ``vmap`` evaluates chunks of grid points in one batched forward
(``torch.func.vmap`` over stacked parameters), halving the chunk on out-of-memory. ``auto`` picks
``vmap`` on CUDA for networks without convolutions and ``loop`` elsewhere: measured on 2 CPU cores,
per-point evaluation of a small MLP is already at the arithmetic ceiling and vmap was slower, and for
conv nets on a GPU batching grid points gains little (DESIGN.md, performance notes).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flatness import params as P
from flatness.batch import BatchFn, OutputFn
from flatness.data import DataLike, as_data
from flatness.directions import random_direction
from flatness.evaluate import (
    QUANTITIES,
    LossFn,
    evaluate,
    evaluate_points_loop,
    evaluate_points_vmap,
    recompute_bn_statistics,
)
from flatness.inputs import check_data, check_model
from flatness.io import atomic_write_bytes, npz_bytes
from flatness.progress import bar as progress_bar

ENGINES = ("auto", "loop", "vmap")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
BN_POLICIES = ("frozen", "recompute")


@dataclass
class Surface:
    """Values of loss and accuracy over a 1D or 2D grid, with the settings that produced them.

    ``coords`` holds one array per axis. For a 2D surface ``values[name][i, j]`` is the value at
    ``(coords[0][i], coords[1][j])`` ("ij" indexing: first axis = x), whatever the grid's shape.
    """

    coords: list[np.ndarray]
    values: dict[str, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.coords)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.npz`` (grid and values) and ``<path>.json`` (settings); return both paths."""
        path = Path(path)
        npz, meta = path.with_suffix(".npz"), path.with_suffix(".json")
        arrays = {f"coord_{i}": c for i, c in enumerate(self.coords)}
        arrays.update({f"value_{k}": v for k, v in self.values.items()})
        atomic_write_bytes(npz, npz_bytes(arrays))
        atomic_write_bytes(
            meta, (json.dumps(self.settings, indent=2, sort_keys=True, default=str) + "\n").encode()
        )
        return npz, meta

    @classmethod
    def load(cls, path: str | Path) -> Surface:
        path = Path(path)
        with np.load(path.with_suffix(".npz")) as f:
            coords = [f[f"coord_{i}"] for i in range(sum(k.startswith("coord_") for k in f.files))]
            values = {k[len("value_") :]: f[k] for k in f.files if k.startswith("value_")}
        settings = json.loads(path.with_suffix(".json").read_text())
        return cls(coords, values, settings)


def grid_axis(lo: float, hi: float, points: int, name: str = "range") -> np.ndarray:
    """``points`` evenly spaced values from ``lo`` to ``hi`` inclusive."""
    if not (isinstance(points, int) and points >= 2):
        raise ValueError(f"resolution must be an integer >= 2 (got {points!r})")
    if not lo < hi:
        raise ValueError(f"{name} must have min < max (got [{lo}, {hi}])")
    return np.linspace(lo, hi, points)


def surface_1d(
    model: nn.Module,
    train: DataLike,
    test: DataLike | None = None,
    *,
    direction: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    normalization: str = "filter",
    ignore: str = "biasbn",
    span: tuple[float, float] = (-1.0, 1.0),
    points: int = 51,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int = 4096,
    subset: int | None = None,
    bn_policy: str = "frozen",
    bn_samples: int = 1024,
    engine: str = "auto",
    chunk_size: int | None = None,
    precision: str = "fp32",
    progress: bool | str = "auto",
    batch_fn: BatchFn | None = None,
    output_fn: OutputFn | None = None,
) -> Surface:
    """Loss and accuracy along θ + α·d for α on a grid over ``span`` (a random direction by default,
    filter-normalised as Li et al. 2018 unless ``normalization`` says otherwise).

    Evaluation settings (the same for :func:`surface_1d` and :func:`surface_2d`): ``loss_fn``
    (a batch mean); ``batch_size`` samples per forward pass; ``subset`` the first N samples of each
    split (None: all); ``bn_policy`` ``"frozen"`` (Li et al. 2018: the model's batch-norm
    statistics) or ``"recompute"`` (re-estimated at every point from ``bn_samples`` training
    samples); ``engine`` ``"auto"``, ``"loop"`` (one point at a time) or ``"vmap"`` (chunks of
    ``chunk_size`` points per batched forward; None: what fits); ``precision`` of the forward
    passes, ``"fp32"``, ``"tf32"``, ``"bf16"`` or ``"fp16"`` (CUDA); ``progress`` a bar (see
    :mod:`flatness.progress`); ``batch_fn`` and ``output_fn`` read other batch layouts and model
    outputs (:mod:`flatness.batch`).
    """
    check_model(model)
    xs = grid_axis(*span, points)
    given = direction is not None
    if direction is None:
        direction = random_direction(model, seed=seed, normalization=normalization, ignore=ignore)
    settings = {
        "kind": "1d",
        "seed": seed,
        "normalization": normalization,
        "ignore": ignore,
        "direction": "given" if given else "random",
    }
    coords = xs[:, None]
    values = evaluate_grid(
        model, [direction], coords, train, test, loss_fn=loss_fn, batch_size=batch_size, subset=subset, bn_policy=bn_policy,
        bn_samples=bn_samples, engine=engine, chunk_size=chunk_size, precision=precision,
        progress=progress, batch_fn=batch_fn, output_fn=output_fn,
    )  # fmt: skip
    settings.update(values.pop("_settings"))
    return Surface([xs], values, settings)


def surface_2d(
    model: nn.Module,
    train: DataLike,
    test: DataLike | None = None,
    *,
    directions: Sequence[Mapping[str, torch.Tensor]] | None = None,
    seed: int = 0,
    normalization: str = "filter",
    ignore: str = "biasbn",
    x_span: tuple[float, float] = (-1.0, 1.0),
    y_span: tuple[float, float] = (-1.0, 1.0),
    x_points: int = 51,
    y_points: int = 51,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int = 4096,
    subset: int | None = None,
    bn_policy: str = "frozen",
    bn_samples: int = 1024,
    engine: str = "auto",
    chunk_size: int | None = None,
    precision: str = "fp32",
    progress: bool | str = "auto",
    batch_fn: BatchFn | None = None,
    output_fn: OutputFn | None = None,
) -> Surface:
    """Loss and accuracy over the plane θ + α·δ + β·η (two random filter-normalised directions by
    default, Li et al. 2018). Evaluation settings as :func:`surface_1d`."""
    check_model(model)
    xs, ys = grid_axis(*x_span, x_points, "x range"), grid_axis(*y_span, y_points, "y range")
    given = directions is not None
    if directions is None:
        g = torch.Generator().manual_seed(seed)
        directions = [
            random_direction(model, generator=g, normalization=normalization, ignore=ignore)
            for _ in range(2)
        ]
    if len(directions) != 2:
        raise ValueError(f"surface_2d needs two directions (got {len(directions)})")
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    values = evaluate_grid(
        model, list(directions), coords, train, test, loss_fn=loss_fn, batch_size=batch_size, subset=subset, bn_policy=bn_policy,
        bn_samples=bn_samples, engine=engine, chunk_size=chunk_size, precision=precision,
        progress=progress, batch_fn=batch_fn, output_fn=output_fn,
    )  # fmt: skip
    settings = {
        "kind": "2d",
        "seed": seed,
        "normalization": normalization,
        "ignore": ignore,
        "direction": "given" if given else "random",
        **values.pop("_settings"),
    }
    return Surface([xs, ys], {k: v.reshape(len(xs), len(ys)) for k, v in values.items()}, settings)


def evaluate_grid(
    model: nn.Module,
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: np.ndarray,
    train: DataLike,
    test: DataLike | None = None,
    *,
    loss_fn: LossFn,
    batch_size: int,
    subset: int | None,
    bn_policy: str,
    bn_samples: int,
    engine: str,
    chunk_size: int | None,
    precision: str,
    progress: bool | str,
    batch_fn: BatchFn | None = None,
    output_fn: OutputFn | None = None,
) -> dict[str, Any]:
    """Evaluate θ + Σ_k coords[n, k]·directions[k] for every row n of ``coords`` (the engine of
    :func:`surface_1d` and :func:`surface_2d`, whose signatures hold the defaults).

    Returns ``{"train_loss": (N,), "train_acc": (N,), ["test_loss", "test_acc"], "_settings": {...}}``.
    ``subset`` keeps the first samples of each split; ``bn_policy="recompute"`` re-estimates batch-norm
    running statistics at every point from ``bn_samples`` training samples (Li et al. 2018 keep them
    frozen, our default). ``precision`` runs the forward passes in ``fp32`` (default), ``tf32``
    (CUDA matmuls and convolutions), or under autocast in ``bf16`` or ``fp16`` (CUDA only); losses are
    always accumulated in float64. ``batch_fn`` and ``output_fn`` read other batch layouts and
    model outputs (:mod:`flatness.batch`). The model is left bit-identical.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)} (got {precision!r})")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)} (got {engine!r})")
    if bn_policy not in BN_POLICIES:
        raise ValueError(f"bn_policy must be one of {list(BN_POLICIES)} (got {bn_policy!r})")
    check_model(model)
    check_data(train, "train")
    if test is not None:
        check_data(test, "test")
    coords = np.asarray(coords, dtype=np.float64)
    if not np.isfinite(coords).all():
        raise ValueError("coords: the grid holds NaN or infinity (check span)")
    if coords.ndim != 2 or coords.shape[1] != len(directions):
        raise ValueError(f"coords must have shape (N, {len(directions)}) (got {coords.shape})")
    splits = _splits(train, test, subset, batch_fn, output_fn)
    theta = P.named_params(model)
    chosen = _choose_engine(engine, model, theta, bn_policy)
    bn_data = splits["train"].head(bn_samples) if bn_policy == "recompute" else None
    device = next(iter(theta.values())).device
    args = (model, theta, directions, coords, splits, loss_fn, batch_size)
    with P.restored(model), forward_precision(precision, device):
        if chosen == "loop":
            values = evaluate_points_loop(*args, bn_data=bn_data, progress=progress)
        else:
            values, chunk_size = evaluate_points_vmap(
                *args, chunk_size=chunk_size, progress=progress
            )
    values["_settings"] = {
        "engine": chosen,
        "chunk_size": chunk_size if chosen == "vmap" else 1,
        "bn_policy": bn_policy,
        "bn_samples": len(bn_data) if bn_data is not None else None,
        "subset": subset,
        **{f"n_{k}": len(d) for k, d in splits.items()},
        "mode": "eval",
        "precision": precision,
    }
    return values


@contextlib.contextmanager
def forward_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Numerical precision of the forward passes inside the block (restored afterwards)."""
    if precision == "fp32":
        yield
    elif precision == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on the CPU")
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        # No cast cache: the loop engine rewrites the weights in place between points, and a cached
        # low-precision copy of the old weights would be reused silently.
        with torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False):
            yield


def _choose_engine(engine: str, model: nn.Module, theta: P.Params, bn_policy: str) -> str:
    if engine != "auto":
        if engine == "vmap" and bn_policy == "recompute":
            raise ValueError("engine='vmap' supports bn_policy='frozen' only; use engine='loop'")
        return engine
    on_cuda = next(iter(theta.values())).is_cuda
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "vmap" if on_cuda and not has_conv and bn_policy == "frozen" else "loop"


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    train: DataLike,
    test: DataLike | None = None,
    *,
    ts: Sequence[float] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int = 4096,
    subset: int | None = None,
    bn_policy: str = "frozen",
    bn_samples: int = 1024,
    progress: bool | str = "auto",
    batch_fn: BatchFn | None = None,
    output_fn: OutputFn | None = None,
) -> Surface:
    """Loss and accuracy of (1−t)·θ_a + t·θ_b (Goodfellow et al. 2015; Keskar et al. 2017, Fig. 3).

    The whole state is interpolated, batch-norm running statistics included (``frozen``), or the
    statistics are re-estimated at each point (``recompute``). The default ``ts`` runs from −0.5 to
    1.5 in steps of 0.05, both models included.
    """
    if bn_policy not in BN_POLICIES:
        raise ValueError(f"bn_policy must be one of {list(BN_POLICIES)} (got {bn_policy!r})")
    check_model(model_a, "model_a")
    check_model(model_b, "model_b")
    check_data(train, "train")
    if test is not None:
        check_data(test, "test")
    ts = (
        np.round(np.linspace(-0.5, 1.5, 41), 10) if ts is None else np.asarray(ts, dtype=np.float64)
    )
    if not np.isfinite(ts).all():
        raise ValueError("ts: the points hold NaN or infinity")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("interpolate needs two models of the same architecture")
    work = copy.deepcopy(model_a)  # the inputs are never touched
    splits = _splits(train, test, subset, batch_fn, output_fn)
    bn_data = splits["train"].head(bn_samples)
    values = {f"{s}_{q}": np.empty(len(ts)) for s in splits for q in QUANTITIES}
    for n, t in enumerate(progress_bar(progress, iterable=ts, desc="interpolate", unit="pt")):
        state = {k: _mix(sa[k], sb[k], float(t)) for k in sa}
        work.load_state_dict(state)
        if bn_policy == "recompute":
            recompute_bn_statistics(work, bn_data, batch_size)
        for s, data in splits.items():
            e = evaluate(work, data, loss_fn, batch_size=batch_size)
            values[f"{s}_loss"][n], values[f"{s}_acc"][n] = (
                e.loss,
                math.nan if e.accuracy is None else e.accuracy,
            )
    settings = {
        "kind": "interpolation",
        "bn_policy": bn_policy,
        "subset": subset,
        "mode": "eval",
        **{f"n_{k}": len(d) for k, d in splits.items()},
    }
    return Surface([ts], values, settings)


def _splits(
    train: DataLike,
    test: DataLike | None,
    subset: int | None,
    batch_fn: BatchFn | None = None,
    output_fn: OutputFn | None = None,
) -> dict:
    """The data of each split, cut to the first ``subset`` samples."""
    if subset is not None and not (isinstance(subset, int) and subset >= 1):
        raise ValueError(f"subset must be a positive integer or None (got {subset!r})")
    adapt = {"batch_fn": batch_fn, "output_fn": output_fn}
    splits = {"train": as_data(train, "train", **adapt)}
    if test is not None:
        splits["test"] = as_data(test, "test", **adapt)
    return {k: d.head(subset) for k, d in splits.items()}


def _mix(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    if not a.is_floating_point():  # e.g. num_batches_tracked: not a coordinate of the model
        return a.clone()
    return (1.0 - t) * a + t * b
