"""The device-backend protocol and the precision policy every backend hands to the trainer."""

from __future__ import annotations

import contextlib
import platform
import resource
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from pgmm_core.devices.collectives import Collectives, DtypeRules, to_serializable
from pgmm_core.errors import DeviceUnavailableError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionPolicy:
    """How a run uses floating point.

    ``frozen_dtype`` is the storage dtype of frozen towers (vision encoder, LLM); trainable parameters
    always stay float32 (their optimizer needs it) and run under autocast to ``autocast_dtype``.
    fp16 needs a grad scaler; bf16 has fp32's range and does not.
    """

    name: str
    device_type: str
    autocast_dtype: torch.dtype | None
    frozen_dtype: torch.dtype
    use_grad_scaler: bool

    @classmethod
    def for_precision(cls, precision: str, device_type: str) -> PrecisionPolicy:
        dtype = DTYPES[precision]
        return cls(
            name=precision,
            device_type=device_type,
            autocast_dtype=None if precision == "fp32" else dtype,
            frozen_dtype=dtype,
            use_grad_scaler=precision == "fp16",
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        if not self.use_grad_scaler:
            return None
        return torch.amp.GradScaler(self.device_type)


class DeviceBackend(ABC):
    """What the trainer needs from a device. Subclasses exist for cpu, cuda (core) and npu (pgmm-ascend).

    Construction must be cheap and must not touch the hardware; :meth:`setup` does that.
    """

    name: str
    device_type: str
    dist_backend: str
    rules: DtypeRules

    def __init__(self, config: Any) -> None:
        self.config = config
        self.collectives = Collectives(self.rules)
        self.device = None

    @property
    def device(self) -> torch.device | None:
        """The device :meth:`setup` selected (``None`` before); collectives communicate through it."""
        return self._device

    @device.setter
    def device(self, value: torch.device | None) -> None:
        self._device = value
        self.collectives.device = value

    # --- availability ------------------------------------------------------------------------------

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """``None`` when usable here, else one sentence on why not and what to install."""

    def sharding_unsupported(self) -> str | None:
        """``None`` when ``torch.distributed.fsdp.fully_shard`` (the ``fsdp2`` strategy) works on
        this backend, else one sentence on what is missing. Asked after :meth:`unavailable_reason`."""
        return None

    def is_available(self) -> bool:
        return self.unavailable_reason() is None

    def require_available(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise DeviceUnavailableError(f"device backend '{self.name}' is unavailable: {reason}")

    @abstractmethod
    def device_count(self) -> int: ...

    # --- setup -------------------------------------------------------------------------------------

    @abstractmethod
    def setup(self, local_rank: int) -> torch.device:
        """Select and configure the device of this process; returns it (with an index where it has one)."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU)."""

    # --- randomness --------------------------------------------------------------------------------

    def manual_seed(self, seed: int) -> None:
        """Seed device generators (torch.manual_seed already covers the CPU)."""

    def get_rng_state(self) -> torch.Tensor | None:
        """Device RNG state for checkpoints (``None`` when the device has no own generator)."""
        return None

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        """Restore what :meth:`get_rng_state` returned."""

    # --- memory ------------------------------------------------------------------------------------

    def memory_stats(self) -> dict[str, float]:
        """Current and peak memory in MiB. On CPU: process peak RSS."""
        return {"peak_mem_mb": peak_rss_mb()}

    def reset_peak_memory(self) -> None:
        """Reset peak counters where the device supports it."""

    # --- precision ---------------------------------------------------------------------------------

    def precision_policy(self) -> PrecisionPolicy:
        return PrecisionPolicy.for_precision(self.config.precision, self.device_type)

    # --- misc --------------------------------------------------------------------------------------

    def to_serializable(self, obj: Any) -> Any:
        """Tensors moved to CPU with float64 narrowed to float32: safe for any backend and for disk."""
        return to_serializable(obj)

    def describe(self) -> str:
        """One line for logs: backend, device, software versions."""
        return f"{self.name} ({self.device}) torch {torch.__version__}, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
