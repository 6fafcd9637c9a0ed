"""Data-parallel fine-tuning across processes: ``binwise train --devices N`` or torchrun.

Every process (rank) holds a replica of the model and trains on its share of each global batch;
DistributedDataParallel averages the gradients, so N processes take the same steps as one process
with the whole batch. Each global batch of ``config.batch_size`` photos is split into N consecutive
parts of ``batch_size / N``; the loss of each part is weighted so that the averaged gradient is the
gradient of the mean loss over the whole batch, even for a short last batch. Only rank 0 writes
files; all ranks read the same checkpoint when resuming.

Processes find each other through the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); ``launch`` sets the same for N processes on this machine. NCCL on CUDA
(one GPU per process, by LOCAL_RANK), gloo on CPU (how the tests run it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import BinwiseError
from ..paths import free_port

ENV_KEYS = ("RANK", "WORLD_SIZE")


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


def from_environment() -> Rank:
    """The rank torchrun (or ``launch``) gave this process; one process of one without them."""
    if not all(k in os.environ for k in ENV_KEYS):
        return Rank()
    return Rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))


def current() -> Rank:
    """This process's rank in the joined process group (one process of one if none)."""
    if not dist.is_initialized():
        return Rank()
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def join(device: torch.device) -> tuple[Rank, torch.device]:
    """Join the process group the environment describes (if any, and not joined yet) and return
    this process's rank and device: on CUDA, the GPU numbered by its local rank."""
    rank = from_environment()
    if not rank.distributed:
        return rank, device
    if device.type == "cuda":
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank.rank,
                                world_size=rank.world_size, device_id=device if device.type == "cuda" else None)
    return rank, device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_config(config, world_size: int) -> None:
    """What data-parallel training needs of a config; raises BinwiseError otherwise."""
    if world_size == 1:
        return
    if config.mode != "finetune" or config.cached_views:
        raise BinwiseError(f"{world_size} processes requested, but {config.mode} mode trains on cached features "
                           "or activations in one process; run it without --devices/torchrun, or use --mode "
                           "finetune --cached-views 0")
    if config.batch_size % world_size:
        raise BinwiseError(f"batch_size {config.batch_size} is the global batch and must divide evenly "
                           f"among {world_size} processes")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Run the block on rank 0, then on the other ranks, which find its results (the feature
    cache) instead of computing the same thing at the same time."""
    rank = current()
    if not rank.is_main:
        barrier()
    yield
    if rank.is_main:
        barrier()


def rank_batches(order: torch.Tensor, batch_size: int, rank: Rank) -> list[torch.Tensor]:
    """This rank's part of each global batch of ``order`` (consecutive ``batch_size`` indices,
    split into ``world_size`` consecutive parts; a short last batch may leave a part empty)."""
    return [batch.tensor_split(rank.world_size)[rank.rank] for batch in order.split(batch_size)]


def loss_weight(local_count: int, device: torch.device) -> float:
    """The factor turning this rank's summed loss into its share of the global batch's mean loss
    (DDP then averages over ranks): world_size / photos in the global batch; 0 if it has none."""
    if not dist.is_initialized():
        return 1 / local_count if local_count else 0.0
    count = torch.tensor(local_count, device=device)
    dist.all_reduce(count)
    return dist.get_world_size() / count.item() if count.item() else 0.0


def sum_over_ranks(*values: float) -> list[float]:
    """Element-wise sums of per-rank numbers (epoch loss sums and counts), on every rank."""
    if not dist.is_initialized():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def union_over_ranks(items: list) -> list:
    """The sorted union of every rank's ``items`` (e.g. the unreadable photos each one met)."""
    if not dist.is_initialized():
        return sorted(set(items))
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return sorted({item for part in gathered for item in part})


def require_same(value, what: str) -> None:
    """Raise BinwiseError on every rank unless all ranks hold the same ``value``."""
    if not dist.is_initialized():
        return
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise BinwiseError(f"the processes see different {what} ({', '.join(map(str, values))}); "
                           "every machine needs the same run directory (a shared folder)")


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` as trained by one process of the group: DistributedDataParallel, with its
    BatchNorm layers synchronised across GPUs. On CPU (gloo) SyncBatchNorm cannot run, so each
    rank normalises by its own part of the batch, and rank 0's running statistics are kept."""
    if not dist.is_initialized():
        return module
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return nn.parallel.DistributedDataParallel(module, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(module)


# ---------------------------------------------------------------------------- local launch


def _run_rank(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # as torchrun does: no oversubscription
    # DataLoader workers start as in a process torchrun started (the platform's way, fork on
    # Linux), not by the spawn this process was started with
    multiprocessing.set_start_method(None, force=True)
    try:
        fn(*args)
    finally:
        leave()


def launch(world_size: int, fn: Callable, *args) -> None:
    """Run ``fn(*args)`` in ``world_size`` new processes on this machine, one rank each, as torchrun
    would; returns when all have finished. A failing process stops the others and raises here
    (torch.multiprocessing.ProcessExitedException / ProcessRaisedException)."""
    import torch.multiprocessing as mp

    if from_environment().distributed:
        raise BinwiseError("--devices starts its own processes; under torchrun leave it out "
                           "(torchrun's --nproc-per-node sets the number of processes)")
    context = mp.start_processes(_run_rank, args=(world_size, free_port(), fn, args), nprocs=world_size,
                                 start_method="spawn", join=False)
    try:
        while not context.join():
            pass
    except KeyboardInterrupt:  # Ctrl-C reached every process: let rank 0 save its checkpoint
        stopped_peers = (mp.ProcessExitedException, mp.ProcessRaisedException)  # fail the others
        with contextlib.suppress(*stopped_peers):
            while not context.join():
                pass
        raise
