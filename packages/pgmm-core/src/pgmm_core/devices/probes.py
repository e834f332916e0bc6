"""Cheap availability probes for ``python -m pgmm_core plugins`` (no torch import)."""

from __future__ import annotations

import os
import shutil


def cuda_probe() -> str | None:
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        return None
    return "no NVIDIA driver found (no /proc/driver/nvidia/version, no nvidia-smi)"
