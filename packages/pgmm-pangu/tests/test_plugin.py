"""pgmm-pangu registers its LLM backends through the `pgmm` entry point."""

from __future__ import annotations

import json
import subprocess
import sys


def test_plugins_json_lists_the_llm_backends():
    result = subprocess.run([sys.executable, "-m", "pgmm_core", "plugins", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    pangu = next(p for p in json.loads(result.stdout) if p["distribution"] == "pgmm-pangu")
    assert pangu["status"] == "loaded" and pangu["module"] == "pgmm_pangu.plugin"
    assert {"llm:openpangu", "llm:hf_causal_lm", "llm:tiny_openpangu"} <= set(pangu["components"])


def test_configs_validate_without_torch():
    code = (
        "import sys; from pgmm_pangu.configs import OpenPanguConfig, HfCausalLMConfig;"
        "c = OpenPanguConfig(path='/data/pangu', dtype='bf16');"
        "assert (c.freeze, c.grad_checkpointing) == (True, False);"
        "HfCausalLMConfig(path='/data/qwen');"
        "import pgmm_pangu.plugin; assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
