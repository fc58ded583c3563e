"""Backbones (``build_backbone``) and heads. Every backbone maps ``[B, C, H, W]`` float input to
``[B, out_dim]`` features and exposes ``.out_dim``."""

from collections.abc import Callable

from torch import nn

from mixlab.nets.cnn import MLP, NMM_PLANS, NMMNet, SmallCNN
from mixlab.nets.heads import ExpertHead, GatingHead, ProjectionHead
from mixlab.nets.norm_stats import running_stats_frozen
from mixlab.nets.resnet import build_resnet

BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": lambda c, s: build_resnet("resnet18", c, cifar_stem=True),
    "resnet34": lambda c, s: build_resnet("resnet34", c, cifar_stem=True),
    "resnet18-imagenet": lambda c, s: build_resnet("resnet18", c, cifar_stem=False),
    "resnet34-imagenet": lambda c, s: build_resnet("resnet34", c, cifar_stem=False),
    **{name: (lambda c, s, plan=plan: NMMNet(plan, c, s)) for name, plan in NMM_PLANS.items()},
    "small-cnn": lambda c, s: SmallCNN(c),
    "mlp": lambda c, s: MLP(c * max(s, 1) ** 2),
}


def build_backbone(name: str, in_channels: int, image_size: int) -> nn.Module:
    """Backbone ``name`` for ``in_channels``-channel ``image_size`` px input (for "mlp" on points
    ``[B, D]``: ``in_channels=D`` and ``image_size`` 0 or 1)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, image_size)


__all__ = ["BACKBONES", "build_backbone", "ProjectionHead", "ExpertHead", "GatingHead", "running_stats_frozen"]
