"""Config models of the built-in device backends (import-cheap: no torch here)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig

Precision = Literal["fp32", "bf16", "fp16"]


class DeviceConfig(ComponentConfig):
    """Fields every device backend understands.

    Two class attributes (not config fields) tell the core about the backend without naming it:
    ``auto_priority`` puts it in ``type: auto``'s search (highest first; registration order breaks
    ties; ``None``, the default: never chosen by ``auto``; cpu, the fallback, is 0) and
    ``common_names`` are what users may call it (``gpu``), so an unknown ``device.type`` or
    ``PGMM_DEVICE`` is answered with this backend's name.
    """

    auto_priority: ClassVar[int | None] = None
    common_names: ClassVar[tuple[str, ...]] = ()

    precision: Precision = Field(
        "fp32",
        description="fp32: everything in float32. bf16/fp16: frozen towers and LLM stored in that "
        "dtype and trainable parts run under autocast (fp16 adds a grad scaler).",
    )


class CpuConfig(DeviceConfig):
    auto_priority: ClassVar[int | None] = 0  # the fallback when no accelerator is available
    type: Literal["cpu"] = "cpu"
    threads: int | None = Field(None, gt=0, description="torch.set_num_threads; default: torch's choice.")


class CudaConfig(DeviceConfig):
    auto_priority: ClassVar[int | None] = 10
    common_names: ClassVar[tuple[str, ...]] = ("gpu", "gpus", "nvidia")
    type: Literal["cuda"] = "cuda"
    allow_tf32: bool = Field(False, description="Allow TF32 matmul/conv (faster, not strict fp32).")


class AutoDeviceConfig(DeviceConfig):
    """Pick a backend at run time: ``PGMM_DEVICE`` if set, else the first available (accelerators, then cpu)."""

    type: Literal["auto"] = "auto"
