"""Device names: ``gpu`` is answered with ``cuda`` (not the look-alike ``npu``); ``auto`` tries backends by
the priority their config declares, and the core names none of them."""

from __future__ import annotations

import pytest

from pgmm_core.config.loading import load_config
from pgmm_core.devices.configs import AutoDeviceConfig
from pgmm_core.devices.select import auto_candidates, select_device_backend
from pgmm_core.errors import ConfigError, DeviceUnavailableError
from pgmm_core.plugins import PluginHost


@pytest.fixture(scope="module")
def host():
    return PluginHost()


def test_a_gpu_device_type_suggests_cuda(host):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["device.type=gpu"], host=host)
    message = str(info.value)
    assert "unknown device backend 'gpu'" in message and "Did you mean 'cuda'?" in message
    assert "'npu'?" not in message


def test_pgmm_device_gpu_suggests_cuda(host, monkeypatch):
    monkeypatch.setenv("PGMM_DEVICE", "gpu")
    with pytest.raises(DeviceUnavailableError, match="PGMM_DEVICE=gpu names no installed device backend .*"
                                                      "did you mean 'cuda'"):
        select_device_backend(AutoDeviceConfig(), host)


def test_auto_tries_accelerators_by_declared_priority_then_cpu(monkeypatch):
    import pgmm_ascend.testing.hccl_cpu as fake_hccl  # a test double that declares no auto priority

    host = PluginHost()
    host.register(fake_hccl, name="fake_hccl")
    registry = host.registry("device")
    assert "hccl_cpu" in registry
    assert [spec.name for spec in auto_candidates(registry)] == ["npu", "cuda", "cpu"]  # hccl_cpu only when named
    monkeypatch.delenv("PGMM_DEVICE", raising=False)
    assert select_device_backend(AutoDeviceConfig(), host).name == "cpu"  # no NPU, no GPU here
