"""Datasets as tensors on the device: MNIST-1D (generated offline), a tiny synthetic set, and the
torchvision image sets (MNIST, Fashion-MNIST, CIFAR-10/100) through their real loaders.

In-memory tensors instead of a DataLoader: the training loop slices a seeded permutation, which is
both faster for these sizes (DESIGN.md, performance notes) and exactly reproducible.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.errors import ConfigError
from experiments.store import digest
from flatness.io import atomic_write_bytes, npz_bytes

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Train and test tensors with what the model builder needs to know."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    x_val: torch.Tensor | None = None  # held out from the training set (dataset.val_split)
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    def to(self, device: torch.device | str) -> Dataset:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
            move(self.x_val),
            move(self.y_val),
        )


def build_dataset(cfg: Any, data_dir: str | os.PathLike) -> Dataset:
    """Build the dataset that ``cfg`` (the ``dataset`` config group) names, on the CPU."""
    builders = {
        "mnist1d": _mnist1d,
        "synthetic": _synthetic,
        "mnist": _torchvision,
        "fashion_mnist": _torchvision,
        "cifar10": _torchvision,
        "cifar100": _torchvision,
    }
    name = cfg.name
    if name not in builders:
        raise ConfigError(
            f"dataset.name: unknown dataset {name!r}; choose one of {sorted(builders)}"
        )
    data = builders[name](cfg, Path(data_dir))
    return _validation_split(
        _subset(data, cfg.get("num_train"), cfg.get("num_test")), cfg.get("val_split", 0.0)
    )


def _validation_split(data: Dataset, fraction: float) -> Dataset:
    """Hold out the last ``fraction`` of the training set for choosing hyperparameters, so that the
    test set is never used for that (Wilson et al. 2017 insist on it)."""
    if not fraction:
        return data
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(f"dataset.val_split: must be a number in [0, 1) (got {fraction!r})")
    n_val = int(round(data.num_train * fraction))
    if not 1 <= n_val < data.num_train:
        raise ConfigError(
            f"dataset.val_split: {fraction} of {data.num_train} samples leaves no train or no validation set"
        )
    keep = data.num_train - n_val
    return Dataset(
        data.name,
        data.x_train[:keep],
        data.y_train[:keep],
        data.x_test,
        data.y_test,
        data.num_classes,
        data.x_train[keep:],
        data.y_train[keep:],
    )


# --- MNIST-1D ------------------------------------------------------------------------------------


MNIST1D_FEATURES = 40  # mnist1d's get_dataset_args().final_seq_length, checked when generating


def _mnist1d(cfg: Any, data_dir: Path) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated offline and cached as ``.npz`` under ``data_dir``.

    ``mnist1d.data.get_dataset`` would download the canonical pickle; we always regenerate from the
    package's generator, which with the default arguments reproduces it. The package is imported
    only to generate (its imports, scipy's interpolation among them, take about a second of every
    run otherwise).
    """
    key = {"num_samples": int(cfg.num_samples), "seed": int(cfg.seed),
           "train_split": float(cfg.train_split)}  # fmt: skip
    path = data_dir / "mnist1d" / f"mnist1d-{digest(key, 10)}.npz"
    n_train = int(key["num_samples"] // 10 * 10 * key["train_split"])
    arrays = _load_cache(path, expected_train=n_train, features=MNIST1D_FEATURES)
    if arrays is None:
        import mnist1d.data

        args = mnist1d.data.get_dataset_args()
        args.num_samples, args.seed, args.train_split = (key[k] for k in key)
        if args.final_seq_length != MNIST1D_FEATURES:
            raise ConfigError(
                f"dataset: this mnist1d package makes {args.final_seq_length} features per sample, "
                f"not the {MNIST1D_FEATURES} the suite was written for"
            )
        log.info("generating MNIST-1D (%d samples) into %s", args.num_samples, path)
        state = np.random.get_state()  # mnist1d seeds numpy's global generator; leave it as found
        try:
            raw = mnist1d.data.make_dataset(args)
        finally:
            np.random.set_state(state)
        arrays = {
            "x": raw["x"].astype(np.float32),
            "y": raw["y"].astype(np.int64),
            "x_test": raw["x_test"].astype(np.float32),
            "y_test": raw["y_test"].astype(np.int64),
        }
        atomic_write_bytes(path, npz_bytes(arrays))
    return Dataset(
        "mnist1d",
        torch.from_numpy(arrays["x"]),
        torch.from_numpy(arrays["y"]),
        torch.from_numpy(arrays["x_test"]),
        torch.from_numpy(arrays["y_test"]),
        num_classes=10,
    )


def _load_cache(path: Path, *, expected_train: int, features: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or does not look like what we wrote."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except Exception as exc:  # a truncated or foreign file: regenerate rather than crash
        log.warning("dataset cache %s is unreadable (%s); regenerating", path, exc)
        return None
    ok = (
        arrays["x"].shape == (expected_train, features)
        and arrays["y"].shape == (expected_train,)
        and arrays["x_test"].shape[1:] == (features,)
        and len(arrays["x_test"]) == len(arrays["y_test"])
        and np.isfinite(arrays["x"]).all()
    )
    if not ok:
        log.warning("dataset cache %s has unexpected shapes; regenerating", path)
        return None
    return arrays


# --- synthetic -----------------------------------------------------------------------------------


def _synthetic(cfg: Any, data_dir: Path) -> Dataset:
    """A seeded Gaussian-mixture classification problem, tiny and learnable, for tests.

    Each class has a random mean in input space; samples are the mean plus isotropic noise, so a
    linear model can do well and an MLP can fit the training set.
    """
    g = torch.Generator().manual_seed(int(cfg.seed))
    shape = tuple(int(s) for s in cfg.input_shape)
    k = int(cfg.num_classes)
    means = torch.randn(k, *shape, generator=g) * float(cfg.separation)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, k, (n,), generator=g)
        x = means[y] + torch.randn(n, *shape, generator=g)
        return x, y

    x_train, y_train = draw(int(cfg.num_samples_train))
    x_test, y_test = draw(int(cfg.num_samples_test))
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes=k)


