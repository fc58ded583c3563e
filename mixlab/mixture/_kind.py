"""Where mixture math crosses between torch and numpy (scipy, faiss, numpy's LAPACK).

The rule of :mod:`mixlab.mixture`: torch in -> torch out (on the input's device), numpy in -> numpy
out. A function converts its inputs once with :func:`as_torch` or :func:`as_numpy`, computes in one
library and hands its results back with :func:`like`.
"""

from __future__ import annotations

import numpy as np
import torch


def as_torch(x, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """``x`` as a tensor, cast to ``dtype`` and moved to ``device`` when given; a tensor keeps its graph."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype)


def as_numpy(x, dtype=np.float64) -> np.ndarray:
    """``x`` as a numpy array of ``dtype``; a tensor is detached, cast in torch (bfloat16 too) and copied to the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", getattr(torch, np.dtype(dtype).name)).numpy()
    return np.asarray(x, dtype=dtype)


def first_numpy(*xs):
    """The reference for :func:`like` of several inputs: the first that is not a tensor, else the first."""
    return next((x for x in xs if not isinstance(x, torch.Tensor)), xs[0])


def float_dtype(x) -> torch.dtype:
    """The floating dtype that results for ``x`` keep: its own, else its kind's default (torch float32, numpy float64)."""
    if isinstance(x, torch.Tensor):
        return x.dtype if x.is_floating_point() else torch.float32
    a = np.asarray(x)
    return getattr(torch, a.dtype.name) if np.issubdtype(a.dtype, np.floating) else torch.float64


def like(ref, result, dtype: torch.dtype | None = None):
    """``result`` (tensor or array) in ``ref``'s kind: a tensor on ``ref``'s device if ``ref`` is a tensor,
    else a numpy array; cast to the torch ``dtype`` when given."""
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(result, dtype=dtype, device=ref.device)
    if isinstance(result, torch.Tensor):
        return result.detach().to("cpu", dtype).numpy()
    return result if dtype is None else result.astype(torch.empty(0, dtype=dtype).numpy().dtype, copy=False)
