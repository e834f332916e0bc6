"""Reading an openPangu-Embedded release directory into transformers' ``LlamaForCausalLM``.

The release's ``config.json`` names ``PanguEmbeddedForCausalLM`` with remote code that imports
torch_npu at module top and does not import on transformers 5. The network is Llama with biases on
the attention projections, so pgmm maps the config onto ``LlamaConfig(attention_bias=True)`` and
loads the safetensors shards itself, never executing remote code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pgmm_core.errors import CheckpointError

PANGU_MODEL_TYPES = {"PanguEmbedded", "pangu_embedded", "openpangu_dense", "llama"}
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RELEASE_HINT = "download openPangu-Embedded-7B from https://ai.gitcode.com/ascend-tribe/openpangu-embedded-7b-model"


def read_release_config(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise CheckpointError(f"openPangu directory not found: {directory} ({RELEASE_HINT})")
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: not an openPangu release directory ({RELEASE_HINT})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    model_type = config.get("model_type")
    if model_type not in PANGU_MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type {model_type!r} is not openPangu-Embedded (expected 'PanguEmbedded'); "
            "use the hf_causal_lm backend for other models"
        )
    return config


def llama_config_from_release(config: dict[str, Any]) -> Any:
    """The release's config as a ``LlamaConfig`` (``bias`` -> ``attention_bias``)."""
    from transformers import LlamaConfig

    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in config]
    if missing:
        raise CheckpointError(f"config.json lacks {', '.join(missing)}")
    return LlamaConfig(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
        hidden_act=config.get("hidden_act", "silu"),
        max_position_embeddings=config.get("max_position_embeddings", 32768),
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=config.get("rope_theta", 16_000_000.0),
        attention_bias=bool(config.get("bias", config.get("attention_bias", True))),
        attention_dropout=config.get("attention_dropout", 0.0),
        mlp_bias=False,
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 45892),
        pad_token_id=config.get("pad_token_id", 0),
        initializer_range=config.get("initializer_range", 0.02),
    )


def weight_files(directory: Path) -> list[Path]:
    """The shards named by ``model.safetensors.index.json``, or a single ``model.safetensors``."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
        files = sorted({directory / name for name in weight_map.values()})
    else:
        files = [directory / "model.safetensors"]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise CheckpointError(f"missing weight shard(s): {', '.join(absent)} ({RELEASE_HINT})")
    return files


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters of the Llama-with-attention-bias network a release config describes."""
    h, i, v, layers = config["hidden_size"], config["intermediate_size"], config["vocab_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    head_dim = h // heads
    attn = h * h * 2 + 2 * h * kv * head_dim + (h * 2 + 2 * kv * head_dim)
    mlp = 3 * h * i
    per_layer = attn + mlp + 2 * h
    embeddings = v * h * (1 if config.get("tie_word_embeddings", False) else 2)
    return layers * per_layer + embeddings + h


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(config: dict[str, Any], dtype: torch.dtype, directory: Path) -> None:
    """Refuse early, with numbers, when the weights cannot fit in host memory in ``dtype``."""
    if os.environ.get("PGMM_SKIP_MEMORY_CHECK"):
        return
    needed = parameter_count(config) * torch.finfo(dtype).bits // 8
    available = available_memory_bytes()
    if available is not None and needed > available:
        gib = 1024**3
        raise CheckpointError(
            f"{directory}: the LLM needs about {needed / gib:.1f} GiB in {str(dtype).replace('torch.', '')} "
            f"but only {available / gib:.1f} GiB of memory is available; use dtype bf16, free memory, or "
            "set PGMM_SKIP_MEMORY_CHECK=1 to try anyway"
        )


def load_llama(directory: str | Path, dtype: torch.dtype) -> Any:
    """Build ``LlamaForCausalLM`` from an openPangu release directory and load its shards."""
    from safetensors import safe_open
    from transformers import LlamaForCausalLM

    directory = Path(directory)
    release = read_release_config(directory)
    llama_config = llama_config_from_release(release)
    check_memory(release, dtype, directory)
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config)
    expected = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for shard in weight_files(directory):
        with safe_open(str(shard), framework="pt") as fh:
            for key in fh.keys():
                if key.endswith(IGNORED_SUFFIXES):
                    continue
                if key not in expected:
                    raise CheckpointError(f"{shard.name}: unexpected weight '{key}' for an openPangu model")
                tensor = fh.get_tensor(key)
                if tuple(tensor.shape) != tuple(expected[key].shape):
                    raise CheckpointError(
                        f"{shard.name}: shape mismatch for '{key}': checkpoint has {tuple(tensor.shape)}, "
                        f"config.json implies {tuple(expected[key].shape)}"
                    )
                loaded[key] = tensor.to(dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise CheckpointError(f"{directory}: missing weights: {', '.join(missing[:8])}"
                              + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    model.load_state_dict(loaded, assign=True, strict=True)
    # Rotary buffers are not in the state dict: rebuild them on the real device.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=llama_config)
    model.eval()
    return model
