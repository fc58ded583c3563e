"""The few collective operations the engine and methods need; no-ops on a single process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_type: str) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, NCCL on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all processes (returns a new tensor)."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) over processes along dim 0; no gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(x, src)
    return x


def broadcast_tensors(tensors: dict[str, torch.Tensor], src: int = 0) -> dict[str, torch.Tensor]:
    """``src``'s tensors on every rank, whatever their shapes were elsewhere (a clustering step whose
    K may differ between ranks runs on ``src`` alone and is shared this way)."""
    if not is_distributed():
        return tensors
    box = [{k: v.cpu() for k, v in tensors.items()} if rank() == src else None]
    dist.broadcast_object_list(box, src)
    return box[0]


def shutdown() -> None:
    """Wait for every process, then leave the group: a rank that exits while its peer still talks
    to it makes gloo abort the peer (SIGABRT) at interpreter exit."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
