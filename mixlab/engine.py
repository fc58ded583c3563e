"""The training loop: seeding, data on the device, augmentation, optimizer steps, schedule,
end-of-epoch M-steps, evaluation, one JSON line per epoch, atomic checkpoints and exact resume.

It knows nothing method-specific: everything goes through :class:`mixlab.methods.base.Method`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mixlab import rundir
from mixlab.config import RunConfig, TrainConfig
from mixlab.data import folder_subset
from mixlab.data import load as load_dataset
from mixlab.data.folder import PREFIX as FOLDER_PREFIX
from mixlab.methods import build as build_method
from mixlab.methods import seed_everything
from mixlab.methods.base import EpochContext, Method, StepProgress, evaluating
from mixlab.metrics import assignment_confidence, cluster_sizes, evaluate, silhouette_cosine
from mixlab.utils import distributed as dist
from mixlab.utils import paths, precision
from mixlab.utils.provenance import provenance


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but no CUDA device is visible; use --set device=cpu")
    return torch.device(name)


def lr_multiplier(train: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up, then constant, step (x gamma at each milestone epoch) or cosine decay."""
    total = train.epochs * steps_per_epoch
    warm = train.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if train.schedule == "step":
            return train.gamma ** sum(step >= m * steps_per_epoch for m in train.milestones)
        if train.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        return 1.0

    return factor


def warn(message: str) -> None:
    """Tell the user something went differently than asked: one line ``mixlab: warning: ...`` on
    stderr, from the main process only."""
    if int(os.environ.get("RANK", "0")) == 0 and dist.is_main():
        print(f"mixlab: warning: {message}", file=sys.stderr, flush=True)


def planned_world_size() -> int:
    """The number of training processes: the process group's, or torchrun's ``WORLD_SIZE`` before it exists."""
    return dist.world_size() if dist.is_distributed() else max(1, int(os.environ.get("WORLD_SIZE", "1")))


def fit_to_data(cfg: RunConfig, n_samples: int, world_size: int | None = None) -> tuple[RunConfig, str]:
    """``cfg`` with the settings that cannot exceed the data lowered to fit ``n_samples`` training
    samples, and one line saying what changed ("" when nothing did). The one place that does it:
    :func:`build` calls it before the method exists, so config.json and the checkpoint hold the
    lowered values and eval, predict and resume rebuild the same model.

    * ``train.batch_size``: at most the samples per process (``n_samples // world_size``), since an
      epoch is made of full (drop-last) batches;
    * ``method.queue_size`` (MiCE, MoCo, TCC): the queue holds at most N embeddings (MiCE Eq. 2);
      when lowered, by the profiles' rule: the largest multiple of the global batch <= N.
    """
    world = world_size or planned_world_size()
    per_rank = n_samples // world
    train, params = cfg.train, cfg.params
    changes = []
    if 1 <= per_rank < train.batch_size:
        changes.append(f"batch_size {train.batch_size} -> {per_rank}")
        train = dataclasses.replace(train, batch_size=per_rank)
    queue = getattr(params, "queue_size", None)
    if isinstance(queue, int) and per_rank >= 1 and queue > n_samples:
        step = train.batch_size * world
        fitted = n_samples // step * step
        changes.append(f"queue_size {queue} -> {fitted}")
        params = dataclasses.replace(params, queue_size=fitted)
    if not changes:
        return cfg, ""
    what = "images" if cfg.train.dataset.startswith(FOLDER_PREFIX) else "samples"
    per = f" ({per_rank} per process)" if world > 1 else ""
    note = (f"{n_samples} training {what}{per}: {', '.join(changes)} (the data is smaller than the"
            f" '{cfg.profile}' profile's settings; config.json records the values used)")
    return dataclasses.replace(cfg, train=train, params=params), note


