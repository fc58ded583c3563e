"""The LARS optimizer (You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
arXiv 2017), which SiamMM §5.1 trains with."""
from __future__ import annotations

import torch

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """LARS in MoCo v3's form, the optimizer of SiamMM §5.1.

    For weights with ndim > 1: u = g + wd w, scaled by the trust ratio eta ||w|| / ||u|| (eta =
    0.001); biases and BatchNorm parameters get neither weight decay nor the trust ratio. Then
    heavy-ball momentum and w <- w - lr * buf.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    w_norm, u_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(w_norm)
                    q = torch.where(w_norm > 0, torch.where(u_norm > 0, g["trust_coefficient"] * w_norm / u_norm,
                                                            one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                buf = state["mu"]
                buf.mul_(g["momentum"]).add_(dp)
                p.add_(buf, alpha=-g["lr"])
