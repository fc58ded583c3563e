"""MoCo + spherical k-means: the two-stage baseline that MiCE generalizes (MiCE §3, §5.3, App. C).

Stage 1, MoCo (He et al., 2020): a student f_θ (backbone + one output layer) and an EMA teacher
f_θ' (θ' <- m θ' + (1 - m) θ) embed two augmented views; the loss is the InfoNCE of MiCE Eq. (2)
with a FIFO queue q ∈ R^{ν×d} of past teacher embeddings (:func:`mixlab.mixture.contrastive.info_nce`).
MiCE reduces to exactly this loss under Assumptions A3-A5 (Theorems 2-3; ``tests/test_mice.py``).

Stage 2, spherical k-means (Dhillon & Modha, 2001) with K clusters on the L2-normalized teacher
embeddings of the clean images (faiss, :func:`mixlab.mixture.spherical_kmeans`), run in
``end_epoch`` so every evaluated epoch has clusters; the centroids are a checkpointed buffer.
``predict`` assigns each image to the centroid of largest cosine: one-hot by default, or
``softmax(cos / soft_temperature)`` when ``soft_temperature > 0``.

Fairness with MiCE (App. D: "MoCo ... follows the same hyper-parameter settings as MiCE"): same
backbone, augmentation, optimizer, schedule, τ, ν, m and embedding size; the output layer is one
linear map like one of MiCE's expert layers (``head_layers=1``; 2 gives MoCo v2's MLP head).

mixlab's choices (the paper is silent): k-means runs on the teacher (key) embeddings, as App. C
analyses v; it is seeded by ``kmeans_seed + epoch``; before the first ``end_epoch`` (no centroids
yet) ``predict`` clusters the batch it is given. Teacher BatchNorm statistics come from its own
forward passes; under DDP the key batch is shuffled across ranks first (shuffle-BN, MoCo §3.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mixlab.methods.base import DataSpec, EpochContext, Method
from mixlab.methods.momentum import MomentumTeacher, Queue, check_teacher_momentum, make_teacher, shuffled_forward
from mixlab.mixture.contrastive import info_nce
from mixlab.mixture.kmeans import spherical_kmeans
from mixlab.nets import ProjectionHead, build_backbone
from mixlab.utils.checks import ConfigError, check_positive
from mixlab.utils.precision import full_precision


@dataclass
class MoCoConfig:
    """MoCo's settings; defaults follow MiCE's (App. D), under which the paper ran its baseline."""

    n_clusters: int = 10               # K for spherical k-means
    embed_dim: int = 128               # output dimension (App. D: 128)
    tau: float = 1.0                   # InfoNCE temperature (MiCE's τ = 1.0, shared by its baseline)
    queue_size: int = 16384            # ν, must be <= N
    teacher_momentum: float = 0.999    # m
    teacher_momentum_final: float | None = None  # None: constant m; else m -> this by a half-cosine (MomentumTeacher)
    head_layers: int = 1               # 1 = linear output layer (as MiCE); 2 = MoCo v2 MLP head
    kmeans_iters: int = 50             # Lloyd iterations of spherical k-means
    kmeans_redo: int = 5               # k-means restarts (faiss nredo), the best k-means objective kept
    #                                    (label-free); 5 as in PCL (Li et al., ICLR 2021), the count SiamMM §4.3 cites
    kmeans_seed: int = 0               # seed = kmeans_seed + epoch
    soft_temperature: float = 0.0      # 0: one-hot predictions; > 0: softmax(cos / T)

    def validate(self) -> None:
        for name in ("n_clusters", "embed_dim", "tau", "queue_size", "head_layers", "kmeans_redo"):
            check_positive(f"method.{name}", getattr(self, name))
        check_positive("method.kmeans_iters", self.kmeans_iters, allow_zero=True)
        check_positive("method.soft_temperature", self.soft_temperature, allow_zero=True)
        check_teacher_momentum(self)


class MoCo(Method):
    """MoCo with a queue and an EMA teacher, then spherical k-means; see the module docstring."""

    Config = MoCoConfig
    n_views = 2

    def __init__(self, cfg: MoCoConfig, spec: DataSpec):
        super().__init__(cfg, spec)
        if cfg.queue_size > spec.n_samples:
            raise ConfigError(f"method.queue_size={cfg.queue_size} exceeds the {spec.n_samples} training"
                              " samples; the queue must hold at most N embeddings (lower queue_size)")
        backbone = build_backbone(spec.backbone, spec.in_channels, spec.image_size)
        head = ProjectionHead(backbone.out_dim, backbone.out_dim, cfg.embed_dim, n_layers=cfg.head_layers)
        self.student = nn.Sequential(backbone, head)
        self.teacher = make_teacher(self.student)
        self.ema = MomentumTeacher(cfg.teacher_momentum, cfg.teacher_momentum_final)
        self.queue = Queue(cfg.queue_size, (cfg.embed_dim,))
        self.register_buffer("centroids", torch.zeros(cfg.n_clusters, cfg.embed_dim))
        self.register_buffer("has_centroids", torch.zeros((), dtype=torch.bool))

    def training_step(self, views, idx, stage) -> dict:
        x_q, x_k = views
        f = self.student(x_q)
        with torch.no_grad():
            v = F.normalize(shuffled_forward(self.teacher, x_k).float(), dim=-1)  # shuffle-BN under DDP
        with full_precision(f):
            log_p = info_nce(f.float(), v, self.queue(), self.cfg.tau)  # Eq. (2)
        self.queue.push(v)  # the loss read a copy of the queue
        return {"loss": -log_p.mean()}

    def after_step(self, progress) -> None:
        self.ema.update_(self.teacher, self.student, progress)

    @torch.no_grad()
    def end_epoch(self, ctx: EpochContext) -> dict:
        """Stage 2: spherical k-means on the clean teacher embeddings of the whole dataset."""
        emb = ctx.map_dataset(self.embed)
        centroids, labels = spherical_kmeans(emb.cpu(), self.cfg.n_clusters, iters=self.cfg.kmeans_iters,
                                             seed=self.cfg.kmeans_seed + ctx.epoch, nredo=self.cfg.kmeans_redo)
        self.centroids.copy_(centroids.to(self.centroids))
        self.has_centroids.fill_(True)
        sims = (emb.cpu() @ centroids.T).max(1).values
        return {"kmeans_obj": float(sims.mean())}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized teacher embedding v (what spherical k-means clusters)."""
        return F.normalize(self.teacher(x).float(), dim=-1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output of the student f_θ (for linear-probe / k-NN evaluation)."""
        return self.student[0](x).float()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior from the nearest centroid: one-hot, or softmax(cos / T) if soft_temperature > 0."""
        v = self.embed(x)
        if bool(self.has_centroids):
            c = self.centroids.float()
        else:
            c, _ = spherical_kmeans(v.cpu(), min(self.cfg.n_clusters, len(v)), iters=self.cfg.kmeans_iters,
                                    seed=self.cfg.kmeans_seed)
            c = c.to(v.device)
            if len(c) < self.cfg.n_clusters:  # fewer points than clusters: pad with unused centroids
                c = torch.cat([c, -torch.ones(self.cfg.n_clusters - len(c), c.shape[1], device=v.device)])
        sims = v @ F.normalize(c, dim=-1).T
        if self.cfg.soft_temperature > 0:
            return torch.softmax(sims / self.cfg.soft_temperature, dim=-1)
        return F.one_hot(sims.argmax(-1), self.cfg.n_clusters).float()


__all__ = ["MoCo", "MoCoConfig"]
