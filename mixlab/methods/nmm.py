"""Neural mixture model trained by batch-wise EM (NMM; Tissera et al., ``neural-mixture-em.md``).

The network's last layer *is* the mixture. For a batch x_1..x_n:

1. relevance scores ``a_i = g_theta(x_i)`` (K neurons, §4), normalized over the batch per cluster
   without affine parameters, ``a*`` (§5; :class:`RelevanceNorm` keeps running statistics for
   inference at any batch size, §8.1);
2. cluster density ``h_j(x_i) = sigmoid(a*_ij / gamma)`` (§5) and posterior ``p_i = softmax(a*_i)`` (§6):
   the forward pass is the E-step;
3. the EM loss, Eq. 6 (points) or Eq. 7 (images, adding the transformed view), with p constant:
   one gradient step is the M-step;
4. for images, Algorithm 1's two-fold optimization: after the EM step a *fresh* forward and one step
   on the consistency loss Eq. 8, KL(p_i || q_i), with its own Adam (§8.2: lr 5e-5 for EM, 1e-4 for
   consistency).

In mixlab the two steps are two engine *stages*, ``("em", "consistency")``, each with its own
optimizer (:meth:`NMM.configure_optimizers`). ``objective="em"`` / ``"consistency"`` keep one of
them (Table 3's "EM Optimization (Eq. 7)" and "IIC in our setting").

Views: ``views[0]`` is the "original" image x_i and ``views[1]`` its transform x_i^tr. The paper's
original is the un-augmented image; with ``original_view="clean"`` NMM asks the engine for it through
``clean_views = (0,)`` (view 0 = ``augmenter.clean(x)``); ``"augmented"`` uses two augmented views.

Running statistics (backbone BatchNorm and :class:`RelevanceNorm`, what evaluation normalises
with) are updated by the gradient passes only: the EM step's original and transformed views and the
consistency step's transformed view. The consistency step's no-grad pass re-computes p on the
original the EM step has just seen; it normalises with its batch statistics like any train-mode pass
but leaves the running ones untouched, so no image counts twice and the clean/augmented mix of the
statistics is that of the two gradient steps (mixlab's choice; the paper does not say).

Training ignores ``train.lr``, ``train.optimizer``, ``train.momentum`` and ``train.weight_decay``:
the stage optimizers are Adam with ``lr_em`` / ``lr_consistency`` / ``adam_weight_decay`` below (the
engine's schedule multiplier ``train.schedule`` still applies; the paper's is constant).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mixlab.methods.base import DataSpec, Method
from mixlab.mixture.nmm import (
    consistency_loss,
    density,
    em_loss,
    gamma_for_batch,
    log_density,
    log_posterior,
    normalize_relevance,
)
from mixlab.nets import build_backbone, running_stats_frozen
from mixlab.utils.checks import ConfigError, check_choice, check_positive
from mixlab.utils.precision import full_precision

if TYPE_CHECKING:
    from mixlab.config import TrainConfig

import mixlab.data.bottleneck  # noqa: F401,E402  (registers the `fashion-bottleneck2d` dataset, §8.1)

__all__ = ["NMM", "NMMConfig", "RelevanceNorm"]


@dataclass
class NMMConfig:
    """NMM's own settings (defaults: the paper's image setting, §8.2)."""

    n_clusters: int = 10
    # "twofold" = Algorithm 1 (EM step then consistency step); "em" = EM loss only (Eq. 6/7,
    # Table 3 "EM Optimization"); "consistency" = Eq. 8 only (Table 3 "IIC in our setting").
    objective: str = "twofold"
    # EM loss: "eq7" adds the transformed view's log-density (images, §7); "eq6" original only
    # (points, §8.1). Ignored by objective="consistency".
    em_loss: str = "eq7"
    normalize: bool = True             # §5 batch normalization of the relevance scores (Fig. 5/7 ablation)
    # Statistics used to normalize *in training*: "batch" (the §5 equation: batch mean/std, gradient
    # through them) or "running" (the running mean/std, updated first from the batch, no gradient
    # through them; §8.1: running statistics "smoothen the learning"). Inference always uses the
    # running statistics. The paper does not say which one training uses: mixlab's choice "batch".
    norm_stats: str = "batch"
    norm_momentum: float = 0.1         # running-statistics update rate (mixlab's choice: PyTorch's BN default)
    norm_eps: float = 1e-5             # added to the variance (mixlab's choice)
    density_gamma: float = 5.0         # §5: a*/gamma stays in the sigmoid's linear region; 5 for batch 128
    # "fixed": gamma as given, any batch size; "bound": gamma scaled with the batch size so that
    # the largest possible |a*|/gamma, (n-1)/sqrt(n)/gamma, equals the paper's value at batch 128
    # (§5 says gamma "is dependent on the batch-size" but gives only 5 @ 128: mixlab's choice).
    density_gamma_scaling: str = "fixed"
    # §6 posterior: "softmax" of a* (the paper) or "density_ratio" h_j / sum_k h_k (what softmax
    # approximates; mixlab's ablation).
    posterior: str = "softmax"
    # View 0 of Eq. 7/8: "clean" (the paper: the un-augmented original image, fed through
    # ``Method.clean_views``) or "augmented" (two independently augmented views; mixlab's ablation).
    original_view: str = "clean"
    lr_em: float = 5e-5                # §8.2: Adam for the EM step (1e-3 for the §8.1 MLP)
    lr_consistency: float = 1e-4       # §8.2: Adam for the consistency step
    adam_weight_decay: float = 0.0     # both Adams; the paper mentions none (mixlab's choice 0)
    head_bias: bool = True             # bias of the K-neuron layer (cancelled by the normalization)

    def validate(self) -> None:
        check_positive("method.n_clusters", self.n_clusters)
        if self.n_clusters < 2:
            raise ConfigError(f"method.n_clusters={self.n_clusters} must be >= 2")
        check_choice("method.objective", self.objective, ("twofold", "em", "consistency"))
        check_choice("method.em_loss", self.em_loss, ("eq6", "eq7"))
        check_choice("method.norm_stats", self.norm_stats, ("batch", "running"))
        check_choice("method.density_gamma_scaling", self.density_gamma_scaling, ("fixed", "bound"))
        check_choice("method.posterior", self.posterior, ("softmax", "density_ratio"))
        check_choice("method.original_view", self.original_view, ("clean", "augmented"))
        for name in ("norm_eps", "density_gamma", "lr_em", "lr_consistency"):
            check_positive(f"method.{name}", getattr(self, name))
        check_positive("method.adam_weight_decay", self.adam_weight_decay, allow_zero=True)
        if not 0 < self.norm_momentum <= 1:
            raise ConfigError(f"method.norm_momentum={self.norm_momentum} must be in (0, 1]")


class RelevanceNorm(nn.Module):
    """§5 normalization of the K relevance scores over the batch, no affine parameters.

    Train mode: ``stats="batch"`` normalizes with the batch mean/std (:func:`normalize_relevance`,
    differentiable), ``stats="running"`` with the running ones; either way the running mean and
    (unbiased) variance are updated ``r <- (1-m) r + m batch`` on every train-mode call. Eval mode:
    the running statistics, so any batch size works (also 1; §8.1).
    """

    def __init__(self, n: int, momentum: float = 0.1, eps: float = 1e-5, stats: str = "batch"):
        super().__init__()
        self.momentum, self.eps, self.stats = momentum, eps, stats
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, a: Tensor) -> Tensor:
        a = a.float()
        if not self.training:
            return (a - self.running_mean) / torch.sqrt(self.running_var + self.eps)
        if a.shape[0] < 2:
            raise ValueError("RelevanceNorm needs a batch of >= 2 samples in train mode")
        a_star, mu, var = normalize_relevance(a, self.eps)
        with torch.no_grad():
            n = a.shape[0]
            self.running_mean.lerp_(mu.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
            self.num_batches_tracked += 1
        if self.stats == "running":
            return (a - self.running_mean) / torch.sqrt(self.running_var + self.eps)
        return a_star


class NMM(Method):
    """Neural mixture model: backbone -> K relevance neurons -> :class:`RelevanceNorm`."""

    Config = NMMConfig

    def __init__(self, cfg: NMMConfig, spec: DataSpec):
        super().__init__(cfg, spec)
        # point data has image_size 0 in DataSpec; the MLP backbone wants in_channels * size**2 features
        self.backbone = build_backbone(spec.backbone, spec.in_channels, spec.image_size or 1)
        self.head = nn.Linear(self.backbone.out_dim, cfg.n_clusters, bias=cfg.head_bias)  # theta_j, §4
        self.norm = RelevanceNorm(cfg.n_clusters, cfg.norm_momentum, cfg.norm_eps, cfg.norm_stats)
        # gamma of the last training batch (used by `density` in eval mode); a buffer so it is checkpointed
        self.register_buffer("gamma_train", torch.tensor(float(cfg.density_gamma)))
        if cfg.objective == "twofold":
            self.stages = ("em", "consistency")
        else:
            self.stages = (cfg.objective,)
        one_view = cfg.objective == "em" and cfg.em_loss == "eq6"
        self.n_views = 1 if one_view else 2
        if cfg.original_view == "clean" and not one_view:
            self.clean_views = (0,)

    # ---- optimizers: one Adam per stage (Algorithm 1, §8.2) ------------------------------------
    def optimizer_groups(self) -> dict[str, list]:
        params = [p for p in self.parameters() if p.requires_grad]
        return {stage: params for stage in self.stages}

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        lr = {"em": self.cfg.lr_em, "consistency": self.cfg.lr_consistency}
        return {stage: torch.optim.Adam(params, lr=lr[stage], weight_decay=self.cfg.adam_weight_decay, fused=True)
                for stage, params in self.optimizer_groups().items()}

    # ---- the mixture --------------------------------------------------------------------------
    def relevance(self, x: Tensor) -> Tensor:
        """Raw relevance scores a_ij ``[B, K]`` (§4), in float32."""
        feat = self.backbone(x)
        with full_precision(feat):
            return self.head(feat.float())

    def scores(self, x: Tensor) -> Tensor:
        """a*_ij: normalized relevance (§5) or the raw one when ``normalize=False``."""
        a = self.relevance(x)
        return self.norm(a) if self.cfg.normalize else a

    def gamma_for(self, n: int) -> float:
        if self.cfg.density_gamma_scaling == "bound":
            return gamma_for_batch(n, self.cfg.density_gamma)
        return self.cfg.density_gamma

    def log_post(self, a_star: Tensor, gamma: float) -> Tensor:
        return log_posterior(a_star, gamma, self.cfg.posterior)

    def density(self, x: Tensor) -> Tensor:
        """Cluster densities h_j(x) = sigmoid(a*/gamma) ``[B, K]`` (§5). Train mode: batch
        statistics and the batch's gamma; eval mode: running statistics and the training gamma."""
        if self.training:
            return density(self.scores(x), self.gamma_for(x.shape[0]))
        return density(self.scores(x), float(self.gamma_train))

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, views: list[Tensor], idx: Tensor, stage: str) -> dict:
        x = views[0]
        gamma = self.gamma_for(x.shape[0])
        self.gamma_train.fill_(gamma)
        if stage == "em":
            a_star = self.scores(x)
            log_p = self.log_post(a_star, gamma)                 # E-step (§6), held constant
            log_h = log_density(a_star, gamma)                   # §5
            log_h_tr = None
            if self.cfg.em_loss == "eq7":
                log_h_tr = log_density(self.scores(views[1]), gamma)
            loss = em_loss(log_p, log_h, log_h_tr)               # Eq. 6 / Eq. 7
            return {"loss": loss, **_diagnostics(log_p.detach(), log_h.detach())}
        if stage == "consistency":
            # fresh posterior p with updated theta; a re-computation on the batch the EM step has
            # already normalised, so it does not move the running statistics (no double count)
            with torch.no_grad(), running_stats_frozen(self):
                log_p = self.log_post(self.scores(x), gamma)
            log_q = self.log_post(self.scores(views[1]), gamma)
            loss = consistency_loss(log_p, log_q)                # Eq. 8
            return {"loss": loss, **_diagnostics(log_p, None)}
        raise ValueError(f"unknown stage {stage!r}")

    # ---- inference ----------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Tensor:
        return self.log_post(self.scores(x), float(self.gamma_train)).exp()

    def embed(self, x: Tensor) -> Tensor:
        """The final-layer response before the softmax, a* (Fig. 7)."""
        return self.scores(x)

    def features(self, x: Tensor) -> Tensor:
        """Backbone output g_theta_s(x), the shared representation (layer L-1, §4)."""
        return self.backbone(x)


def _diagnostics(log_p: Tensor, log_h: Tensor | None) -> dict:
    """Detached scalars for the log: posterior confidence, how many clusters the batch uses, and
    the spread of the per-cluster batch means of h (0 when Eq. 3 holds exactly)."""
    p = log_p.exp()
    out = {"max_posterior": p.max(1).values.mean(),
           "batch_clusters": (torch.bincount(p.argmax(1), minlength=p.shape[1]) > 0).sum().float()}
    mean_p = p.mean(0)
    out["marginal_entropy"] = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
    if log_h is not None:
        mean_h = log_h.exp().mean(0)
        out["mean_h_min"], out["mean_h_max"] = mean_h.min(), mean_h.max()
    return {k: v.detach() for k, v in out.items()}
