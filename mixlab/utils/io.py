"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

A relative path is taken from the workbook root (:func:`mixlab.utils.paths.resolve`), not the working directory.
Files get the mode a plain ``open(path, "w")`` would give them (0o666 less the umask: 0644 under the
usual umask 022), not the 0600 of the temporary file they are written to."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from mixlab.utils import paths


def _umask_now() -> int | None:
    """The process umask read from ``/proc/self/status`` (Linux 4.7+: no change to the process
    state, so safe beside other threads); None where that is not available."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    """The umask, read once when this module is imported: ``os.umask`` can only be read by
    setting it, so set and restore it at once (a thread creating a file in between would use 0o022)."""
    mask = _umask_now()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK = _umask_at_import()


def file_mode() -> int:
    """The mode a new file gets under the current umask: ``0o666 & ~umask``."""
    mask = _umask_now()
    return 0o666 & ~(_UMASK if mask is None else mask)


def atomic(path: Path, write) -> None:
    path = paths.resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), file_mode())  # mkstemp made it 0600
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    atomic(path, lambda fh: fh.write(text.encode()))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def copy(src, dst) -> None:
    """Copy the file ``src`` to ``dst`` atomically (its folders made as needed)."""
    data = paths.resolve(src).read_bytes()
    atomic(dst, lambda fh: fh.write(data))


def torch_save(path, obj) -> None:
    atomic(path, lambda fh: torch.save(obj, fh))


def read_jsonl(path) -> list[dict]:
    path = paths.resolve(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
