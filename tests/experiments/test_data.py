"""Datasets: MNIST-1D generation and caching, the synthetic set, and torchvision's real loaders on
small files fabricated in torchvision's on-disk formats (IDX for MNIST, pickled batches for CIFAR)."""

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.data import build_dataset
from experiments.errors import ConfigError


def ds_cfg(**kw):
    return OmegaConf.create(kw)


def test_mnist1d_has_the_published_shapes_and_is_cached(tmp_path, monkeypatch):
    cfg = ds_cfg(
        name="mnist1d", num_samples=5000, train_split=0.8, seed=42, num_train=None, num_test=None
    )
    data = build_dataset(cfg, tmp_path)
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.num_classes == 10 and set(data.y_train.tolist()) == set(range(10))
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64

    import mnist1d.data

    def fail(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    again = build_dataset(cfg, tmp_path)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)


def test_a_corrupted_mnist1d_cache_is_regenerated(tmp_path):
    cfg = ds_cfg(
        name="mnist1d", num_samples=500, train_split=0.8, seed=1, num_train=None, num_test=None
    )
    data = build_dataset(cfg, tmp_path)
    (cache,) = (tmp_path / "mnist1d").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    regenerated = build_dataset(cfg, tmp_path)
    assert torch.equal(regenerated.x_train, data.x_train)


def test_synthetic_is_seeded_and_subsets_work(tmp_path):
    cfg = ds_cfg(
        name="synthetic",
        seed=3,
        input_shape=[5],
        num_classes=3,
        separation=2.0,
        num_samples_train=64,
        num_samples_test=32,
        num_train=10,
        num_test=None,
    )
    a, b = build_dataset(cfg, tmp_path), build_dataset(cfg, tmp_path)
    assert (
        torch.equal(a.x_train, b.x_train)
        and a.x_train.shape == (10, 5)
        and a.x_test.shape == (32, 5)
    )
    with pytest.raises(ConfigError, match=r"dataset.num_train"):
        build_dataset(ds_cfg(**{**cfg, "num_train": 1000}), tmp_path)


# --- torchvision formats ---------------------------------------------------------------------------


def write_idx(path, array):
    """IDX file as torchvision reads it: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fabricate_mnist(raw, n_train=30, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = rng.integers(0, 10, size=n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        files[prefix] = (images, labels)
    return files


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_mnist_formats_load_and_normalise(tmp_path, name, folder):
    files = fabricate_mnist(tmp_path / name / folder / "raw")
    data = build_dataset(ds_cfg(name=name, download=False, num_train=None, num_test=None), tmp_path)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(data.y_train, torch.as_tensor(files["train"][1]))
    # standardised with the training set's statistics, pixel order preserved
    raw = torch.as_tensor(files["train"][0], dtype=torch.float32) / 255
    expected = (raw - raw.mean()) / raw.std()
    assert torch.allclose(data.x_train[:, 0], expected, atol=1e-5)


def fabricate_cifar(folder, train_files, test_file, label_key, classes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for fname in (*train_files, test_file):
        data = rng.integers(0, 256, size=(4, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, classes, size=4).tolist()
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
        batches[fname] = (data, labels)
    return batches


@pytest.mark.parametrize(
    "name, folder, train_files, test_file, meta, label_key, classes",
    [
        (
            "cifar10",
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            ("batches.meta", "label_names"),
            "labels",
            10,
        ),
        (
            "cifar100",
            "cifar-100-python",
            ["train"],
            "test",
            ("meta", "fine_label_names"),
            "fine_labels",
            100,
        ),
    ],
)
def test_torchvision_cifar_formats_load_in_nchw(
    tmp_path, monkeypatch, name, folder, train_files, test_file, meta, label_key, classes
):
    import torchvision.datasets.cifar as tv_cifar

    # Fabricated files cannot match torchvision's MD5 sums of the real archives; check presence only.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    root = tmp_path / name / folder
    batches = fabricate_cifar(root, train_files, test_file, label_key, classes)
    with open(root / meta[0], "wb") as f:
        pickle.dump({meta[1]: [str(i) for i in range(classes)]}, f)
    data = build_dataset(ds_cfg(name=name, download=False, num_train=None, num_test=None), tmp_path)
    assert data.x_train.shape == (4 * len(train_files), 3, 32, 32) and data.num_classes == classes
    first, labels = batches[train_files[0]]
    raw = torch.as_tensor(first[0].reshape(3, 32, 32), dtype=torch.float32) / 255
    x = data.x_train[0]  # undo the per-channel standardisation to compare with the raw pixels
    all_raw = (
        torch.as_tensor(np.vstack([batches[f][0] for f in train_files]).reshape(-1, 3, 32, 32))
        / 255
    )
    mean, std = all_raw.mean(dim=(0, 2, 3)), all_raw.std(dim=(0, 2, 3))
    assert torch.allclose(x * std[:, None, None] + mean[:, None, None], raw, atol=1e-5)
    assert data.y_train[: len(labels)].tolist() == labels


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_torchvision_files_say_where_to_put_them(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        build_dataset(ds_cfg(name=name, download=False, num_train=None, num_test=None), tmp_path)
    message = str(err.value)
    assert str(tmp_path / name) in message and "dataset.download=true" in message
    assert "\n" not in message


def test_validation_split_is_carved_from_the_training_set(tmp_path):
    base = dict(
        name="synthetic",
        seed=3,
        input_shape=[5],
        num_classes=3,
        separation=2.0,
        num_samples_train=100,
        num_samples_test=32,
        num_train=None,
        num_test=None,
    )
    full = build_dataset(ds_cfg(**base), tmp_path)
    split = build_dataset(ds_cfg(**base, val_split=0.2), tmp_path)
    assert split.num_train == 80 and len(split.x_val) == 20
    assert torch.equal(split.x_val, full.x_train[80:]) and torch.equal(split.x_test, full.x_test)
    with pytest.raises(ConfigError, match="dataset.val_split"):
        build_dataset(ds_cfg(**base, val_split=1.0), tmp_path)
