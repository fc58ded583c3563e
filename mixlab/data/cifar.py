"""CIFAR-10 and CIFAR-100 (20 superclasses) from the python-pickle batches of the official tarballs."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

CIFAR10_FILES = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)) + (
    "cifar-10-batches-py/test_batch",)
CIFAR100_FILES = ("cifar-100-python/train", "cifar-100-python/test")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# the `coarse_label_names` of cifar-100-python/meta, in label order
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")
_FIX = "re-extract the official python tarball (torchvision.datasets.{}(root, download=True))"


def read_cifar10(folder: Path, verify: bool) -> dict:
    """The 5 train batches then the test batch (60k); `verify` also checks 10,000 rows per batch."""
    parts = [_batch(folder / f, _unpickle(folder / f), "labels", 10,
                    10_000 if verify else None, "CIFAR10") for f in CIFAR10_FILES]
    return _join(parts, train=5)


def read_cifar100_20(folder: Path, verify: bool) -> dict:
    """Train (50k) then test (10k), labelled by the files' `coarse_labels` (20 superclasses)."""
    dicts = {folder / f: _unpickle(folder / f) for f in CIFAR100_FILES}
    parts = [_batch(path, d, "coarse_labels", 20, n if verify else None, "CIFAR100")
             for (path, d), n in zip(dicts.items(), (50_000, 10_000))]
    fine = np.concatenate([_batch(path, d, "fine_labels", 100, None, "CIFAR100")[1]
                           for path, d in dicts.items()])
    coarse = np.concatenate([y for _, y in parts])
    pairs = np.unique(np.stack([fine, coarse]), axis=1)
    if len(np.unique(pairs[0])) != pairs.shape[1]:
        raise ValueError(f"{folder / 'cifar-100-python'}: a fine label maps to several coarse "
                         f"labels; {_FIX.format('CIFAR100')}")
    return _join(parts, train=1)


def _batch(path: Path, d: dict, key: str, k: int, n: int | None,
           tv: str) -> tuple[np.ndarray, np.ndarray]:
    """Images N×3×32×32 (rows are 1024 R, then G, then B values, row-major) and `d[key]` labels."""
    fix = _FIX.format(tv)
    if "data" not in d or key not in d:
        raise ValueError(f"{path}: missing the '{'data' if 'data' not in d else key}' entry; {fix}")
    x, y = np.asarray(d["data"]), np.asarray(d[key], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise ValueError(f"{path}: data is {x.dtype} {x.shape} with {len(y)} labels, "
                         f"expected uint8 N×3072 with N labels; {fix}")
    if n is not None and len(x) != n:
        raise ValueError(f"{path}: {len(x)} images, expected {n}; {fix}")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{path}: labels outside 0..{k - 1}; {fix}")
    return x.reshape(-1, 3, 32, 32), y


def _unpickle(path: Path) -> dict:
    """One batch dict with str keys (the official files are Python 2 pickles with byte keys)."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _join(parts: list[tuple[np.ndarray, np.ndarray]], train: int) -> dict:
    """Concatenate batches; the first `train` of them form the official train split."""
    train_mask = torch.zeros(sum(len(y) for _, y in parts), dtype=torch.bool)
    train_mask[:sum(len(y) for _, y in parts[:train])] = True
    return {"images": torch.from_numpy(np.concatenate([x for x, _ in parts])),
            "labels": torch.from_numpy(np.concatenate([y for _, y in parts])),
            "train_mask": train_mask}
