"""Config models of the built-in device backends (import-cheap: no torch here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig

Precision = Literal["fp32", "bf16", "fp16"]


class DeviceConfig(ComponentConfig):
    """Fields every device backend understands."""

    precision: Precision = Field(
        "fp32",
        description="fp32: everything in float32. bf16/fp16: frozen towers and LLM stored in that "
        "dtype and trainable parts run under autocast (fp16 adds a grad scaler).",
    )


class CpuConfig(DeviceConfig):
    type: Literal["cpu"] = "cpu"
    threads: int | None = Field(None, gt=0, description="torch.set_num_threads; default: torch's choice.")


class CudaConfig(DeviceConfig):
    type: Literal["cuda"] = "cuda"
    allow_tf32: bool = Field(False, description="Allow TF32 matmul/conv (faster, not strict fp32).")


class AutoDeviceConfig(DeviceConfig):
    """Pick a backend at run time: ``PGMM_DEVICE`` if set, else npu, cuda, cpu — first available."""

    type: Literal["auto"] = "auto"
