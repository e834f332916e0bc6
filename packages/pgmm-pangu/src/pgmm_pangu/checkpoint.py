"""Reading an openPangu-Embedded release directory into transformers' ``LlamaForCausalLM``.

The release's ``config.json`` names ``PanguEmbeddedForCausalLM`` with remote code that imports
torch_npu at module top and does not import on transformers 5. The network is Llama with biases on
the attention projections, so pgmm maps the config onto ``LlamaConfig(attention_bias=True)`` and
loads the safetensors shards itself, never executing remote code.

Loading builds the model on the ``meta`` device and assigns the tensors read from the shards, so the
weights exist once, in the requested dtype: a bf16 release loaded as bf16 is never copied to fp32.
Shapes are checked from the shard headers before any tensor is read, and the memory the weights
need is compared with the memory available before anything is allocated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pgmm_core.errors import CheckpointError

PANGU_MODEL_TYPES = ("PanguEmbedded",)
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)  # per-layer buffers the release lists; recomputed
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
RELEASE_HINT = "download openPangu-Embedded-7B from https://ai.gitcode.com/ascend-tribe/openpangu-embedded-7b-model"


def read_release_config(directory: Path) -> dict[str, Any]:
    """The release's ``config.json``, after checking that the directory is an openPangu release."""
    if directory.is_file():
        raise CheckpointError(f"{directory} is a file; model.llm.path names the release's directory "
                              f"({RELEASE_HINT})")
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
            'load other transformers models with {"type": "hf_causal_lm", "path": ...}'
        )
    return config


def llama_config_from_release(config: dict[str, Any]) -> Any:
    """The release's config as a ``LlamaConfig`` (``bias`` -> ``attention_bias``)."""
    from transformers import LlamaConfig

    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in config]
    if missing:
        raise CheckpointError(f"config.json lacks {', '.join(missing)}")
    optional = {"head_dim": config["head_dim"]} if "head_dim" in config else {}
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
        attention_bias=bool(config.get("bias", True)),
        attention_dropout=config.get("attention_dropout", 0.0),
        mlp_bias=False,
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 45892),
        pad_token_id=config.get("pad_token_id", 0),
        initializer_range=config.get("initializer_range", 0.02),
        **optional,
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


def stored_dtype(directory: Path) -> torch.dtype:
    """The floating dtype the weights are stored in (from a shard header; the release: bf16).

    ``config.json``'s ``torch_dtype`` is not trusted: it says bfloat16 whatever the shards hold.
    """
    from safetensors import safe_open

    for shard in weight_files(directory):
        with safe_open(str(shard), framework="pt") as fh:
            for key in fh.keys():
                if not key.endswith(IGNORED_SUFFIXES):
                    name = fh.get_slice(key).get_dtype()
                    if name in SAFETENSORS_DTYPES:
                        return SAFETENSORS_DTYPES[name]
    return torch.float32


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters of the Llama-with-attention-bias network a release config describes.

    For the release: 8,030,887,936, i.e. its index's ``total_size`` (16,061,784,576 bytes) minus the
    fp32 rotary buffers, divided by two bytes.
    """
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim", h // heads)
    q_and_o = 2 * h * heads * head_dim + heads * head_dim + h  # weights + q/o biases
    k_and_v = 2 * (h * kv * head_dim + kv * head_dim)
    per_layer = q_and_o + k_and_v + 3 * h * i + 2 * h
    embeddings = v * h * (1 if config.get("tie_word_embeddings", False) else 2)
    return layers * per_layer + embeddings + h


def available_memory_bytes() -> int | None:
    """Host memory that can still be allocated: MemAvailable, capped by a cgroup v2 limit (None: unknown)."""
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            candidates.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def check_memory(config: dict[str, Any], dtype: torch.dtype, directory: Path) -> None:
    """Refuse early, with numbers, when the weights cannot fit in host memory in ``dtype``."""
    if os.environ.get("PGMM_SKIP_MEMORY_CHECK"):
        return
    needed = parameter_count(config) * torch.finfo(dtype).bits // 8
    available = available_memory_bytes()
    if available is not None and needed > available:
        gib = 1024**3
        name = {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))
        raise CheckpointError(
            f"{directory}: the LLM needs about {needed / gib:.1f} GiB of memory in {name} "
            f"but only {available / gib:.1f} GiB is available; set the llm's \"dtype\" to \"bf16\", free memory, "
            "or set PGMM_SKIP_MEMORY_CHECK=1 to try anyway"
        )


def load_llama(directory: str | Path, dtype: torch.dtype | None = None) -> Any:
    """``LlamaForCausalLM`` with the weights of an openPangu release directory, in ``dtype``
    (default: the dtype the shards store)."""
    from safetensors import safe_open
    from transformers import LlamaForCausalLM

    directory = Path(directory)
    release = read_release_config(directory)
    llama_config = llama_config_from_release(release)
    dtype = dtype or stored_dtype(directory)
    check_memory(release, dtype, directory)
    llama_config.dtype = dtype
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    loaded: dict[str, torch.Tensor] = {}
    for shard in weight_files(directory):
        with safe_open(str(shard), framework="pt") as fh:
            for key in fh.keys():
                if key.endswith(IGNORED_SUFFIXES):
                    continue
                if key not in expected:
                    raise CheckpointError(f"{shard}: unexpected weight '{key}' for an openPangu model "
                                          "(is config.json from the same release?)")
                shape = tuple(fh.get_slice(key).get_shape())
                if shape != expected[key]:
                    raise CheckpointError(
                        f"{shard}: shape mismatch for '{key}': the checkpoint has {shape}, "
                        f"config.json implies {expected[key]} (is config.json from the same release?)"
                    )
                loaded[key] = fh.get_tensor(key).to(dtype)  # no copy when the dtypes agree
    missing = sorted(set(expected) - set(loaded))
    if missing:
        more = f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
        raise CheckpointError(f"{directory}: missing weights: {', '.join(missing[:8])}{more}; "
                              "are all shards of model.safetensors.index.json present and complete?")
    model.load_state_dict(loaded, assign=True, strict=True)
    # Non-persistent buffers (the rotary frequencies) are not in the state dict: rebuild them for real.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=llama_config)
    left_on_meta = [name for name, tensor in model.state_dict(keep_vars=True).items() if tensor.is_meta]
    left_on_meta += [name for name, tensor in model.named_buffers() if tensor.is_meta]
    if left_on_meta:  # a transformers version with buffers pgmm does not know about
        raise RuntimeError(f"tensors left uninitialised after loading: {', '.join(left_on_meta)}")
    model.eval()
    return model
