"""A strict stand-in for Ascend's HCCL process group, for machines without NPUs.

:func:`register_fake_hccl` registers a ``torch.distributed`` backend named ``"hccl"`` for CPU tensors.
Data moves through gloo; on top, the rules of torch_npu's ``ProcessGroupHCCL`` are enforced as its
source states them (``checkSupportedDataType`` and ``getHcclReduceOp`` in
``torch_npu/csrc/distributed/ProcessGroupHCCL.cpp``, 910/910B/910C):

* reductions (all_reduce, reduce, reduce_scatter and their coalesced/tensor forms) accept int8,
  int16, int32, int64, float16, float32 and bfloat16 only: float64 raises
  ``RuntimeError: HCCL allreduce: Unsupported data type at::kDouble`` (``reduce``/``reduce_scatter``
  name themselves); dtypes HCCL has no code for raise ``Unsupported data type for HCCL process group``;
* bool and uint8 are widened to int32 for the reduction and copied back, as torch_npu does;
* BAND/BOR/BXOR raise ``Cannot use ReduceOp.BAND with HCCL`` (…BOR, …BXOR), PREMUL_SUM is refused;
* AVG is refused outright. Real HCCL emulates it as SUM then an in-place divide, which truncates or
  fails on integer tensors, so this double is stricter: no pgmm code path may rely on it;
* broadcast, all_gather (list and tensor forms: ``all_gather_into_tensor``, FSDP2's all-gather of
  parameters), gather, scatter, all_to_all and barrier accept every dtype (as HCCL does) and go to
  gloo unchanged; FSDP2's gradient ``reduce_scatter_tensor`` is a reduction and checked as one.

What it proves: code passes HCCL's dtype and reduce-op checks and computes the right values across
real processes. What it cannot: device placement (everything here is on CPU), HCCL numerics and
performance, timeouts, HCCL-specific failures. ``@pytest.mark.npu`` tests cover those on hardware.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import (
    AllgatherOptions,
    AllreduceCoalescedOptions,
    AllreduceOptions,
    BroadcastOptions,
    ReduceOptions,
    ReduceScatterOptions,
    _create_work_from_future,
)
from torch.futures import Future

REDUCIBLE = frozenset({torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
                       torch.bfloat16})
WIDENED = frozenset({torch.bool, torch.uint8})  # torch_npu casts these to int32 before reducing
HCCL_TYPE_NAMES = {torch.float64: "at::kDouble"}  # the only dtype HCCL names and then refuses
REFUSED_OPS = ("AVG", "BAND", "BOR", "BXOR", "PREMUL_SUM")

calls: Counter[str] = Counter()
"""How often each collective reached the fake in this process (tests check traffic really went here)."""


def _done(result: Any) -> Any:
    future: Future = Future()
    future.set_result(result)
    return _create_work_from_future(future)


def _check_op(reduce_op: Any) -> dist.ReduceOp:
    for name in REFUSED_OPS:
        if reduce_op == getattr(dist.ReduceOp, name):
            if name in ("BAND", "BOR", "BXOR"):
                raise RuntimeError(f"Cannot use ReduceOp.{name} with HCCL")
            raise RuntimeError(f"fake hccl: ReduceOp.{name} is refused (HCCL emulates it as SUM and an "
                               "in-place divide, wrong for integer tensors); reduce with SUM and divide")
    return reduce_op


def _check_dtype(function: str, tensor: torch.Tensor) -> None:
    if tensor.dtype in REDUCIBLE or tensor.dtype in WIDENED:
        return
    if tensor.dtype in HCCL_TYPE_NAMES:
        raise RuntimeError(f"HCCL {function}: Unsupported data type {HCCL_TYPE_NAMES[tensor.dtype]}")
    raise RuntimeError("Unsupported data type for HCCL process group")


class StrictHcclProcessGroup(dist.ProcessGroup):
    """``ProcessGroup`` named hccl: reductions checked and widened like HCCL, everything else gloo's."""

    def __init__(self, store: Any, rank: int, size: int, timeout: timedelta) -> None:
        super().__init__(rank, size)
        self._gloo = dist.ProcessGroupGloo(store, rank, size, timeout)
        # Collectives without an override below (broadcast, all_gather, barrier, ...) go to gloo as is.
        self._register_backend(torch.device("cpu"), dist.ProcessGroup.BackendType.CUSTOM, self._gloo)

    def getBackendName(self) -> str:  # noqa: N802 (the c10d name)
        return "hccl"

    def _reduce_in_place(self, function: str, tensor: torch.Tensor, reduce_op: Any, root: int | None = None) -> None:
        calls[function] += 1
        _check_dtype(function, tensor)
        op = _check_op(reduce_op)
        work = tensor.to(torch.int32) if tensor.dtype in WIDENED else tensor
        if root is None:
            options = AllreduceOptions()
            options.reduceOp = op
            self._gloo.allreduce([work], options).wait()
        else:
            options = ReduceOptions()
            options.reduceOp, options.rootRank = op, root
            self._gloo.reduce([work], options).wait()
        if work is not tensor:
            tensor.copy_(work)

    def _reduce_scatter_into(self, function: str, output: torch.Tensor, parts: list[torch.Tensor], reduce_op: Any) -> None:
        # Built on all_reduce so that it does not depend on gloo's own reduce_scatter support.
        whole = torch.stack([p.contiguous() for p in parts])
        self._reduce_in_place(function, whole, reduce_op)
        output.copy_(whole[self.rank()])

    # --- the reduction entry points of ProcessGroup -------------------------------------------------

    def allreduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        opts = opts if opts is not None else AllreduceOptions()
        for tensor in tensors:
            self._reduce_in_place("allreduce", tensor, opts.reduceOp)
        return _done(tensors)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        opts = opts if opts is not None else AllreduceCoalescedOptions()
        for tensor in tensors:
            self._reduce_in_place("allreduce_coalesced", tensor, opts.reduceOp)
        return _done(tensors)

    def reduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        opts = opts if opts is not None else ReduceOptions()
        for tensor in tensors:
            self._reduce_in_place("reduce", tensor, opts.reduceOp, root=opts.rootRank)
        return _done(tensors)

    def reduce_scatter(self, outputs: list[torch.Tensor], inputs: list[list[torch.Tensor]], opts: Any = None) -> Any:
        opts = opts if opts is not None else ReduceScatterOptions()
        for output, parts in zip(outputs, inputs):
            self._reduce_scatter_into("reduce_scatter", output, list(parts), opts.reduceOp)
        return _done(outputs)

    def _reduce_scatter_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Any:
        opts = opts if opts is not None else ReduceScatterOptions()
        self._reduce_scatter_into("_reduce_scatter_base", output, list(input.chunk(self.size())), opts.reduceOp)
        return _done([output])

    reduce_scatter_single = _reduce_scatter_base  # the newer name of reduce_scatter_tensor's entry point

    def reduce_scatter_tensor_coalesced(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], opts: Any = None) -> Any:
        for output, tensor in zip(outputs, inputs):
            self._reduce_scatter_base(output, tensor, opts)
        return _done(outputs)

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    # --- data movement: gloo's, but issued and waited for here like the reductions ---------------------
    # Left to the gloo backend registered underneath, an all_gather issued right after the
    # reductions above now and then never started on one rank (both ranks waiting in it forever).

    def allgather(self, outputs: list[list[torch.Tensor]], inputs: list[torch.Tensor], opts: Any = None) -> Any:
        self._gloo.allgather(outputs, inputs, opts if opts is not None else AllgatherOptions()).wait()
        return _done(outputs)

    def broadcast(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        self._gloo.broadcast(tensors, opts if opts is not None else BroadcastOptions()).wait()
        return _done(tensors)

    # --- the tensor forms FSDP2 and DTensor use (all-gather into one flat output) --------------------

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Any:
        calls["all_gather_single"] += 1
        self._gloo._allgather_base(output, input, opts if opts is not None else AllgatherOptions()).wait()
        return _done([output])

    _allgather_base = all_gather_single  # the older name of all_gather_into_tensor's entry point

    def all_gather_single_coalesced(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                                    opts: Any = None) -> Any:
        for output, tensor in zip(outputs, inputs):
            self.all_gather_single(output, tensor, opts)
        return _done(outputs)

    allgather_into_tensor_coalesced = all_gather_single_coalesced


def _create(store: Any, rank: int, size: int, timeout: timedelta) -> StrictHcclProcessGroup:
    return StrictHcclProcessGroup(store, rank, size, timeout)


def register_fake_hccl() -> None:
    """Register the strict fake as torch.distributed backend ``"hccl"`` (CPU) in this process.

    Idempotent. Refuses when a real HCCL is already registered (torch_npu imported), so a test can
    never silently replace the real thing.
    """
    registered = dist.Backend._plugins.get("HCCL")
    if registered is not None:
        if registered.creator_fn is _create:
            return
        raise RuntimeError("a real 'hccl' backend is registered (torch_npu is loaded); the fake is for "
                           "machines without NPUs")
    dist.Backend.register_backend("hccl", _create, devices=["cpu"])
