"""TCC: "You Never Cluster Alone" (Shen et al., NeurIPS 2021), from its supplement.

One categorical cluster variable per image, inferred by ``q(k|x)`` and reparametrized with one
Gumbel-softmax sample ``c`` per image per step, links two tracks trained end to end:

* instance level (supplement Eq. 1-2): maximize ``log p(i | x, c) - KL(q(k|x) || 1/K)``, a
  contrastive instance likelihood whose query ``z = L2Normalize(sum_k c_k mu_k + alpha v(x))``
  depends on the image and its sampled cluster; keys come from a momentum (EMA) teacher computing
  the same query on another view, and negatives from a single-track FIFO queue of past keys;
* cluster level (supplement Eq. 6): per view ``r_k = L2Normalize(sum_i c_i(k) h_i)`` (or CC's
  ``r_k = c[:, k]`` with ``cluster_repr="cc"``), contrasted across the two views with the other
  clusters as negatives.

Prediction is ``argmax_k q(k|x)`` on clean images; ``embed`` is the normalized embedding ``h``.

Only the supplement is available. Everything it does not fix is a field of :class:`TCCConfig`
whose comment says "mixlab's choice". The math lives in
:mod:`mixlab.mixture.tcc`.

Point data (``blobs2d``, backbone ``mlp``, augment ``none``): both views of a point would be
identical, which makes the instance task trivial and the two cluster views equal; the method then
adds Gaussian jitter of std ``point_jitter`` to each view (mixlab's choice; images are untouched).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixlab.methods.base import DataSpec, EpochContext, Method
from mixlab.methods.momentum import MomentumTeacher, Queue, check_teacher_momentum, make_teacher, shuffled_forward
from mixlab.metrics import duplicate_pairs, posterior_entropy
from mixlab.mixture import mmd_centers
from mixlab.mixture import tcc as M
from mixlab.mixture.contrastive import info_nce
from mixlab.nets import ProjectionHead, build_backbone
from mixlab.utils.checks import ConfigError, check_choice, check_positive
from mixlab.utils.precision import full_precision


@dataclass
class TCCConfig:
    """TCC's settings; where the supplement fixes nothing the comment says "mixlab's choice" or gives the rule."""

    n_clusters: int = 10
    embed_dim: int = 128            # d of h, v, mu (mixlab's choice; MiCE uses 128)
    proj_hidden: int = 512          # projection MLP hidden width (mixlab's choice)
    proj_layers: int = 2            # projection MLP depth (mixlab's choice)
    prototype_init: str = "mmd"     # "mmd" | "random": init of the learnable prototypes mu (mixlab's choice)
    # The supplement fixes none of the temperatures; each default below is derived from K by a rule
    # stated before any run (no score, no labels): see mixlab.mixture.tcc for the derivations.
    assign_temperature: float | None = None  # t in q(k|x) = softmax(<mu_k, h>/t); None = the largest t
    #                                 at which q can reach 0.99 on a simplex prototype (K = 10: 0.164)
    gumbel: bool = True             # False: deterministic variant c = softmax(log q / lambda), no noise
    gumbel_temperature: float | None = None  # lambda of the Gumbel-softmax; None = 1/(K-1), the largest
    #                                 lambda with a log-convex Concrete density (Maddison et al. 2017)
    kl: str = "sample"              # KL to the uniform prior: "sample" KL(q(k|x) || 1/K) per image, Eq. (2)
    #                                 as written | "marginal" KL(q_bar || 1/K) on the batch mean, the
    #                                 departure tested against it (E_x of the per-image KL = I(x;k) +
    #                                 KL(q_bar||U) also charges informative assignments)
    hard: bool = False              # straight-through one-hot c in training (mixlab's choice: soft c;
    #                                 the hard argmax is only the predicted label)
    share_noise: bool = False       # False: an independent eps for every encoding (query, key, both
    #                                 views). Supplement §A's "a single Gumbel random variable for each
    #                                 image" is one sample (vs its multiple-sampling baseline, §5.4), which
    #                                 independent noise keeps; sharing eps between query and key adds the
    #                                 same sum_k c_k mu_k to both, a match regardless of content (~1.1 nats
    #                                 of log p(i|x,c)). True: one eps per image shared by everything
    alpha: float = 1.0              # z = L2N(sum_k c_k mu_k + alpha v): image vs. cluster in the query
    #                                 (alpha=0 is the x-independent CC/VIB case, Eq. 5)
    instance_temperature: float = 1.0  # tau of the instance likelihood (MiCE App. D: 1.0; the supplement
    #                                 follows MiCE and gives none)
    queue_size: int = 16384         # single-track queue of past keys (MiCE App. D: 16384)
    teacher_momentum: float = 0.999  # EMA of the key encoder (MiCE App. D / MoCo: 0.999; profiles derive
    #                                 it for their steps per epoch, see mixlab/profiles/tcc.yaml)
    teacher_momentum_final: float | None = None  # None: constant; else m -> this by a half-cosine
    symmetric: bool = True          # instance loss both ways (x1->x2' and x2->x1') (mixlab's choice)
    kl_weight: float = 1.0          # beta on KL(q || 1/K); 1 is the ELBO of Eq. (1)-(2)
    instance_weight: float = 1.0    # weight of -ELBO (0: TCC without the instance level)
    cluster_weight: float = 1.0     # weight of the cluster loss (0: TCC without the cluster level)
    cluster_repr: str = "tcc"       # "tcc": r_k = L2N(sum_i c_i(k) h_i) | "cc": r_k = c[:, k] (Eq. 6)
    cluster_temperature: float | None = None  # tau_c of the cluster NT-Xent; the supplement gives none
    #                                 (§B.2.2 is CC's contrast, whose tau_c is 1.0). None = t's rule: the
    #                                 largest tau_c at which the positive can reach 0.99 (K = 10: 0.148)
    cluster_target: str = "online"  # view-2 r_k from the "online" network (symmetric, gradient both
    #                                 views) or the EMA "momentum" teacher (mixlab's choice)
    entropy_weight: float = 0.0     # optional -w * H(mean_i q(k|x_i)) anti-collapse term (off: not TCC)
    point_jitter: float = 0.5       # std of the Gaussian jitter per view for point data (mixlab's choice)

    def validate(self) -> None:
        if self.n_clusters < 2:
            raise ConfigError(f"method.n_clusters={self.n_clusters} must be >= 2")
        for name in ("embed_dim", "proj_hidden", "proj_layers", "assign_temperature", "gumbel_temperature",
                     "instance_temperature", "queue_size", "cluster_temperature"):
            check_positive(f"method.{name}", getattr(self, name))
        check_choice("method.kl", self.kl, ("marginal", "sample"))
        for name in ("alpha", "kl_weight", "instance_weight", "cluster_weight", "entropy_weight",
                     "point_jitter"):
            check_positive(f"method.{name}", getattr(self, name), allow_zero=True)
        check_teacher_momentum(self)
        check_choice("method.prototype_init", self.prototype_init, ("mmd", "random"))
        check_choice("method.cluster_repr", self.cluster_repr, ("tcc", "cc"))
        check_choice("method.cluster_target", self.cluster_target, ("online", "momentum"))
        if self.prototype_init == "mmd" and self.n_clusters > self.embed_dim + 1:
            raise ConfigError(f"method.embed_dim={self.embed_dim} is too small for prototype_init='mmd' with"
                              f" n_clusters={self.n_clusters}; use embed_dim >= {self.n_clusters - 1}")
        if self.instance_weight == 0 and self.cluster_weight == 0:
            raise ConfigError("method.instance_weight and method.cluster_weight are both 0; nothing to train")


