"""Training-step throughput of every method, float32 vs the default precision, side by side in one run.

Per method, on the machine it runs on and in this process:

1. images/s of one full training step (batched augmentation of every view + every stage's forward,
   backward and optimizer step + the method's after-step work) in float32 (``train.amp=false``, the
   only CPU path before bf16 autocast) and in the profile's default (``train.amp`` as the profile
   sets it: bf16 autocast on CUDA and on CPUs with native bf16), and their ratio. The two paths'
   timed blocks alternate (``--repeats`` rounds, median), so a change of machine load hits both alike.
2. FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products),
   achieved GFLOP/s, and the fraction of the matmul peak of the path's dtype, both peaks (float32 and
   bf16 ``torch.mm`` of ``--matmul-size`` squares) measured in the same run.
3. ``--profile``: the top operators by self time (``torch.profiler``) of each method's default step.
4. ``--extras``: MiCE fed by the on-device augmentation vs a per-sample PIL DataLoader, the `paper`
   configuration on CIFAR-sized noise, faiss vs scikit-learn k-means, t-SNE vs UMAP.

Writes ``results/benchmarks/throughput_<device>.md`` and ``.json`` with provenance (commit, machine,
threads, load average at start and end). Run it on a quiet machine:

    python benchmarks/throughput.py --threads 1 2 --profile      # CPU, about 3 minutes on 2 cores
    python benchmarks/throughput.py --quick --out /tmp/t.md      # seconds: checks the script
    python benchmarks/throughput.py --backbones resnet18 --compile --steps 30 --extras   # on a GPU
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mixlab import engine
from mixlab.config import resolve
from mixlab.utils import io, precision
from mixlab.utils.provenance import provenance

REPO = Path(__file__).resolve().parent.parent
METHODS = ("mice", "moco", "siammm", "nmm", "tcc")
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}   # vendor dense bf16 peaks (MFU on CUDA)


def trainer_for(method: str, device: str, overrides: dict | None = None, profile: str | None = None,
                backbone: str | None = None) -> engine.Trainer:
    """A trainer on ``method``'s profile (``cpu`` or ``gpu`` by device) with ``overrides`` of train.*."""
    profile = profile or ("gpu" if device == "cuda" else "cpu")
    train = {"device": device, "progress": False, **({"backbone": backbone} if backbone else {}), **(overrides or {})}
    if profile == "paper":
        train.update(dataset="noise-cifar", image_size=32)
    if backbone and backbone.startswith("resnet"):
        train.setdefault("image_size", 32)
    return engine.Trainer(engine.build(resolve(method, profile, {"train": train})), Path("/tmp/mixlab-bench"))


def views_of(trainer: engine.Trainer, idx: torch.Tensor) -> list[torch.Tensor]:
    x = trainer.s.images[idx.to(trainer.s.device)]
    return [trainer.s.augmenter(x, trainer.gen_aug) for _ in range(trainer.s.method.n_views)]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steps(trainer: engine.Trainer, steps: int) -> float:
    """Seconds for ``steps`` full training steps (augmentation included)."""
    batches = trainer.batches()
    sync(trainer.s.device)
    start = time.perf_counter()
    for i in range(steps):
        idx = batches[(trainer.global_step + i) % len(batches)]
        trainer.train_step(views_of(trainer, idx), idx)
    sync(trainer.s.device)
    return time.perf_counter() - start


def step_throughput(trainer: engine.Trainer, steps: int, warmup: int = 3) -> float:
    """Images/s of the full training step, after ``warmup`` steps."""
    run_steps(trainer, warmup)
    return steps * trainer.train_cfg.batch_size / run_steps(trainer, steps)


def interleaved_throughput(trainers: dict[str, engine.Trainer], steps: int, warmup: int, repeats: int) -> dict:
    """Median images/s per trainer over ``repeats`` rounds, each round timing every trainer once."""
    for t in trainers.values():
        run_steps(t, warmup)
    rates = {k: [] for k in trainers}
    for _ in range(repeats):
        for k, t in trainers.items():
            rates[k].append(steps * t.train_cfg.batch_size / run_steps(t, steps))
    return {k: statistics.median(v) for k, v in rates.items()}


def flops_per_step(trainer: engine.Trainer) -> float:
    """FLOPs of one training step as FlopCounterMode counts them (matmuls and convolutions)."""
    idx = trainer.batches()[0]
    views = views_of(trainer, idx)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(views, idx)
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, seconds: float = 1.0) -> float:
    """FLOP/s of ``n x n`` by ``n x n`` ``torch.mm`` in ``dtype`` (the best of 1-s blocks after warm-up)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    for block in range(3):
        reps, start = 0, time.perf_counter()
        sync(device)
        while time.perf_counter() - start < seconds / 3:
            torch.mm(a, b)
            reps += 1
        sync(device)
        if block:
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def profile_table(trainer: engine.Trainer, steps: int, rows: int) -> list[str]:
    """Markdown rows: the ``rows`` operators with the most self time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.s.device.type == "cuda" else [])
    run_steps(trainer, 1)
    with profile(activities=activities) as prof:
        run_steps(trainer, steps)
    device_time = trainer.s.device.type == "cuda"
    ops = prof.key_averages()
    key = (lambda e: e.self_device_time_total) if device_time else (lambda e: e.self_cpu_time_total)
    total = sum(key(e) for e in ops) or 1.0
    top = sorted(ops, key=key, reverse=True)[:rows]
    return ["| operator | self time % | calls/step |", "|---|---:|---:|",
            *(f"| `{e.key}` | {100 * key(e) / total:.1f} | {e.count / steps:.0f} |" for e in top)]