# --- torchvision image sets ----------------------------------------------------------------------

_TORCHVISION = {
    # name: (torchvision class name, folder torchvision looks for under root, classes)
    "mnist": ("MNIST", "MNIST/raw", 10),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", 10),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 10),
    "cifar100": ("CIFAR100", "cifar-100-python", 100),
}


def _torchvision(cfg: Any, data_dir: Path) -> Dataset:
    """Load a torchvision dataset with its own code, then keep it as normalised float tensors.

    Images become ``(N, C, H, W)`` in [0, 1], standardised per channel with the training set's mean
    and standard deviation.
    """
    import torchvision.datasets as tvd

    class_name, folder, num_classes = _TORCHVISION[cfg.name]
    root = data_dir / cfg.name
    cls = getattr(tvd, class_name)
    download = bool(cfg.get("download", False))
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except RuntimeError as exc:
        raise ConfigError(
            f"dataset={cfg.name}: files not found under {root / folder} ({exc}). "
            f"Put the {class_name} files there, or set dataset.download=true when online."
        ) from None
    x_train, y_train = _images_to_tensors(train)
    x_test, y_test = _images_to_tensors(test)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return Dataset(
        cfg.name,
        (x_train - mean) / std,
        y_train,
        (x_test - mean) / std,
        y_test,
        num_classes=num_classes,
    )


def _images_to_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, H, W)`` float images in [0, 1] and int64 labels from a torchvision dataset object."""
    data = ds.data
    data = torch.as_tensor(np.asarray(data)) if not torch.is_tensor(data) else data
    x = data.float() / 255.0
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # MNIST: NHW; CIFAR: NHWC
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return x.contiguous(), y


def _subset(data: Dataset, num_train: int | None, num_test: int | None) -> Dataset:
    """The first ``num_train`` / ``num_test`` samples (None keeps all), for quick runs."""
    for key, n, total in (
        ("num_train", num_train, data.num_train),
        ("num_test", num_test, len(data.x_test)),
    ):
        if n is not None and not (isinstance(n, int) and 0 < n <= total):
            raise ConfigError(
                f"dataset.{key}: must be an integer in [1, {total}] or null (got {n!r})"
            )
    return Dataset(
        data.name,
        data.x_train[:num_train],
        data.y_train[:num_train],
        data.x_test[:num_test],
        data.y_test[:num_test],
        data.num_classes,
    )
