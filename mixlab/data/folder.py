"""A folder of your own images as a dataset: ``load("folder:PATH")``.

PATH is searched recursively for the files Pillow can read (PNG, JPEG, BMP, GIF, WebP, TIFF, ...,
by extension: ``PIL.Image.registered_extensions()``); hidden files and folders are left out, other
files are ignored with a warning that counts them. Layout decides the labels:

- **ImageFolder layout** (torchvision's): no image directly in PATH and at least two immediate
  subfolders holding images; each subfolder (searched recursively) is a class, named after it.
  The labels serve evaluation only.
- anything else (a flat folder, a single subfolder, images mixed with subfolders): unlabeled.

Every image is decoded once with Pillow (first frame; EXIF orientation applied), converted to
``channels`` (1 = luma ``L``, 3 = ``RGB``; automatic: 1 if every image is grayscale, else 3) and
resized to ``size``×``size`` (bicubic, aspect ratio not kept: what the methods see is a square),
then stored as one uint8 N×C×H×W tensor file. The cache key is the list of files with their byte
sizes and modification times plus the preprocessing, so a second run starts at once and a changed,
added or removed file invalidates it. Cache files go to ``$MIXLAB_CACHE`` if set, else
``data/cache/folders/`` of the workbook root (git-ignored), written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from mixlab.utils import paths

PREFIX = "folder:"
DEFAULT_SIZE = 32  # for profiles that keep the dataset's own size (image_size=None): CIFAR's side
CACHE_VERSION = 1


@dataclass(frozen=True)
class Listing:
    """The image files under ``root`` (relative POSIX paths, sorted), their labels (None when the
    folder is not in ImageFolder layout), the class names and how many other files were ignored."""

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]
    ignored: int


def image_suffixes() -> set[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def folder_path(name: str) -> Path:
    """``folder:PATH`` -> PATH; FileNotFoundError / NotADirectoryError (one line) when it is not a folder."""
    path = Path(os.path.expanduser(name[len(PREFIX):]))
    if not name[len(PREFIX):]:
        raise ValueError("dataset 'folder:' needs a path, e.g. --dataset folder:~/Pictures/cats")
    if not path.exists():
        raise FileNotFoundError(f"dataset {name}: {path} does not exist; check the path after 'folder:'")
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {name}: {path} is a file, not a folder of images")
    return path.absolute()


def scan(root: Path) -> Listing:
    """List the images under ``root`` and decide labelled (ImageFolder) vs unlabeled."""
    suffixes = image_suffixes()
    images, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.startswith("."):
                continue
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if Path(f).suffix.lower() in suffixes:
                images.append(rel)
            else:
                ignored += 1
    images.sort()
    if not images:
        raise ValueError(f"dataset folder:{root} holds no image files (looked for "
                         f"{', '.join(sorted(s for s in suffixes if s in _COMMON))}, ... in all subfolders)")
    tops = [p.split("/", 1)[0] if "/" in p else None for p in images]
    classes = sorted({t for t in tops if t is not None})
    if None in tops or len(classes) < 2:
        return Listing(root, tuple(images), None, (), ignored)
    index = {c: i for i, c in enumerate(classes)}
    return Listing(root, tuple(images), tuple(index[t] for t in tops), tuple(classes), ignored)


_COMMON = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def open_image(path: Path) -> Image.Image:
    """The fully decoded first frame, EXIF orientation applied; ValueError naming the file when
    Pillow cannot read it (not an image, truncated)."""
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            return ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a readable image ({why}); remove it or pass --set skip_unreadable=true") \
            from None


def is_gray(im: Image.Image) -> bool:
    """True for single-band images (L, 1, I, F, I;16, P with a gray palette) and RGB(A) with R=G=B."""
    if im.mode in ("L", "LA", "1", "I", "F") or im.mode.startswith("I;"):
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def to_array(im: Image.Image, size: int, channels: int) -> np.ndarray:
    """``channels``×``size``×``size`` uint8 (alpha composited on white, then L or RGB, bicubic)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BICUBIC)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def cache_dir() -> Path:
    """``$MIXLAB_CACHE`` or ``data/cache/folders`` of the workbook root (:mod:`mixlab.utils.paths`)."""
    env = os.environ.get("MIXLAB_CACHE")
    return Path(env) if env else paths.resolve("data") / "cache" / "folders"


