"""Throughput of mixlab's batched augmentation vs torchvision's per-sample PIL transforms.

Both run the MoCo recipe (crop scale (0.2, 1), jitter p=0.8, grayscale p=0.2, flip; the
1-channel recipe uses brightness/contrast only) on random uint8 images on the local CPU.
torchvision runs inside a DataLoader (num_workers 0 and 2, the best is kept). Writes a markdown
table with provenance to results/benchmarks/augment.md. For a 2-core figure on a bigger machine,
pin the process: ``taskset -c 0,1 python benchmarks/augment.py``.

    python benchmarks/augment.py --n 20000
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from mixlab.data.augment import Augmenter

REPO = Path(__file__).resolve().parent.parent
BATCH = 256
CASES = [("moco", 3, 32), ("moco-gray", 1, 28)]


class PILDataset(Dataset):
    """Random uint8 images converted to PIL and augmented one by one, as a classic pipeline does."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return self.transform(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img))


def torchvision_recipe(channels: int, size: int):
    jitter = T.ColorJitter(0.4, 0.4, 0.4, 0.1) if channels == 3 else T.ColorJitter(0.4, 0.4)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([jitter], p=0.8),
        *([T.RandomGrayscale(p=0.2)] if channels == 3 else []),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.5] * channels, [0.5] * channels),
    ])


def bench_mixlab(recipe: str, channels: int, size: int, n: int) -> float:
    aug = Augmenter(recipe, channels, size)
    x = torch.randint(0, 256, (BATCH, channels, size, size), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    aug(x, g)  # warm-up
    batches = max(1, n // BATCH)
    t = time.perf_counter()
    for _ in range(batches):
        aug(x, g)
    return batches * BATCH / (time.perf_counter() - t)


def bench_torchvision(channels: int, size: int, n: int, workers: int) -> float:
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    loader = DataLoader(PILDataset(images, torchvision_recipe(channels, size)), batch_size=BATCH,
                        num_workers=workers, persistent_workers=workers > 0)
    for _ in zip(range(2), loader):  # start workers, warm up
        pass
    t = time.perf_counter()
    seen = sum(len(b) for b in loader)
    return seen / (time.perf_counter() - t)


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        commit += "+dirty" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "git commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu count": f"{_usable_cpus()} usable of {os.cpu_count()}",
        "load average (1 min, at start)": f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a",
        "torch threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="images per measurement (default 20000)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "augment.md")
    args = p.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), _usable_cpus()))
    prov = provenance()

    rows = []
    for recipe, c, s in CASES:
        ours = bench_mixlab(recipe, c, s, args.n)
        tv = {w: bench_torchvision(c, s, args.n, w) for w in (0, 2)}
        best = max(tv, key=tv.get)
        rows.append(f"| {recipe} | {c}x{s}x{s} | {ours:,.0f} | {tv[best]:,.0f} (workers={best}) | {ours / tv[best]:.1f}x |")
    table = "\n".join([
        f"| recipe | image | mixlab batched (img/s, batch {BATCH}) | torchvision PIL + DataLoader (img/s) | ratio |",
        "|---|---|---:|---:|---:|", *rows])
    prov = "\n".join(f"- {k}: {v}" for k, v in prov.items())
    text = (f"# Augmentation throughput\n\nRandom uint8 images, {args.n} per measurement, CPU only.\n\n"
            f"{table}\n\n## Provenance\n\n{prov}\n")
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
