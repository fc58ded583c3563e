"""MNIST and Fashion-MNIST from the four original gzipped IDX files, MD5-checked."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# file -> (MD5 of the .gz as torchvision publishes it, MD5 of the uncompressed file).
# Either one is accepted: distribution packages may recompress the files (Debian's
# dataset-fashion-mnist does, so its .gz MD5s differ while the contents are identical).
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ubyte payload, 3-D images / 1-D labels


def read(folder: Path, verify: bool, *, md5: dict[str, tuple[str, str]], fix: str) -> dict:
    """Train (60k) then test (10k) images N×1×28×28 and labels; `verify` checks `md5` and sizes."""
    images, labels = [], []
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        x = _parse(folder / f"{split}-images-idx3-ubyte.gz", 3, md5 if verify else None, fix)
        y = _parse(folder / f"{split}-labels-idx1-ubyte.gz", 1, md5 if verify else None, fix)
        if len(x) != len(y) or (verify and len(x) != n):
            raise ValueError(f"{folder}: {split} has {len(x)} images and {len(y)} labels, "
                             f"expected {n} of each; {fix}")
        images.append(x)
        labels.append(y)
    train_mask = torch.zeros(sum(map(len, labels)), dtype=torch.bool)
    train_mask[:len(labels[0])] = True
    return {"images": torch.from_numpy(np.concatenate(images)[:, None]),
            "labels": torch.from_numpy(np.concatenate(labels).astype(np.int64)),
            "train_mask": train_mask}


def _parse(path: Path, ndim: int, md5: dict | None, fix: str) -> np.ndarray:
    """The uint8 array in one gzipped IDX file, after the checksum when `md5` is given."""
    data = path.read_bytes()
    try:
        raw = zlib.decompress(data, wbits=31)  # gzip; faster than gzip.decompress
    except zlib.error as err:
        raw, error = None, err
    if md5 is not None:
        _check(path, data, raw, md5[path.name], fix)
    if raw is None:
        raise ValueError(f"{path}: not a valid gzip file ({error}); {fix}")
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= header else None
    if magic != _MAGIC[ndim]:
        raise ValueError(f"{path}: bad IDX magic number {magic}, expected {_MAGIC[ndim]}; {fix}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: {len(raw)} bytes do not match IDX dims {dims}; {fix}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _check(path: Path, data: bytes, raw: bytes | None, expected: tuple[str, str], fix: str) -> None:
    """Accept the published .gz MD5 or the MD5 of the uncompressed content; else ValueError."""
    got = hashlib.md5(data).hexdigest()
    if got == expected[0] or (raw is not None and hashlib.md5(raw).hexdigest() == expected[1]):
        return
    raise ValueError(f"{path}: MD5 mismatch: expected {expected[0]} (.gz) or {expected[1]} "
                     f"(uncompressed), got {got}; the file is corrupt or not the official release: "
                     f"delete it and re-download it ({fix})")
