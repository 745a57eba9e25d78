"""Running one stage as several processes: which shard this process is, and the
torch.distributed group of a launcher (its GPU: :func:`sptar.models.resolve_device`).

Two ways to start shards:

- ``--shard I --num-shards N`` flags: separate processes that never talk to each other; each does
  its share and writes it to disk, and the one that finds every share present when it finishes
  (the last to end, or any later run) merges and completes the stage.
- ``torchrun`` / ``accelerate launch``: they set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
  ``MASTER_ADDR``/``MASTER_PORT``; the shard comes from ``RANK``/``WORLD_SIZE``, the GPU from
  ``LOCAL_RANK`` (:func:`sptar.models.resolve_device`), and the processes can join one process
  group (:func:`process_group`) to wait for each other at a barrier, after which rank 0 alone
  completes the stage.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from datetime import timedelta

from sptar.errors import SptarError

# a barrier waits for the slowest process's whole share (e.g. a resumed run where one rank has
# nothing left to do): far longer than torch's 30-minute default; a launcher that sees a process
# fail ends the others anyway
GROUP_TIMEOUT = timedelta(hours=12)


def resolve_shard(shard: int | None, num_shards: int | None) -> tuple[int, int]:
    """``(shard, num_shards)`` from the flags, else from torchrun/accelerate's environment."""
    if num_shards is None:
        num_shards = int(os.environ.get("WORLD_SIZE", "1"))
        if shard is None:
            shard = int(os.environ.get("RANK", "0"))
    shard = 0 if shard is None else shard
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise SptarError(f"--shard {shard} --num-shards {num_shards}: need 0 <= shard < num_shards"
                         " (fix: e.g. --shard 0 --num-shards 2)")
    return shard, num_shards


def launched() -> bool:
    """Started by torchrun / accelerate launch as one of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def group_rank() -> int | None:
    """This process's rank in an initialised torch.distributed group, else None."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def process_group(device: str) -> Callable[[], None] | None:
    """A barrier across the launcher's processes, or None when there is no group to join.

    Joins the torch.distributed group already initialised, or initialises one (nccl for a CUDA
    device, gloo otherwise) when a launcher started this process. The group stays for the rest of
    the process (a trainer started later joins it: torch cannot initialise a second one on the
    launcher's store) and is closed when the process exits.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if not launched():
            return None
        if device.startswith("cuda"):
            import torch

            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                timeout=GROUP_TIMEOUT)
        atexit.register(_close_group)
    return barrier


def _close_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
