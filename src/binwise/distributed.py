"""Data-parallel training across processes: torchrun, or ``binwise train --devices N``.

Each process trains a replica on its share of every global batch (DistributedSampler) and DDP
averages the gradients, so N processes with per-process batch B/N take the same steps as one
process with batch B. Only rank 0 writes files. NCCL on CUDA, gloo on CPU (how the tests run it).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_process_group(device_type: str) -> Rank:
    """Join the process group that torchrun (or ``spawn``) described in the environment."""
    rank = Rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank.rank,
                                world_size=rank.world_size)
    if device_type == "cuda":
        torch.cuda.set_device(rank.local_rank)
    return rank


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world_size: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size))
    fn(*args)


def spawn(world_size: int, fn, *args) -> None:
    """Run ``fn(*args)`` in ``world_size`` local processes, as torchrun would (one machine)."""
    mp.start_processes(_worker, args=(world_size, free_port(), fn, args), nprocs=world_size,
                       start_method="spawn")
