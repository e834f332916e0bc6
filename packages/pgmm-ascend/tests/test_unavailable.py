"""The ``npu`` backend where it cannot run: listed with the reason, refused before any work.

Covers the real failure modes of an Ascend host: torch-npu missing, and torch-npu installed but
unloadable (CANN environment not sourced, so ``libhccl.so`` is missing, and a torch it was not built
for). The unloadable case uses an installed distribution whose ``torch_npu`` raises the loader's
error and which declares torch_npu's real ``torch.backends`` entry point, so torch's own auto-loading
(torch >= 2.5) is exercised, not imitated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pgmm_ascend.probe import npu_probe, torch_npu_installed
from pgmm_core.testing import tiny_config, write_config

no_torch_npu = pytest.mark.skipif(torch_npu_installed(), reason="torch_npu is installed on this machine")

LOADER_ERROR = "libhccl.so: cannot open shared object file: No such file or directory"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command of this module, started together (each pays for its own `import torch`)."""
    tmp = tmp_path_factory.mktemp("unavailable")
    site = tmp / "site"  # torch-npu 2.5.1.post1 failing to load as it does without CANN
    (site / "torch_npu").mkdir(parents=True)
    (site / "torch_npu" / "__init__.py").write_text(f"raise OSError({LOADER_ERROR!r})\n")
    info = site / "torch_npu-2.5.1.post1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch_npu\nVersion: 2.5.1.post1\n")
    (info / "entry_points.txt").write_text("[torch.backends]\ntorch_npu = torch_npu:_autoload\n")
    broken = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
              "ASCEND_HOME_PATH": "", "ASCEND_TOOLKIT_HOME": ""}
    config = write_config(tmp / "npu.json", tiny_config(tmp / "run", device={"type": "npu"}))
    train = ["-m", "pgmm_core.train", "--config", str(config)]
    plugins = ["-m", "pgmm_core", "plugins", "--json"]
    commands = {
        "plugins": (plugins, {}),
        "train": (train, {}),
        "broken_plugins": (plugins, broken),
        "broken_train": (train, broken),
        "broken_train_no_autoload": (train, {**broken, "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}),
    }
    procs = {name: subprocess.Popen([sys.executable, *args], env={**os.environ, **env}, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (args, env) in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        results[name] = (proc.returncode, out, err)
    results["run_dir"] = tmp / "run"
    return results


def _plugins(result):
    code, out, err = result
    assert code == 0, err
    return {p["name"]: p for p in json.loads(out)}


@no_torch_npu
def test_probe_names_missing_torch_npu():
    assert npu_probe().startswith("torch_npu is not installed; on an Ascend host with CANN")


@no_torch_npu
def test_plugins_lists_npu_with_the_reason(runs):
    ascend = _plugins(runs["plugins"])["ascend"]
    assert ascend["status"] == "loaded" and "device:npu" in ascend["components"]
    assert ascend["unavailable"]["device:npu"].startswith("torch_npu is not installed")


@no_torch_npu
def test_training_on_npu_stops_before_any_work(runs):
    code, _, err = runs["train"]
    assert code == 4, err
    assert err.startswith("pgmm: error: device backend 'npu' is unavailable: torch_npu is not installed")
    assert "Traceback" not in err
    assert not runs["run_dir"].exists()  # nothing was built or written


def test_plugins_names_the_version_mismatch_of_an_installed_torch_npu(runs):
    import torch

    reason = _plugins(runs["broken_plugins"])["ascend"]["unavailable"]["device:npu"]
    if torch.__version__.startswith("2.5.1"):
        assert "CANN environment is not loaded" in reason
    else:
        assert reason.startswith("torch-npu 2.5.1.post1 is built for torch 2.5.1 but torch ")


def test_broken_torch_npu_breaking_import_torch_is_explained(runs):
    code, _, err = runs["broken_train"]
    assert code == 4, err
    assert "Traceback" not in err
    assert "auto-loads the installed device extension 'torch_npu'" in err
    assert LOADER_ERROR in err and "set_env.sh" in err
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0" in err


def test_broken_torch_npu_with_autoload_off_fails_at_selection(runs):
    code, _, err = runs["broken_train_no_autoload"]
    assert code == 4, err
    assert "Traceback" not in err
    assert f"torch_npu failed to import (OSError: {LOADER_ERROR})" in err
    assert "source /usr/local/Ascend/ascend-toolkit/set_env.sh" in err
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0" in err
