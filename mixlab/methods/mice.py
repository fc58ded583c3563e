"""MiCE: Mixture of Contrastive Experts (Tsai, Li & Zhu, "MiCE: Mixture of Contrastive Experts for
Unsupervised Image Clustering", ICLR 2021).

Model (§4). A gating network g_ψ and a student f_θ share one backbone; the student has K expert
output layers (``ExpertHead``, one batched op) giving f_{n,k}, the gating network its own output
layer (``GatingHead``) giving g_n (App. D). The teacher f_θ' is an EMA of the student (backbone +
expert layers), θ' <- m θ' + (1 - m) θ. Each step sees three independently augmented views of the
batch (Algorithm 1): x_f -> student, x_v -> teacher, x_g -> gating.

* gating prior p(z | x) = softmax(ω_kᵀ g / κ) with ω fixed to the MMD centers (Eq. 4, App. B);
* experts Φ = exp(v_kᵀ (f_k + μ_k) / τ) with an instance-level and a class-level term (Eq. 6),
  normalized by the queue estimate Ẑ (Eq. 9) over a FIFO queue q ∈ R^{ν×K×d} of teacher embeddings;
* E-step: approximate posterior (Eq. 10); M-step: SGD on the ELBO (Eq. 11-12) for θ, ψ and μ; the
  loss is -ELBO averaged over the batch, all in log space (:mod:`mixlab.mixture.mice`);
* at the end of every epoch, μ_k <- normalized sum of the teacher embeddings v_{n,k} hard-assigned
  to k during that epoch (Eq. 13), the sums all-reduced over processes.

Prediction: the posterior of Eq. (10) with every network looking at the same clean image
(x_f = x_v = x_g = x), Ẑ from the current queue; the cluster is its argmax. ``embed``: the
normalized gating embedding (the paper's t-SNE plots use it, App. E).

Ablations (Tab. 3; Config fields): ``uniform_prior`` (A3), ``shared_expert_layer`` (A4),
``class_level=False`` (A5), ``mu_update="none"`` (no Eq. 13) or ``"sgd_end_of_epoch"`` (App. E:
extra end-of-epoch gradient ascent on μ alone), ``mu_gradient=False`` (no SGD on μ),
``omega_init="uniform"`` (random unit vectors), ``omega_learned=True`` (ω optimized by gradient).

Deliberate departures from the authors' released code, which the paper does not describe (and
which we do not reproduce): their first epoch runs at learning rate 0 through a warm-up; their μ
starts from uninitialized memory; their posterior is computed in probability space (product of
softmaxes, then renormalized), which underflows. Here there is no implicit warm-up (``paper``
profile: ``warmup_epochs=0``), μ has a documented initialization (``mu_init``), and the posterior
and ELBO are computed with ``log_softmax``/``logsumexp``.

Where the paper is silent (mixlab's choices):

* ``mu_init``: μ before the first Eq. (13) update. ``"random"`` (default): independent uniform
  unit vectors (torch RNG). ``"mmd"``: the MMD centers under a different rotation than ω. We do not
  initialize by k-means: μ_k lives in expert k's own embedding space (it is compared with
  v_{·,k} only), so without A4 there is no common set of points to cluster jointly.
* Teacher BatchNorm statistics come from the teacher's own forward passes (MoCo), not from EMA.
* The embeddings, the queue and the ELBO are computed in float32 even under bf16 autocast.
* ``sgd_end_of_epoch`` (App. E) runs on the clean images with the networks frozen (so the
  objective in μ is deterministic and "convergence" is well defined): plain SGD with learning rate
  ``mu_sgd_lr`` on -ELBO in minibatches of ``mu_sgd_batch_size``, until the relative change of the
  per-pass mean -ELBO is below ``mu_sgd_tol`` or after ``mu_sgd_max_passes`` (20, App. E) passes.
* The queue must not be longer than the dataset (ν <= N, as in the paper's Eq. 2). It starts as
  random unit vectors (MoCo's choice; identical across experts under A4, as A4's keys are).
* Eq. (10) prints Z in the numerator and Ẑ in the denominator; we read it as Ẑ in both, the only
  reading under which q sums to 1.
* Profiles (``mixlab/profiles/mice.yaml``): App. D's τ = κ = 1, SGD 0.9 / 1e-4; lr, schedule,
  EMA momentum and queue derived from App. D for each profile's batch, epochs and data size by the
  rules written in that file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mixlab.methods.base import DataSpec, EpochContext, Method
from mixlab.methods.momentum import MomentumTeacher, Queue, check_teacher_momentum, make_teacher, shuffled_forward
from mixlab.mixture.em import kl_categorical
from mixlab.mixture.mice import analytical_mu, assignment_sums, gating_log_prior, hard_assignments, mice_objective
from mixlab.mixture.mmd import mmd_centers
from mixlab.nets import ExpertHead, GatingHead, build_backbone
from mixlab.utils.checks import ConfigError, check_choice, check_positive
from mixlab.utils.precision import full_precision


@dataclass
class MiCEConfig:
    """MiCE's own settings. Defaults are the paper's (§6, App. D) where it gives them."""

    n_clusters: int = 10
    embed_dim: int = 128               # d of every embedding and prototype (App. D: 128); >= K-1 for MMD
    tau: float = 1.0                   # expert temperature τ (paper 1.0)
    kappa: float = 1.0                 # gating temperature κ (paper 1.0)
    queue_size: int = 16384            # ν (paper: 16384; 12800 for STL-10); must be <= N
    teacher_momentum: float = 0.999    # m of the EMA teacher (App. D: 0.999, following MoCo)
    teacher_momentum_final: float | None = None  # None: constant m; else m -> this by a half-cosine (MomentumTeacher)
    # ablations (Tab. 3 and App. C assumptions)
    uniform_prior: bool = False        # A3: p(z|x) = 1/K (row (1))
    shared_expert_layer: bool = False  # A4: one output layer shared by the K experts (row (2))
    class_level: bool = True           # False = A5: drop the class-level term v·μ of Eq. 6 (row (4))
    mu_update: str = "analytical"      # end-of-epoch μ update: Eq. 13 | App. E SGD | none (row (a))
    mu_gradient: bool = True           # SGD on μ within the epoch (False = row (b))
    empty_mu: str = "zero"             # μ_k of a cluster with no hard assignment at Eq. 13: "zero" (the
    #                                    authors' code; a neutral class-level term) | "keep" (stale μ_k)
    omega_init: str = "mmd"            # gating prototypes: MMD centers | uniform on the sphere (row (c))
    omega_learned: bool = False        # optimize ω by gradient (row (d))
    mu_init: str = "random"            # μ before the first Eq. 13 update (mixlab's choice, see module doc)
    # App. E end-of-epoch SGD on μ alone (mu_update="sgd_end_of_epoch"); mixlab's choices
    mu_sgd_lr: float = 1.0             # the paper uses the network learning rate (1.0) for μ
    mu_sgd_max_passes: int = 20        # App. E: stop after 20 passes through the data
    mu_sgd_tol: float = 1e-4           # relative change of the pass-mean -ELBO that counts as converged
    mu_sgd_batch_size: int = 256

    def validate(self) -> None:
        check_choice("method.mu_update", self.mu_update, ("analytical", "sgd_end_of_epoch", "none"))
        check_choice("method.omega_init", self.omega_init, ("mmd", "uniform"))
        check_choice("method.mu_init", self.mu_init, ("random", "mmd"))
        check_choice("method.empty_mu", self.empty_mu, ("zero", "keep"))
        for name in ("n_clusters", "embed_dim", "tau", "kappa", "queue_size", "mu_sgd_lr",
                     "mu_sgd_max_passes", "mu_sgd_batch_size"):
            check_positive(f"method.{name}", getattr(self, name))
        check_positive("method.mu_sgd_tol", self.mu_sgd_tol, allow_zero=True)
        check_teacher_momentum(self)
        needs_mmd = self.omega_init == "mmd" or self.mu_init == "mmd"
        if needs_mmd and self.n_clusters > self.embed_dim + 1:
            raise ConfigError(f"method.embed_dim={self.embed_dim} is too small for {self.n_clusters} MMD"
                              f" centers; it must be >= n_clusters - 1 = {self.n_clusters - 1}")


class _Student(nn.Module):
    """f_θ: backbone + K expert output layers -> ``[B, K, d]`` (unnormalized)."""

    def __init__(self, backbone: nn.Module, experts: ExpertHead):
        super().__init__()
        self.backbone, self.experts = backbone, experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(self.backbone(x))


class MiCE(Method):
    """Mixture of Contrastive Experts; see the module docstring."""

    Config = MiCEConfig
    n_views = 3  # x_f (student), x_v (teacher), x_g (gating): Algorithm 1

    def __init__(self, cfg: MiCEConfig, spec: DataSpec):
        super().__init__(cfg, spec)
        K, d = cfg.n_clusters, cfg.embed_dim
        if cfg.queue_size > spec.n_samples:
            raise ConfigError(f"method.queue_size={cfg.queue_size} exceeds the {spec.n_samples} training"
                              " samples; the queue must hold at most N embeddings (lower queue_size)")
        backbone = build_backbone(spec.backbone, spec.in_channels, spec.image_size)
        self.student = _Student(backbone, ExpertHead(backbone.out_dim, K, d, shared=cfg.shared_expert_layer))
        self.gating_head = GatingHead(backbone.out_dim, d)
        self.teacher = make_teacher(self.student)
        self.ema = MomentumTeacher(cfg.teacher_momentum, cfg.teacher_momentum_final)
        # gating prototypes ω (Eq. 4): fixed MMD centers (App. B) unless ablated
        if cfg.omega_init == "mmd":
            omega = mmd_centers(K, d, seed=0)
        else:
            omega = F.normalize(torch.randn(K, d), dim=-1)
        if cfg.omega_learned:
            self.omega = nn.Parameter(omega)
        else:
            self.register_buffer("omega", omega)
        # expert prototypes μ (Eq. 6), unit norm (normalized again wherever used)
        mu = mmd_centers(K, d, seed=1) if cfg.mu_init == "mmd" else F.normalize(torch.randn(K, d), dim=-1)
        self.mu = nn.Parameter(mu, requires_grad=cfg.mu_gradient)
        self.queue = Queue(cfg.queue_size, (K, d))
        if cfg.shared_expert_layer:  # A4: one key per image shared by the experts, from the start
            self.queue.data.copy_(self.queue.data[:, :1].expand(-1, K, -1))
        # Eq. 13 statistics accumulated over the current epoch
        self.register_buffer("mu_sum", torch.zeros(K, d))
        self.register_buffer("mu_count", torch.zeros(K))

    # ---- networks ---------------------------------------------------------------------------
    def gating(self, x: torch.Tensor) -> torch.Tensor:
        """g_ψ(x): shared backbone + gating output layer, ``[B, d]`` (unnormalized)."""
        return self.gating_head(self.student.backbone(x))

    def _objective(self, f, v, g, queue: torch.Tensor) -> dict:
        cfg = self.cfg
        with full_precision(f):
            return mice_objective(f.float(), v.float(), g.float(), self.mu.float(), self.omega.float(),
                                  queue.float(), tau=cfg.tau, kappa=cfg.kappa,
                                  uniform_prior=cfg.uniform_prior, class_level=cfg.class_level)

    # ---- training ---------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.mu_sum.zero_()
        self.mu_count.zero_()

    def training_step(self, views, idx, stage) -> dict:
        x_f, x_v, x_g = views
        f = self.student(x_f)                        # [B, K, d]
        with torch.no_grad():
            v = F.normalize(shuffled_forward(self.teacher, x_v).float(), dim=-1)  # [B, K, d], no gradient (Alg. 1)
        g = self.gating(x_g)                         # [B, d]
        out = self._objective(f, v, g, self.queue())
        loss = -out["elbo"].mean()                   # -ELBO (Eq. 11-12), per-sample average
        with torch.no_grad():
            log_q = out["log_q"].detach()
            sums, counts = assignment_sums(v, hard_assignments(log_q), self.cfg.n_clusters)
            self.mu_sum += sums
            self.mu_count += counts
            kl = kl_categorical(log_q, out["log_prior"].detach()).mean()
            q_max = log_q.max(-1).values.exp().mean()
        self.queue.push(v)  # enqueue the batch, dequeue the oldest (Alg. 1); the loss read a copy
        return {"loss": loss, "kl_q_prior": kl, "q_max": q_max}

    def after_step(self, progress) -> None:
        self.ema.update_(self.teacher, self.student, progress)

    def end_epoch(self, ctx: EpochContext) -> dict:
        cfg = self.cfg
        self.mu_count.copy_(ctx.all_reduce(self.mu_count))   # global Eq. 13 statistics on every rank
        self.mu_sum.copy_(ctx.all_reduce(self.mu_sum))
        counts = self.mu_count.clone()
        logs = {"n_empty_hard": float((counts == 0).sum()),
                "train_max_cluster_frac": float(counts.max() / counts.sum().clamp_min(1))}
        old = F.normalize(self.mu.detach().float(), dim=-1)
        if cfg.mu_update == "analytical":
            sums = self.mu_sum.clone()
            new, empty = analytical_mu(sums, counts, old, cfg.empty_mu)
            if bool(empty.any()):
                what = "μ = 0 (neutral)" if cfg.empty_mu == "zero" else "their previous μ"
                ctx.log(f"MiCE Eq. 13: cluster(s) {empty.nonzero().flatten().tolist()} got no hard"
                        f" assignment this epoch; they get {what} (empty_mu={cfg.empty_mu!r})")
            self.mu.data.copy_(new.to(self.mu.dtype))
        elif cfg.mu_update == "sgd_end_of_epoch":
            logs.update(self._mu_sgd(ctx))
        logs["mu_shift"] = float((1 - (old * F.normalize(self.mu.detach().float(), dim=-1)).sum(-1)).mean())
        return logs

    def _mu_sgd(self, ctx: EpochContext) -> dict:
        """App. E: gradient ascent on the ELBO in μ alone, networks frozen, on the clean images."""
        cfg, K, d = self.cfg, self.cfg.n_clusters, self.cfg.embed_dim

        def features(x):
            h = self.student.backbone(x)
            f = self.student.experts(h).flatten(1)
            v = self.teacher(x).flatten(1)
            g = self.gating_head(h)
            return torch.cat([f.float(), v.float(), g.float()], dim=1)

        feats = ctx.map_dataset(features)
        f_all, v_all, g_all = feats.split([K * d, K * d, d], dim=1)
        f_all, v_all = f_all.reshape(-1, K, d), v_all.reshape(-1, K, d)
        mu = self.mu.detach().float().clone().requires_grad_(True)
        opt = torch.optim.SGD([mu], lr=cfg.mu_sgd_lr)
        queue = self.queue.data.float()
        omega = self.omega.detach().float()
        n, prev, passes = len(f_all), None, 0
        with torch.enable_grad(), full_precision(mu):
            for passes in range(1, cfg.mu_sgd_max_passes + 1):
                perm = torch.randperm(n, device=mu.device)
                total = 0.0
                for i in range(0, n, cfg.mu_sgd_batch_size):
                    j = perm[i:i + cfg.mu_sgd_batch_size]
                    out = mice_objective(f_all[j], v_all[j], g_all[j], mu, omega, queue, tau=cfg.tau,
                                         kappa=cfg.kappa, uniform_prior=cfg.uniform_prior,
                                         class_level=cfg.class_level)
                    loss = -out["elbo"].mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(j)
                total /= n
                if prev is not None and abs(prev - total) <= cfg.mu_sgd_tol * max(abs(prev), 1e-12):
                    break
                prev = total
        self.mu.data.copy_(F.normalize(mu.detach(), dim=-1).to(self.mu.dtype))
        return {"mu_sgd_passes": float(passes), "mu_sgd_loss": total}

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> dict:
        """The E-step on clean images (x_f = x_v = x_g = x): dict of Eq. 4/9/10/11 tensors."""
        h = self.student.backbone(x)                 # one backbone pass serves f and g
        return self._objective(self.student.experts(h), self.teacher(x), self.gating_head(h), self.queue.data)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """q(k | x, y) of Eq. (10) on clean images, ``[B, K]`` probabilities summing to 1."""
        return self.posterior(x)["log_q"].exp()

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized gating embedding g (App. E uses it for t-SNE)."""
        return F.normalize(self.gating(x).float(), dim=-1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the backbone that f_θ and g_ψ share (for linear-probe / k-NN evaluation)."""
        return self.student.backbone(x).float()

    def prior(self, x: torch.Tensor) -> torch.Tensor:
        """The gating function p(z | x) of Eq. (4) on clean images."""
        with torch.no_grad(), full_precision(x):
            return gating_log_prior(self.gating(x).float(), self.omega.float(), self.cfg.kappa,
                                    uniform=self.cfg.uniform_prior).exp()


__all__ = ["MiCE", "MiCEConfig"]
