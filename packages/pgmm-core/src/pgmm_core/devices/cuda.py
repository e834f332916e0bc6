"""The CUDA backend: NCCL, per-rank device selection, CUDA RNG and memory statistics."""

from __future__ import annotations

import torch

from pgmm_core.devices.base import DeviceBackend
from pgmm_core.devices.collectives import NCCL_RULES


class CudaBackend(DeviceBackend):
    name = "cuda"
    device_type = "cuda"
    dist_backend = "nccl"
    rules = NCCL_RULES

    def unavailable_reason(self) -> str | None:
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            return f"torch.cuda.is_available() is False (torch {torch.__version__}, {build}; no GPU visible)"
        return None

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def setup(self, local_rank: int) -> torch.device:
        self.require_available()
        torch.cuda.set_device(local_rank)
        torch.backends.cuda.matmul.allow_tf32 = self.config.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.config.allow_tf32
        self.device = torch.device("cuda", local_rank)
        return self.device

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def manual_seed(self, seed: int) -> None:
        torch.cuda.manual_seed_all(seed)

    def get_rng_state(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.device)

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            torch.cuda.set_rng_state(state, self.device)

    def memory_stats(self) -> dict[str, float]:
        mib = 1024 * 1024
        return {
            "mem_mb": torch.cuda.memory_allocated(self.device) / mib,
            "peak_mem_mb": torch.cuda.max_memory_allocated(self.device) / mib,
        }

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def precision_policy(self):
        policy = super().precision_policy()
        if policy.name == "bf16" and not torch.cuda.is_bf16_supported():
            from pgmm_core.errors import DeviceUnavailableError

            raise DeviceUnavailableError("precision bf16 requested but this GPU does not support bfloat16")
        return policy

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device is not None else "?"
        return f"{super().describe()}, CUDA {torch.version.cuda}, {name}"


def build_cuda(config) -> CudaBackend:
    return CudaBackend(config)
