"""Helpers for testing pgmm and pgmm plugins: tiny configs, fake installs, contract suites.

Nothing here downloads anything; every model and dataset is tiny and built on the fly in the real
on-disk formats. The contract suites (``VisionEncoderContract`` and the others, from
:mod:`pgmm_core.testing.contracts`) need pytest and are imported on first use, so that importing
this module never requires pytest. The opt-in pytest plugin is
:mod:`pgmm_core.testing.pytest_plugin`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TINY_MODEL: dict[str, Any] = {
    "vision": {"type": "eva_vit_g", "image_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
               "num_heads": 2, "mlp_dim": 64},
    "connector": {"type": "qformer", "num_query_tokens": 4, "hidden_size": 32, "num_layers": 2,
                  "num_heads": 2, "intermediate_size": 64},
    "projector": {"type": "mlp2x_gelu"},
    "llm": {"type": "tiny_openpangu", "hidden_size": 32, "intermediate_size": 64, "num_layers": 1,
            "num_heads": 2, "num_kv_heads": 1, "vocab_size": 512},
    "prompt": "",
    "max_text_len": 24,
}


def tiny_config(output_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """A complete, fast config (seconds on a CPU) as a dict; ``sections`` are merged one level deep."""
    config: dict[str, Any] = {
        "model": copy.deepcopy(TINY_MODEL),
        "data": {
            "train": [{"type": "synthetic_shapes", "num_samples": 64, "seed": 0}],
            "val": [{"type": "synthetic_shapes", "num_samples": 8, "seed": 0}],
            "batch_size": 8,
            "num_workers": 0,
        },
        "train": {"epochs": 1, "lr": 1e-3, "warmup_steps": 2, "warmup_lr": 1e-5, "min_lr": 1e-4,
                  "output_dir": str(output_dir), "log_every": 2, "tensorboard": False, "seed": 0},
        "eval": {"generation": {"num_beams": 1, "max_new_tokens": 8, "min_new_tokens": 1}},
        "device": {"type": "cpu"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name].update(value)
        else:
            config[name] = value
    return config


def write_config(path: str | Path, config: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def install_fake_distribution(site_dir: str | Path, name: str, version: str, modules: dict[str, str],
                              entry_points: dict[str, str]) -> Path:
    """Install a minimal distribution into ``site_dir`` (a ``.dist-info`` plus modules) so that
    ``importlib.metadata`` finds its ``pgmm`` entry points once ``site_dir`` is on ``sys.path``."""
    site = Path(site_dir)
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        target = site / (module.replace(".", "/") + ".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = ["[pgmm]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return site


def add_to_path(site_dir: str | Path) -> None:
    if str(site_dir) not in sys.path:
        sys.path.insert(0, str(site_dir))


def no_dropout_config(output_dir: Path, **sections: Any) -> dict[str, Any]:
    """Tiny config whose Q-Former has no dropout (so runs with different rank layouts compare)."""
    config = tiny_config(output_dir, **sections)
    config["model"]["connector"].update({"dropout": 0.0, "attention_dropout": 0.0})
    return config


def run_train(config: dict[str, Any], tmp_path: Path, *extra: str, name: str = "config.json",
              env: dict[str, str] | None = None, launcher: list[str] | None = None,
              timeout: int = 600) -> subprocess.CompletedProcess:
    path = write_config(tmp_path / name, config)
    command = [*(launcher or [sys.executable]), "-m", "pgmm_core.train", "--config", str(path), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def log_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return load_file(str(last / "model.safetensors"))


_CONTRACTS = ("CallbackContract", "ConnectorContract", "DatasetContract", "DeviceBackendContract",
              "LLMBackendContract", "ObjectiveContract", "ProjectorContract", "StrategyContract",
              "VisionEncoderContract")


def __getattr__(name: str) -> Any:
    if name in _CONTRACTS:
        from pgmm_core.testing import contracts

        return getattr(contracts, name)
    raise AttributeError(f"module 'pgmm_core.testing' has no attribute {name!r}")
