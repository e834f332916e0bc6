"""Can an NPU work here, and if not, why? Answered without importing torch or torch_npu.

``plugins`` shows :func:`npu_probe`'s answer; the backend uses :func:`explain_import_error` to turn a
failed ``import torch_npu`` into one actionable message. The usual failures, in the order a user meets
them: torch-npu not installed; torch-npu built for another torch (they pair exactly: torch-npu
``2.5.1.post1`` needs torch ``2.5.1``); the CANN environment not loaded, so ``libhccl.so`` cannot be
found. Since torch 2.5, an installed torch-npu is imported by ``import torch`` itself, so a broken one
breaks ``import torch`` unless ``TORCH_DEVICE_BACKEND_AUTOLOAD=0``.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import re
import sys

SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
INSTALL_HINT = "on an Ascend host with CANN, pip install 'pgmm-ascend[npu]' (torch-npu paired with your torch)"
AUTOLOAD_HINT = ("Until it is fixed, keep TORCH_DEVICE_BACKEND_AUTOLOAD=0: torch >= 2.5 otherwise imports the "
                 "installed torch-npu inside `import torch`, which then fails too")
CANN_HINT = f"load the CANN environment first: source {SET_ENV} (it sets ASCEND_HOME_PATH and LD_LIBRARY_PATH)"


def torch_npu_installed() -> bool:
    if "torch_npu" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch_npu") is not None
    except (ImportError, ValueError):
        return False


def _release(version: str) -> tuple[int, int, int] | None:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(x) for x in match.groups()) if match else None  # type: ignore[return-value]


def pairing_problem() -> str | None:
    """torch-npu X.Y.Z[.postN] is built for torch X.Y.Z exactly; say so when the installed pair differs."""
    try:
        torch_version = importlib.metadata.version("torch")
        npu_version = importlib.metadata.version("torch-npu")
    except importlib.metadata.PackageNotFoundError:
        return None
    want, have = _release(npu_version), _release(torch_version)
    if want is None or have is None or want == have:
        return None
    need = ".".join(map(str, want))
    return (f"torch-npu {npu_version} is built for torch {need} but torch {torch_version} is installed; "
            f"install a matching pair (pip install torch=={need} torch-npu=={npu_version}, or the torch-npu "
            f"release built for torch {'.'.join(map(str, have))}; see Ascend's torch-npu compatibility table)")


def cann_home() -> str | None:
    """The CANN install the environment points at (set by ``set_env.sh``), or ``None``."""
    return os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME") or None


def cann_version() -> str | None:
    """The CANN version from its ``ascend_*_install.info`` file (how torch-npu's collect_env finds it)."""
    home = cann_home()
    if home is None:
        return None
    for pattern in ("ascend_*_install.info", "*/ascend_*_install.info"):
        for path in sorted(glob.glob(os.path.join(home, pattern))):
            try:
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        key, _, value = line.strip().partition("=")
                        if key.strip().lower() == "version" and value:
                            return value.strip().strip('"')
            except OSError:
                continue
    return None


def libhccl_on_library_path() -> bool:
    """Whether the dynamic loader can find ``libhccl.so`` through LD_LIBRARY_PATH (what set_env.sh sets)."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    return any(os.path.exists(os.path.join(d, "libhccl.so")) for d in dirs)


def npu_probe() -> str | None:
    """``None`` when torch-npu looks usable here, else the first problem and its fix (cheap, no imports)."""
    if not torch_npu_installed():
        return f"torch_npu is not installed; {INSTALL_HINT}"
    problem = pairing_problem()
    if problem:
        return problem
    if cann_home() is None:
        return f"torch_npu is installed but the CANN environment is not loaded (ASCEND_HOME_PATH is unset); {CANN_HINT}"
    if not libhccl_on_library_path():
        return (f"CANN at {cann_home()} is set but libhccl.so is not on LD_LIBRARY_PATH, so torch_npu cannot "
                f"load; {CANN_HINT}")
    return None


def _sentence(text: str) -> str:
    return text if text.startswith("torch") else text[:1].upper() + text[1:]


def explain_import_error(exc: BaseException) -> str:
    """One message for a failed ``import torch_npu``: what failed and what to do."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torch_npu":
        return f"torch_npu is not installed; {INSTALL_HINT}"
    text = f"{type(exc).__name__}: {exc}"
    hints = []
    if re.search(r"lib(hccl|ascend|acl|ge_runner|runtime)\w*\.so", text) or cann_home() is None:
        hints.append(CANN_HINT)
    pairing = pairing_problem()
    if pairing:
        hints.append(pairing)
    elif "undefined symbol" in text:
        hints.append("an undefined symbol usually means torch and torch-npu (or torch-npu and CANN) are not "
                     "a matching pair")
    hints.append(AUTOLOAD_HINT)
    return f"torch_npu failed to import ({text}). " + " ".join(f"{_sentence(h)}." for h in hints)
