"""Mixed precision: bf16 autocast on CUDA and on CPUs with native bf16, float32 math where it matters.

``train.amp`` asks for bf16 autocast (convolutions and matrix products in bf16, float32 weights and
optimizer state). On a CPU it is used only where the hardware computes bf16 natively
(``avx512_bf16`` or AMX tiles); elsewhere autocast would emulate bf16 slower than float32, so the run
stays in float32 and says so once. The numerically sensitive parts (logsumexp/posterior/ELBO,
queue normalization, EM statistics, vMF kappa) run inside :func:`full_precision`.
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (avx512_bf16 or AMX), as torch detects it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for ``device`` (``torch.bfloat16``), or None for plain float32."""
    if not enabled:
        return None
    if device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    _warn_no_bf16()
    return None


@functools.cache
def _warn_no_bf16() -> None:
    warnings.warn("train.amp=True but this CPU has no native bf16 (avx512_bf16/AMX): training in float32;"
                  " pass --set amp=false to silence this", RuntimeWarning, stacklevel=3)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast(device, dtype)``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def full_precision(ref: torch.Tensor | torch.device):
    """Turn autocast off on ``ref``'s device: the ops inside run in their inputs' dtype (cast them
    with ``.float()``)."""
    device = ref if isinstance(ref, torch.device) else ref.device
    return torch.autocast(device_type=device.type, enabled=False)
