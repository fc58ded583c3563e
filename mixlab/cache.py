"""The one reuse rule for everything mixlab re-runs (a training run, a baseline, a notebook of the pipeline).

A result is reused when the key it was made with is stored beside it, equals the key asked for
now, and its output files exist: a training run's key is its resolved config (``config.json``,
the whole file), a baseline's its :class:`~mixlab.baselines.Settings` (field ``settings``), a
notebook's is the fingerprint of its source, parameters and the mixlab package
(field ``key`` of its pipeline stamp).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def is_current(key_file: str | Path, key, *, field: str | None = None, outputs: Iterable[str | Path] = ()) -> bool:
    """True when ``key_file`` (JSON) holds ``key`` (the whole file, or its ``field``) and every
    path of ``outputs`` exists."""
    key_file = Path(key_file)
    if not key_file.is_file() or not all(Path(p).exists() for p in outputs):
        return False
    stored = json.loads(key_file.read_text())
    return (stored if field is None else stored.get(field)) == key
