"""`fashion-bottleneck2d`: the 2-D data set of the NMM paper's §8.1, built from Fashion-MNIST.

The paper makes its 2-D space by training a CNN on MNIST *with labels*, with a 2-node bottleneck
before the final 10-node layer, and clustering the 70,000 bottleneck outputs (Fig. 4a). We do the
same on a seeded subset of Fashion-MNIST (train and test splits pooled, like the paper's 70,000):
**the labels are used only to make this 2-D data set**, never by the clustering that follows.

mixlab's choices (the paper gives no details of that CNN): conv 3x3 16 -> max-pool -> conv 3x3 32
-> max-pool -> F64 (ReLU) -> F2 (the bottleneck, *linear*, so the classes spread as rays through
the origin) -> F10; cross-entropy, Adam 2e-3, batch 128, ``epochs`` passes over the ``n`` images;
the features of the same ``n`` images are then centred and divided by their overall standard
deviation (one scale for both axes, so the geometry is kept).

Features are cached in ``$MIXLAB_DATA`` (else the workbook's ``data/``, :mod:`mixlab.utils.paths`) as ``fashion-bottleneck2d/<key>.npz``,
``key`` naming every setting, so building runs once (~30 s of CPU time for 10,000 images; ~82% training accuracy).
Importing mixlab.data registers the data set in :data:`mixlab.data.DATASETS` (the NMM method
imports it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixlab.utils import io, paths

from .datasets import DATASETS, Loader, load
from .idx import FASHION_MNIST_CLASSES

NAME = "fashion-bottleneck2d"
VERSION = 1  # bump when the recipe changes (part of the cache key)
DEFAULTS = {"n": 10000, "seed": 0, "epochs": 8, "batch_size": 128, "lr": 2e-3}


class BottleneckCNN(nn.Module):
    """Supervised CNN with a 2-unit linear bottleneck before the 10-way classifier (§8.1)."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
            nn.Linear(64, 2))
        self.classifier = nn.Linear(2, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return z, self.classifier(z)


def _to_input(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - 0.5) / 0.5


def build_features(n: int = DEFAULTS["n"], seed: int = DEFAULTS["seed"], epochs: int = DEFAULTS["epochs"],
                   batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
                   source: str = "fashion-mnist") -> dict:
    """Train the bottleneck CNN on ``n`` labelled images of ``source`` and return their 2-D features:
    ``{"images": float32 [n, 2], "labels": int64 [n], "train_acc": float}``. Seeded; leaves the global
    torch RNG untouched."""
    data = load(source, subset=n, seed=seed)
    x, y = _to_input(data.images), data.labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        net = BottleneckCNN(len(data.classes))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x) - batch_size + 1, batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(net(x[idx])[1], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            z, logits = zip(*(net(x[i:i + 1024]) for i in range(0, len(x), 1024)))
            z, logits = torch.cat(z), torch.cat(logits)
    acc = float((logits.argmax(1) == y).float().mean())
    z = z - z.mean(0)
    z = z / z.std()
    return {"images": z.float().contiguous(), "labels": y.clone(), "train_acc": acc}


def cache_file(settings: dict | None = None, root: str | os.PathLike | None = None) -> Path:
    s = {**DEFAULTS, **(settings or {})}
    base = Path(root) if root is not None else Path(os.environ["MIXLAB_DATA"]) if os.environ.get("MIXLAB_DATA") \
        else paths.resolve("data")
    key = f"v{VERSION}-n{s['n']}-seed{s['seed']}-ep{s['epochs']}-bs{s['batch_size']}-lr{s['lr']:g}"
    return base.absolute() / NAME / f"{key}.npz"


def read(settings: dict | None = None, root: str | os.PathLike | None = None) -> dict:
    """The Dataset fields of `fashion-bottleneck2d` (built and cached on first use)."""
    s = {**DEFAULTS, **(settings or {})}
    path = cache_file(s, root)
    if not path.is_file():
        feats = build_features(**s)
        meta = {"settings": s, "version": VERSION, "train_acc": feats["train_acc"],
                "note": "2-D bottleneck of a supervised CNN on Fashion-MNIST; labels used only to build it"}
        io.atomic(path, lambda fh: np.savez_compressed(
            fh, points=feats["images"].numpy(), labels=feats["labels"].numpy(), meta=json.dumps(meta)))
    with np.load(path) as f:
        return {"images": torch.from_numpy(f["points"].astype(np.float32)),
                "labels": torch.from_numpy(f["labels"].astype(np.int64))}


def info(settings: dict | None = None, root: str | os.PathLike | None = None) -> dict:
    """Metadata of the cached features (settings, the CNN's training accuracy)."""
    path = cache_file(settings, root)
    if not path.is_file():
        read(settings, root)
    with np.load(path) as f:
        return json.loads(str(f["meta"]))


def register() -> None:
    """Add `fashion-bottleneck2d` to the dataset registry (idempotent)."""
    if NAME not in DATASETS:
        DATASETS[NAME] = Loader(NAME, FASHION_MNIST_CLASSES, read)


register()
