"""The configuration error and the two value checks that every ``Config.validate`` uses.

Kept apart from :mod:`mixlab.config` so that method modules can validate their fields without
importing the config layer (which imports the method registry).
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration field has a wrong name, type or value."""


def check_choice(where: str, value, choices) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{where}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def check_positive(where: str, value, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is None or > 0 (>= 0 with ``allow_zero``)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}={value!r} must be {'>= 0' if allow_zero else '> 0'}")
