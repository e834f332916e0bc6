"""Is an NPU usable here? Answered without importing torch or torch_npu (for ``plugins``)."""

from __future__ import annotations

import importlib.util
import os


def npu_probe() -> str | None:
    if importlib.util.find_spec("torch_npu") is None:
        return ("torch_npu is not installed; on an Ascend host with CANN install the torch-npu build that "
                "pairs with your torch (pip install 'pgmm-ascend[npu]')")
    cann = os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME")
    if not cann and not os.path.isdir("/usr/local/Ascend"):
        return "torch_npu is installed but CANN was not found (source /usr/local/Ascend/ascend-toolkit/set_env.sh)"
    return None
