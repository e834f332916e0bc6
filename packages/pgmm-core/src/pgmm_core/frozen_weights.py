"""A fingerprint of a model's frozen weights, recorded with a run and checked when it is reused.

Checkpoints hold only the trainable weights; the frozen towers are rebuilt from their own files, or,
when a config names none (the tiny demo's vision tower), from the run's seed. A run reused with
other frozen weights — another LLM directory, a different vision checkpoint, a random initialisation
that came out differently — would silently caption with a model it was never trained with, so the
trainer records this fingerprint in ``frozen_weights.json`` and :func:`pgmm_core.runs.load_run`
compares it.

Each frozen tensor contributes its name, shape, dtype and a strided sample of at most 4,096 values,
so fingerprinting a 7B model reads a few megabytes, not its weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from pgmm_core.run_dir import RunDirectory

FILE_NAME = RunDirectory.FROZEN_WEIGHTS
SAMPLE = 4096


def fingerprint(model: nn.Module) -> dict[str, str]:
    """``{top-level module: sha256}`` over the frozen parameters of each part (e.g. ``vision``, ``llm``)."""
    hashers: dict[str, "hashlib._Hash"] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        part = name.split(".", 1)[0]
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // SAMPLE)][:SAMPLE].to("cpu", torch.float32).contiguous()
        hasher = hashers.setdefault(part, hashlib.sha256())
        hasher.update(f"{name}|{tuple(param.shape)}|{param.dtype}|".encode())
        hasher.update(sample.numpy().tobytes())
    return {part: hasher.hexdigest() for part, hasher in sorted(hashers.items())}


def to_json(prints: dict[str, str]) -> str:
    return json.dumps({"fingerprint": prints}, indent=2) + "\n"


def differing_parts(run_dir: Path, prints: dict[str, str]) -> list[str] | None:
    """Parts whose fingerprints differ from those the run recorded; ``None`` for a run without a record."""
    path = RunDirectory(run_dir).frozen_weights
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text(encoding="utf-8")).get("fingerprint", {})
    return sorted(part for part in set(recorded) | set(prints) if recorded.get(part) != prints.get(part))


def mismatch_warning(run_dir: Path, parts: list[str]) -> str:
    return (f"the frozen weights of {', '.join(parts)} differ from those {run_dir} was trained with "
            f"({FILE_NAME}): check the paths to the frozen checkpoints (model.llm.path, "
            "model.vision.checkpoint) — captions and metrics will not be the run's")
