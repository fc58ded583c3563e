"""Heads on top of a backbone feature: projection MLP, K-expert head, gating head (MiCE App. D)."""

import math

import torch
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """MLP projector of MoCo v2 / BYOL / SiamMM: ``n_layers`` linears, hidden ones followed by
    (BatchNorm +) ReLU, the last one linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int = 2, batchnorm: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers, d = [], in_dim
        for _ in range(n_layers - 1):
            layers.append(nn.Linear(d, hidden_dim, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ExpertHead(nn.Module):
    """The K expert output layers of MiCE's student network (App. D: "K more fully connected
    layers which map the images to K embeddings"), as one batched op: ``weight[k]`` [in_dim, d]
    and ``bias[k]`` are expert k's linear map; forward gives the unnormalized ``[B, K, d]``.

    ``shared=True`` (MiCE ablation A4, one expert map for all clusters) uses a single linear
    layer whose output is expanded to ``[B, K, d]``.
    """

    def __init__(self, in_dim: int, n_experts: int, out_dim: int, shared: bool = False):
        super().__init__()
        self.n_experts, self.shared = n_experts, shared
        k = 1 if shared else n_experts
        bound = 1 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(k, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.einsum("bi,kid->bkd", x, self.weight) + self.bias
        return out.expand(-1, self.n_experts, -1) if self.shared else out


class GatingHead(nn.Module):
    """MiCE gating output layer (App. D): one linear map to an unnormalized ``[B, d]`` embedding."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)
