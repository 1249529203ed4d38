"""Distributed helpers: one code path for a single process and ``torchrun`` (DDP).

Rank, world size and local rank come from the environment variables ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); without them everything degrades to rank 0 of 1.
Backend: ``nccl`` when CUDA is available, ``gloo`` otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Rank/world size/local rank from ``torchrun``'s environment (defaults: 0/1/0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(backend: str = "auto") -> tuple[DistInfo, bool]:
    """Initialise the default process group when launched with world size > 1.

    Returns the rank info and whether this call created the group (the caller then owns
    :func:`cleanup_distributed`).
    """
    info = dist_info_from_env()
    if not info.distributed or dist.is_initialized():
        return info, False
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info, True


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(info: DistInfo) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def resolve_device(device: Optional[str] = None) -> str:
    """The device a command runs on: ``None``/``"auto"`` -> ``cuda:$LOCAL_RANK`` when CUDA is available,
    else ``cpu``; ``"cuda"`` -> ``cuda:$LOCAL_RANK`` (this torchrun process's GPU); anything else as given."""
    if device in (None, "", "auto"):
        return str(device_for(dist_info_from_env()))
    if device == "cuda":
        return f"cuda:{dist_info_from_env().local_rank}"
    return device


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over ranks (a no-op in a single process). Returns a new tensor."""
    out = values.clone()
    if _active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on at least one rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (start-of-training sync)."""
    if not _active():
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            if isinstance(t, torch.Tensor):
                dist.broadcast(t, src)


def average_gradients(params: list[torch.nn.Parameter], bucket_numel: int) -> None:
    """Average ``.grad`` over ranks in flat buckets of at most ``bucket_numel`` elements per dtype.

    A parameter without a gradient on some ranks counts as zero there; it keeps ``grad=None`` only
    when no rank produced one (so optimizers skip it, as in a single process).
    """
    if not _active():
        return
    world = dist.get_world_size()
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    active = [p for p, n in zip(params, has.tolist()) if n > 0]
    for p in active:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in active:
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        for bucket in _buckets(grads, bucket_numel):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= world
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def _buckets(tensors: list[torch.Tensor], bucket_numel: int) -> list[list[torch.Tensor]]:
    out: list[list[torch.Tensor]] = [[]]
    size = 0
    for t in tensors:
        if out[-1] and size + t.numel() > bucket_numel:
            out.append([])
            size = 0
        out[-1].append(t)
        size += t.numel()
    return out
