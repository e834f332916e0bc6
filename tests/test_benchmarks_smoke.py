"""Every benchmark script starts: its command line parses and ``--help`` answers without error.

Only that: the benchmarks measure speed and memory and belong in ``benchmarks/`` (see its README),
not in the test suite. The scripts import torch lazily, so this takes well under a second each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "stage2_common.py")


def test_every_benchmark_is_listed():
    assert {"train_step.py", "bf16_loss.py", "vocab_memory.py", "generation.py", "machine_limit.py",
            "scaling.py", "data_loading.py", "pangu_loss_memory.py", "stage1_step.py", "ask_generation.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:"), out.stdout


def test_ask_generation_smoke_answers_as_transformers(tmp_path):
    """The tiny preset end to end (a few seconds): pgmm's VQA answers from left-padded prompts of
    different lengths equal transformers' BLIP-2 ``generate`` on the same weights under greedy decoding
    (beam search is timed too; its agreement is a recorded figure, open to near-ties between the two
    vision towers' last bits)."""
    out_json = tmp_path / "ask.json"
    out = subprocess.run([sys.executable, str(BENCHMARKS / "ask_generation.py"), "--smoke", "--json", str(out_json)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out_json.read_text())
    greedy = result["modes"]["greedy"]
    assert greedy["compared"] == result["questions"] == 8
    assert greedy["identical"] == greedy["compared"], greedy["examples"]
    assert greedy["distinct_answers"]["pgmm"] > 1  # the answers depend on the image and the question
    for mode in ("greedy", "beam5"):
        r = result["modes"][mode]
        assert r["compared"] == 8
        assert all(rate > 0 for rate in r["answers_per_s"].values())
        assert all(answer for _, answer in r["examples"]["pgmm"] + r["examples"]["hf"])
