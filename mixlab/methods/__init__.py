"""Method registry: name -> class, imported lazily so one broken method never hides the others."""
from __future__ import annotations

import importlib

from mixlab.config import ConfigError

_REGISTRY: dict[str, str] = {
    "mice": "mixlab.methods.mice:MiCE",
    "moco": "mixlab.methods.moco:MoCo",
    "siammm": "mixlab.methods.siammm:SiamMM",
    "nmm": "mixlab.methods.nmm:NMM",
    "tcc": "mixlab.methods.tcc:TCC",
}


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def register_method(name: str, target) -> None:
    """Add a method: ``target`` is a class or a 'module:Class' string."""
    _REGISTRY[name] = target


def get_method(name: str):
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        target = getattr(importlib.import_module(module), cls)
    return target
