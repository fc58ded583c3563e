"""The one interface every clustering method implements; the engine knows nothing else.

One training step reads top to bottom::

    views = [augment(x) for _ in range(method.n_views)]
    for stage in method.stages:                      # e.g. ("main",) or NMM's ("em", "consistency")
        out = method.training_step(views, idx, stage)  # {"loss": tensor, ...scalars to log}
        optimizers[stage]: zero_grad, backward, step
    method.after_step(progress)                      # EMA teacher (progress: StepProgress(step, total))
    ... at epoch end: method.end_epoch(ctx)          # analytical prototypes, vMF EM, merging
    method.predict(x) -> [B, K] posterior over clusters on clean images
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # the config layer imports the method registry, not the other way round
    from mixlab.config import TrainConfig


@dataclass
class DataSpec:
    """What a method needs to know about its input to build its networks."""

    in_channels: int       # channels after preprocessing (2 with Sobel); features for point data
    image_size: int        # side of the (square) input; 0 for point data
    n_samples: int
    backbone: str


@dataclass(frozen=True)
class StepProgress:
    """Where training stands, handed by the engine to :meth:`Method.after_step`: ``step`` optimizer
    steps were taken before this one (0-based global step), of ``total`` = epochs x steps per epoch."""

    step: int
    total: int

    @property
    def fraction(self) -> float:
        """t / T in [0, 1] (0 when there are no steps)."""
        return min(self.step, self.total) / self.total if self.total else 0.0


@dataclass
class EpochContext:
    """Handed to ``Method.end_epoch``: the epoch number and access to the whole (clean) dataset."""

    epoch: int                                    # 1-based
    map_dataset: Callable[[Callable], torch.Tensor]  # fn(clean batch) -> tensor, concatenated over all data;
    #                                               the method in eval mode under no_grad, its mode restored
    all_reduce: Callable[[torch.Tensor], torch.Tensor]  # sum over processes (identity on one)
    log: Callable[[str], None]


class Method(nn.Module):
    """Base class: override what differs; defaults give a single-optimizer method."""

    Config: ClassVar[type]              # settings; profiles live in mixlab/profiles/<name>.yaml
    n_views: int = 2
    clean_views: tuple[int, ...] = ()   # views fed un-augmented (``augmenter.clean``), e.g. NMM's original
    stages: tuple[str, ...] = ("main",)

    def __init__(self, cfg, spec: DataSpec):
        super().__init__()
        self.cfg = cfg
        self.spec = spec

    @property
    def n_clusters(self) -> int:
        return self.cfg.n_clusters

    def optimizer_groups(self) -> dict[str, list]:
        """Parameters (or param-group dicts) per stage; default: every trainable parameter in 'main'."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {stage: make_optimizer(train, params) for stage, params in self.optimizer_groups().items()}

    def training_step(self, views: list[torch.Tensor], idx: torch.Tensor, stage: str) -> dict:
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], idx: torch.Tensor, stage: str) -> dict:
        """The training step, as ``forward`` so DistributedDataParallel can wrap the method."""
        return self.training_step(views, idx, stage)

    def after_step(self, progress: StepProgress) -> None:
        """Called once per step after all optimizer steps (EMA teacher); ``progress`` says which step."""

    def start_epoch(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (1-based)."""

    def end_epoch(self, ctx: EpochContext) -> dict:
        """End-of-epoch work (M-steps outside SGD); returns scalars to log."""
        return {}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior over clusters ``[B, K]`` for clean inputs."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding ``[B, d]`` for plots (t-SNE/UMAP) and the silhouette; default: the posterior."""
        return self.predict(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen representation ``[B, D]`` for linear-probe / k-NN evaluation; default: ``embed``.
        Methods with a backbone return its output."""
        return self.embed(x)


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """``module`` in eval mode inside the block; its previous train/eval mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def make_optimizer(train: TrainConfig, params) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam from the common settings, fused (one kernel updates all
    parameters instead of a Python loop over them; same update rule)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                               fused=True)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)
