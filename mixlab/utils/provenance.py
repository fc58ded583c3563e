"""Where a result came from: commit, versions, device, time, Dask worker. Written beside every result."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys

import torch

from mixlab.utils.paths import REPO

CODE = ("mixlab", "notebooks", "benchmarks", "pyproject.toml", "requirements.txt")


def git_commit() -> str:
    """Short commit hash of the working tree, with '+dirty' if its code (``CODE``) has uncommitted
    changes; results and figures rewritten by a run in progress do not count.

    ``$MIXLAB_COMMIT`` wins when set: a copy of the tree on another machine (the lent GPU) may carry
    a stale ``.git``, so the command that ships it names the commit it ships."""
    if os.environ.get("MIXLAB_COMMIT"):
        return os.environ["MIXLAB_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty and sha else "")


def device_name(device: torch.device | str | None = None) -> str:
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def dask_worker() -> dict | None:
    """The Dask worker running this code (``name`` and ``address``), or None outside a Dask worker."""
    if "distributed" not in sys.modules:  # never imported: not on a worker (and no import cost here)
        return None
    from distributed import get_worker
    try:
        worker = get_worker()
    except ValueError:
        return None
    return {"name": str(worker.name), "address": worker.address}


def provenance(device=None, **extra) -> dict:
    """A dict describing the code, libraries and machine that produced a result."""
    import numpy
    return {
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "worker": dask_worker(),
        **extra,
    }
