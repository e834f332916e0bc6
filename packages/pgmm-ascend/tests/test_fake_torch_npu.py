"""Setup, selection and precision of the ``npu`` backend against a recording fake ``torch_npu``.

The fake (``pgmm_ascend.testing.fake_torch_npu``) registers ``torch.npu`` the way torch_npu does and
records every call, so these tests prove which documented APIs setup calls and with which arguments,
and how ``plugins``/device selection react once torch_npu imports. They cannot prove that the calls
behave on a real NPU (the ``npu``-marked tests do). Everything runs in one fresh subprocess, because
the fake changes torch's global device registry.
"""

from __future__ import annotations

import pytest

from pgmm_ascend.testing.ranks import run_isolated


def _setup_scenarios(cann_home: str):
    import io
    import json
    import os
    from contextlib import redirect_stdout

    from pgmm_ascend.testing.fake_torch_npu import install_fake_torch_npu

    record = install_fake_torch_npu(device_count=8, bf16_supported=False)
    os.environ.update({"ASCEND_HOME_PATH": cann_home, "LD_LIBRARY_PATH": os.path.join(cann_home, "lib64"),
                       "HCCL_EXEC_TIMEOUT": "600"})
    os.environ.pop("HCCL_CONNECT_TIMEOUT", None)
    os.environ.pop("PGMM_DEVICE", None)

    import torch

    from pgmm_ascend.configs import NpuConfig
    from pgmm_core.cli import main
    from pgmm_core.devices.configs import AutoDeviceConfig, CpuConfig
    from pgmm_core.devices.select import select_device_backend
    from pgmm_core.errors import PgmmError
    from pgmm_core.plugins import PluginHost

    out: dict = {}
    host = PluginHost()
    backend = select_device_backend(NpuConfig(), host)
    device = backend.setup(1)
    out["device"] = str(device)
    out["collectives_device"] = str(backend.collectives.device)
    out["calls"] = [(name, [str(a) for a in args], kwargs) for name, args, kwargs in record.calls
                    if name in ("set_device", "set_compile_mode")]
    out["switches"] = dict(record.switches)
    out["env"] = {k: os.environ.get(k) for k in ("HCCL_CONNECT_TIMEOUT", "HCCL_EXEC_TIMEOUT")}
    state = torch.arange(16, dtype=torch.uint8)
    backend.set_rng_state(state)
    out["rng_roundtrip"] = backend.get_rng_state().tolist() == state.tolist()
    out["memory"] = backend.memory_stats()
    out["describe"] = backend.describe()
    out["precision_fp32"] = [str(backend.precision_policy().autocast_dtype), backend.precision_policy().use_grad_scaler]
    try:
        select_device_backend(NpuConfig(precision="bf16"), host).precision_policy()
        out["bf16"] = "accepted"
    except PgmmError as exc:
        out["bf16"] = str(exc)
    fp16 = select_device_backend(NpuConfig(precision="fp16"), host).precision_policy()
    out["fp16"] = [str(fp16.autocast_dtype), fp16.use_grad_scaler, str(fp16.frozen_dtype)]

    relaxed = select_device_backend(NpuConfig(allow_hf32=True, allow_internal_format=True, jit_compile=True), host)
    before = len(record.calls)
    relaxed.setup(0)
    out["relaxed_calls"] = [(n, kw) for n, _, kw in record.calls[before:] if n == "set_compile_mode"]
    out["relaxed_switches"] = dict(record.switches)

    os.environ["ASCEND_RT_VISIBLE_DEVICES"] = "4,5"
    try:
        select_device_backend(NpuConfig(), host).setup(2)
        out["beyond_visible"] = "accepted"
    except PgmmError as exc:
        out["beyond_visible"] = str(exc)
    del os.environ["ASCEND_RT_VISIBLE_DEVICES"]

    out["auto"] = select_device_backend(AutoDeviceConfig(), host).name
    os.environ["PGMM_DEVICE"] = "cpu"
    out["auto_with_env"] = select_device_backend(AutoDeviceConfig(), host).name
    del os.environ["PGMM_DEVICE"]
    out["explicit_cpu"] = select_device_backend(CpuConfig(), host).name

    listing = io.StringIO()
    with redirect_stdout(listing):
        main(["plugins", "--json"])
    out["plugins"] = {p["name"]: p for p in json.loads(listing.getvalue())}
    out["contrib_imports"] = list(record.contrib_imports)
    return out


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    cann = tmp_path_factory.mktemp("cann")
    (cann / "lib64").mkdir()
    (cann / "lib64" / "libhccl.so").write_bytes(b"")
    (cann / "ascend_toolkit_install.info").write_text("package_name=Ascend-cann-toolkit\nversion=8.1.RC1\n")
    return run_isolated(_setup_scenarios, str(cann), timeout=120)


def test_setup_binds_the_rank_device_with_the_documented_calls(seen):
    assert seen["device"] == "npu:1" and seen["collectives_device"] == "npu:1"
    assert ("set_device", ["npu:1"], {}) in seen["calls"]
    assert ("set_compile_mode", [], {"jit_compile": False}) in seen["calls"]
    assert seen["calls"].index(("set_device", ["npu:1"], {})) == 0


def test_setup_defaults_are_strict(seen):
    assert seen["switches"] == {"config.allow_internal_format": False, "matmul.allow_hf32": False,
                                "conv.allow_hf32": False}


def test_setup_switches_follow_the_config(seen):
    assert seen["relaxed_calls"] == [("set_compile_mode", {"jit_compile": True})]
    assert seen["relaxed_switches"] == {"config.allow_internal_format": True, "matmul.allow_hf32": True,
                                        "conv.allow_hf32": True}


def test_hccl_timeouts_default_and_environment_wins(seen):
    assert seen["env"] == {"HCCL_CONNECT_TIMEOUT": "1200", "HCCL_EXEC_TIMEOUT": "600"}


def test_local_rank_beyond_visible_devices_is_refused(seen):
    assert "local rank 2 needs npu:2 but only 2 NPU(s) are visible (ASCEND_RT_VISIBLE_DEVICES=4,5)" in seen["beyond_visible"]


def test_rng_memory_and_description(seen):
    assert seen["rng_roundtrip"] is True
    assert seen["memory"] == {"mem_mb": 3.0, "peak_mem_mb": 5.0}
    for part in ("npu (npu:1) torch ", "torch_npu 2.5.1.post1", "CANN 8.1.RC1", "Ascend910B3", "hf32 off"):
        assert part in seen["describe"]


def test_precision_policies(seen):
    assert seen["precision_fp32"] == ["None", False]
    assert seen["fp16"] == ["torch.float16", True, "torch.float16"]
    assert seen["bf16"].startswith("precision bf16 needs an Ascend 910B or newer")
    assert "is_bf16_supported() == False" in seen["bf16"] and "device.precision=fp32" in seen["bf16"]


def test_selection_prefers_the_npu_once_it_works_but_explicit_choices_win(seen):
    assert seen["auto"] == "npu"
    assert seen["auto_with_env"] == "cpu"
    assert seen["explicit_cpu"] == "cpu"


def test_plugins_lists_npu_as_available(seen):
    ascend = seen["plugins"]["ascend"]
    assert "device:npu" in ascend["components"] and ascend["unavailable"] == {}


def test_transfer_to_npu_is_never_imported(seen):
    assert seen["contrib_imports"] == []
