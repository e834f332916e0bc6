"""Cheap availability probes for ``python -m pgmm_core plugins`` (no torch import)."""

from __future__ import annotations

import os
import shutil


def cuda_probe() -> str | None:
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        return None
    return "no NVIDIA driver found (no /proc/driver/nvidia/version, no nvidia-smi)"


AUTOLOAD_FAILURE = "Failed to load the backend extension"


def explain_torch_import_failure(exc: BaseException) -> str | None:
    """A message for ``import torch`` failing inside a device extension, else ``None``.

    Since torch 2.5, ``import torch`` imports every installed device extension (the
    ``torch.backends`` entry points; torch_npu is one) and raises a ``RuntimeError`` when one fails —
    typically torch_npu without the CANN environment (``libhccl.so: cannot open shared object file``).
    The message names the extension, the underlying error and both ways out.
    """
    if not isinstance(exc, RuntimeError) or AUTOLOAD_FAILURE not in str(exc):
        return None
    extension = str(exc).split(AUTOLOAD_FAILURE, 1)[1].lstrip(": ").split(".", 1)[0] or "a device extension"
    cause = exc.__cause__
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    hint = ""
    if "libhccl" in detail or "libascend" in detail or extension == "torch_npu":
        hint = " For torch_npu, load the CANN environment first: source /usr/local/Ascend/ascend-toolkit/set_env.sh."
    return (f"`import torch` failed because torch auto-loads the installed device extension '{extension}' and it "
            f"could not load{detail}.{hint} Fix that installation, uninstall it, or set "
            "TORCH_DEVICE_BACKEND_AUTOLOAD=0 to run without it.")
