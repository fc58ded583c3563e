"""Where mixlab reads and writes: every relative path is taken from one workbook root.

A notebook's kernel runs in ``notebooks/`` in JupyterLab, in the repository under papermill and in
whatever folder a shell is in for the CLI. So that ``results``, ``figures``, ``runs`` and ``data``
name the same folders in all three, mixlab resolves a relative path ``p`` as ``root() / p``:

    root() = $MIXLAB_ROOT if set, else the repository checkout that holds this package.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]


def root() -> Path:
    """The workbook root: ``$MIXLAB_ROOT`` (``~`` expanded) or the repository checkout."""
    env = os.environ.get("MIXLAB_ROOT")
    return Path(env).expanduser().absolute() if env else REPO


def resolve(path: str | os.PathLike) -> Path:
    """``root() / path`` for a relative ``path``; an absolute one unchanged."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root() / path


PUBLISHED_PROFILES = ("cpu", "gpu", "paper")  # profiles whose `make reproduce` outputs are committed


class Outputs(NamedTuple):
    """Where one profile's notebooks write, relative to the workbook root."""

    runs_dir: str      # run folders (checkpoints, logs, snapshots): always git-ignored
    results_dir: str   # tables, metrics, claims
    figures_dir: str   # PNG + PDF + provenance sidecars


def outputs(profile: str, publish: bool = False) -> Outputs:
    """The folders a notebook on ``profile`` writes to.

    Only a publishing pass (``make reproduce``, which sets the notebooks' ``publish`` parameter)
    of a published profile writes the tracked ``results/`` and ``figures/`` (``cpu``) or
    ``results/<profile>/`` and ``figures/<profile>/`` (``gpu``, ``paper``). Everything else — the
    ``smoke`` profile, a notebook run in the lab, a plain ``python notebooks/x.py``, a changed
    setting — writes under the git-ignored ``runs/<profile>/``, so exploring never rewrites a
    committed result."""
    runs = f"runs/{profile}"
    if not (publish and profile in PUBLISHED_PROFILES):
        return Outputs(runs, f"{runs}/results", f"{runs}/figures")
    if profile == PUBLISHED_PROFILES[0]:
        return Outputs(runs, "results", "figures")
    return Outputs(runs, f"results/{profile}", f"figures/{profile}")
