"""ImageNet-Dog: the 15 dog classes of ILSVRC2012 train used by DAC and MiCE, resized to 96×96."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# The WNIDs of DAC (Chang et al., 2017); MiCE App. D names the subset but not the WNIDs.
WNIDS = ("n02085936", "n02086646", "n02088238", "n02091467", "n02097130",
         "n02099601", "n02101388", "n02101556", "n02102177", "n02105056",
         "n02105412", "n02105855", "n02107142", "n02110958", "n02112137")
CLASSES = ("Maltese dog", "Blenheim spaniel", "basset", "Norwegian elkhound", "giant schnauzer",
           "golden retriever", "Brittany spaniel", "clumber", "Welsh springer spaniel",
           "groenendael", "kelpie", "Shetland sheepdog", "Doberman", "pug", "chow")
FILES = tuple(f"train/{w}" for w in WNIDS)
SIZE = 96
_SUFFIXES = {".jpeg", ".jpg", ".png"}


def read(folder: Path, verify: bool) -> dict:
    """Decode `train/<wnid>/*.JPEG`, RGB, bicubic resize to 96×96; `verify`: no class is empty."""
    paths, labels = [], []
    for label, wnid in enumerate(WNIDS):
        found = sorted(p for p in (folder / "train" / wnid).iterdir() if p.suffix.lower() in _SUFFIXES)
        if verify and not found:
            raise ValueError(f"{folder / 'train' / wnid}: no images; re-extract the ILSVRC2012 "
                             f"train tarball for {wnid}")
        paths += found
        labels += [label] * len(found)
    images = torch.empty((len(paths), 3, SIZE, SIZE), dtype=torch.uint8)
    for i, path in enumerate(paths):
        images[i] = torch.from_numpy(_decode(path)).permute(2, 0, 1)
    return {"images": images, "labels": torch.tensor(labels, dtype=torch.int64)}


def _decode(path: Path) -> np.ndarray:
    """One image as a 96×96×3 uint8 array."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
