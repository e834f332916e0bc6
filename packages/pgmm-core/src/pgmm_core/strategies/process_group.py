"""The process group: joining the job torchrun started, with the device backend's dist backend.

Import-cheap (torch is imported when a group is joined), so that strategy plugins can import
:mod:`pgmm_core.strategies.base` at registration time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job, from torchrun's environment (one process without it)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launched: bool = False  # torchrun (or another launcher) set RANK/WORLD_SIZE

    @classmethod
    def from_environ(cls, environ: Any = None) -> DistEnv:
        env = os.environ if environ is None else environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   "WORLD_SIZE" in env and "MASTER_ADDR" in env)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group(env: DistEnv, backend: str, device: Any = None) -> None:
    """Join the torchrun job (MASTER_ADDR/MASTER_PORT from torchrun) with ``backend``."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    timeout = timedelta(seconds=int(os.environ.get("PGMM_DIST_TIMEOUT", 1800)))
    kwargs = {"device_id": device} if device is not None and device.type != "cpu" else {}
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=timeout, **kwargs)


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
