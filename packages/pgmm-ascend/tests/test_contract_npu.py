"""The npu device backend checked through the contract plugin authors use.

Without an Ascend NPU the checks that need one are skipped with the backend's own reason; the rest
(registration, config, availability message, dtype-safe collectives, serialisation) run anywhere.
"""

from __future__ import annotations

from pgmm_core.testing.contracts import DeviceBackendContract


class TestNpuBackend(DeviceBackendContract):
    component = "npu"
    distribution = "pgmm-ascend"
