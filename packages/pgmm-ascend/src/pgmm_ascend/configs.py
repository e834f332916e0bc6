"""Config model of the ``npu`` device backend (pydantic only: no torch, no torch_npu)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.devices.configs import DeviceConfig


class NpuConfig(DeviceConfig):
    """Ascend NPU via torch_npu. fp32 is the default policy (the original project's choice)."""

    type: Literal["npu"] = "npu"
    allow_hf32: bool = Field(False, description="Allow HF32 in matmul/conv (faster, not strict fp32).")
    jit_compile: bool = Field(False, description="torch.npu.set_compile_mode(jit_compile=...).")
    allow_internal_format: bool = Field(False, description="torch.npu.config.allow_internal_format.")
    hccl_connect_timeout: int = Field(1200, gt=0, description="HCCL_CONNECT_TIMEOUT default (s), env wins.")
    hccl_exec_timeout: int = Field(1800, gt=0, description="HCCL_EXEC_TIMEOUT default (s), env wins.")
