"""Forward passes that must not move normalisation running statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


@contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Inside the block, train-mode passes still normalise with their batch statistics, but every
    running mean/variance (BatchNorm layers and any module with ``running_mean``/``running_var``
    buffers, e.g. NMM's ``RelevanceNorm``) is restored on exit, so the pass leaves no trace in what
    evaluation uses."""
    saved = [(buffers, name, buf.clone()) for m in module.modules() for buffers in (m._buffers,)
             for name, buf in buffers.items() if name in _RUNNING and buf is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffers, name, value in saved:
                buffers[name].copy_(value)
