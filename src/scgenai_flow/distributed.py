"""Data-parallel training with torch DDP: process group, batch sharding and metric reduction."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among `world` training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def part(self, items: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of `items`; together the parts cover them in order."""
        bounds = np.linspace(0, items.size, self.world + 1).astype(int)
        return items[bounds[self.rank] : bounds[self.rank + 1]]

    def total(self, *values: float) -> list[float]:
        """Sum of each value over ranks."""
        if self.world == 1:
            return list(values)
        summed = torch.tensor(values, dtype=torch.float64, device=_device(self))
        dist.all_reduce(summed)
        return summed.tolist()

    def gather_rows(self, part: np.ndarray, n_rows: int) -> np.ndarray:
        """Concatenate every rank's `part` (rows of a 2-D float array) in rank order."""
        if self.world == 1:
            return part
        width = -(-n_rows // self.world) + 1
        padded = torch.zeros((width, part.shape[1]), dtype=torch.float32, device=_device(self))
        padded[: len(part)] = torch.from_numpy(part)
        sizes = [torch.zeros(1, dtype=torch.int64, device=_device(self)) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([len(part)], device=_device(self)))
        blocks = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(blocks, padded)
        return torch.cat([b[: int(s)] for b, s in zip(blocks, sizes)]).cpu().numpy()


ONE_PROCESS = Ranks()


def _device(ranks: Ranks) -> torch.device:
    return torch.device("cuda", ranks.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """Inside: this process's ranks in the group torchrun describes (one process without it)."""
    ranks = join_process_group()
    try:
        yield ranks
    finally:
        leave_process_group()


def join_process_group() -> Ranks:
    """Join the group torchrun describes in the environment (nccl on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return ONE_PROCESS
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend)
    return ranks


def leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(processes: int, module: str, arguments: dict) -> None:
    """Run `python -m module ARGS.json` in `processes` processes with torchrun, logging their output."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(arguments, handle)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", module, handle.name]  # fmt: skip
    log.info("launching %d training processes: %s", processes, " ".join(command))
    try:
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert run.stdout is not None
        for line in run.stdout:
            log.info("| %s", line.rstrip())
        if run.wait() != 0:
            raise RuntimeError(f"distributed training failed (exit {run.returncode}); see the log above")
    finally:
        os.unlink(handle.name)
