"""Every benchmark script starts: its command line parses and ``--help`` answers without error.

Only that: the benchmarks measure speed and memory and belong in ``benchmarks/`` (see its README),
not in the test suite. The scripts import torch lazily, so this takes well under a second each.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "stage2_common.py")


def test_every_benchmark_is_listed():
    assert {"train_step.py", "bf16_loss.py", "vocab_memory.py", "generation.py", "machine_limit.py",
            "scaling.py", "data_loading.py", "pangu_loss_memory.py", "stage1_step.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:"), out.stdout