class _Net(nn.Module):
    """Backbone -> projection -> ``h`` (normalized); ``v = L2Normalize(W h)`` (instance vector);
    ``prototypes`` ``mu`` ``[K, d]`` (normalized on use). The teacher is an EMA copy of all of it."""

    def __init__(self, cfg: TCCConfig, spec: DataSpec):
        super().__init__()
        self.backbone = build_backbone(spec.backbone, spec.in_channels, max(spec.image_size, 1))
        self.proj = ProjectionHead(self.backbone.out_dim, cfg.proj_hidden, cfg.embed_dim, n_layers=cfg.proj_layers)
        self.inst = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        if cfg.prototype_init == "mmd":
            seed = int(torch.randint(0, 2**31 - 1, ()))  # from torch's RNG, which the engine seeds
            mu = mmd_centers(cfg.n_clusters, cfg.embed_dim, seed=seed)
        else:
            mu = F.normalize(torch.randn(cfg.n_clusters, cfg.embed_dim), dim=-1)
        self.prototypes = nn.Parameter(mu.float())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.normalize(self.proj(self.backbone(x)).float(), dim=-1)
        with full_precision(x):
            v = F.normalize(self.inst(h), dim=-1)
        return h, v


class TCC(Method):
    """TCC with a Gumbel-softmax cluster variable, instance ELBO and cluster-level contrast."""

    Config = TCCConfig

    n_views = 2

    @property
    def cluster_temperature(self) -> float:
        """tau_c: the configured value, or :func:`~mixlab.mixture.tcc.cluster_contrast_temperature`."""
        t = self.cfg.cluster_temperature
        return t if t is not None else M.cluster_contrast_temperature(self.cfg.n_clusters)

    @property
    def assign_temperature(self) -> float:
        """t of q(k|x): the configured value, or :func:`~mixlab.mixture.tcc.simplex_assign_temperature`."""
        t = self.cfg.assign_temperature
        return t if t is not None else M.simplex_assign_temperature(self.cfg.n_clusters)

    @property
    def gumbel_temperature(self) -> float:
        """lambda of the Gumbel-softmax: the configured value, or 1/(K-1) (:func:`~mixlab.mixture.tcc.concrete_temperature`)."""
        lam = self.cfg.gumbel_temperature
        return lam if lam is not None else M.concrete_temperature(self.cfg.n_clusters)

    def __init__(self, cfg: TCCConfig, spec: DataSpec):
        super().__init__(cfg, spec)
        self.student = _Net(cfg, spec)
        self.teacher = make_teacher(self.student)
        self.ema = MomentumTeacher(cfg.teacher_momentum, cfg.teacher_momentum_final)
        self.queue = Queue(cfg.queue_size, (cfg.embed_dim,))
        self._counts: Tensor | None = None  # argmax-q counts of the epoch's training views (balance log)
        self._qstats: Tensor | None = None  # sums of H(q|x), max q, [max q < 1/2], count over the same views

    # ---- one step ---------------------------------------------------------------------------
    def _sample(self, log_q: Tensor, noise: Tensor | None) -> Tensor:
        cfg = self.cfg
        if not cfg.gumbel:
            noise = None
        elif noise is None or not cfg.share_noise:
            noise = M.sample_gumbel(log_q.shape, device=log_q.device)
        return M.gumbel_softmax(log_q, self.gumbel_temperature, noise=noise, hard=cfg.hard)

    def _encode(self, net: _Net, x: Tensor, noise: Tensor | None):
        h, v = shuffled_forward(net, x) if net is self.teacher else net(x)  # shuffle-BN for the keys
        with full_precision(x):
            log_q = M.assignment_log_probs(h, net.prototypes, self.assign_temperature)
            c = self._sample(log_q, noise)
            z = M.instance_query(c, net.prototypes, v, self.cfg.alpha)
        return h, log_q, c, z

    def _views(self, views: list[Tensor]) -> list[Tensor]:
        if views[0].dim() == 2 and self.cfg.point_jitter > 0:  # point data: identical views otherwise
            return [v + self.cfg.point_jitter * torch.randn_like(v) for v in views]
        return views

    def training_step(self, views: list[Tensor], idx: Tensor, stage: str) -> dict:
        cfg = self.cfg
        x1, x2 = self._views(views)
        B, K = x1.shape[0], cfg.n_clusters
        noise = M.sample_gumbel((B, K), device=x1.device) if cfg.gumbel else None  # one eps per image
        h1, log_q1, c1, z1 = self._encode(self.student, x1, noise)
        h2, log_q2, c2, z2 = self._encode(self.student, x2, noise)
        symmetric = cfg.symmetric and cfg.instance_weight > 0
        with torch.no_grad():  # momentum keys: the same query function on the EMA network
            kh2, _, kc2, k2 = self._encode(self.teacher, x2, noise)
            k1 = self._encode(self.teacher, x1, noise)[3] if symmetric else None
        with full_precision(x1):
            negatives = self.queue()
            # instance level: -ELBO of supplement Eq. (2), one Gumbel sample per image
            ll = info_nce(z1, k2, negatives, cfg.instance_temperature, normalize=False)
            kl = M.assignment_kl(log_q1, cfg.kl)
            if symmetric:
                ll = 0.5 * (ll + info_nce(z2, k1, negatives, cfg.instance_temperature, normalize=False))
                kl = 0.5 * (kl + M.assignment_kl(log_q2, cfg.kl))
            loss_inst = -(ll - cfg.kl_weight * kl).mean()
            # cluster level: supplement Eq. (6), view 1 against view 2
            pi2, f2 = (c2, h2) if cfg.cluster_target == "online" else (kc2, kh2)
            r1 = M.cluster_representations(c1, h1, cfg.cluster_repr)
            r2 = M.cluster_representations(pi2, f2, cfg.cluster_repr)
            loss_clu = M.cluster_contrastive_loss(r1, r2, self.cluster_temperature)
            ent = M.marginal_entropy(torch.cat([log_q1, log_q2]))
            loss = cfg.instance_weight * loss_inst + cfg.cluster_weight * loss_clu - cfg.entropy_weight * ent
        self.queue.push(torch.cat([k2, k1]) if symmetric else k2)  # the losses read a copy of the queue
        with torch.no_grad():
            counts = torch.bincount(log_q1.argmax(1), minlength=K).float()
            self._counts = counts if self._counts is None else self._counts + counts
            lq = torch.cat([log_q1, log_q2]).float()
            q_max = lq.max(1).values.exp()
            qstats = torch.stack([posterior_entropy(lq, log=True).sum(), q_max.sum(), (q_max < 0.5).sum().float(),
                                  torch.tensor(float(len(lq)), device=lq.device)])
            self._qstats = qstats if self._qstats is None else self._qstats + qstats
        return {"loss": loss, "inst_loglik": ll.mean().detach(), "kl": kl.mean().detach(),
                "loss_instance": loss_inst.detach(), "loss_cluster": loss_clu.detach(),
                "marginal_entropy": ent.detach()}

    def after_step(self, progress) -> None:
        self.ema.update_(self.teacher, self.student, progress)

    def start_epoch(self, epoch: int) -> None:
        self._counts = None
        self._qstats = None

    DUPLICATE_COSINE = 0.95   # prototypes closer than this are logged as duplicates
    FLAT_FRACTION = 0.01      # q is flat when mean KL(q || 1/K) = log K - mean H(q|x) < 1 % of log K
    #                           (the rule of mixlab.metrics.assignment_confidence)

    def end_epoch(self, ctx: EpochContext) -> dict:
        """Label-free diagnostics from the epoch's training views (no extra pass, no RNG, no state
        changed), all logged per epoch:

        * balance of the cluster sizes (argmax q): entropy of the size distribution (log K = perfectly
          balanced, 0 = one cluster) and the largest cluster's fraction;
        * ``dup_prototype_pairs``: prototype pairs with cosine > 0.95 (duplicates split a cluster's
          mass evenly; neither loss term sees them);
        * ``train_q_entropy`` = mean H(q|x) (nats, of log K), ``train_q_max`` = mean max_k q(k|x) and
          ``train_q_max_below_half`` = fraction of views with max q < 1/2, over both views;
        * ``collapsed``: duplicate prototypes exist, or q is flat (log K - mean H(q|x) < 1 % of log K,
          the rule of :func:`mixlab.metrics.assignment_confidence`)."""
        K = self.cfg.n_clusters
        dup = duplicate_pairs(self.student.prototypes.detach(), self.DUPLICATE_COSINE)
        out = {"dup_prototype_pairs": dup}
        if self._counts is None:
            return out
        counts = ctx.all_reduce(self._counts)
        p = counts / counts.sum().clamp_min(1)
        ent = -(p * torch.log(p.clamp_min(1e-12))).sum()
        out.update({"size_entropy": float(ent), "size_entropy_max": math.log(K),
                    "train_max_cluster_frac": float(p.max())})
        q_ent, q_max, below, n = (float(v) for v in ctx.all_reduce(self._qstats))
        n = max(n, 1.0)
        out.update({"train_q_entropy": q_ent / n, "train_q_max": q_max / n, "train_q_max_below_half": below / n})
        flat = math.log(K) - q_ent / n < self.FLAT_FRACTION * math.log(K)
        out["collapsed"] = bool(dup > 0 or flat)
        return out

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        h, _ = self.student(x)
        with full_precision(x):
            return M.assignment_log_probs(h, self.student.prototypes, self.assign_temperature).exp()

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The L2-normalized instance embedding ``h`` (what ``r_k`` aggregates and ``q`` reads)."""
        return self.student(x)[0]

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """Backbone output (for linear-probe / k-NN evaluation)."""
        return self.student.backbone(x).float()


__all__ = ["TCC", "TCCConfig"]
