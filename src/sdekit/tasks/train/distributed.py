"""Many processes under torchrun: rank and world size, the process group, averages over ranks."""
from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["dist_env", "distributed", "all_mean", "barrier"]


def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextlib.contextmanager
def distributed(device: torch.device):
    """The process group for the run (NCCL on GPUs, gloo on CPU); yields (rank, world size)."""
    rank, world = dist_env()
    if world == 1:
        yield rank, world
        return
    import torch.distributed as dist
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield rank, world
    finally:
        dist.destroy_process_group()


def all_mean(v: float, world: int) -> float:
    """The mean of ``v`` over the ``world`` ranks."""
    if world == 1:
        return v
    import torch.distributed as dist
    t = torch.tensor([v], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