def pil_pipeline_throughput(trainer: engine.Trainer, steps: int, workers: int) -> float:
    """The same training step fed by torchvision's per-sample PIL transforms in a DataLoader."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

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
    from mixlab.workbook.viz import embed_2d

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




def method_row(method: str, device: str, args, threads: int, peaks: dict) -> dict:
    """One method: images/s of the float32 path and of the default (and compiled) path, FLOPs, peaks."""
    base = {k: v for k, v in (("batch_size", args.batch), ("subset", args.subset)) if v}
    paths = {"fp32": {**base, "amp": False, "channels_last": False}, "default": base}
    if args.compile:
        paths["compiled"] = {**base, "compile": True}
    trainers = {k: trainer_for(method, device, v, backbone=args.backbone) for k, v in paths.items()}
    compile_error = None
    if "compiled" in trainers:
        try:
            run_steps(trainers["compiled"], 1)  # compiles; a failure is reported, not fatal
        except RuntimeError as e:
            compile_error = str(e).splitlines()[0]
            del trainers["compiled"]
    ips = interleaved_throughput(trainers, args.steps, args.warmup, args.repeats)
    default = trainers["default"]
    flops = flops_per_step(trainers["fp32"])
    batch = default.train_cfg.batch_size
    dtype = "bf16" if default.amp_dtype == torch.bfloat16 else "fp32"
    row = {"method": method, "backbone": default.train_cfg.backbone, "threads": threads, "batch": batch,
           "default_dtype": dtype, "img_s": ips, "ratio": ips["default"] / ips["fp32"],
           "gflop_per_step": flops / 1e9,
           "gflop_s": {k: flops * v / batch / 1e9 for k, v in ips.items()}}
    row["peak_frac"] = {"fp32": row["gflop_s"]["fp32"] * 1e9 / peaks["fp32"],
                        "default": row["gflop_s"]["default"] * 1e9 / peaks[dtype]}
    if compile_error:
        row["compile_error"] = compile_error
    if args.profile:
        row["profile"] = profile_table(default, args.profile_steps, args.profile_rows)
    return row


def method_table(rows: list[dict], compiled: bool) -> list[str]:
    head = ("| method | backbone | threads | fp32 img/s | default img/s | default / fp32 | GFLOP/step"
            " | fp32 GFLOP/s (% of fp32 peak) | default GFLOP/s (% of its dtype's peak) |")
    lines = [head + (" compiled img/s |" if compiled else ""), "|---|---|---:|" + "---:|" * (6 + compiled)]
    for r in rows:
        g, f = r["gflop_s"], r["peak_frac"]
        lines.append(f"| {r['method']} | {r['backbone']} | {r['threads']} | {r['img_s']['fp32']:,.0f} |"
                     f" {r['img_s']['default']:,.0f} ({r['default_dtype']}) | **{r['ratio']:.2f}x** |"
                     f" {r['gflop_per_step']:.2f} | {g['fp32']:.1f} ({100 * f['fp32']:.0f} %) |"
                     f" {g['default']:.1f} ({100 * f['default']:.0f} %) |"
                     + (f" {r['img_s']['compiled']:,.0f} |" if "compiled" in r["img_s"] else
                        " failed (below) |" if compiled else ""))
    lines += [f"\n{r['method']}, compiled: {r['compile_error']}" for r in rows if r.get("compile_error")]
    return lines


def extras(device: str, args) -> list[str]:
    """The feed comparison, the paper configuration, k-means and 2-D map libraries (``--extras``)."""
    ours = step_throughput(trainer_for("mice", device, backbone=args.backbone), args.steps)
    pil = pil_pipeline_throughput(trainer_for("mice", device, backbone=args.backbone), args.steps, args.workers)
    paper = step_throughput(trainer_for("mice", device, {"batch_size": 256}, profile="paper"), args.paper_steps,
                            warmup=1)
    km, emb = kmeans_comparison(), embedding_comparison()
    return [
        "## MiCE: mixlab's feed vs a per-sample PIL pipeline (default precision)", "",
        "| feed | images/s |", "|---|---:|", f"| mixlab on-device batched augmentation | {ours:,.0f} |",
        f"| per-sample PIL DataLoader ({args.workers} workers) | {pil:,.0f} |", f"| **ratio** | **{ours / pil:.2f}x** |",
        "", "## MiCE's `paper` configuration (ResNet-34, batch 256, 3x32x32) on CIFAR-sized noise", "",
        f"{paper:,.0f} images/s ({args.paper_steps} timed steps): one epoch of 50,000 images = "
        f"{50000 / paper:.0f} s; the paper's 1000 epochs = {1000 * 50000 / paper / 3600:.1f} h on this device.", "",
        "## Spherical k-means: faiss vs scikit-learn (20,000 x 128, K=10, 20 iterations)", "",
        "| library | seconds | mean cosine to centroid |", "|---|---:|---:|",
        f"| faiss | {km['faiss_s']:.2f} | {km['faiss_mean_cos']:.4f} |",
        f"| scikit-learn KMeans | {km['sklearn_s']:.2f} | {km['sklearn_mean_cos']:.4f} |", "",
        "## 2-D maps of 2,000 x 64 embeddings", "", "| method | seconds |", "|---|---:|",
        f"| t-SNE (scikit-learn) | {emb['tsne_s']:.1f} |", f"| UMAP | {emb['umap_s']:.1f} |", ""]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--backbone", default=None, help="default: the profile's (small-cnn on CPU, resnet18 on GPU)")
    p.add_argument("--batch", type=int, default=0, help="default: the profile's")
    p.add_argument("--subset", type=int, default=0, help="default: the profile's")
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="torch CPU thread counts to measure, e.g. 1 2")
    p.add_argument("--steps", type=int, default=8, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed blocks per path (median)")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--compile", action="store_true", help="add a column: the default path with train.compile")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler table per method")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--profile-rows", type=int, default=8)
    p.add_argument("--extras", action="store_true", help="feed, paper configuration, k-means, 2-D maps")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the PIL pipeline (--extras)")
    p.add_argument("--paper-steps", type=int, default=2, help="timed steps of the paper configuration (--extras)")
    p.add_argument("--quick", action="store_true", help="seconds: batch 64, 2 steps, 1 repeat, 256^2 matmuls")
    p.add_argument("--out", default=None, help="default: results/benchmarks/throughput_<device>.md (+ .json)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.warmup, args.repeats = args.batch or 64, 2, 1, 1
        args.matmul_size, args.profile_steps = 256, 1
    for name in ("steps", "repeats", "matmul_size", "profile_steps", "profile_rows"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if min(args.threads) < 1:
        p.error(f"--threads must be >= 1 (got {args.threads})")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / f"throughput_{device}.md"
    load_start = os.getloadavg()
    dev = torch.device(device)
    rows, peaks_by_threads = [], {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        peaks = {"fp32": matmul_peak(torch.float32, dev, args.matmul_size),
                 "bf16": matmul_peak(torch.bfloat16, dev, args.matmul_size)}
        peaks_by_threads[threads] = peaks
        print(f"{threads} threads: matmul peak fp32 {peaks['fp32'] / 1e9:,.0f}, bf16 {peaks['bf16'] / 1e9:,.0f}"
              " GFLOP/s", flush=True)
        for method in args.methods:
            rows.append(method_row(method, device, args, threads, peaks))
            print(method_table(rows[-1:], args.compile)[-1], flush=True)
    extra = extras(device, args) if args.extras else []
    load_end = os.getloadavg()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    vendor_peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    prov = {**provenance(device), "threads": args.threads, "cpu_native_bf16": precision.cpu_has_native_bf16(),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in load_end],
            "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    text = "\n".join([
        f"# Training-step throughput on {prov['device']}: float32 vs the default precision", "",
        ("QUICK MODE: a check of the script; these numbers mean nothing." if args.quick else
         f"{args.repeats} alternating blocks of {args.steps} timed steps per path after {args.warmup} warm-up steps,"
         " median."), "One step = batched augmentation of every view + every stage's forward, backward and"
        " optimizer step + the method's after-step work. `fp32`: `train.amp=false`; `default`: the profile's"
        " settings (bf16 autocast where the device has it). Both include the step-overhead fixes (fused"
        " optimizers, contrastive likelihoods without concatenation), so default / fp32 is the gain of"
        " autocast alone.", "",
        "## Matmul peak in this run (torch.mm, " f"{args.matmul_size}x{args.matmul_size})", "",
        "| threads | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |", "|---:|---:|---:|---:|",
        *(f"| {t} | {p['fp32'] / 1e9:,.0f} | {p['bf16'] / 1e9:,.0f} | {p['bf16'] / p['fp32']:.2f}x |"
          for t, p in peaks_by_threads.items()),
        *(["", f"Vendor dense bf16 peak of this GPU: {vendor_peak / 1e12:.0f} TFLOP/s (MFU = default GFLOP/s over it)."]
          if vendor_peak and device == "cuda" else []), "",
        "## Per method", "", *method_table(rows, args.compile), "",
        *[line for r in rows if "profile" in r for line in
          (f"### Where the default step's time goes: {r['method']}, {r['threads']} threads", "", *r["profile"], "")],
        *extra,
        "## Provenance", "", "```", *(f"{k}: {v}" for k, v in prov.items()), "```", ""])
    io.write_text(out, text)
    io.write_json(out.with_suffix(".json"), {"provenance": prov, "matmul_peak_flop_s": peaks_by_threads,
                                             "methods": rows, "quick": args.quick})
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
