"""Example image folders for trying ``folder:PATH`` without one of your own.

- :func:`write_shapes`: drawn shapes (disc, square, triangle, cross) on noisy backgrounds, in
  mixed sizes (20-48 px), half grayscale PNG and half RGB JPEG, in ImageFolder layout (one
  subfolder per shape, nested one level deeper for some files) or flat. Seconds to write; the
  ``smoke`` profile and the tests use it.
- :func:`write_fashion_mnist`: a seeded subset of Fashion-MNIST written as PNG files, one
  subfolder per class: real images with labels to check the clusters against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross")


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == "disc":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        w = (x1 - x0) / 4
        draw.rectangle((x0, (y0 + y1) / 2 - w / 2, x1, (y0 + y1) / 2 + w / 2), fill=fill)
        draw.rectangle(((x0 + x1) / 2 - w / 2, y0, (x0 + x1) / 2 + w / 2, y1), fill=fill)


def shape_image(kind: str, rng: np.random.Generator, rgb: bool) -> Image.Image:
    """One image of ``kind`` with a random side, position, size and colour."""
    side = int(rng.integers(20, 49))
    background = rng.integers(0, 80, (side, side, 3 if rgb else 1), dtype=np.uint8)
    im = Image.fromarray(background if rgb else background[..., 0], "RGB" if rgb else "L")
    r = side * rng.uniform(0.25, 0.45)
    cx, cy = side / 2 + rng.uniform(-0.1, 0.1, 2) * side
    fill = tuple(int(v) for v in rng.integers(150, 256, 3)) if rgb else int(rng.integers(150, 256))
    _shape(ImageDraw.Draw(im), kind, (cx - r, cy - r, cx + r, cy + r), fill)
    return im


def write_shapes(root: str | Path, n_per_class: int = 20, *, layout: str = "classes", seed: int = 0) -> list[Path]:
    """Write ``len(SHAPES) * n_per_class`` images under ``root``; returns their paths.

    ``layout="classes"``: ``root/<shape>/`` (every third file one level deeper, ``root/<shape>/more/``);
    ``"flat"``: all files directly in ``root``. Even-numbered files are grayscale PNG, odd ones RGB JPEG.
    """
    if layout not in ("classes", "flat"):
        raise ValueError(f"layout={layout!r} must be 'classes' or 'flat'")
    rng = np.random.default_rng(seed)
    root = Path(root)
    paths = []
    for kind in SHAPES:
        for i in range(n_per_class):
            rgb = i % 2 == 1
            folder = root if layout == "flat" else root / kind / ("more" if i % 3 == 2 else "")
            path = folder / f"{kind}_{i:03d}.{'jpg' if rgb else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            shape_image(kind, rng, rgb).save(path, **({"quality": 90} if rgb else {}))
            paths.append(path)
    return paths


def write_fashion_mnist(root: str | Path, n: int = 2000, *, seed: int = 0) -> list[Path]:
    """Write ``n`` Fashion-MNIST images (a seeded subset) as ``root/<class>/<index>.png``."""
    from mixlab.data import load

    data = load("fashion-mnist", subset=n, seed=seed)
    root = Path(root)
    paths = []
    for image, label, index in zip(data.images.numpy(), data.labels.tolist(), data.index.tolist()):
        path = root / data.classes[label].replace("/", "-") / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0], "L").save(path)
        paths.append(path)
    return paths
