"""Config model of the ``npu`` device backend (pydantic only: no torch, no torch_npu)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pgmm_core.devices.configs import DeviceConfig


class NpuConfig(DeviceConfig):
    """Ascend NPU via torch_npu, HCCL between ranks. fp32 is the default (the original project's
    choice) and is strict: HF32 stays off unless ``allow_hf32`` is set."""

    auto_priority: ClassVar[int | None] = 20  # `type: auto` tries NPUs first: a machine with both runs on them
    common_names: ClassVar[tuple[str, ...]] = ("ascend", "npus")
    type: Literal["npu"] = "npu"
    allow_hf32: bool = Field(
        False, description="Let matmul/conv round fp32 inputs to HF32 (faster, no longer strict fp32): "
        "torch.npu.matmul.allow_hf32 and torch.npu.conv.allow_hf32.")
    jit_compile: bool = Field(
        False, description="torch.npu.set_compile_mode(jit_compile=...). False uses the prebuilt binary "
        "kernels, avoiding per-shape compilation stalls.")
    allow_internal_format: bool = Field(
        False, description="torch.npu.config.allow_internal_format. False keeps tensors in plain ND "
        "layout so that saved and gathered tensors are what they look like.")
    hccl_connect_timeout: int = Field(
        1200, ge=120, le=7200, description="Seconds HCCL waits for all ranks to connect "
        "(HCCL_CONNECT_TIMEOUT; HCCL's own default of 120 is short when 8 ranks load a 7B model). "
        "An HCCL_CONNECT_TIMEOUT already in the environment wins.")
    hccl_exec_timeout: int = Field(
        1800, ge=0, description="Seconds a collective may wait for the slowest rank (HCCL_EXEC_TIMEOUT; "
        "rank 0 scoring an evaluation keeps the others waiting). An HCCL_EXEC_TIMEOUT already in the "
        "environment wins.")