def cache_key(listing: Listing, size: int, channels: int | None, skip_unreadable: bool) -> str:
    """sha256 of (root, every file's relative path, byte size and mtime, the preprocessing)."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, str(listing.root), size, channels, skip_unreadable]).encode())
    for rel in listing.paths:
        st = (listing.root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


NAMED = 5  # unreadable files named in a message; the rest are counted


def name_some(files: list[str], n: int = NAMED) -> str:
    """``'a.png, b.jpg'``, or the first ``n`` and ``'and 7 more'``."""
    more = f" and {len(files) - n} more" if len(files) > n else ""
    return ", ".join(files[:n]) + more


def decode_all(listing: Listing, size: int, channels: int | None, skip_unreadable: bool) -> dict:
    """Decode every image of ``listing``; returns images, labels, paths, channels, skipped. Without
    ``skip_unreadable`` every unreadable file is found before the ValueError that names them."""
    decoded, keep, bad, why = [], [], [], ""
    for i, rel in enumerate(listing.paths):
        try:
            decoded.append(open_image(listing.root / rel))
            keep.append(i)
        except ValueError as exc:
            bad.append(rel)
            why = why or str(exc)
    if bad and not skip_unreadable:
        if len(bad) == 1:
            raise ValueError(why)
        raise ValueError(f"dataset folder:{listing.root}: {len(bad)} unreadable image files: {name_some(bad)};"
                         " remove them or pass --set skip_unreadable=true")
    if not decoded:
        raise ValueError(f"dataset folder:{listing.root}: none of its {len(listing.paths)} image files is readable")
    if channels is None:
        channels = 1 if all(is_gray(im) for im in decoded) else 3
    images = torch.from_numpy(np.stack([to_array(im, size, channels) for im in decoded]))
    labels = None if listing.labels is None else torch.tensor([listing.labels[i] for i in keep], dtype=torch.int64)
    return {"images": images.contiguous(), "labels": labels, "paths": [listing.paths[i] for i in keep],
            "classes": list(listing.classes), "channels": channels, "skipped": bad}


def read(name: str, *, size: int = DEFAULT_SIZE, channels: int | None = None,
         skip_unreadable: bool = False) -> dict:
    """Images of ``folder:PATH`` at ``size`` and ``channels`` (None = automatic), from the cache when
    the files are unchanged. Returns the fields of :class:`mixlab.data.Dataset` plus ``paths``."""
    from mixlab.utils import io

    if channels not in (None, 1, 3):
        raise ValueError(f"train.channels={channels!r} is not valid; use 1 (grayscale), 3 (RGB) or null (automatic)")
    root = folder_path(name)
    listing = scan(root)
    if listing.ignored:
        warnings.warn(f"{name}: ignored {listing.ignored} file(s) that are not images by their extension",
                      stacklevel=2)
    path = cache_dir() / f"{cache_key(listing, size, channels, skip_unreadable)}.pt"
    if path.is_file():
        parts = torch.load(path, weights_only=True)
    else:
        parts = decode_all(listing, size, channels, skip_unreadable)
        io.torch_save(path, parts)
    if parts["skipped"]:
        warnings.warn(f"{name}: skipped {len(parts['skipped'])} unreadable image file(s): "
                      f"{name_some(parts['skipped'])}", stacklevel=2)
    return {"images": parts["images"], "labels": parts["labels"], "paths": tuple(parts["paths"]),
            "classes": parts["classes"] or [], "source": str(root), "cache": str(path)}
