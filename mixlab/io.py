"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

A relative path is taken from the workbook root (:func:`mixlab.paths.resolve`), not the working directory."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from mixlab import paths


def _atomic(path: Path, write) -> None:
    path = paths.resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode()))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def torch_save(path, obj) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh))


def read_jsonl(path) -> list[dict]:
    path = paths.resolve(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
