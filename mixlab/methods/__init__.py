"""Method registry: name -> class, imported lazily so one broken method never hides the others,
and name -> profile file (``mixlab/profiles/<name>.yaml`` unless registered elsewhere)."""
from __future__ import annotations

import importlib
import random
from pathlib import Path

import numpy as np
import torch

from mixlab.utils import distributed as dist
from mixlab.utils.checks import ConfigError

_REGISTRY: dict[str, str] = {
    "mice": "mixlab.methods.mice:MiCE",
    "moco": "mixlab.methods.moco:MoCo",
    "siammm": "mixlab.methods.siammm:SiamMM",
    "nmm": "mixlab.methods.nmm:NMM",
    "tcc": "mixlab.methods.tcc:TCC",
}


def method_names() -> list[str]:
    return sorted(_REGISTRY)


_PROFILE_FILES: dict[str, Path] = {}
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


def register_method(name: str, target, profiles: str | Path | None = None) -> None:
    """Add a method: ``target`` is a class or a 'module:Class' string; ``profiles`` its profile file
    (default ``mixlab/profiles/<name>.yaml``; a method without one uses the common profiles)."""
    _REGISTRY[name] = target
    if profiles is not None:
        _PROFILE_FILES[name] = Path(profiles)


def profile_file(name: str) -> Path:
    """The YAML file with ``name``'s profiles (it may not exist)."""
    return _PROFILE_FILES.get(name, PROFILE_DIR / f"{name}.yaml")


def get_method(name: str):
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        target = getattr(importlib.import_module(module), cls)
    return target


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg, channels: int, size: int, n_samples: int, device: torch.device):
    """The augmenter and the (untrained) ``cfg.method`` for ``n_samples`` inputs of ``channels``×``size``²
    (``size`` 0 for point features), on ``device``."""
    from mixlab.data.augment import make_augmenter
    from mixlab.methods.base import DataSpec

    train = cfg.train
    augmenter = make_augmenter(train.augment, channels, size, sobel=train.sobel)
    seed_everything(train.seed)
    spec = DataSpec(in_channels=augmenter.out_channels, image_size=size, n_samples=n_samples,
                    backbone=train.backbone)
    method = get_method(cfg.method)(cfg.params, spec)
    if dist.init_from_env(device.type) and device.type == "cuda":
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method = method.to(device)
    if train.channels_last and device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    return augmenter, method
