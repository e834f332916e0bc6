"""Collectives that respect what a communication backend can actually do with each dtype.

HCCL (Ascend) cannot reduce float64 and has no AVG/BAND/BOR/BXOR; other backends have their own gaps.
Instead of scattering ``.float()`` calls through the trainer (what the original project did), every
reduction goes through :class:`Collectives`, which casts to a supported dtype, runs the collective,
and restores the caller's dtype. Each device backend supplies its :class:`DtypeRules`.

All functions are functional (they return the result) and work without an initialised process group
(world size 1), so single-process code paths need no special cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from pgmm_core.errors import PgmmError

REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "min": dist.ReduceOp.MIN,
    "max": dist.ReduceOp.MAX,
    "product": dist.ReduceOp.PRODUCT,
    "avg": None,  # resolved per rules
    "band": dist.ReduceOp.BAND,
    "bor": dist.ReduceOp.BOR,
    "bxor": dist.ReduceOp.BXOR,
}


@dataclass(frozen=True)
class DtypeRules:
    """What a backend accepts. ``reduce_casts`` maps an unsupported dtype to the one to use instead."""

    backend: str
    reduce_casts: dict[torch.dtype, torch.dtype] = field(default_factory=dict)
    broadcast_casts: dict[torch.dtype, torch.dtype] = field(default_factory=dict)
    native_avg: bool = False
    unsupported_ops: frozenset[str] = frozenset()


GLOO_RULES = DtypeRules("gloo", reduce_casts={torch.bool: torch.uint8})
NCCL_RULES = DtypeRules("nccl", reduce_casts={torch.bool: torch.uint8}, native_avg=True)


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if _initialised() else 1


def rank() -> int:
    return dist.get_rank() if _initialised() else 0


class Collectives:
    """Dtype-safe all_reduce / broadcast / all_gather for one backend's rules."""

    def __init__(self, rules: DtypeRules) -> None:
        self.rules = rules

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce across ranks and return a new tensor with the input's dtype (AVG of ints: float)."""
        op = op.lower()
        if op not in REDUCE_OPS:
            raise PgmmError(f"unknown reduce op '{op}' (known: {', '.join(REDUCE_OPS)})")
        if op in self.rules.unsupported_ops:
            raise PgmmError(
                f"reduce op {op.upper()} is not supported by the {self.rules.backend} backend; "
                "use sum/min/max/product"
            )
        original = tensor.dtype
        integer_avg = op == "avg" and not (original.is_floating_point or original.is_complex)
        if not _initialised() or world_size() == 1:
            return tensor.to(torch.get_default_dtype()) if integer_avg else tensor.clone()
        work_dtype = self.rules.reduce_casts.get(original, original)
        work = tensor.detach().to(work_dtype).clone()
        if op == "avg" and self.rules.native_avg and not integer_avg:
            dist.all_reduce(work, op=dist.ReduceOp.AVG)
            return work.to(original)
        dist.all_reduce(work, op=REDUCE_OPS["sum"] if op == "avg" else REDUCE_OPS[op])
        if op == "avg":
            # SUM then divide: exact for integers (no truncation) and the same for every backend.
            target = torch.get_default_dtype() if integer_avg else original
            return (work.double() / world_size()).to(target) if work.device.type == "cpu" else (
                work.to(torch.float32) / world_size()
            ).to(target)
        if original == torch.bool:
            return work.to(torch.bool)
        return work.to(original)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if not _initialised() or world_size() == 1:
            return tensor.clone()
        original = tensor.dtype
        work = tensor.detach().to(self.rules.broadcast_casts.get(original, original)).clone()
        dist.broadcast(work, src=src)
        return work.to(original)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Gather equally shaped tensors from every rank (rank order)."""
        if not _initialised() or world_size() == 1:
            return [tensor.clone()]
        original = tensor.dtype
        work = tensor.detach().to(self.rules.broadcast_casts.get(original, original)).contiguous()
        out = [torch.empty_like(work) for _ in range(world_size())]
        dist.all_gather(out, work)
        return [t.to(original) for t in out]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Gather picklable objects (results lists, counters) from every rank."""
        if not _initialised() or world_size() == 1:
            return [obj]
        out: list[Any] = [None] * world_size()
        dist.all_gather_object(out, obj)
        return out

    def reduce_scalars(self, values: dict[str, float], op: str = "avg", device: Any = "cpu") -> dict[str, float]:
        """Reduce a dict of Python floats in one collective (float32 on the wire)."""
        if not values:
            return {}
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float32, device=device)
        reduced = self.all_reduce(tensor, op=op)
        return {k: float(v) for k, v in zip(keys, reduced.cpu().tolist())}

    def barrier(self) -> None:
        if _initialised():
            dist.barrier()


def to_serializable(obj: Any) -> Any:
    """A copy safe to save and to send through any backend: tensors on CPU, float64 -> float32."""
    if isinstance(obj, torch.Tensor):
        out = obj.detach().to("cpu")
        return out.to(torch.float32) if out.dtype == torch.float64 else out
    if isinstance(obj, dict):
        return {k: to_serializable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_serializable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_serializable(v) for v in obj)
    return obj
