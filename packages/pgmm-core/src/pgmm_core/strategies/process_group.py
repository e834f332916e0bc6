"""The process group: joining the job torchrun started, with the device backend's dist backend.

Import-cheap (torch is imported when a group is joined), so that strategy plugins can import
:mod:`pgmm_core.strategies.base` at registration time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from collections.abc import Iterable
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


DEFAULT_TIMEOUT_S = 1800
"""Seconds a collective may wait for the other ranks before the process group fails it (torch's
default too); ``PGMM_DIST_TIMEOUT`` or a strategy's ``timeout_s`` changes it."""


def group_timeout(seconds: float | None = None) -> timedelta:
    """``seconds`` when given, else ``PGMM_DIST_TIMEOUT``, else :data:`DEFAULT_TIMEOUT_S`."""
    if seconds is None:
        seconds = float(os.environ.get("PGMM_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    return timedelta(seconds=seconds)


def init_process_group(env: DistEnv, backend: str, device: Any = None, *, timeout_s: float | None = None) -> None:
    """Join the torchrun job (MASTER_ADDR/MASTER_PORT from torchrun) with ``backend``; a collective
    that waits longer than the timeout (:func:`group_timeout`) fails instead of hanging."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    timeout = group_timeout(timeout_s)
    kwargs = {"device_id": device} if device is not None and device.type != "cpu" else {}
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=timeout, **kwargs)


def destroy_process_group(meshes: Iterable[Any] = ()) -> None:
    """Leave the job and free its process groups now, not at interpreter exit.

    ``torch.distributed.destroy_process_group`` only unregisters the groups: a group stays alive,
    with its gloo worker threads, while anything still references it. A device mesh does (its group
    registry), and DTensor's global caches keep every mesh they have seen, so without help the groups
    live until the interpreter shuts down — where a worker thread still releasing a finished
    collective's tensors cannot take the GIL and the process aborts ("terminate called without an
    active exception") after a run that succeeded. So: collect what the run left unreferenced,
    unregister the groups, then empty the registries of ``meshes`` so the last references go here,
    while the interpreter is whole and the workers can finish (each group's destructor joins them).
    """
    import gc

    import torch.distributed as dist

    gc.collect()  # reference cycles (modules, optimizer state) that still hold groups
    if dist.is_initialized():
        dist.destroy_process_group()
    for mesh in meshes:
        registry = getattr(mesh, "_pg_registry", None)  # torch's DeviceMesh: name -> ProcessGroup
        if isinstance(registry, dict):
            registry.clear()
    gc.collect()