def fitted_fields(asked: RunConfig, used: RunConfig) -> dict:
    """``{"train.batch_size": [256, 60], ...}``: the fields :func:`fit_to_data` changed, as asked and as used."""
    a, u = asked.to_dict(), used.to_dict()
    return {f"{section}.{k}": [v, u[section][k]] for section in ("train", "method_params")
            for k, v in a[section].items() if u[section][k] != v}


def asked_config(stored: dict) -> dict:
    """A run's config.json as it was asked for (``RunConfig.to_dict()`` of the config given to
    :func:`train`): its ``fitted_to_data`` record undone, so a cache can compare it with a request."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in stored.items() if k != "fitted_to_data"}
    for key, (asked, _) in stored.get("fitted_to_data", {}).items():
        section, _, name = key.partition(".")
        out[section][name] = asked
    return out


@dataclass
class Setup:
    """Everything a run needs, built (and validated) before anything is written."""

    cfg: RunConfig            # as run: batch and queue fitted to the data (fit_to_data)
    device: torch.device
    images: torch.Tensor      # the training data on the device (uint8 images or float points)
    labels: torch.Tensor | None  # CPU, evaluation only; None for unlabeled data
    augmenter: object
    method: Method
    source: str
    ids: tuple[str, list]     # ("path", relative files) for folder: datasets, else ("index", rows)
    # a folder: dataset trained on a subset: every image of the folder (CPU) and its ids, so that
    # assignments.csv has a row for each; None when the training data is the whole dataset
    all_images: torch.Tensor | None = None
    all_ids: tuple[str, list] | None = None


def input_spec(setup: Setup) -> dict:
    """What the method was trained on (metrics.json's ``input``, what :func:`mixlab.rundir.load`
    rebuilds it from): channels, side of the stored images, side fed to the network, number of
    training samples (buffer shapes), and the images' dtype."""
    images = setup.images
    return {"channels": int(images.shape[1]), "stored_size": int(images.shape[-1]) if images.dim() == 4 else 0,
            "image_size": int(setup.augmenter.out_size), "n_samples": int(len(images)),
            "dtype": str(images.dtype).removeprefix("torch.")}


def build(cfg: RunConfig) -> Setup:
    """Load data, fit batch and queue to it (:func:`fit_to_data`, with one warning line when
    they change), build augmentation and the method; raises clear errors on bad input."""
    train = cfg.train
    device = pick_device(train.device)
    data = load_dataset(train.dataset, subset=None if train.dataset.startswith(FOLDER_PREFIX) else train.subset,
                        seed=train.data_seed, image_size=train.image_size, channels=train.channels,
                        skip_unreadable=train.skip_unreadable)
    whole = None
    if train.dataset.startswith(FOLDER_PREFIX):  # the same rows as load(subset=...), keeping the whole folder
        whole, data = data, folder_subset(data, train.subset, train.data_seed)
        if len(data) == len(whole):
            whole = None
    images = data.images
    cfg, note = fit_to_data(cfg, len(images))
    if note:
        warn(note)
    size = (cfg.train.image_size or images.shape[-1]) if images.dtype == torch.uint8 else 0
    augmenter, method = build_method(cfg, images.shape[1], size, len(images), device)
    return Setup(cfg, device, images.to(device), data.labels, augmenter, method, data.source,
                 rundir.ids_of(data), whole.images if whole is not None else None,
                 rundir.ids_of(whole) if whole is not None else None)


COLLAPSE_FRAC = 0.9  # a run whose largest cluster holds more than this fraction gets a warning


def collapse_warning(sizes: list[int], epochs: int, what: str = "images") -> str:
    """A line saying that one cluster holds more than :data:`COLLAPSE_FRAC` of the data, with the
    likely cause and what to try; "" otherwise (or when there is a single cluster)."""
    n = sum(sizes)
    if len(sizes) < 2 or n == 0 or max(sizes) <= COLLAPSE_FRAC * n:
        return ""
    k = max(range(len(sizes)), key=sizes.__getitem__)
    return (f"cluster {k} holds {100 * sizes[k] // n}% of the {n} {what} after {epochs} epoch(s): with so few"
            f" {what} or epochs the model has not separated them; train longer (--set epochs=...), lower"
            " n_clusters, or use more images")


