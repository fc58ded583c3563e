"""Training throughput of every method, side by side on one machine, in one run.

1. images/s of one full training step (augmentation included) for each method x backbone on this
   device, and on CUDA an estimated MFU = (model FLOPs per step x steps/s) / peak bf16 FLOP/s.
2. MiCE fed by mixlab's on-device batched augmentation vs the same model fed by a per-sample PIL /
   torchvision DataLoader pipeline like the authors' public code (ratio of images/s).
3. faiss spherical k-means vs scikit-learn KMeans on the same embeddings (time and objective).
4. t-SNE (scikit-learn) vs UMAP on the figure subsample (time).
5. MiCE's `paper` configuration on CIFAR-sized noise (``noise-cifar``): images/s and epoch time.

Writes ``results/benchmarks/throughput[-<device>].md`` with provenance.

    python benchmarks/throughput.py                 # CPU, small-cnn
    python benchmarks/throughput.py --backbones small-cnn resnet18 --steps 30   # on a GPU
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mixlab import engine, io
from mixlab.config import resolve
from mixlab.provenance import provenance

REPO = Path(__file__).resolve().parent.parent
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def trainer_for(method: str, backbone: str, device: str, batch: int, image_size: int | None,
                profile: str | None = None) -> engine.Trainer:
    profile = profile or ("gpu" if device == "cuda" else "cpu")
    extra = {"dataset": "noise-cifar", "device": device} if profile == "paper" else {}
    cfg = resolve(method, profile, {"train": {**extra, "backbone": backbone, "batch_size": batch, "progress": False,
                                              "subset": None if device == "cuda" or extra else 4096,  # 16384-key queues
                                              "image_size": image_size}})
    return engine.Trainer(engine.build(cfg), Path("/tmp/mixlab-bench"))


def views_of(trainer: engine.Trainer, idx: torch.Tensor) -> list[torch.Tensor]:
    x = trainer.s.images[idx.to(trainer.s.device)]
    return [trainer.s.augmenter(x, trainer.gen_aug) for _ in range(trainer.s.method.n_views)]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_throughput(trainer: engine.Trainer, steps: int, warmup: int = 3) -> float:
    """Images/s of augmentation + every stage's forward/backward/step, after ``warmup`` steps."""
    batches = trainer.batches()
    for i in range(warmup):
        trainer.train_step(views_of(trainer, batches[i % len(batches)]), batches[0])
    sync(trainer.s.device)
    start = time.perf_counter()
    for i in range(steps):
        idx = batches[i % len(batches)]
        trainer.train_step(views_of(trainer, idx), idx)
    sync(trainer.s.device)
    return steps * len(batches[0]) / (time.perf_counter() - start)


def flops_per_step(trainer: engine.Trainer) -> float:
    idx = trainer.batches()[0]
    views = views_of(trainer, idx)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(views, idx)
    return float(counter.get_total_flops())


