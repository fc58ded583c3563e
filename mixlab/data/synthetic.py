"""The instant datasets: scikit-learn's bundled 8×8 digits, a seeded 2-D Gaussian mixture, and
random CIFAR-sized images for timing the `paper` configuration where CIFAR is not on disk."""
from __future__ import annotations

import math

import numpy as np
import torch


def digits() -> dict:
    """sklearn's 1,797 digits, 1×8×8, intensities 0..16 scaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]
    return {"images": torch.from_numpy(images), "labels": torch.from_numpy(d.target.astype(np.int64))}


def blobs2d(n: int = 3000, k: int = 10, *, std: float = 1.0, radius: float = 10.0,
            seed: int = 0) -> dict:
    """A 2-D mixture of `k` equal-weight isotropic Gaussians (std `std`) centred on a circle.

    2-D point sets carry features, not images: `images` is float32 N×2, and `centers` (k×2)
    holds the true component means; labels are balanced (n // k or n // k + 1 per component).
    """
    angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    centers = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    points = centers[labels] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return {"images": points.float(), "labels": labels, "centers": centers.float()}


def noise_cifar(n: int = 50000, seed: int = 0) -> dict:
    """``n`` uniform-noise uint8 images of CIFAR's shape (3×32×32) with random labels: no content,
    only the tensor sizes of CIFAR-10's training set, for throughput benchmarks (never for results)."""
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            "labels": torch.randint(0, 10, (n,), generator=g)}
