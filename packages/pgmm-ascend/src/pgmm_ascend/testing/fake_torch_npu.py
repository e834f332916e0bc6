"""A recording stand-in for ``torch_npu``, for checking setup logic on machines without NPUs.

:func:`install_fake_torch_npu` puts a fake ``torch_npu`` module into ``sys.modules`` and does what the
real one does to torch on import: renames the PrivateUse1 device to ``npu`` (so ``torch.device("npu:1")``
parses) and registers a ``torch.npu`` module. That module implements the ``torch.npu`` functions pgmm
uses and records every call and every switch set, so a test can assert that setup made the
documented calls with the documented arguments.

It changes torch's global device registry irreversibly: call it only in a fresh subprocess (see
:func:`pgmm_ascend.testing.ranks.run_isolated`). It cannot run kernels: tensors cannot be moved to
its ``npu`` device. What it proves is the sequence of API calls, not that they work on hardware.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class NpuRecord:
    """What the fake saw: calls in order, switch values, and attempted ``torch_npu.contrib`` imports."""

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    switches: dict[str, Any] = field(default_factory=dict)
    contrib_imports: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def calls_to(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for n, args, kwargs in self.calls if n == name]


class _Switches:
    """``torch.npu.config`` / ``.matmul`` / ``.conv``: attribute writes are recorded as ``prefix.name``."""

    def __init__(self, record: NpuRecord, prefix: str) -> None:
        object.__setattr__(self, "_record", record)
        object.__setattr__(self, "_prefix", prefix)

    def __setattr__(self, name: str, value: Any) -> None:
        self._record.switches[f"{self._prefix}.{name}"] = value

    def __getattr__(self, name: str) -> Any:
        return self._record.switches.get(f"{self._prefix}.{name}")


class _ContribTripwire(importlib.abc.MetaPathFinder):
    """Records (and fails) any import of ``torch_npu.contrib`` — where ``transfer_to_npu`` lives."""

    def __init__(self, record: NpuRecord) -> None:
        self.record = record

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.startswith("torch_npu.contrib"):
            self.record.contrib_imports.append(fullname)
            raise ImportError(f"{fullname} must not be imported by pgmm (it monkeypatches torch.cuda)")
        return None


def install_fake_torch_npu(*, device_count: int = 8, bf16_supported: bool = True, soc: str = "Ascend910B3",
                           version: str = "2.5.1.post1", cann: str = "8.1.RC1") -> NpuRecord:
    """Make ``import torch_npu`` and ``torch.npu`` work in this process; returns the record.

    ``device_count`` is the number of cards on the fake host; like the real runtime,
    ``torch.npu.device_count()`` reports only those listed in ``ASCEND_RT_VISIBLE_DEVICES`` when set.
    """
    if "torch_npu" in sys.modules or hasattr(torch, "npu"):
        raise RuntimeError("torch_npu (real or fake) is already loaded in this process")
    record = NpuRecord()
    state = {"device": 0, "rng": torch.zeros(16, dtype=torch.uint8)}

    def recorded(name: str, result: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            record.calls.append((name, args, kwargs))
            return result(*args, **kwargs) if callable(result) else result
        call.__name__ = name
        return call

    def visible_count(*_: Any) -> int:
        listed = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
        return device_count if listed is None else len([d for d in listed.split(",") if d.strip()])

    def set_device(device: Any) -> None:
        state["device"] = torch.device(device).index if not isinstance(device, int) else device

    def set_rng_state(new_state: torch.Tensor, device: Any = "npu") -> None:
        state["rng"] = new_state.clone()

    npu = types.ModuleType("torch.npu")
    functions = {
        "is_available": lambda *a: visible_count() > 0,
        "device_count": visible_count,
        "set_device": set_device,
        "current_device": lambda *a: state["device"],
        "synchronize": None,
        "set_compile_mode": None,
        "manual_seed_all": None,
        "get_rng_state": lambda *a, **k: state["rng"].clone(),
        "set_rng_state": set_rng_state,
        "memory_allocated": 3 * 1024 * 1024,
        "max_memory_allocated": 5 * 1024 * 1024,
        "reset_peak_memory_stats": None,
        "is_bf16_supported": bf16_supported,
        "get_device_name": soc,
    }
    for name, result in functions.items():
        setattr(npu, name, recorded(name, result))
    npu.config = _Switches(record, "config")
    npu.matmul = _Switches(record, "matmul")
    npu.conv = _Switches(record, "conv")

    module = types.ModuleType("torch_npu")
    module.__version__ = version
    module.__path__ = []  # a package, so that submodule imports reach the tripwire
    module.__spec__ = importlib.machinery.ModuleSpec("torch_npu", None, is_package=True)
    module.npu = npu
    module.utils = types.SimpleNamespace(get_cann_version=recorded("get_cann_version", cann))

    torch.utils.rename_privateuse1_backend("npu")
    torch._register_device_module("npu", npu)
    sys.modules["torch_npu"] = module
    sys.meta_path.insert(0, _ContribTripwire(record))
    return record