def pil_pipeline_throughput(trainer: engine.Trainer, steps: int, workers: int) -> float:
    """The same training step fed by torchvision's per-sample PIL transforms in a DataLoader."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T
    from PIL import Image

    images = trainer.s.images.cpu().numpy()
    channels, size = images.shape[1], trainer.s.method.spec.image_size
    jitter = T.ColorJitter(0.4, 0.4, 0.4, 0.1) if channels == 3 else T.ColorJitter(0.4, 0.4)
    recipe = T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomApply([jitter], p=0.8),
                        T.RandomGrayscale(p=0.2 if channels == 3 else 0.0), T.RandomHorizontalFlip(),
                        T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)])
    n_views = trainer.s.method.n_views

    class Views(Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            img = Image.fromarray(images[i].transpose(1, 2, 0).squeeze(-1) if channels == 1
                                  else images[i].transpose(1, 2, 0))
            return [recipe(img) for _ in range(n_views)], i

    batch = trainer.train_cfg.batch_size
    loader = DataLoader(Views(), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=trainer.s.device.type == "cuda", persistent_workers=workers > 0)
    device, seen, start = trainer.s.device, 0, None
    for i, (views, idx) in enumerate(loader):
        if i == 3:
            sync(device)
            start = time.perf_counter()
        if i == 3 + steps:
            break
        trainer.train_step([v.to(device, non_blocking=True) for v in views], idx)
        seen += batch if i >= 3 else 0
    sync(device)
    return seen / (time.perf_counter() - start)


def kmeans_comparison(n: int = 20000, d: int = 128, k: int = 10) -> dict:
    from sklearn.cluster import KMeans
    from mixlab.mixture import spherical_kmeans

    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = time.perf_counter()
    c, labels = spherical_kmeans(x, k, iters=20, seed=0)
    t_faiss = time.perf_counter() - start
    start = time.perf_counter()
    km = KMeans(k, n_init=1, max_iter=20, random_state=0).fit(x)
    t_sk = time.perf_counter() - start
    cos_faiss = float((x * c[labels]).sum(1).mean())
    c_sk = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    cos_sk = float((x * c_sk[km.labels_]).sum(1).mean())
    return {"faiss_s": t_faiss, "sklearn_s": t_sk, "faiss_mean_cos": cos_faiss, "sklearn_mean_cos": cos_sk}


def embedding_comparison(n: int = 2000, d: int = 64) -> dict:
    from mixlab.viz import embed_2d

    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    out = {}
    for method in ("tsne", "umap"):
        start = time.perf_counter()
        try:
            embed_2d(x, method)
            out[f"{method}_s"] = time.perf_counter() - start
        except ImportError:
            out[f"{method}_s"] = float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["mice", "moco", "siammm", "nmm", "tcc"])
    p.add_argument("--backbones", nargs="+", default=["small-cnn"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the PIL pipeline")
    p.add_argument("--paper-steps", type=int, default=2, help="timed steps of the paper configuration")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    rows = ["| method | backbone | images/s | GFLOP/step | MFU |", "|---|---|---:|---:|---:|"]
    for backbone in args.backbones:
        for method in args.methods:
            size = 32 if backbone.startswith("resnet") else None
            trainer = trainer_for(method, backbone, device, args.batch, size)
            ips = step_throughput(trainer, args.steps)
            flops = flops_per_step(trainer)
            mfu = f"{100 * flops * ips / args.batch / peak:.1f}%" if peak and device == "cuda" else "–"
            rows.append(f"| {method} | {backbone} | {ips:,.0f} | {flops / 1e9:.1f} | {mfu} |")
            print(rows[-1], flush=True)
    side = ["| feed | images/s |", "|---|---:|"]
    backbone = args.backbones[-1]
    size = 32 if backbone.startswith("resnet") else None
    ours = step_throughput(trainer_for("mice", backbone, device, args.batch, size), args.steps)
    pil = pil_pipeline_throughput(trainer_for("mice", backbone, device, args.batch, size), args.steps, args.workers)
    side += [f"| mixlab on-device batched augmentation | {ours:,.0f} |",
             f"| per-sample PIL DataLoader ({args.workers} workers) | {pil:,.0f} |",
             f"| **ratio** | **{ours / pil:.2f}x** |"]
    print("\n".join(side), flush=True)
    paper = step_throughput(trainer_for("mice", "resnet34", device, 256, 32, profile="paper"), args.paper_steps,
                            warmup=1)
    km = kmeans_comparison()
    emb = embedding_comparison()
    text = "\n".join([
        f"# Training throughput on {name}", "",
        f"Batch {args.batch}, {args.steps} timed steps after 3 warm-up steps; one step = augmentation of every view"
        " + every stage's forward, backward and optimizer step + the method's after-step work.", "",
        *rows, "", f"## MiCE ({backbone}): mixlab's feed vs a per-sample PIL pipeline", "", *side, "",
        "## MiCE's `paper` configuration (ResNet-34, batch 256, 3x32x32) on CIFAR-sized noise", "",
        f"{paper:,.0f} images/s ({args.paper_steps} timed steps): one epoch of 50,000 images = "
        f"{50000 / paper:.0f} s; the paper's 1000 epochs = {1000 * 50000 / paper / 3600:.1f} h on this device.", "",
        "## Spherical k-means: faiss vs scikit-learn (20,000 x 128, K=10, 20 iterations)", "",
        "| library | seconds | mean cosine to centroid |", "|---|---:|---:|",
        f"| faiss | {km['faiss_s']:.2f} | {km['faiss_mean_cos']:.4f} |",
        f"| scikit-learn KMeans | {km['sklearn_s']:.2f} | {km['sklearn_mean_cos']:.4f} |", "",
        "## 2-D maps of 2,000 x 64 embeddings", "", "| method | seconds |", "|---|---:|",
        f"| t-SNE (scikit-learn) | {emb['tsne_s']:.1f} |", f"| UMAP | {emb['umap_s']:.1f} |", "",
        "## Provenance", "", "```", *(f"{k}: {v}" for k, v in provenance(device).items()),
        f"command: python benchmarks/throughput.py {' '.join(f'--{k} {v}' for k, v in vars(args).items() if v)}",
        "```", ""])
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / f"throughput-{device}.md"
    io.write_text(out, text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
