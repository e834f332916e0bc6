"""The npu backend on a machine without torch_npu: registered, explains itself, refuses early."""

from __future__ import annotations

import importlib.util

import pytest

from pgmm_ascend.probe import npu_probe

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None,
                                reason="this machine has torch_npu")


def test_probe_names_missing_torch_npu():
    assert "torch_npu is not installed" in npu_probe()


def test_selecting_npu_fails_before_any_work():
    from pgmm_ascend.configs import NpuConfig
    from pgmm_core.devices.select import select_device_backend
    from pgmm_core.errors import DeviceUnavailableError
    from pgmm_core.plugins import PluginHost

    with pytest.raises(DeviceUnavailableError, match="torch_npu is not installed"):
        select_device_backend(NpuConfig(), PluginHost(environ={}))
