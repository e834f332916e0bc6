"""``hccl_cpu``: the CPU device backend speaking through the strict fake HCCL, with HCCL's rules.

Registered in-process (``host.register(pgmm_ascend.testing.hccl_cpu, name=...)``), it lets the real
trainer run with ``torchrun``-style ranks on CPU while every gradient all-reduce, metric reduction,
RNG gather and checkpoint goes through HCCL's dtype and reduce-op checks. It is the ``npu`` backend's
communication path without the NPU: device placement, kernels and precision are the CPU's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from pgmm_ascend.backend import HCCL_RULES
from pgmm_ascend.testing.fake_hccl import register_fake_hccl
from pgmm_core.devices.configs import CpuConfig
from pgmm_core.devices.cpu import CpuBackend
from pgmm_core.hookspecs import hookimpl


class HcclCpuConfig(CpuConfig):
    auto_priority: ClassVar[int | None] = None  # a test double: used only when named, never by auto
    type: Literal["hccl_cpu"] = "hccl_cpu"  # type: ignore[assignment]


class HcclCpuBackend(CpuBackend):
    name = "hccl_cpu"
    dist_backend = "hccl"
    rules = HCCL_RULES

    def setup(self, local_rank: int) -> torch.device:
        register_fake_hccl()
        return super().setup(local_rank)


def build_hccl_cpu(config: Any) -> HcclCpuBackend:
    return HcclCpuBackend(config)


@hookimpl
def pgmm_register_device_backends(registrar: Any) -> None:
    registrar.add("hccl_cpu", build_hccl_cpu, HcclCpuConfig,
                  description="test double: CPU compute, strict fake HCCL between ranks")
