"""Tiny dataset files in each dataset's true on-disk format, with the arrays a loader should return."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from mixlab.data.imagenet_dog import WNIDS


def _expected(images: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """Train then test, as the loaders concatenate them."""
    return {"images": np.concatenate(images), "labels": np.concatenate(labels).astype(np.int64),
            "train_mask": np.repeat([True, False], [len(labels[0]), len(labels[1])])}


def write_idx(folder: Path, n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict:
    """The 4 gzipped IDX files (magic 2051 for images, 2049 for labels, big-endian dims)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + x.tobytes()))
        header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + y.tobytes()))
        images.append(x[:, None])
        labels.append(y)
    return _expected(images, labels)


def _pickle(path: Path, entries: dict) -> None:
    """A batch like the official Python 2 pickles: byte-string keys, list labels."""
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in entries.items()}, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 3, seed: int = 0) -> dict:
    """cifar-10-batches-py/data_batch_1..5 and test_batch; rows are R (1024), G, B, row-major."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch)
        _pickle(folder / name, {"batch_label": name.encode(), "labels": y.tolist(),
                                "data": x.reshape(per_batch, 3072),
                                "filenames": [f"{i}.png".encode() for i in range(per_batch)]})
        images.append(x)
        labels.append(y)
    return _expected([np.concatenate(images[:5]), images[5]], [np.concatenate(labels[:5]), labels[5]])


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    """cifar-100-python/train and test with fine_labels and (consistent) coarse_labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        _pickle(folder / name, {"fine_labels": fine.tolist(), "coarse_labels": (fine % 20).tolist(),
                                "data": x.reshape(n, 3072)})
        images.append(x)
        labels.append(fine % 20)
    return _expected(images, labels)


def write_stl10(root: Path, n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict:
    """stl10_binary/{train,test}_{X,y}.bin: channel by channel, each column-major; labels 1..10."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # (image, channel, row, column)
        y = rng.integers(0, 10, n)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        images.append(x)
        labels.append(y)
    return _expected(images, labels)


def write_imagenet_dog(root: Path, per_class: int = 2, size: tuple[int, int] = (40, 30),
                       seed: int = 0) -> dict:
    """train/<wnid>/*.JPEG, each a flat RGB colour (JPEG keeps flat colours within a few levels)."""
    rng = np.random.default_rng(seed)
    colors, labels = [], []
    for label, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            color = rng.integers(20, 236, 3)
            Image.new("RGB", size, tuple(int(c) for c in color)).save(folder / f"{wnid}_{i}.JPEG")
            colors.append(color)
            labels.append(label)
    return {"colors": np.array(colors), "labels": np.array(labels)}


def gray_folder(root: Path, n: int = 20, seed: int = 0) -> Path:
    """``n`` grayscale noise PNGs ``g000.png``, ... directly in ``root``, of mixed sizes (24 x 20-59 px)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20 + i % 40, 24), dtype=np.uint8), "L").save(root / f"g{i:03d}.png")
    return root
