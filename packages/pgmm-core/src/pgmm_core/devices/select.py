"""Choosing the device backend: explicit config beats ``PGMM_DEVICE``, which beats auto-detection."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pgmm_core.errors import DeviceUnavailableError

if TYPE_CHECKING:
    from pgmm_core.devices.base import DeviceBackend
    from pgmm_core.plugins import PluginHost

AUTO_PREFERENCE = ("npu", "cuda", "cpu")


def select_device_backend(device_config: Any, host: PluginHost) -> DeviceBackend:
    """Build the configured backend and check it can run here, before any other work starts."""
    registry = host.registry("device")
    if device_config.type != "auto":
        backend = host.build("device", device_config)
        backend.require_available()
        return backend
    common = {"precision": device_config.precision}
    requested = os.environ.get("PGMM_DEVICE")
    if requested:
        if requested not in registry:
            raise DeviceUnavailableError(
                f"PGMM_DEVICE={requested} names no installed device backend "
                f"(installed: {', '.join(registry.names())})"
            )
        spec = registry.get(requested)
        backend = spec.build(spec.config_model(type=spec.name, **common))
        backend.require_available()
        return backend
    reasons = []
    for name in AUTO_PREFERENCE:
        if name not in registry:
            continue
        spec = registry.get(name)
        backend = spec.build(spec.config_model(type=spec.name, **common))
        reason = backend.unavailable_reason()
        if reason is None:
            return backend
        reasons.append(f"{name}: {reason}")
    raise DeviceUnavailableError("no device backend is available: " + "; ".join(reasons))


def build_auto(config: Any) -> Any:
    """``auto`` is resolved by :func:`select_device_backend`, which knows the installed backends."""
    raise DeviceUnavailableError(
        "device type 'auto' must be resolved with pgmm_core.devices.select.select_device_backend"
    )
