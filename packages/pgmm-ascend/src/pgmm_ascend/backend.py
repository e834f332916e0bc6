"""The ``npu`` device backend. torch_npu is imported lazily, only when the backend is used."""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from pgmm_core.devices.base import DeviceBackend
from pgmm_core.devices.collectives import DtypeRules
from pgmm_core.errors import DeviceUnavailableError

HCCL_RULES = DtypeRules(
    "hccl",
    reduce_casts={torch.float64: torch.float32, torch.bool: torch.int32, torch.uint8: torch.int32},
    native_avg=False,
    unsupported_ops=frozenset({"band", "bor", "bxor"}),
)


def import_torch_npu() -> Any:
    """Import torch_npu, turning the usual failures into one actionable message."""
    try:
        return importlib.import_module("torch_npu")
    except ModuleNotFoundError:
        raise DeviceUnavailableError(
            "torch_npu is not installed; install the torch-npu release that pairs with torch "
            f"{torch.__version__} on a host with CANN (pip install 'pgmm-ascend[npu]')"
        ) from None
    except (ImportError, OSError) as exc:
        hint = ""
        if "libhccl" in str(exc) or "libascend" in str(exc):
            hint = " CANN libraries were not found: source /usr/local/Ascend/ascend-toolkit/set_env.sh."
        raise DeviceUnavailableError(
            f"torch_npu failed to import: {exc}.{hint} Check that torch {torch.__version__} and torch_npu are a "
            "matching pair and CANN matches torch_npu; set TORCH_DEVICE_BACKEND_AUTOLOAD=0 to keep "
            "`import torch` working meanwhile."
        ) from None


class NpuBackend(DeviceBackend):
    name = "npu"
    device_type = "npu"
    dist_backend = "hccl"
    rules = HCCL_RULES

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._npu: Any = None

    def _torch_npu(self) -> Any:
        if self._npu is None:
            self._npu = import_torch_npu()
        return self._npu

    def unavailable_reason(self) -> str | None:
        try:
            self._torch_npu()
        except DeviceUnavailableError as exc:
            return str(exc)
        if not torch.npu.is_available():
            return "torch_npu imported but torch.npu.is_available() is False (no NPU visible; check ASCEND_RT_VISIBLE_DEVICES)"
        return None

    def device_count(self) -> int:
        self._torch_npu()
        return torch.npu.device_count()

    def setup(self, local_rank: int) -> torch.device:
        self.require_available()
        os.environ.setdefault("HCCL_CONNECT_TIMEOUT", str(self.config.hccl_connect_timeout))
        os.environ.setdefault("HCCL_EXEC_TIMEOUT", str(self.config.hccl_exec_timeout))
        torch.npu.set_compile_mode(jit_compile=self.config.jit_compile)
        torch.npu.config.allow_internal_format = self.config.allow_internal_format
        torch.npu.matmul.allow_hf32 = self.config.allow_hf32
        torch.npu.conv.allow_hf32 = self.config.allow_hf32
        device = torch.device(f"npu:{local_rank}")
        torch.npu.set_device(device)
        self.device = device
        return device

    def synchronize(self) -> None:
        torch.npu.synchronize()

    def manual_seed(self, seed: int) -> None:
        torch.npu.manual_seed_all(seed)

    def get_rng_state(self) -> torch.Tensor | None:
        return torch.npu.get_rng_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            torch.npu.set_rng_state(state)

    def memory_stats(self) -> dict[str, float]:
        mib = 1024 * 1024
        return {"mem_mb": torch.npu.memory_allocated() / mib, "peak_mem_mb": torch.npu.max_memory_allocated() / mib}

    def reset_peak_memory(self) -> None:
        torch.npu.reset_peak_memory_stats()

    def precision_policy(self):
        policy = super().precision_policy()
        if policy.name == "bf16" and not torch.npu.is_bf16_supported():
            raise DeviceUnavailableError("precision bf16 needs an Ascend 910B or newer (is_bf16_supported() is False)")
        return policy

    def describe(self) -> str:
        npu = self._torch_npu()
        soc = torch.npu.get_device_name(self.device) if self.device is not None else "?"
        cann = os.environ.get("ASCEND_TOOLKIT_HOME", "?")
        return f"{super().describe()}, torch_npu {getattr(npu, '__version__', '?')}, CANN {cann}, {soc}"


def build_npu(config: Any) -> NpuBackend:
    return NpuBackend(config)
