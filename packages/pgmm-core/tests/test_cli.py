"""The command line: plugins, schema, validate — and that they never import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pgmm_core.testing import tiny_config, write_config


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_plugins_json_lists_first_party_distributions():
    result = run_cli("-m", "pgmm_core", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["distribution"]: p for p in json.loads(result.stdout)}
    for dist in ("pgmm-core", "pgmm-vision", "pgmm-pangu", "pgmm-data", "pgmm-ascend"):
        assert plugins[dist]["status"] == "loaded", plugins[dist]
    components = {c for p in plugins.values() for c in p["components"]}
    for expected in ("vision:eva_vit_g", "connector:qformer", "projector:mlp2x_gelu", "llm:openpangu",
                     "dataset:synthetic_shapes", "device:cpu", "device:npu"):
        assert expected in components
    assert "torch_npu" in plugins["pgmm-ascend"]["unavailable"]["device:npu"]


def test_validate_reports_three_mistakes_and_exits_2(tmp_path):
    data = tiny_config(tmp_path)
    data["model"]["vision"]["depth"] = 0
    data["data"]["batch_size"] = "sixteen"
    data["train"]["warmup_step"] = 10
    path = write_config(tmp_path / "bad.json", data)
    result = run_cli("-m", "pgmm_core", "validate", str(path))
    assert result.returncode == 2
    for fragment in ("model.vision.depth", "data.batch_size", "train.warmup_step"):
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_accepts_good_config(tmp_path):
    path = write_config(tmp_path / "ok.json", tiny_config(tmp_path))
    result = run_cli("-m", "pgmm_core", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_example_configs_validate():
    from pathlib import Path

    root = Path(__file__).parents[3]
    for config in sorted(root.glob("examples/**/*.json")):
        if "plugins" in config.relative_to(root).parts:
            continue  # needs its plugin installed: see test_example_plugin.py
        result = run_cli("-m", "pgmm_core", "validate", str(config), "--no-files")  # paths of another machine
        assert result.returncode == 0, result.stderr


def test_validate_lists_every_missing_file_and_exits_2():
    from pathlib import Path

    config = Path(__file__).parents[3] / "examples" / "stage2.json"
    result = run_cli("-m", "pgmm_core", "validate", str(config))
    assert result.returncode == 2, result.stderr
    for where in ("model.vision.checkpoint", "model.connector.checkpoint", "model.llm.path", "data.train.0.root",
                  "data.train.1.root", "data.val.0.root"):
        assert f"  - {where}: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "--no-files" in result.stderr


@pytest.mark.parametrize("command", [["plugins"], ["schema"], ["validate", "CONFIG"]])
def test_light_commands_do_not_import_torch(tmp_path, command):
    path = write_config(tmp_path / "ok.json", tiny_config(tmp_path))
    command = [str(path) if part == "CONFIG" else part for part in command]
    result = run_cli("-X", "importtime", "-m", "pgmm_core", *command)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "torch" not in imported and "transformers" not in imported and "timm" not in imported


def test_print_config_shows_resolved_defaults(tmp_path):
    path = write_config(tmp_path / "ok.json", tiny_config(tmp_path))
    result = run_cli("-m", "pgmm_core.train", "--config", str(path), "train.lr=3e-4", "--print-config")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["train"]["lr"] == 3e-4
    assert resolved["train"]["weight_decay"] == 0.05  # a default filled in


def test_train_subcommand_passes_its_options_through(tmp_path):
    path = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run"))
    result = run_cli("-m", "pgmm_core", "train", "--config", str(path), "train.lr=3e-4", "--print-config")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["train"]["lr"] == 3e-4
    result = run_cli("-m", "pgmm_core", "train", "--help")
    assert result.returncode == 0 and "--resume" in result.stdout


@pytest.mark.parametrize("override,problem", [
    ("train.lr=inf", "train.lr"),
    ("train.output_dir=", "train.output_dir"),
])
def test_values_that_cannot_work_are_refused(tmp_path, override, problem):
    path = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run"))
    result = run_cli("-m", "pgmm_core", "validate", str(path), override)
    assert result.returncode == 2 and problem in result.stderr


def test_changing_a_components_type_starts_its_section_afresh():
    from pgmm_core.config.loading import apply_overrides

    data = {"device": {"type": "npu", "allow_hf32": False, "hccl_exec_timeout": 1800}, "train": {"lr": 1.0}}
    changed, problems = apply_overrides(data, ["device.precision=bf16", "device.type=cpu"])
    assert problems == []
    assert changed == {"device": {"type": "cpu", "precision": "bf16"}, "train": {"lr": 1.0}}
    same, _ = apply_overrides(data, ["device.type=npu"])
    assert same == data  # the same type keeps its fields


def test_validate_takes_overrides_after_an_option(tmp_path):
    path = write_config(tmp_path / "c.json", tiny_config(tmp_path / "run"))
    result = run_cli("-m", "pgmm_core", "validate", str(path), "--print-config", "train.lr=2e-4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["train"]["lr"] == 2e-4
    result = run_cli("-m", "pgmm_core", "validate", str(path), "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


def test_train_takes_overrides_before_and_after_options(tmp_path):
    path = write_config(tmp_path / "ok.json", tiny_config(tmp_path))
    result = run_cli("-m", "pgmm_core.train", "--config", str(path), "train.lr=0.0002", "--print-config",
                     "train.max_steps=21")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["train"]["lr"] == 0.0002 and printed["train"]["max_steps"] == 21
