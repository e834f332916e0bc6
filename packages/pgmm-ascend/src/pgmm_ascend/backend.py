"""The ``npu`` device backend: Ascend NPUs through torch_npu, HCCL between ranks.

torch_npu is imported here lazily — only when the backend is asked whether it can run or is set up —
and only ever through the public ``torch.npu`` API. ``torch_npu.contrib.transfer_to_npu`` (which
monkeypatches ``torch.cuda`` into ``torch.npu``) is never used: the trainer asks this backend for
everything device-specific instead.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from pgmm_core.devices.base import DeviceBackend, PrecisionPolicy
from pgmm_core.devices.collectives import DtypeRules
from pgmm_core.errors import DeviceUnavailableError
from pgmm_ascend import probe

HCCL_RULES = DtypeRules(
    "hccl",
    # HCCL reduces int8/16/32/64, fp16, fp32, bf16 only (not float64 on 910/910B/910C). bool/uint8
    # would be widened to int32 by torch_npu anyway; doing it here keeps one code path for both.
    reduce_casts={torch.float64: torch.float32, torch.bool: torch.int32, torch.uint8: torch.int32},
    # torch_npu emulates AVG as SUM then an in-place divide, which truncates or fails on integers.
    native_avg=False,
    unsupported_ops=frozenset({"band", "bor", "bxor"}),
)

HCCL_TIMEOUT_VARIABLES = {"HCCL_CONNECT_TIMEOUT": "hccl_connect_timeout", "HCCL_EXEC_TIMEOUT": "hccl_exec_timeout"}


def import_torch_npu() -> Any:
    """Import torch_npu (which registers ``torch.npu``), turning failures into one actionable message."""
    try:
        return importlib.import_module("torch_npu")
    except Exception as exc:  # ImportError, OSError (libhccl.so), RuntimeError (device conflicts), ...
        raise DeviceUnavailableError(probe.explain_import_error(exc)) from None


def visible_devices() -> str:
    value = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    return f"ASCEND_RT_VISIBLE_DEVICES={value}" if value is not None else "ASCEND_RT_VISIBLE_DEVICES unset"


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

    # --- availability ------------------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        try:
            self._torch_npu()
        except DeviceUnavailableError as exc:
            return str(exc)
        if not torch.npu.is_available():
            return (f"torch_npu imported but no NPU is usable ({visible_devices()}); check `npu-smi info` "
                    "and the driver installation")
        return None

    def sharding_unsupported(self) -> str | None:
        """FSDP2 on NPUs needs the torch 2.6 line of torch_npu or newer, on Atlas A2/A3 (910B/910C)."""
        version = str(getattr(self._torch_npu(), "__version__", "0"))
        major_minor = tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())
        if major_minor < (2, 6):
            return (f"torch_npu {version} has no FSDP2 support (fully_shard needs torch/torch_npu 2.6 or "
                    "newer, installed as an exact pair)")
        soc = str(torch.npu.get_device_name(0)) if torch.npu.device_count() else ""
        if soc.startswith("Ascend910A") or soc == "Ascend910":
            return f"{soc} is not supported by FSDP2 on NPU (Atlas A2/A3, 910B/910C, are)"
        return None

    def device_count(self) -> int:
        self._torch_npu()
        return torch.npu.device_count()  # counts only ASCEND_RT_VISIBLE_DEVICES when it is set

    # --- setup -------------------------------------------------------------------------------------

    def setup(self, local_rank: int) -> torch.device:
        """Bind this process to ``npu:{local_rank}`` and apply the configured runtime switches.

        ``ASCEND_RT_VISIBLE_DEVICES`` is honoured by the runtime itself: local rank *i* is the *i*-th
        visible card. HCCL timeouts are exported before the process group exists (HCCL reads them when
        its communicator is created); values already in the environment win.
        """
        self.require_available()
        count = torch.npu.device_count()
        if not 0 <= local_rank < count:
            raise DeviceUnavailableError(
                f"local rank {local_rank} needs npu:{local_rank} but only {count} NPU(s) are visible "
                f"({visible_devices()}); start at most {count} processes per node "
                "(torchrun --nproc_per_node) or widen ASCEND_RT_VISIBLE_DEVICES"
            )
        for variable, field in HCCL_TIMEOUT_VARIABLES.items():
            os.environ.setdefault(variable, str(getattr(self.config, field)))
        device = torch.device(f"npu:{local_rank}")
        torch.npu.set_device(device)
        torch.npu.set_compile_mode(jit_compile=self.config.jit_compile)
        torch.npu.config.allow_internal_format = self.config.allow_internal_format
        # Strict fp32 unless allowed: HF32 rounds matmul/conv inputs to a 10-bit mantissa.
        torch.npu.matmul.allow_hf32 = self.config.allow_hf32
        torch.npu.conv.allow_hf32 = self.config.allow_hf32
        self.device = device
        return device

    def synchronize(self) -> None:
        torch.npu.synchronize(self.device)

    # --- randomness --------------------------------------------------------------------------------

    def manual_seed(self, seed: int) -> None:
        torch.npu.manual_seed_all(seed)

    def get_rng_state(self) -> torch.Tensor | None:
        return torch.npu.get_rng_state(self.device).cpu()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            torch.npu.set_rng_state(state.cpu(), self.device)

    # --- memory ------------------------------------------------------------------------------------

    def memory_stats(self) -> dict[str, float]:
        mib = 1024 * 1024
        return {
            "mem_mb": torch.npu.memory_allocated(self.device) / mib,
            "peak_mem_mb": torch.npu.max_memory_allocated(self.device) / mib,
        }

    def reset_peak_memory(self) -> None:
        torch.npu.reset_peak_memory_stats(self.device)

    # --- precision ---------------------------------------------------------------------------------

    def precision_policy(self) -> PrecisionPolicy:
        """fp32 (default): strict fp32. bf16: only where the SoC supports it (910B and newer).
        fp16: always with a grad scaler (``PrecisionPolicy`` adds it); see the README on masks."""
        policy = super().precision_policy()
        if policy.name == "bf16" and not torch.npu.is_bf16_supported():
            soc = torch.npu.get_device_name(self.device) if self.device is not None else "this NPU"
            raise DeviceUnavailableError(
                f"precision bf16 needs an Ascend 910B or newer, but {soc} reports is_bf16_supported() == False; "
                "use device.precision=fp32 (or fp16, which runs with a grad scaler)"
            )
        return policy

    # --- misc --------------------------------------------------------------------------------------

    def describe(self) -> str:
        npu = self._torch_npu()
        soc = torch.npu.get_device_name(self.device) if self.device is not None else "?"
        return (f"{super().describe()}, torch_npu {getattr(npu, '__version__', '?')}, "
                f"CANN {self.cann_version()}, {soc}, {visible_devices()}, hf32 "
                f"{'allowed' if self.config.allow_hf32 else 'off'}")

    def cann_version(self) -> str:
        """From torch_npu when it can tell (newer releases), else from the CANN install files."""
        getter = getattr(getattr(self._torch_npu(), "utils", None), "get_cann_version", None)
        try:
            version = getter() if getter is not None else None
        except Exception:  # older torch_npu: the symbol exists but needs arguments or a newer CANN
            version = None
        return version or probe.cann_version() or "unknown"


def build_npu(config: Any) -> NpuBackend:
    return NpuBackend(config)
