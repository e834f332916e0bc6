"""Collectives that respect what a communication backend can actually do with each dtype.

HCCL (Ascend) cannot reduce float64 and has no usable AVG/BAND/BOR/BXOR; NCCL and HCCL only move
tensors that live on their device; other backends have their own gaps. Instead of scattering
``.float()`` and ``.to(device)`` calls through the trainer (what the original project did), every
collective goes through :class:`Collectives`, which casts to a dtype the backend accepts, moves the
data to the backend's device, runs the collective, and hands back a tensor with the caller's dtype on
the caller's device. Each device backend supplies its :class:`DtypeRules`.

All methods are functional (they return the result and never modify their input) and work without
an initialised process group (world size 1), so single-process code paths need no special cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from pgmm_core.errors import PgmmError

REDUCE_OPS = ("sum", "min", "max", "product", "avg", "band", "bor", "bxor")


@dataclass(frozen=True)
class DtypeRules:
    """What a communication backend accepts.

    ``reduce_casts`` maps a dtype the backend cannot reduce (all_reduce, reduce, reduce_scatter) to
    the dtype sent instead; ``broadcast_casts`` does the same for broadcast and all_gather.
    ``native_avg`` says whether the backend's own AVG may be used for floating-point tensors (integer
    AVG is always SUM followed by a true division here, never the backend's truncating one).
    ``unsupported_ops`` are refused before anything is sent.
    """

    backend: str
    reduce_casts: Mapping[torch.dtype, torch.dtype] = field(default_factory=dict)
    broadcast_casts: Mapping[torch.dtype, torch.dtype] = field(default_factory=dict)
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


def _torch_op(op: str) -> dist.ReduceOp:
    return getattr(dist.ReduceOp, op.upper())


class Collectives:
    """Dtype-safe collectives for one backend's rules.

    ``device`` is where the backend communicates (set by the device backend's ``setup``); tensors
    are moved there for the collective and the result is returned on the input's device.
    """

    def __init__(self, rules: DtypeRules, device: torch.device | None = None) -> None:
        self.rules = rules
        self.device = device

    # --- reductions -------------------------------------------------------------------------------

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce across ranks; the result has the input's dtype (AVG of integers/bools: float)."""

        def run(work: torch.Tensor, wire_op: dist.ReduceOp) -> torch.Tensor:
            dist.all_reduce(work, op=wire_op)
            return work

        return self._reduction(tensor, op, run)

    def reduce(self, tensor: torch.Tensor, dst: int = 0, op: str = "sum") -> torch.Tensor:
        """Reduce onto rank ``dst``. The result is only meaningful on ``dst``."""

        def run(work: torch.Tensor, wire_op: dist.ReduceOp) -> torch.Tensor:
            dist.reduce(work, dst=dst, op=wire_op)
            return work

        return self._reduction(tensor, op, run)

    def reduce_scatter(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce ``tensor`` across ranks and return this rank's slice of dim 0 (equal slices)."""
        size = world_size()
        if tensor.dim() == 0 or tensor.shape[0] % size:
            raise PgmmError(
                f"reduce_scatter needs a tensor whose first dimension divides into {size} equal parts "
                f"(one per rank); got shape {list(tensor.shape)}"
            )

        def run(work: torch.Tensor, wire_op: dist.ReduceOp) -> torch.Tensor:
            chunks = list(work.chunk(size))
            out = torch.empty_like(chunks[rank()])
            dist.reduce_scatter(out, chunks, op=wire_op)
            return out

        return self._reduction(tensor, op, run)

    def _reduction(self, tensor: torch.Tensor, op: str,
                   run: Callable[[torch.Tensor, dist.ReduceOp], torch.Tensor]) -> torch.Tensor:
        op = self._check_op(op)
        original = tensor.dtype
        exact_avg = op == "avg" and not (original.is_floating_point or original.is_complex)
        if not _initialised() or world_size() == 1:
            return tensor.to(torch.get_default_dtype()) if exact_avg else tensor.clone()
        wire_dtype = self.rules.reduce_casts.get(original, original)
        work = tensor.detach().to(device=self._wire_device(tensor), dtype=wire_dtype, copy=True)
        native_avg = op == "avg" and self.rules.native_avg and not exact_avg
        wire_op = _torch_op("avg" if native_avg else "sum" if op == "avg" else op)
        out = run(work, wire_op)
        if op == "avg" and not native_avg:
            if exact_avg:
                # True division in float64 on the host (many NPU kernels reject float64): no integer
                # truncation, one final rounding to the default float dtype.
                return (out.to("cpu", torch.float64) / world_size()).to(tensor.device, torch.get_default_dtype())
            out = out / world_size()
        return out.to(device=tensor.device, dtype=original)

    def _check_op(self, op: str) -> str:
        op = op.lower()
        if op not in REDUCE_OPS:
            raise PgmmError(f"unknown reduce op '{op}' (known: {', '.join(REDUCE_OPS)})")
        if op in self.rules.unsupported_ops:
            allowed = ", ".join(o for o in REDUCE_OPS if o not in self.rules.unsupported_ops)
            raise PgmmError(
                f"reduce op {op.upper()} is not supported by the {self.rules.backend} backend; use one of: {allowed}"
            )
        return op

    # --- data movement ----------------------------------------------------------------------------

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if not _initialised() or world_size() == 1:
            return tensor.clone()
        work = self._wire_copy(tensor)
        dist.broadcast(work, src=src)
        return work.to(device=tensor.device, dtype=tensor.dtype)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Gather equally shaped tensors from every rank (rank order)."""
        if not _initialised() or world_size() == 1:
            return [tensor.clone()]
        work = self._wire_copy(tensor).contiguous()
        out = [torch.empty_like(work) for _ in range(world_size())]
        dist.all_gather(out, work)
        return [t.to(device=tensor.device, dtype=tensor.dtype) for t in out]

    def all_gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 (rank order), differentiably.

        Contrastive losses need the other ranks' features *with* their graph where a rank's loss
        depends on them (LAVIS' ``all_gather_with_grad``, used for ITM's image embeddings): the
        backward sums the gradient of the whole concatenation over ranks (each rank's loss touched
        every slice) and hands each rank the slice of its own input, as LAVIS' ``GatherLayer``.
        Tensors travel as float32 both ways (HCCL-safe whatever the input dtype) and come back in the
        input's dtype. Equal shapes on every rank. With one process the input itself is returned.
        """
        if not _initialised() or world_size() == 1:
            return tensor
        return _GatherWithGrad.apply(tensor, self)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Gather picklable objects (results lists, RNG states) from every rank.

        Only bytes and sizes cross the wire (uint8/int64 all_gather), which every backend accepts;
        pass tensors through :func:`to_serializable` first so that nothing device-bound is pickled.
        """
        if not _initialised() or world_size() == 1:
            return [obj]
        out: list[Any] = [None] * world_size()
        dist.all_gather_object(out, obj)
        return out

    def reduce_scalars(self, values: dict[str, float], op: str = "avg", device: Any = None) -> dict[str, float]:
        """Reduce a dict of Python floats in one collective (float32 on the wire)."""
        if not values:
            return {}
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float32,
                              device=device or self.device or "cpu")
        reduced = self.all_reduce(tensor, op=op)
        return {k: float(v) for k, v in zip(keys, reduced.cpu().tolist())}

    def barrier(self) -> None:
        if _initialised():
            dist.barrier()

    def _wire_device(self, tensor: torch.Tensor) -> torch.device:
        return self.device if self.device is not None else tensor.device

    def _wire_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        dtype = self.rules.broadcast_casts.get(tensor.dtype, tensor.dtype)
        return tensor.detach().to(device=self._wire_device(tensor), dtype=dtype, copy=True)


class _GatherWithGrad(torch.autograd.Function):
    """:meth:`Collectives.all_gather_with_grad`'s autograd: all_gather forward, all_reduce(sum) of
    the gradient backward, this rank's slice returned."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, collectives: Collectives) -> torch.Tensor:
        ctx.collectives = collectives
        ctx.rows = tensor.shape[0]
        parts = collectives.all_gather(tensor.detach().float())
        return torch.cat(parts, dim=0).to(tensor.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = ctx.collectives.all_reduce(grad.float().contiguous(), op="sum")
        start = rank() * ctx.rows
        return total[start:start + ctx.rows].to(grad.dtype), None


def to_serializable(obj: Any) -> Any:
    """A version safe to save and to pickle across ranks: tensors on CPU, float64 -> float32.

    Used for everything a checkpoint holds (weights, optimizer state, RNG states): no float64 reaches
    disk or HCCL, and nothing pickled refers to an accelerator.
    """
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
