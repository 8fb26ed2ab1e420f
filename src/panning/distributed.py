"""Training on several processes with DistributedDataParallel, as started by ``torchrun``.

``torchrun --nproc-per-node N -m panning train ...`` (or ``run``) starts N copies of the command;
each joins the process group that torchrun describes in its environment (gloo on CPU, NCCL on
CUDA). Screening happens once, on rank 0, and its masks reach every rank; each global batch of
``batch_size`` examples is split between the ranks, whose gradients DistributedDataParallel
averages, so the optimisation is that of one process at the same global batch and learning rate.
Only rank 0 writes the run folder.

From Python, :func:`panning.training.train` trains this way whenever a process group is initialised.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from panning.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Workers:
    """This process's place among the training processes: rank, how many, and its local rank.

    Examples:
        >>> Workers(0, 1, 0).main, Workers(1, 2, 1).main
        (True, False)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that screens, prints and writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process trains."""
        return self.world_size > 1


def from_environment(environ: Mapping[str, str] | None = None) -> Workers | None:
    """The workers torchrun describes in the environment, or ``None`` outside torchrun.

    Examples:
        >>> from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        Workers(rank=1, world_size=2, local_rank=1)
        >>> from_environment({}) is None
        True
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        workers = Workers(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start the processes with torchrun") from None
    if workers.world_size < 1 or not 0 <= workers.rank < workers.world_size:
        raise UserError(f"rank {workers.rank} of {workers.world_size} processes is not valid; start them with torchrun")
    return workers


def current() -> Workers:
    """The workers of the initialised process group, or a single process when there is none.

    Examples:
        >>> current()
        Workers(rank=0, world_size=1, local_rank=0)
    """
    if not (dist.is_available() and dist.is_initialized()):
        return Workers()
    local = os.environ.get("LOCAL_RANK")
    rank = dist.get_rank()
    return Workers(rank, dist.get_world_size(), int(local) if local is not None else rank)


def start(device: str) -> Workers:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA); a single process outside torchrun.

    Examples:
        >>> start("cpu")  # not under torchrun: nothing to join
        Workers(rank=0, world_size=1, local_rank=0)
    """
    workers = from_environment()
    if workers is None or not workers.distributed:
        return Workers()
    if dist.is_initialized():
        return current()
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise UserError("--device cuda but this machine has no CUDA device; use --device cpu")
        torch.cuda.set_device(workers.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return workers


def stop() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def joined(device: str) -> Iterator[Workers]:
    """:func:`start` on entry and :func:`stop` on exit, whatever happens in between.

    Examples:
        >>> with joined("cpu") as workers:
        ...     workers.world_size
        1
    """
    workers = start(device)
    try:
        yield workers
    finally:
        if workers.distributed:
            stop()


def device_for(device: torch.device, workers: Workers) -> torch.device:
    """This rank's device: its own GPU under NCCL, the CPU as it is.

    Examples:
        >>> device_for(torch.device("cpu"), Workers(1, 2, 1))
        device(type='cpu')
    """
    if workers.distributed and device.type == "cuda":
        return torch.device("cuda", workers.local_rank)
    return device


def describe(workers: Workers, global_batch: int, lr: float) -> dict[str, Any]:
    """What a run's ``config.json`` records of its processes under torchrun.

    Examples:
        >>> describe(Workers(), 256, 0.1)["world_size"]
        1
    """
    return {
        "world_size": workers.world_size,
        "backend": str(dist.get_backend()) if workers.distributed else None,
        "global_batch": global_batch,
        "batch_per_process": math.ceil(global_batch / workers.world_size),
        "lr": lr,
    }


def share(value: T | None, workers: Workers) -> T:
    """Rank 0's ``value`` (for example the masks it screened) on every rank; the others pass ``None``.

    Examples:
        >>> share({"kept": 3}, Workers())
        {'kept': 3}
    """
    if workers.distributed:
        box: list[T | None] = [value if workers.main else None]
        dist.broadcast_object_list(box, src=0)
        value = box[0]
    if value is None:
        raise UserError("rank 0 had nothing to share with the other processes")
    return value


def shard(x: torch.Tensor, y: torch.Tensor, workers: Workers) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of a global batch: every ``world_size``-th example from its rank on.

    Examples:
        >>> shard(torch.arange(5), torch.arange(5), Workers(1, 2, 1))[0].tolist()
        [1, 3]
    """
    if not workers.distributed:
        return x, y
    return x[workers.rank :: workers.world_size], y[workers.rank :: workers.world_size]


def sum_across(values: list[float], workers: Workers, device: torch.device) -> list[float]:
    """The sums of ``values`` over all ranks (per-rank loss and accuracy counts become global).

    Examples:
        >>> sum_across([1.0, 2.0], Workers(), torch.device("cpu"))
        [1.0, 2.0]
    """
    if not workers.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def differing_ranks(value: object, workers: Workers) -> list[int]:
    """The ranks whose ``value`` differs from rank 0's (every rank gets the same answer).

    Examples:
        >>> differing_ranks("masks digest", Workers())
        []
    """
    if not workers.distributed:
        return []
    values: list[object] = [None] * workers.world_size
    dist.all_gather_object(values, value)
    return [rank for rank, other in enumerate(values) if other != values[0]]


def barrier(workers: Workers) -> None:
    """Wait until every rank gets here (rank 0 has written what the others read)."""
    if workers.distributed:
        dist.barrier()


__all__ = [
    "Workers",
    "barrier",
    "current",
    "describe",
    "device_for",
    "differing_ranks",
    "from_environment",
    "joined",
    "shard",
    "share",
    "start",
    "stop",
    "sum_across",
]
