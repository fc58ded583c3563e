"""The one reuse rule for everything mixlab re-runs (a training run, a baseline, a notebook of the pipeline).

A result is reused when the key it was made with is stored beside it, equals the key asked for
now, and its output files exist: a training run's key is its resolved config (``config.json``,
the whole file), a baseline's its :class:`~mixlab.workbook.baselines.Settings` (field ``settings``), a
notebook's is the fingerprint of its source, parameters and the mixlab package
(field ``key`` of its pipeline stamp). :func:`exclusive` lets processes side by side (``make
reproduce JOBS=2``) split the making of shared results instead of each making all of them.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): each process makes what it needs, as before the locks
    fcntl = None


def is_current(key_file: str | Path, key, *, field: str | None = None, outputs: Iterable[str | Path] = ()) -> bool:
    """True when ``key_file`` (JSON) holds ``key`` (the whole file, or its ``field``) and every
    path of ``outputs`` exists."""
    key_file = Path(key_file)
    if not key_file.is_file() or not all(Path(p).exists() for p in outputs):
        return False
    stored = json.loads(key_file.read_text())
    return (stored if field is None else stored.get(field)) == key


@contextmanager
def exclusive(lock_file: str | Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive lock on ``lock_file`` (``flock``; the system drops it when its process
    dies) for the ``with`` block, which gets True; with ``wait=False`` and another process holding
    it, the block gets False at once and holds nothing."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
        yield True  # closing the file releases the lock
