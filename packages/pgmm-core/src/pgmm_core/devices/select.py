"""Choosing the device backend: explicit config beats ``PGMM_DEVICE``, which beats auto-detection.

Auto-detection names no backend: it tries the installed ones by their config model's
``auto_priority`` (:class:`~pgmm_core.devices.configs.DeviceConfig`), so a plugin's accelerator
(pgmm-ascend's NPUs) is preferred without the core knowing it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pgmm_core.errors import DeviceUnavailableError

if TYPE_CHECKING:
    from pgmm_core.devices.base import DeviceBackend
    from pgmm_core.plugins import PluginHost

AUTO = "auto"


def auto_candidates(registry: Any) -> list[Any]:
    """Specs ``type: auto`` tries, in order: highest ``auto_priority`` first, then registration order;
    backends without one (``None``) are used only when named."""
    ranked = [(priority, spec) for spec in registry
              if spec.name != AUTO and (priority := getattr(spec.config_model, "auto_priority", None)) is not None]
    return [spec for _, spec in sorted(ranked, key=lambda item: -item[0])]


def select_device_backend(device_config: Any, host: PluginHost) -> DeviceBackend:
    """Build the configured backend and check it can run here, before any other work starts."""
    registry = host.registry("device")
    if device_config.type != AUTO:
        backend = host.build("device", device_config)
        backend.require_available()
        return backend
    common = {"precision": device_config.precision}
    requested = os.environ.get("PGMM_DEVICE")
    if requested:
        if requested not in registry:
            from pgmm_core.config.messages import common_name_match

            meant = common_name_match(registry, requested)
            raise DeviceUnavailableError(
                f"PGMM_DEVICE={requested} names no installed device backend "
                f"(installed: {', '.join(registry.names())})" + (f"; did you mean '{meant}'?" if meant else "")
            )
        spec = registry.get(requested)
        backend = spec.build(spec.config_model(type=spec.name, **common))
        backend.require_available()
        return backend
    reasons = []
    for spec in auto_candidates(registry):
        backend = spec.build(spec.config_model(type=spec.name, **common))
        reason = backend.unavailable_reason()
        if reason is None:
            return backend
        reasons.append(f"{spec.name}: {reason}")
    raise DeviceUnavailableError("no device backend is available: " + "; ".join(reasons))


def build_auto(config: Any) -> Any:
    """``auto`` is resolved by :func:`select_device_backend`, which knows the installed backends."""
    raise DeviceUnavailableError(
        "device type 'auto' must be resolved with pgmm_core.devices.select.select_device_backend"
    )
