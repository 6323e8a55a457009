"""One process or many: what the trainer needs to know about its place in a run.

``torchrun --nproc_per_node=N -m lightnets.train ...`` starts N processes and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` reads them and joins the
process group (NCCL when every process has its own GPU, gloo otherwise, e.g. on CPUs).
Without those variables the run is a single process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the logs, metrics, checkpoints and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return device


def setup(device: str = "auto", backend: str | None = None, timeout_minutes: float = 30.0) -> DistEnv:
    """Join the process group torchrun described, or describe a single-process run."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if world_size == 1:
        return DistEnv(0, 1, 0, chosen)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    backend = backend or ("nccl" if chosen.type == "cuda" else "gloo")
    initialised_here = False
    if not dist.is_initialized():
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(minutes=timeout_minutes)
        )
        initialised_here = True
    return DistEnv(rank, world_size, local_rank, chosen, backend, initialised_here)


def cleanup(env: DistEnv) -> None:
    if env.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Sums of ``values`` over all processes (float64, so counts stay exact)."""
    if not env.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if env.backend == "nccl":
        tensor = tensor.to(env.device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()
