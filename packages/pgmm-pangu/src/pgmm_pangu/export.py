"""Merge a run's LoRA adapters into its LLM and write the result in the openPangu release layout.

``python -m pgmm_core export --run RUN --merge-lora --out DIR`` (:mod:`pgmm_pangu.command`). The
output directory is a copy of the release directory the run's LLM came from (``config.json``,
``tokenizer.model``, ``tokenizer_config.json``, … and any other file it holds) whose safetensors
shards hold the merged weights: the same shard names, the same key-to-shard map in
``model.safetensors.index.json`` (its ``total_size`` recomputed), each tensor in the dtype the
release stores it in (bf16 for openPangu-7B), the per-layer ``rotary_emb.inv_freq`` entries copied
as they are. pgmm's openPangu loader (and the release's own code) reads it like the original.

The merge is computed in float32 — ``W + alpha/r * B A`` is rounded once, into the stored dtype —
so the LLM is built in float32 for it: 4 bytes per parameter of host memory (about 32 GB for
openPangu-7B). The directory is written beside ``DIR`` and renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pgmm_core.errors import CheckpointError, PgmmError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"

logger = logging.getLogger(__name__)


class ExportError(PgmmError):
    """An export that cannot be done as asked (nothing is written)."""

    exit_code = 2


@dataclass
class ExportReport:
    out_dir: Path
    source_dir: Path
    checkpoint: Path
    merged_layers: int
    shards: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"merged the LoRA adapters of {self.checkpoint} into {self.merged_layers} layers",
                f"base weights and tokenizer from {self.source_dir}",
                f"wrote {self.out_dir} ({len(self.shards)} safetensors shard{'s' if len(self.shards) != 1 else ''}"
                f" + {INDEX if (self.out_dir / INDEX).is_file() else 'no index'})"]


def export_merged_llm(run_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "best",
                      overrides: tuple[str, ...] | list[str] = (), host: Any = None) -> ExportReport:
    """Merge the adapters of ``run_dir``'s checkpoint into its LLM; write it to ``out_dir`` (new)."""
    import pgmm_core

    run_dir, out = Path(run_dir), Path(out_dir)
    if not pgmm_core.is_run_directory(run_dir):
        raise ExportError(f"{run_dir} is not a pgmm run directory (no config.json beside checkpoints/)")
    if out.exists():
        raise ExportError(f"{out} already exists: export writes a new directory and overwrites nothing; "
                          "choose another --out or remove it")
    config = pgmm_core.load_config(run_dir / "config.json", overrides, host=host)
    if getattr(config.model.llm, "lora", None) is None:
        raise ExportError(
            f"{run_dir} was trained without LoRA (model.llm.lora is null in its config.json): its LLM "
            f"({config.model.llm.type}) is unchanged, so there is nothing to merge; use the LLM's own directory")
    backend, path = _adapted_llm(config, run_dir, checkpoint)
    if backend.source_path is None:
        raise ExportError(f"the LLM of type {config.model.llm.type!r} has no release directory to copy")
    from pgmm_pangu.lora import lora_layers, merge_lora

    merged = sum(1 for _ in lora_layers(backend.model))
    merge_lora(backend.model)
    shards = write_release_layout(Path(backend.source_path), backend.model.state_dict(), out)
    return ExportReport(out, Path(backend.source_path), path, merged, shards)


def _adapted_llm(config: Any, run_dir: Path, checkpoint: str) -> tuple[Any, Path]:
    """The run's LLM in float32 with its adapters from the checkpoint, and that checkpoint's path."""
    import pgmm_core
    from pgmm_core.devices.base import PrecisionPolicy

    policy = PrecisionPolicy.for_precision("fp32", "cpu")  # merge in float32, round once when writing
    model = pgmm_core.build_model(config, parts={"llm"}, policy=policy)
    _check_base_weights(run_dir, model.frozen_fingerprint)
    path, weights = pgmm_core.read_run_weights(run_dir, checkpoint)
    wanted = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items() if k.startswith("llm.")}
    saved = {k: tuple(v.shape) for k, v in weights.items() if k.startswith("llm.")}
    if saved != wanted:
        missing = sorted(set(wanted) - set(saved))[:5]
        other = sorted(k for k in set(wanted) & set(saved) if wanted[k] != saved[k])[:5]
        raise CheckpointError(f"{path}: its LLM adapters do not fit model.llm.lora (missing: {missing}, "
                              f"other shapes: {other})")
    model.load_state_dict({k: weights[k] for k in wanted}, strict=False)
    return model.llm, path


def _check_base_weights(run_dir: Path, fingerprint: dict[str, str]) -> None:
    """Adapters belong to the base weights they were trained on: refuse others (the fingerprint the
    trainer recorded in the run's ``frozen_weights.json``)."""
    record = run_dir / "frozen_weights.json"
    if not record.is_file():
        return
    recorded = json.loads(record.read_text(encoding="utf-8")).get("fingerprint", {})
    if "llm" in recorded and recorded["llm"] != fingerprint.get("llm"):
        raise ExportError(
            f"the LLM weights at model.llm.path differ from those {run_dir} was trained with "
            f"({record.name}): its adapters belong to other base weights")


def _source_index(source: Path) -> dict[str, str]:
    """``{tensor name: shard file}`` of the release directory (one file when it has no index)."""
    from safetensors import safe_open

    index = source / INDEX
    if index.is_file():
        return dict(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    with safe_open(str(source / SINGLE), framework="pt") as fh:
        return {key: SINGLE for key in fh.keys()}


def write_release_layout(source: Path, state: dict[str, torch.Tensor], out: Path) -> list[str]:
    """``source``'s directory with its weights replaced by ``state`` (same shards, names, dtypes)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from pgmm_pangu.checkpoint import IGNORED_SUFFIXES, SAFETENSORS_DTYPES

    weight_map = _source_index(source)
    unknown = sorted(set(state) - set(weight_map))
    if unknown:
        raise ExportError(f"merged weights {unknown[:5]} have no place in {source}'s shards")
    scratch = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for item in source.iterdir():
            if item.name == INDEX or item.suffix == ".safetensors":
                continue
            if item.is_dir():
                shutil.copytree(item, scratch / item.name)
            else:
                shutil.copy2(item, scratch / item.name)
        shards = sorted(set(weight_map.values()))
        total = 0
        for shard in shards:
            tensors = {}
            with safe_open(str(source / shard), framework="pt") as fh:
                for key in fh.keys():
                    dtype = SAFETENSORS_DTYPES.get(fh.get_slice(key).get_dtype())
                    if key in state:
                        tensors[key] = state[key].detach().to("cpu", dtype or state[key].dtype).contiguous()
                    elif key.endswith(IGNORED_SUFFIXES):
                        tensors[key] = fh.get_tensor(key)  # buffers the release lists; kept as they are
                    else:
                        raise ExportError(f"{source / shard}: weight '{key}' is not in the merged model")
                metadata = fh.metadata() or {"format": "pt"}
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            save_file(tensors, str(scratch / shard), metadata=metadata)
        if (source / INDEX).is_file():
            original = json.loads((source / INDEX).read_text(encoding="utf-8"))
            index = {**original, "metadata": {**original.get("metadata", {}), "total_size": total},
                     "weight_map": weight_map}
            (scratch / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    logger.info("wrote merged LLM to %s", out)
    return shards
