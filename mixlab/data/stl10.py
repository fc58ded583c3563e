"""STL-10 labelled images (train 5k + test 8k) from the official binary files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FILES = tuple(f"stl10_binary/{s}_{xy}.bin" for s in ("train", "test") for xy in ("X", "y"))
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_FIX = "re-extract stl10_binary.tar.gz (torchvision.datasets.STL10(root, download=True))"
_IMAGE = 3 * 96 * 96


def read(folder: Path, verify: bool) -> dict:
    """Train then test images N×3×96×96 and labels 0..9; `verify` also checks 5,000 + 8,000."""
    images, labels = [], []
    for split, n in (("train", 5_000), ("test", 8_000)):
        x, y = _split(folder / "stl10_binary", split, n if verify else None)
        images.append(x)
        labels.append(y)
    train_mask = torch.zeros(len(labels[0]) + len(labels[1]), dtype=torch.bool)
    train_mask[:len(labels[0])] = True
    return {"images": torch.from_numpy(np.concatenate(images)),
            "labels": torch.from_numpy(np.concatenate(labels)),
            "train_mask": train_mask}


def _split(folder: Path, split: str, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One split; each image is stored channel by channel, each channel column-major."""
    xpath, ypath = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    x = np.fromfile(xpath, dtype=np.uint8)
    y = np.fromfile(ypath, dtype=np.uint8).astype(np.int64) - 1
    if x.size % _IMAGE or x.size // _IMAGE != len(y) or (n is not None and len(y) != n):
        raise ValueError(f"{xpath}: {x.size} bytes for {len(y)} labels in {ypath.name}, expected "
                         f"{_IMAGE} bytes per label{f' and {n} labels' if n else ''}; {_FIX}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{ypath}: labels outside 1..10; {_FIX}")
    return x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2), y
