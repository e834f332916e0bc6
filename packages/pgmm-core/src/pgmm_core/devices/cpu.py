"""The CPU backend: gloo for distributed runs, peak RSS for memory, autocast on CPU."""

from __future__ import annotations

import torch

from pgmm_core.devices.base import DeviceBackend
from pgmm_core.devices.collectives import GLOO_RULES


class CpuBackend(DeviceBackend):
    name = "cpu"
    device_type = "cpu"
    dist_backend = "gloo"
    rules = GLOO_RULES

    def unavailable_reason(self) -> str | None:
        return None

    def device_count(self) -> int:
        return 1

    def setup(self, local_rank: int) -> torch.device:
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        self.device = torch.device("cpu")
        return self.device

    def describe(self) -> str:
        return f"{super().describe()}, {torch.get_num_threads()} threads"


def build_cpu(config) -> CpuBackend:
    return CpuBackend(config)