class Trainer:
    """Runs (or resumes) one configured run into ``out``."""

    def __init__(self, setup: Setup, out: Path):
        self.s = setup
        self.out = Path(out)
        self.train_cfg = setup.cfg.train
        t = self.train_cfg
        n = len(setup.images)
        per_rank = n // dist.world_size()
        self.steps_per_epoch = max(1, per_rank // t.batch_size)
        if t.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)
        if per_rank < t.batch_size:
            raise ValueError(f"train.batch_size={t.batch_size} exceeds the {per_rank} samples per process;"
                             " lower it or use a larger subset")
        self.optimizers = setup.method.configure_optimizers(t)
        self.amp_dtype = precision.amp_dtype(setup.device, t.amp)
        self.model = setup.method
        if dist.is_distributed():  # gradients averaged by DDP; buffers (queue, BN) broadcast from rank 0
            self.model = torch.nn.parallel.DistributedDataParallel(setup.method, find_unused_parameters=True)
        if t.compile:
            self.model = torch.compile(self.model)
        factor = lr_multiplier(t, self.steps_per_epoch)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in self.optimizers.items()}
        self.gen_perm = torch.Generator()
        self.gen_aug = torch.Generator()
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict] = []
        self.wall = 0.0
        self.train_seconds = 0.0  # wall time of training alone (steps, end-of-epoch M-steps): the budget's clock
        self.epoch_start = 0.0
        self.stopped_by_budget = False  # the budget ended training before its last planned step
        self.step_hook: Callable[[int], None] | None = None  # tests use it to kill a run mid-epoch

    # ---- the loop -------------------------------------------------------------------------
    def autocast(self):
        return precision.autocast(self.s.device, self.amp_dtype)

    def batches(self):
        """Index batches of one epoch: a seeded permutation, split across processes, drop-last."""
        n = len(self.s.images)
        perm = torch.randperm(n, generator=self.gen_perm)
        perm = perm[dist.rank()::dist.world_size()]
        b = self.train_cfg.batch_size
        return [perm[i * b:(i + 1) * b] for i in range(self.steps_per_epoch)]

    def seed_epoch(self) -> None:
        """Seed every random stream from (seed, epoch, rank): the permutation is shared by all
        processes, augmentation and the methods' own noise differ per process."""
        seed, epoch = self.train_cfg.seed, self.epoch + 1
        self.gen_perm.manual_seed(seed * 1_000_003 + epoch)
        self.gen_aug.manual_seed((seed * 1_000_003 + epoch) * 1009 + dist.rank() + 1)
        seed_everything((seed * 1_000_003 + epoch) * 1013 + dist.rank())

    def train_step(self, views: list[torch.Tensor], idx: torch.Tensor, step: int = 0,
                   sums: dict | None = None) -> torch.Tensor:
        """One optimization step on already augmented views: every stage's loss, backward and
        optimizer step, then the method's after-step work and the schedule. Returns the last loss."""
        method = self.s.method
        for stage in method.stages:
            with self.autocast():
                out = self.model(views, idx, stage)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss of stage '{stage}' is {loss.item()} at epoch {self.epoch + 1} step {step + 1}"
                    f" (global step {self.global_step + 1}); last good checkpoint kept in {self.out}")
            if not loss.requires_grad:
                raise RuntimeError(f"the loss of {type(method).__name__} stage '{stage}' carries no gradient"
                                   + (" under train.compile (torch.compile lost it): train without compile"
                                      if self.train_cfg.compile else ""))
            opt = self.optimizers[stage]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sums is not None:
                for k, v in out.items():
                    key = k if len(method.stages) == 1 else f"{stage}/{k}"
                    sums[key] = sums.get(key, 0.0) + v.detach().float()
        method.after_step(StepProgress(self.global_step, self.train_cfg.epochs * self.steps_per_epoch))
        for sched in self.schedulers.values():
            sched.step()
        self.global_step += 1
        return loss

    def train_epoch(self) -> dict:
        method, s = self.s.method, self.s
        self.seed_epoch()
        method.train()
        method.start_epoch(self.epoch + 1)
        sums: dict[str, torch.Tensor] = {}
        bar = tqdm(self.batches(), desc=f"epoch {self.epoch + 1}/{self.train_cfg.epochs}", leave=False,
                   disable=not (self.train_cfg.progress and dist.is_main()))
        for step, idx in enumerate(bar):
            x = s.images[idx.to(s.device)]
            views = [s.augmenter.clean(x) if v in method.clean_views else s.augmenter(x, self.gen_aug)
                     for v in range(method.n_views)]
            loss = self.train_step(views, idx, step, sums)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.step_hook is not None:
                self.step_hook(self.global_step)
            if self.out_of_time():
                break
        n = step + 1
        return {k: float(v) / n for k, v in sums.items()}

    def out_of_time(self) -> bool:
        """True once ``time_budget_s`` seconds of training are spent (rank 0's clock decides)."""
        budget = self.train_cfg.time_budget_s
        if not budget:
            return False
        spent = self.train_seconds + time.perf_counter() - self.epoch_start
        return bool(dist.broadcast_(torch.tensor([float(spent >= budget)], device=self.s.device)).item())

    @torch.no_grad()
    def map_dataset(self, fn, index: torch.Tensor | None = None, images: torch.Tensor | None = None) -> torch.Tensor:
        """Apply ``fn`` to clean (un-augmented) batches of the dataset (rows ``index``; or of other
        ``images``, on any device), in order, concatenated; the method runs in eval mode under
        no_grad and gets its train/eval mode back afterwards."""
        s = self.s
        if images is None:
            images = s.images if index is None else s.images[index.to(s.device)]
        outs = []
        b = self.train_cfg.eval_batch_size
        with evaluating(s.method):
            for i in range(0, len(images), b):
                with self.autocast():
                    outs.append(fn(s.augmenter.clean(images[i:i + b].to(s.device))).float())
        return torch.cat(outs)

    def evaluate(self) -> tuple[dict, torch.Tensor]:
        method = self.s.method
        post = self.map_dataset(method.predict).cpu()
        pred = post.argmax(1)
        metrics = {} if self.s.labels is None else evaluate(self.s.labels, pred)
        sizes = cluster_sizes(pred, post.shape[1])
        metrics["n_nonempty"] = int((sizes > 0).sum())
        metrics["max_cluster_frac"] = float(sizes.max() / len(pred))  # methods log theirs as <where>_max_cluster_frac
        idx = self.fixed_subsample()  # label-free model-selection score, on the same points every epoch
        metrics["silhouette"] = silhouette_cosine(self.map_dataset(method.embed, idx).cpu(), pred[idx])
        return metrics, post

    def fixed_subsample(self) -> torch.Tensor:
        """Sorted indices of ``snapshot_size`` images, the same for every run on this dataset."""
        n = len(self.s.images)
        g = torch.Generator().manual_seed(12345)
        return torch.randperm(n, generator=g)[: min(self.train_cfg.snapshot_size, n)].sort().values

    def snapshot(self, epoch: int) -> None:
        """Save embeddings and posteriors of a fixed subsample (for t-SNE / histograms)."""
        method, idx = self.s.method, self.fixed_subsample()
        emb = self.map_dataset(method.embed, idx).cpu().numpy()
        post = self.map_dataset(method.predict, idx).cpu().numpy()
        buf = {"index": idx.numpy(), "embedding": emb, "posterior": post}
        if self.s.labels is not None:
            buf["labels"] = self.s.labels[idx].numpy()
        rundir.write_snapshot(self.out, epoch, buf)

    def log(self, message: str) -> None:
        """A line for the user (and the notebook): only the main process speaks."""
        if dist.is_main():
            tqdm.write(f"[epoch {self.epoch}] {message}")

    def end_of_epoch(self, train_logs: dict, seconds: float, stopping: bool = False) -> dict:
        """The method's end-of-epoch step, then (when due, or when ``stopping``) evaluation and
        snapshots, whose seconds go to ``eval_seconds`` so the budget does not count them."""
        t = self.train_cfg
        if dist.is_distributed():  # BatchNorm statistics of rank 0 everywhere: every rank evaluates one model
            for module in self.s.method.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                    for buf in (module.running_mean, module.running_var, module.num_batches_tracked):
                        dist.broadcast_(buf)
        ctx = EpochContext(epoch=self.epoch, map_dataset=self.map_dataset, all_reduce=dist.all_reduce_sum,
                           log=self.log)
        extra = self.s.method.end_epoch(ctx)
        row = {"epoch": self.epoch, "step": self.global_step, **train_logs, **extra,
               "lr": self.optimizers[next(iter(self.optimizers))].param_groups[0]["lr"], "seconds": seconds}
        last = self.epoch == t.epochs or stopping
        eval_start = time.perf_counter()
        if last or (t.eval_every and self.epoch % t.eval_every == 0):
            metrics, _ = self.evaluate()
            row.update(metrics)
        snaps = {e if e > 0 else t.epochs for e in t.snapshot_epochs}
        if (self.epoch in snaps or (stopping and -1 in t.snapshot_epochs)) and dist.is_main():
            self.snapshot(self.epoch)
        row["eval_seconds"] = time.perf_counter() - eval_start
        return row

    def run(self) -> dict:
        t = self.train_cfg
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        while self.epoch < t.epochs and not (t.time_budget_s and self.train_seconds >= t.time_budget_s):
            start = self.epoch_start = time.perf_counter()
            logs = self.train_epoch()
            self.epoch += 1
            stopping = self.out_of_time()
            self.stopped_by_budget = stopping and self.global_step < t.epochs * self.steps_per_epoch
            row = self.end_of_epoch(logs, time.perf_counter() - start, stopping=stopping)
            self.wall += time.perf_counter() - start
            self.train_seconds += time.perf_counter() - start - row["eval_seconds"]
            row["train_seconds"] = self.train_seconds
            self.history.append(row)
            if dist.is_main():
                self.save_checkpoint()
                rundir.write_log(self.out, self.history)
                if t.progress:
                    tqdm.write(_summary_line(row))
        return self.finish()

    @torch.no_grad()
    def ranks_in_sync(self) -> bool:
        """True when every process holds bit-identical parameters and buffers (prototypes, queue)."""
        state = self.s.method.state_dict()
        mine = torch.stack([v.double().sum() for v in state.values() if v.is_floating_point()])
        return bool((dist.all_gather_cat(mine[None]) == mine).all())

    def finish(self) -> dict:
        metrics, post = self.evaluate()
        in_sync = self.ranks_in_sync() if dist.is_distributed() else None
        if not dist.is_main():
            return metrics
        saved = {"posterior": post.numpy().astype(np.float16)}
        if self.s.labels is not None:
            saved["labels"] = self.s.labels.numpy()
        rundir.write_predictions(self.out, saved)
        if self.s.all_images is None:
            rundir.write_assignments(self.out / rundir.ASSIGNMENTS, self.s.ids, post)
        else:  # trained on a subset of a folder: every image of it gets its row
            everything = self.map_dataset(self.s.method.predict, images=self.s.all_images).cpu()
            rundir.write_assignments(self.out / rundir.ASSIGNMENTS, self.s.all_ids, everything)
        if in_sync is not None:
            metrics["ranks_in_sync"] = in_sync
        metrics["cluster_sizes"] = cluster_sizes(post.argmax(1), post.shape[1]).tolist()
        if post.shape[1] >= 2:  # how much the posterior says, label-free (a flat one is a collapse)
            metrics.update(assignment_confidence(post))
        collapse = collapse_warning(metrics["cluster_sizes"], self.epoch,
                                    "images" if self.s.images.dtype == torch.uint8 else "samples")
        if collapse:
            warn(collapse)
        last = self.history[-1] if self.history else {}
        metrics["objective"] = {k: v for k, v in last.items() if k == "loss" or k.endswith("/loss")}
        result = {**metrics, "method": self.s.cfg.method, "profile": self.s.cfg.profile,
                  "dataset": self.train_cfg.dataset, "seed": self.train_cfg.seed, "epochs": self.epoch,
                  "wall_time_s": round(self.wall, 2), "train_seconds": round(self.train_seconds, 2),
                  "stopped_by_budget": self.stopped_by_budget,
                  "labelled": self.s.labels is not None, "input": input_spec(self.s),
                  "provenance": provenance(self.s.device, data_source=self.s.source,
                                           world_size=dist.world_size())}
        rundir.write_metrics(self.out, result)
        return result

    # ---- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue: weights and buffers (queues, prototypes), optimizers,
        schedules, progress. Random streams need no saving: they are re-seeded from
        (seed, epoch, rank) at the start of every epoch, so resuming at an epoch boundary replays
        exactly what an uninterrupted run does, on any number of processes."""
        return {"epoch": self.epoch, "global_step": self.global_step, "wall": self.wall,
                "train_seconds": self.train_seconds, "stopped_by_budget": self.stopped_by_budget,
                "config": self.s.cfg.to_dict(), "history": self.history,
                "method": self.s.method.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}}

    def save_checkpoint(self) -> None:
        rundir.write_checkpoint(self.out, self.state())

    def load_checkpoint(self, path: Path) -> None:
        state = rundir.read_checkpoint(path, self.s.device)
        if state.get("config") != self.s.cfg.to_dict():
            raise rundir.CheckpointError(f"checkpoint {path} was written with another configuration;"
                                  " resume with the same settings or choose a new --out")
        self.s.method.load_state_dict(state["method"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.epoch, self.global_step, self.wall = state["epoch"], state["global_step"], state["wall"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.stopped_by_budget = state.get("stopped_by_budget", False)
        self.history = state["history"]


def _summary_line(row: dict) -> str:
    keys = [k for k in ("loss", "acc", "nmi", "ari") if k in row]
    return f"epoch {row['epoch']}: " + "  ".join(f"{k}={row[k]:.4f}" for k in keys)


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False,
          step_hook: Callable[[int], None] | None = None) -> dict:
    """Train ``cfg`` into ``out`` (config.json, log.jsonl, checkpoint.pt, metrics.json); a relative
    ``out`` is taken from the workbook root (:mod:`mixlab.utils.paths`)."""
    out = paths.resolve(out)
    ckpt = out / rundir.CHECKPOINT
    if not resume and out.exists() and any((out / f).exists() for f in (rundir.CONFIG, rundir.CHECKPOINT)):
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    setup = build(cfg)
    trainer = Trainer(setup, out)
    trainer.step_hook = step_hook
    if resume and ckpt.exists():
        trainer.load_checkpoint(ckpt)
    if dist.is_main():  # as run, fitted to the data; what was asked for beside it (asked_config)
        record, fitted = setup.cfg.to_dict(), fitted_fields(cfg, setup.cfg)
        rundir.write_config(out, {**record, "fitted_to_data": fitted} if fitted else record)
    return trainer.run()


def reevaluate(run: str | Path) -> dict:
    """A finished run's metrics recomputed on its training data (``python -m mixlab eval``): the
    trained method (:func:`mixlab.rundir.load`) on the data its config.json names."""
    loaded = rundir.load(run)
    setup = dataclasses.replace(build(loaded.cfg), augmenter=loaded.augmenter, method=loaded.method)
    metrics, _ = Trainer(setup, rundir.folder(run)).evaluate()
    return metrics
