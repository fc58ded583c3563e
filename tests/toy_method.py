"""A trivial method for engine tests: a linear soft-clustering head with a buffer and dropout."""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mixlab.methods import register_method
from mixlab.methods.base import Method


@dataclass
class ToyConfig:
    n_clusters: int = 4
    blow_up_at_step: int = 0   # make the loss NaN at this step (0 = never)
    detach_loss: bool = False  # return a loss without gradient (what torch.compile did to SiamMM's)


class Toy(Method):
    Config = ToyConfig

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.LazyLinear(cfg.n_clusters))
        self.head(torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def training_step(self, views, idx, stage):
        p1, p2 = (F.softmax(self.head(v), 1) for v in views)
        marginal = p1.mean(0)
        loss = -(p1 * p2).sum(1).log().mean() + (marginal * marginal.log()).sum()
        if self.cfg.blow_up_at_step and int(self.steps) + 1 == self.cfg.blow_up_at_step:
            loss = loss * float("nan")
        return {"loss": loss.detach() if self.cfg.detach_loss else loss}

    def after_step(self, progress):
        self.steps += 1

    def predict(self, x):
        return F.softmax(self.head(x), 1)

    def embed(self, x):
        return self.head(x)


register_method("toy", Toy, profiles=Path(__file__).with_name("toy_profiles.yaml"))
