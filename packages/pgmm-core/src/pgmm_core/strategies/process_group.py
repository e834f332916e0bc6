"""The process group: joining the job torchrun started, with the device backend's dist backend.

Import-cheap (torch is imported when a group is joined), so that strategy plugins can import
:mod:`pgmm_core.strategies.base` at registration time.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
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


def init_process_group(env: DistEnv, backend: str, device: Any = None, *,
                       timeout_s: float | None = None) -> timedelta:
    """Join the torchrun job (MASTER_ADDR/MASTER_PORT from torchrun) with ``backend``; a collective
    that waits longer than the timeout (:func:`group_timeout`, returned) fails instead of hanging."""
    import torch.distributed as dist

    timeout = group_timeout(timeout_s)
    if dist.is_initialized():
        return timeout
    kwargs = {"device_id": device} if device is not None and device.type != "cpu" else {}
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=timeout, **kwargs)
    return timeout


LOST_PEER_MARKS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out waiting",
                   "Socket Timeout")
"""How gloo (and the c10d store) word a failed collective whose peer is gone: its process ended
(the socket closed: "Connection closed by peer", "Connection reset by peer", "Broken pipe" on a
write) or it stopped answering ("Timed out waiting <ms> for recv operation to complete" after the
group's timeout)."""


def lost_peer(exc: BaseException | None) -> str | None:
    """The backend's own words, shortened to one sentence, when ``exc`` (or what caused it) is a
    collective that failed because another rank died or stopped answering; ``None`` for anything
    else (a refused dtype, a shape mismatch, a bug), which keeps its traceback."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, RuntimeError) and any(mark in text for mark in LOST_PEER_MARKS):
            text = re.sub(r"^\[[^\]]*\]\s*", "", text.strip())  # gloo's "[.../pair.cc:545] " source location
            return re.split(r"\.\s|\n", text, maxsplit=1)[0].rstrip(".")[:300]
        exc = exc.__cause__ or exc.__context__
    return None


def first_report_on_this_node(event: str, *, window_s: float = 60.0) -> bool:
    """True in the first process of this node's launch to report ``event``, false in the others.

    A lost peer fails the collective every rank of a node is in, so each would say the same; one
    message per node is enough (torchrun stops the node's other workers as soon as one fails). The
    workers of one torchrun launch share its agent as parent, so an exclusively created file named
    after the parent and the restart count claims the report; an older claim (a recycled process id)
    does not count.
    """
    name = f"pgmm-{event}-{os.getppid()}-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    marker = Path(tempfile.gettempdir()) / name
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        try:
            if time.time() - marker.stat().st_mtime > window_s:
                marker.touch()
                return True
        except OSError:
            return True
        return False
    except OSError:  # no writable temporary directory: every process reports
        return True


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
