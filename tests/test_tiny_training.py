"""End to end: the walking skeleton trains on CPU and leaves a complete run directory."""

from __future__ import annotations

import json
import subprocess
import sys

from pgmm_core.testing import tiny_config, write_config


def test_tiny_training_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(run_dir, train={"epochs": 3, "log_every": 2, "tensorboard": True})
    config["model"]["llm"]["pretrain_steps"] = 100
    path = write_config(tmp_path / "tiny.json", config)
    result = subprocess.run([sys.executable, "-m", "pgmm_core.train", "--config", str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "config.json").is_file()
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["train"]["output_dir"] == str(run_dir)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, 25, 2))
    assert records[-1]["loss"] < records[0]["loss"] * 0.8, records
    assert all({"loss", "lr", "samples_per_s", "peak_mem_mb", "epoch"} <= set(r) for r in records)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    assert checkpoints and (checkpoints[-1] / "model.safetensors").is_file()
    from safetensors.torch import load_file

    weights = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert any(k.startswith("connector.") for k in weights) and any(k.startswith("projector.") for k in weights)
    assert not any(k.startswith(("vision.", "llm.")) for k in weights)  # trainable-only
    assert json.loads((run_dir / "metrics.json").read_text())[-1]["step"] == 24
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results) == 8 and {"image_id", "caption"} <= set(results[0])
