"""SiamMM: a von Mises-Fisher mixture on a Siamese network (Wang, Huang & Liang 2024).

Paper: Wang, Huang & Liang (Meta AI), "SiamMM: A Mixture Model Perspective on Deep Unsupervised Learning", arXiv 2024; equation numbers below refer to it. No public code exists,
so every choice the paper leaves open is a ``Config`` field, marked "mixlab's choice".

Networks (§3.1, §5.1): encoder E = backbone + 3-layer projection MLP, prediction MLP g (2 layers),
momentum encoder E_m = EMA of E (MoCo v3 / BYOL). Embeddings v = g(E(x)) (online) and
v^m = E_m(x) (momentum) are L2-normalised; the mixture lives on the sphere (vMF, Eq. 3-4).

Algorithm 1 (App. A), mapped onto the engine's hooks::

    Initial: centroids {r_k}                       end of epoch 1: spherical k-means (faiss) with
                                                   K = n_clusters on the momentum embeddings of
                                                   the whole (clean) dataset, then E- and M-step
    while not max epochs:
      E-step: A(.) by clustering on the            end_epoch(e-1): k-means on this epoch's
              centroids of the last iteration        embeddings warm-started from the previous
                                                     centroids (``centroid_update="consistent"``,
                                                     §4.3) or re-initialised (``"reinit"``); A(x) =
                                                     the H nearest centroids (faiss), stored per
                                                     dataset index in the ``assign`` buffer
      M-step: mu_k (Eq. 5-6), kappa_k (Eq. 7 or     end_epoch(e-1): ``vmf_mle`` / ``pca_kappa``
              Eq. 16 with PCA)                      on the members of each cluster
      for x in X:                                   training_step(views, idx):
        x1, x2 = aug(x), aug(x)                       (the engine's augmenter)
        v1, v2 = g(E(x1)), g(E(x2))
        v1m, v2m = E_m(x1), E_m(x2)
        L(v1, v2, v1m, v2m | mu_A(x), kappa_A(x))      Eq. 13 = L^H (Eq. 9, weights Eq. 10) +
                                                       L_inst (Eq. 12)
        update(E, g); update(E_m)                     engine's optimizer step; after_step (EMA)
      Merge: centroids by Eq. 11; update K          end_epoch(e): ``merge_clusters`` (ζ), then
                                                    the E/M-steps of epoch e+1 right after

Because the engine hands the method the whole dataset only at epoch ends, the "Initial"
centroids are computed at the end of epoch 1 (after one epoch of L_inst alone: §4.5 notes that
clustering "may fail to converge at the beginning"); the cluster loss is used from
``cluster_start_epoch`` (>= 2) on. With ``inst_loss="none"`` (the "w/o L_inst" ablation, §6.1) the
first epoch leaves the network untouched, so the first centroids are those of the randomly
initialised network, as in Algorithm 1.

K changes during training (merging); the centroid buffers change shape with it and
:meth:`load_state_dict` resizes them before loading, so a resumed run continues with its K.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mixlab.methods.base import DataSpec, EpochContext, Method, make_optimizer
from mixlab.methods.momentum import MomentumTeacher, check_teacher_momentum, make_teacher
from mixlab.metrics import participation_ratio
from mixlab.mixture.kmeans import spherical_kmeans
from mixlab.mixture.merge import distance_threshold, merge_clusters
from mixlab.mixture.siammm import (
    INSTANCE_LOSSES,
    KAPPA_MODES,
    cluster_loss,
    log_assignment_weights,
    nce1_loss,
    nce2_loss,
    symmetric_instance_loss,
    vmf_mixture_em_step,
    vmf_mixture_log_posterior,
)
from mixlab.mixture.vmf import vmf_log_normalizer
from mixlab.nets import ProjectionHead, build_backbone
from mixlab.nets.lars import LARS
from mixlab.utils import distributed as dist
from mixlab.utils.checks import ConfigError, check_choice, check_positive
from mixlab.utils.precision import full_precision

# ---- memory: what K0 needs beyond the networks, checked before training ----------------------------
_GIB = 2.0**30
_MAX_DENSE = 8192      # merge_clusters' default: up to this K all K(K-1)/2 pair distances are used
_EM_CHUNK = 8192       # points per block of the M-step's accumulation (vmf_mixture_em_step's chunk_size)
_SIZE_LIST_MAX = 64    # the cluster sizes are logged as a list up to this K


def mixture_memory_bytes(n: int, d: int, k0: int, h: int = 5) -> int:
    """Bytes SiamMM's end-of-epoch work and evaluation need at K = min(k0, n) clusters on ``n`` points
    of embedding dimension ``d`` with ``h`` nearest centroids, beyond the networks and the images.

    What stays O(N K) or O(K^2) after the chunked E/M step: the engine's evaluation holds the [N, K]
    float32 posteriors twice (the batches and their concatenation) and a float16 copy (10 N K bytes;
    K is still K0 at epoch 1's evaluation); merging keeps the pairs below its threshold, at most
    K(K-1)/2 of 24 bytes (12 K^2) up to 8192 centroids. O(N d + N H + K d): the embeddings and their
    float64 copies (32 N d), the H nearest and their weights (28 N H), one M-step block
    (16 chunk H d), centroids and k-means buffers; 64 MiB of blocked pair distances."""
    k = max(1, min(int(k0), int(n)))
    n_k = 10 * n * k
    k_k = 12 * k * (k - 1) if k <= _MAX_DENSE else 24 * 16 * k
    n_d = 32 * n * d + 28 * n * h + 16 * _EM_CHUNK * h * d + 40 * k * d + 12 * n
    return int(n_k + k_k + n_d + 64 * 2**20)


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no /proc/meminfo)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_mixture_memory(n: int, d: int, k0: int, h: int = 5, available: int | None = None) -> None:
    """Raise a one-line :class:`ConfigError` before training when :func:`mixture_memory_bytes` exceeds
    the available memory (``available`` bytes, default MemAvailable), naming both and the largest
    ``method.n_clusters`` that fits. Silent where the available memory is unknown."""
    need = mixture_memory_bytes(n, d, k0, h)
    avail = available_memory_bytes() if available is None else int(available)
    if avail is None or need <= avail:
        return
    lo, hi = 0, max(1, min(int(k0), int(n)))  # largest K with need(K) <= avail (need grows with K)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mixture_memory_bytes(n, d, mid, h) <= avail:
            lo = mid
        else:
            hi = mid - 1
    fix = (f"lower method.n_clusters to at most {lo}" if lo >= 1 else "lower method.n_clusters") + \
        " or use fewer images (train.subset), or free memory"
    raise ConfigError(f"method.n_clusters={k0} needs about {need / _GIB:.1f} GiB for SiamMM's mixture on N={n}"
                      f" points (d={d}: [N, K] posteriors of an evaluation 10 N K bytes, merging's pairs 12 K^2,"
                      f" E/M step O(N d)) but only {avail / _GIB:.1f} GiB is available (MemAvailable,"
                      f" /proc/meminfo); {fix}")


@dataclass
class SiamMMConfig:
    """SiamMM's own settings. Paper values (ImageNet, §5.1) are given where the paper has them."""

    # -- mixture -------------------------------------------------------------------------------
    n_clusters: int = 50              # *initial* K of Algorithm 1 (paper: 100k on ImageNet, 50k recommended
                                      # in §6.4); the current K (after merging) is ``SiamMM.n_clusters``
    n_nearest: int = 5                # H of Eq. 9: soft assignment over the H nearest centroids (paper: 5);
                                      # H = 1 is hard assignment (Eq. 8)
    tau: float = 0.02                 # temperature of the weights pi_k (Eq. 10; paper: 0.02)
    alpha_mode: str = "uniform"       # alpha_k of Eq. 10: "uniform" (paper: alpha = 1) or "size" (the
                                      # cluster's fraction of the data: "a measure of the size of cluster")
    pi_grad: bool = False             # mixlab's choice: pi (Eq. 10) is treated as fixed E-step weights
                                      # (detached); True lets the gradient flow through pi as well
    loss_normalizer: bool = False     # add log c_d(kappa_k) inside Eq. 9 (the exact vMF mixture NLL); the
                                      # paper's Eq. 9 omits it (False)
    kappa_mode: str = "pca"           # "mle" (Eq. 7), "pca" (Eq. 16, App. C.1; the paper's setting),
                                      # "shared" (every cluster gets the mean of the Eq. 16 estimates) or
                                      # "constant" (= kappa_const). §6.5 ablates "per-cluster kappa vs a
                                      # constant number" without giving the number: "shared" is mixlab's
                                      # version of that ablation (same scale, no per-cluster variation)
    pca_dim: int = 150                # d^PCA of Eq. 16 (paper: 150 of 256 dims), capped at proj_dim
    kappa_const: float = 10.0         # kappa of every cluster when kappa_mode="constant" (paper: unspecified)
    kappa_max: float | None = None    # mixlab's choice: optional cap on kappa-hat (Eq. 7 diverges as
                                      # ||r|| -> 1, e.g. for a single-point cluster); None = no cap
    mstep: str = "hard"               # responsibilities p(k|v) in Eq. 5: "hard" (the k-means assignment,
                                      # Algorithm 1's clustering E-step) or "soft" (pi over the H nearest,
                                      # Eq. 10, on the clustered embeddings); mixlab's choice: hard
    cluster_features: str = "encoder"  # embeddings clustered in the E-step: "encoder" E(x), backbone +
                                      # projection (§3.2: v_i = E(x_i)); "momentum" E_m(x) (PCL's
                                      # convention) or "online" g(E(x)) as ablations
    cluster_on: str = "prediction"    # which v enters Eq. 9: "prediction" g(E(x)) (as in Algorithm 1's
                                      # L(v1, v2, v1m, v2m | mu, kappa)) or "projection" E(x)
    # -- centroid update (§4.3), merging (§4.2) ---------------------------------------------------
    centroid_update: str = "consistent"  # "consistent": initialise once, warm-start k-means from the
                                      # previous epoch's centroids; "reinit": random k-means each epoch
    kmeans_iters: int = 20            # Lloyd iterations per epoch (mixlab's choice; faiss default 25;
                                      # 0 = assign to last epoch's centroids without re-clustering)
    kmeans_restarts: int = 1          # k-means restarts (faiss nredo) for random initialisations (the
                                      # initial one, and every epoch with "reinit"; PCL/§4.3: 5)
    merge: bool = True                # merge clusters after every epoch (Eq. 11); False = fixed K
    zeta: float = -1.2                # merging threshold of Eq. 11 (paper §5: -1.2, "the 10th percentile")
    merge_threshold: str = "first"    # when merging stops (the paper is silent): "first" = the distance
                                      # E{Z} + zeta SE{Z} of the first merge's centroids (the over-seeded
                                      # K0) is kept, later epochs merge only pairs closer than that, and K
                                      # settles by itself; "each" = Eq. 11 re-standardised every epoch,
                                      # which always finds pairs below zeta and merges to min_clusters
    merge_mode: str = "pairs"         # see mixlab.mixture.merge: "pairs" (closest-first disjoint pairs,
                                      # <= K/2 merges per epoch) or "components" (transitive)
    min_clusters: int = 2             # mixlab's choice: no merging once K <= min_clusters, and a merge
                                      # that would go below it is skipped
    merge_start_epoch: int = 0        # first epoch after which merging happens; 0 = cluster_start_epoch
    # -- losses (§4.5, §6.7) ----------------------------------------------------------------------
    cluster_loss: str = "mle"         # "mle" = L^H (Eq. 9), "nce1" (Eq. 14), "nce2" (Eq. 15) -- the nce
                                      # variants replace L^H and use H = 1 as in §6.7 -- or "none"
    nce_negatives: int = 0            # |A_-| of Eq. 14: 0 = all other centroids, else that many sampled
                                      # (paper: 16000 of 100k)
    cluster_weight: float = 1.0       # weight of the cluster term; Eq. 13 = 1
    kappa_normalize: bool = False     # ablation only ("kappa-normalised L^H"): divide the cluster term by
                                      # the epoch's mean kappa-hat. Off by default: Eq. 13 adds L^H and
                                      # L_inst unweighted, and LARS rescales a layer's whole step, not the
                                      # ratio of the two terms, so it does not license this division
    inst_loss: str = "byol"           # D of Eq. 1: "byol" (2 - 2 cos, mixlab's default), "cosine" (SimSiam),
                                      # "infonce" (MoCo v3 with in-batch negatives, Table 4 "w/ n"), "none"
    inst_tau: float = 0.2             # temperature of inst_loss="infonce" (MoCo v3: 0.2)
    cluster_start_epoch: int = 2      # first epoch trained with the cluster loss (>= 2, see module doc)
    # -- networks (§5.1: 3-layer projection, 2-layer prediction, BN, 4096 hidden, 256 out) --------
    proj_dim: int = 256
    proj_hidden: int = 4096
    proj_layers: int = 3
    pred_hidden: int = 4096
    pred_layers: int = 2
    teacher_momentum: float = 0.99    # momentum encoder (MoCo v3: 0.99 -> 1 by cosine; paper: unspecified)
    teacher_momentum_final: float | None = 1.0  # m -> 1 by a half-cosine over training; None = constant
    lars: bool = False                # LARS optimizer (paper: LARS, trust coefficient 0.001, MoCo v3's
                                      # variant: no weight decay/adaptation for biases and BN)

    def validate(self) -> None:
        for name in ("n_clusters", "n_nearest", "tau", "pca_dim", "kappa_const", "proj_dim", "proj_hidden",
                     "proj_layers", "pred_hidden", "pred_layers", "kmeans_restarts", "inst_tau", "min_clusters"):
            check_positive(f"method.{name}", getattr(self, name))
        for name in ("kmeans_iters", "nce_negatives", "cluster_weight", "merge_start_epoch"):
            check_positive(f"method.{name}", getattr(self, name), allow_zero=True)
        check_positive("method.kappa_max", self.kappa_max)
        check_choice("method.alpha_mode", self.alpha_mode, ("uniform", "size"))
        check_choice("method.kappa_mode", self.kappa_mode, KAPPA_MODES)
        check_choice("method.mstep", self.mstep, ("hard", "soft"))
        check_choice("method.cluster_features", self.cluster_features, ("encoder", "momentum", "online"))
        check_choice("method.cluster_on", self.cluster_on, ("prediction", "projection"))
        check_choice("method.centroid_update", self.centroid_update, ("consistent", "reinit"))
        check_choice("method.merge_mode", self.merge_mode, ("pairs", "components"))
        check_choice("method.merge_threshold", self.merge_threshold, ("first", "each"))
        check_choice("method.cluster_loss", self.cluster_loss, ("mle", "nce1", "nce2", "none"))
        check_choice("method.inst_loss", self.inst_loss, INSTANCE_LOSSES)
        if self.cluster_start_epoch < 2:
            raise ConfigError(f"method.cluster_start_epoch={self.cluster_start_epoch} must be >= 2: the first"
                              " centroids are computed at the end of epoch 1")
        check_teacher_momentum(self)
        if self.inst_loss == "none" and self.cluster_loss == "none":
            raise ConfigError("method.inst_loss and method.cluster_loss are both 'none': nothing to train")


class SiamMM(Method):
    """SiamMM (see the module docstring for Algorithm 1 step by step)."""

    Config = SiamMMConfig
    n_views = 2
    _DYNAMIC = ("mu", "kappa", "log_frac", "assign")  # buffers whose shape follows K (fitted on rank 0)

    # §5.1's settings in every profile: LARS, weight decay 1e-6, lr = 0.6 x batch / 256 (the paper's
    # linear rule, applied to each profile's batch size), warm-up 10% of the epochs (10 of 100);
    # Eq. 13 unweighted; zeta = -1.2 (§5); K0 = 100, well above any plausible K on Fashion-MNIST
    # (the class count plays no part: K is whatever merging leaves); H = 5, tau = 0.02, alpha = 1.
    # The budget forces only the widths (proj/pred MLPs, d^PCA = 150/256 of proj_dim).

    def __init__(self, cfg: SiamMMConfig, spec: DataSpec):
        super().__init__(cfg, spec)
        check_mixture_memory(spec.n_samples, cfg.proj_dim, cfg.n_clusters, cfg.n_nearest)  # before training
        size = spec.image_size or 1  # point data: the "mlp" backbone takes in_channels * 1 * 1 features
        backbone = build_backbone(spec.backbone, spec.in_channels, size)
        projector = ProjectionHead(backbone.out_dim, cfg.proj_hidden, cfg.proj_dim, n_layers=cfg.proj_layers)
        self.encoder = nn.Sequential(backbone, projector)                       # E
        self.predictor = ProjectionHead(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim,
                                        n_layers=cfg.pred_layers)              # g
        self.encoder_m = make_teacher(self.encoder)                            # E_m (no gradients)
        d, N = cfg.proj_dim, spec.n_samples
        self.register_buffer("mu", torch.zeros(0, d))                # [K, d] mean directions (Eq. 6)
        self.register_buffer("kappa", torch.zeros(0))                # [K] concentrations (Eq. 7 / 16)
        self.register_buffer("log_frac", torch.zeros(0))             # [K] log cluster fractions (mixing weights)
        self.register_buffer("assign", torch.zeros(N, 0, dtype=torch.long))  # [N, H] the H nearest, best first
        self.register_buffer("merge_dist", torch.tensor(float("nan"), dtype=torch.float64))  # "first" rule
        self.register_buffer("epoch_now", torch.zeros((), dtype=torch.long))
        self.ema = MomentumTeacher(cfg.teacher_momentum, cfg.teacher_momentum_final)

    # ---- bookkeeping ----------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        """The current K (after merging); the configured initial K before the first clustering."""
        return self.mu.shape[0] if self.initialized else self.cfg.n_clusters

    @property
    def kappa_dim(self) -> int:
        """The dimension kappa-hat belongs to, hence the d of its c_d(kappa) (Eq. 4): d^PCA for
        Eq. 16 ("pca", "shared"), the embedding dimension otherwise (Eq. 7, "constant")."""
        if self.cfg.kappa_mode in ("pca", "shared"):
            return min(self.cfg.pca_dim, self.cfg.proj_dim)
        return self.cfg.proj_dim

    @property
    def initialized(self) -> bool:
        return self.mu.shape[0] > 0

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Resize the K-dependent buffers to the checkpoint's shapes, then load (resume after merging)."""
        for name in self._DYNAMIC:
            if name in state_dict and state_dict[name].shape != self._buffers[name].shape:
                old = self._buffers[name]
                self._buffers[name] = torch.empty(state_dict[name].shape, dtype=old.dtype, device=old.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def configure_optimizers(self, train):
        params = self.optimizer_groups()["main"]
        if self.cfg.lars:
            return {"main": LARS(params, lr=train.lr, weight_decay=train.weight_decay, momentum=train.momentum)}
        return {"main": make_optimizer(train, params)}

    def start_epoch(self, epoch: int) -> None:
        self.epoch_now.fill_(epoch)

    # ---- training ---------------------------------------------------------------------------------
    def _cluster_active(self) -> bool:
        return (self.cfg.cluster_loss != "none" and self.initialized
                and int(self.epoch_now) >= self.cfg.cluster_start_epoch)

    def training_step(self, views, idx, stage):
        cfg = self.cfg
        active = self._cluster_active()
        if cfg.inst_loss == "none" and not active:
            # nothing to train before the first centroids: a zero loss that touches every parameter
            zero = sum(p.sum() for p in self.optimizer_groups()["main"]) * 0.0
            return {"loss": zero}
        x1, x2 = views
        z1, z2 = self.encoder(x1), self.encoder(x2)          # E(x): projection outputs
        v1, v2 = self.predictor(z1), self.predictor(z2)      # v = g(E(x))
        with torch.no_grad():
            v1m, v2m = self.encoder_m(x1), self.encoder_m(x2)  # v^m = E_m(x)
        with full_precision(v1):  # kappa ~ 100s: logits kappa mu^T v need float32, not bf16
            return self._losses(v1, v2, v1m, v2m, z1, z2, idx, active)

    def _losses(self, v1, v2, v1m, v2m, z1, z2, idx, active) -> dict:
        cfg = self.cfg
        out = {}
        loss = torch.zeros((), device=v1.device)
        if cfg.inst_loss != "none":
            l_inst = symmetric_instance_loss(v1, v2, v1m, v2m, cfg.inst_loss, cfg.inst_tau).mean()  # Eq. 12
            loss = loss + l_inst
            out["loss_inst"] = l_inst.detach()
        if active:
            a = self.assign[idx.to(self.assign.device)]      # [B, H] A(x) from this epoch's E-step
            targets = (v1, v2) if cfg.cluster_on == "prediction" else (z1, z2)
            l_clu = sum(self._cluster_term(v, a) for v in targets) / len(targets)  # mean over the 2 views
            weight = cfg.cluster_weight / (float(self.kappa.mean()) if cfg.kappa_normalize else 1.0)
            loss = loss + weight * l_clu                     # Eq. 13
            out["loss_cluster"] = l_clu.detach()
        out["loss"] = loss
        return out

    def _cluster_term(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Mean cluster loss of one view: L^H (Eq. 9-10), L^nce1 (Eq. 14) or L^nce2 (Eq. 15)."""
        cfg = self.cfg
        if cfg.cluster_loss == "nce1":
            neg = None
            if cfg.nce_negatives and cfg.nce_negatives < self.n_clusters - 1:
                neg = torch.randint(0, self.n_clusters, (v.shape[0], cfg.nce_negatives), device=v.device)
            return nce1_loss(v, self.mu, self.kappa, a[:, 0], neg).mean()
        if cfg.cluster_loss == "nce2":
            return nce2_loss(v, self.mu, self.kappa, a[:, 0]).mean()
        mu, kappa = self.mu[a], self.kappa[a]                # [B, H, d], [B, H]
        log_alpha = self.log_frac[a] if cfg.alpha_mode == "size" else torch.zeros_like(kappa)
        vv = v if cfg.pi_grad else v.detach()
        log_pi = log_assignment_weights(vv, mu, log_alpha, cfg.tau)  # Eq. 10
        log_c = None
        if cfg.loss_normalizer:
            log_c = vmf_log_normalizer(self.kappa_dim, self.kappa.double()).float()[a]
        return cluster_loss(v, mu, kappa, log_pi, log_c).mean()  # Eq. 9

    @torch.no_grad()
    def after_step(self, progress) -> None:
        """Momentum update of E_m (Eq. 1's momentum encoder) on the engine's step count."""
        self.ema.update_(self.encoder_m, self.encoder, progress)

    # ---- end of epoch: Merge (epoch e), then E- and M-step (for epoch e + 1) ----------------------
    def _cluster_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embeddings the E-step clusters (``cluster_features``), L2-normalised."""
        if self.cfg.cluster_features == "encoder":
            return F.normalize(self.encoder(x).float(), dim=1)
        if self.cfg.cluster_features == "momentum":
            return F.normalize(self.encoder_m(x).float(), dim=1)
        return F.normalize(self.predictor(self.encoder(x)).float(), dim=1)

    def _seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,)).item())  # torch RNG: restored on resume

    def end_epoch(self, ctx: EpochContext) -> dict:
        logs: dict = {}
        if dist.is_main():  # faiss k-means is not bit-reproducible across processes: rank 0 embeds
            z = ctx.map_dataset(self._cluster_embed).cpu()   # and fits, every rank takes its mixture (same K)
            logs = self._fit_mixture(z, ctx.epoch)
            logs["effective_dim"] = participation_ratio(z)  # of the clustered (normalised) embeddings
        if dist.is_distributed():
            for k, v in dist.broadcast_tensors({k: self._buffers[k] for k in self._DYNAMIC}).items():
                self._buffers[k] = v.to(self.mu.device)
        logs.update(self._stats())
        ctx.log(f"SiamMM: K={logs['K']} kappa mean {logs['kappa_mean']:.1f}"
                f" [{logs['kappa_min']:.1f}, {logs['kappa_max']:.1f}], largest cluster"
                f" {logs['em_max_cluster_frac']:.1%}"
                + (f", effective dim {logs['effective_dim']:.2f}" if "effective_dim" in logs else ""))
        return logs

    def _fit_mixture(self, z: torch.Tensor, epoch: int) -> dict:
        """Merge (Eq. 11), cluster (§4.3) and fit the vMF mixture (Eq. 5-7) on this epoch's embeddings."""
        cfg = self.cfg
        logs: dict = {}
        merge_from = cfg.merge_start_epoch or cfg.cluster_start_epoch
        if not self.initialized:                              # "Initial: cluster centroids"
            K = min(cfg.n_clusters, len(z))
            centroids, _ = spherical_kmeans(z, K, iters=max(cfg.kmeans_iters, 1), seed=self._seed(),
                                            nredo=cfg.kmeans_restarts)
        else:
            centroids = self.mu.cpu()
            logs["merged"] = 0
            if cfg.merge and epoch >= merge_from and len(centroids) > cfg.min_clusters:  # Eq. 11
                sizes = self.log_frac.cpu().double().exp()
                merged, _ = merge_clusters(centroids, cfg.zeta, sizes=sizes, mode=cfg.merge_mode,
                                           threshold=self._merge_distance(centroids))
                if len(merged) >= cfg.min_clusters:
                    logs["merged"] = len(centroids) - len(merged)
                    centroids = merged
            centroids = self._cluster(z, centroids)           # E-step clustering (§4.3)
        self._estep_mstep(z, centroids)
        return logs

    def _merge_distance(self, centroids: torch.Tensor) -> float | None:
        """The fixed distance of ``merge_threshold="first"`` (measured at the first merge, then
        kept, also across a resume), or None for "each" (Eq. 11 on this epoch's centroids)."""
        if self.cfg.merge_threshold == "each":
            return None
        if torch.isnan(self.merge_dist):
            self.merge_dist.fill_(distance_threshold(centroids, self.cfg.zeta))
        return float(self.merge_dist)

    def _cluster(self, z: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """k-means on this epoch's embeddings: warm-started from ``previous`` (consistent, §4.3) or
        randomly re-initialised with the same K; ``kmeans_iters=0`` keeps ``previous`` as is."""
        cfg, K = self.cfg, len(previous)
        if cfg.centroid_update == "reinit":
            return spherical_kmeans(z, K, iters=max(cfg.kmeans_iters, 1), seed=self._seed(),
                                    nredo=cfg.kmeans_restarts)[0]
        if cfg.kmeans_iters == 0:
            return F.normalize(previous.float(), dim=1)
        return spherical_kmeans(z, K, iters=cfg.kmeans_iters, seed=self._seed(), init=previous)[0]

    def _estep_mstep(self, z: torch.Tensor, centroids: torch.Tensor) -> None:
        """E- and M-step of the vMF mixture (:func:`mixlab.mixture.siammm.vmf_mixture_em_step`)."""
        cfg = self.cfg
        fit = vmf_mixture_em_step(z, centroids, n_nearest=cfg.n_nearest, mstep=cfg.mstep, alpha_mode=cfg.alpha_mode,
                                  tau=cfg.tau, kappa_mode=cfg.kappa_mode, pca_dim=cfg.pca_dim,
                                  kappa_const=cfg.kappa_const, kappa_max=cfg.kappa_max)
        for name, value in fit.items():
            self._buffers[name] = value.to(self.mu.device)

    def _stats(self) -> dict:
        """Per-epoch log of the fitted mixture (label-free; reads the buffers, changes nothing): K (every
        component has a nearest member: the E-step drops empty ones), kappa, the largest component's
        share of p(k|v) and, up to 64 clusters, the sizes (points whose nearest centroid is k, largest
        first)."""
        k = self.kappa
        frac = self.log_frac.exp()
        K = int(self.mu.shape[0])
        out = {"K": K, "kappa_mean": float(k.mean()), "kappa_min": float(k.min()),
               "kappa_max": float(k.max()), "em_max_cluster_frac": float(frac.max())}
        if K <= _SIZE_LIST_MAX and self.assign.shape[1] > 0:
            sizes = torch.bincount(self.assign[:, 0].cpu(), minlength=K)
            out["em_cluster_sizes"] = sorted(sizes.tolist(), reverse=True)
        return out

    # ---- inference ------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised embedding the mixture is fitted on (momentum encoder by default)."""
        return self._cluster_embed(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen backbone features of the online encoder (for linear probe / k-NN evaluation)."""
        return self.encoder[0](x).float()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior p(k | z) over the current K clusters of the vMF mixture (Eq. 2-4), with mixing
        weights = the cluster fractions of the last E-step: softmax_k(log pi_k + log c_d(kappa_k)
        + kappa_k mu_k^T z), in log space, with d = :attr:`kappa_dim` (c_d of a PCA-kappa is that
        of a d^PCA-dimensional vMF). Before the first clustering: uniform over n_clusters."""
        z = self.embed(x)
        if not self.initialized:
            return torch.full((len(x), self.cfg.n_clusters), 1.0 / self.cfg.n_clusters, device=z.device)
        with full_precision(z):
            return vmf_mixture_log_posterior(z, self.mu, self.kappa, self.log_frac,
                                             kappa_dim=self.kappa_dim).exp()


__all__ = ["SiamMM", "SiamMMConfig", "check_mixture_memory"]
