"""pgmm-ascend's plugin: registers the ``npu`` device backend (import-cheap)."""

from __future__ import annotations

from pgmm_ascend.configs import NpuConfig
from pgmm_core.hookspecs import hookimpl


@hookimpl
def pgmm_register_device_backends(registrar):
    registrar.add("npu", "pgmm_ascend.backend:build_npu", NpuConfig,
                  description="Ascend NPUs with HCCL (torch_npu imported only at setup)",
                  probe="pgmm_ascend.probe:npu_probe")
