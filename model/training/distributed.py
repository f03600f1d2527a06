"""Data-parallel training: which rank this process is, its share of a step's batch, and the few
collective operations the training loop needs (torch.distributed; gloo on the CPU, NCCL on GPUs).

The environment is torchrun's (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
`MASTER_ADDR`, `MASTER_PORT`); `streamstyle train --nproc N` gives its N processes the same, so a
rank runs the same code either way. Without those variables the process is the only rank.

What must hold:
- Of a step's global batch (clip indices step * batch + i, i < batch), rank r takes the r-th of
  `world` equal, contiguous shares of i (`Ranks.share`); batch % world == 0 (`check_batch`).
  With the per-clip generators of `objective.StepRandomness`, a clip and its draws are the same
  whichever rank holds it.
- Each rank's loss is the mean over its share and DistributedDataParallel averages the gradients
  over the ranks, so the gradient is the mean over the global batch: N ranks take the step one
  process with the whole batch takes, within float tolerance.
- Whatever ends the loop (a stop signal, the time limit, a non-finite loss) is agreed by an
  all_reduce (`agree`, `mean_over_ranks`), so every rank leaves at the same step boundary and no
  rank waits for a peer that has gone.
- On CUDA each rank owns one GPU, `cuda:LOCAL_RANK`; NVLink multicast (NVLS) stays off.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.distributed as dist

from ..errors import ConfigError, DeviceError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run; the default is a run of one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Ranks":
        """The rank torchrun (or `train --nproc`) gave this process; a run of one without them."""
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            rank, world = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError:
            raise ConfigError(f"the torch.distributed environment is not made of integers: "
                              f"{ {k: env.get(k) for k in ENV_VARS} }") from None
        if not (world >= 1 and 0 <= rank < world and 1 <= local_world <= world and 0 <= local_rank < local_world):
            raise ConfigError(f"inconsistent torch.distributed environment: rank {rank} of {world}, "
                              f"local rank {local_rank} of {local_world}")
        return cls(rank, world, local_rank, local_world)

    @property
    def is_main(self) -> bool:
        """Rank 0 keeps the EMA and writes metrics and checkpoints."""
        return self.rank == 0

    def check_batch(self, batch: int) -> None:
        if batch % self.world:
            raise ConfigError(f"the global batch ({batch} clips) must split evenly over {self.world} processes: "
                              f"give a batch that is a multiple of {self.world}")

    def share(self, batch: int) -> range:
        """The positions i of a step's global batch this rank renders and trains on."""
        self.check_batch(batch)
        per = batch // self.world
        return range(self.rank * per, (self.rank + 1) * per)

    def device(self, name: str) -> torch.device:
        """The training device `name` ("cpu", "cuda" or "cuda:N") means for this rank: with more
        than one rank, "cuda" is this rank's own GPU, cuda:LOCAL_RANK. Raises DeviceError when
        that GPU is missing, ConfigError for a fixed GPU index with several ranks."""
        device = torch.device(name)
        if device.type != "cuda" or self.world == 1:
            return device
        if device.index is not None:
            raise ConfigError(f"--device {name} with {self.world} processes: each process takes its own GPU "
                              f"(cuda:LOCAL_RANK); give --device cuda (and CUDA_VISIBLE_DEVICES to choose GPUs)")
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise DeviceError(f"process {self.local_rank} of {self.local_world} on this machine needs GPU "
                              f"{self.local_rank}, and there are {count}: one GPU per process")
        return torch.device("cuda", self.local_rank)


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Joins the run's process group for the block (nothing to join for a run of one)."""
    if ranks.world == 1:
        yield
        return
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (it needs fabric setup we do not do)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device), init_method="env://", rank=ranks.rank, world_size=ranks.world,
                            device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _reduce(values: Sequence[float], op, device: torch.device) -> list[float]:
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def agree(ranks: Ranks, values: Sequence[float], device: torch.device) -> list[float]:
    """Each value's maximum over the ranks (a flag any rank raised, the largest signal number)."""
    if ranks.world == 1:
        return [float(v) for v in values]
    return _reduce(values, dist.ReduceOp.MAX, device)


def mean_over_ranks(ranks: Ranks, values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Each value's mean over the ranks: with equal shares, a per-share mean becomes the global
    batch's. A NaN on any rank makes the mean NaN on every rank, so all of them stop together."""
    if ranks.world == 1:
        return dict(values)
    keys = list(values)
    sums = _reduce([values[k] for k in keys], dist.ReduceOp.SUM, device)
    return {k: s / ranks.world for k, s in zip(keys, sums)}


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()
