"""Where mixlab reads and writes: every relative path is taken from one workbook root.

A notebook's kernel runs in ``notebooks/`` in JupyterLab, in the repository under papermill and in
whatever folder a shell is in for the CLI. So that ``results``, ``figures``, ``runs`` and ``data``
name the same folders in all three, mixlab resolves a relative path ``p`` as ``root() / p``:

    root() = $MIXLAB_ROOT if set, else the repository checkout that holds this package.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def root() -> Path:
    """The workbook root: ``$MIXLAB_ROOT`` (``~`` expanded) or the repository checkout."""
    env = os.environ.get("MIXLAB_ROOT")
    return Path(env).expanduser().absolute() if env else REPO


def resolve(path: str | os.PathLike) -> Path:
    """``root() / path`` for a relative ``path``; an absolute one unchanged."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root() / path
