"""Convert a vision-side checkpoint file between LAVIS, pgmm and transformers BLIP-2 layouts.

``python -m pgmm_core convert`` calls :func:`convert_file`; the key rules are in
:mod:`pgmm_vision.keymap`. Outputs: ``.safetensors`` (any layout) or ``.pth`` (LAVIS writes
``{"model": state_dict}``, as LAVIS' own loaders expect).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pgmm_core.errors import CheckpointError
from pgmm_vision.keymap import Format, convert_state_dict, detect_format


@dataclass
class ConversionSummary:
    source: str
    target: str
    source_format: str
    target_format: str
    tensors: int

    def __str__(self) -> str:
        return (f"converted {self.tensors} tensors: {self.source} ({self.source_format}) -> "
                f"{self.target} ({self.target_format})")


def convert_file(source: str | Path, target: str | Path, to: Format,
                 source_format: Format | None = None) -> ConversionSummary:
    """Read ``source`` (file or transformers directory), keep the stage-2 vision side (tower,
    ln_vision, Q-Former query path, query tokens) and write it to ``target`` in layout ``to``."""
    from pgmm_vision.checkpoints import not_llm, read_state_dict

    state = read_state_dict(source, wanted=not_llm)
    fmt = source_format or detect_format(state)
    converted = convert_state_dict(state, to, fmt)
    if not converted:
        raise CheckpointError(f"{source} holds no vision-side weights to convert")
    write_state_dict(converted, target, to)
    return ConversionSummary(str(source), str(target), fmt, to, len(converted))


def write_state_dict(state: dict[str, torch.Tensor], target: str | Path, layout: Format) -> Path:
    """Write ``state`` as ``.safetensors`` (any layout) or ``.pth``/``.pt``/``.bin`` (LAVIS wraps it
    in ``{"model": ...}`` as LAVIS' loaders expect)."""
    from pgmm_core.train.checkpoint import usual_permissions

    target = Path(target)
    if target.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise CheckpointError(f"{target}: write .safetensors, .pth, .pt or .bin")
    state = {k: v.contiguous() for k, v in state.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(target), metadata={"format": "pt", "pgmm_layout": layout})
        usual_permissions(target)  # safetensors writes 0600
    else:
        torch.save({"model": state} if layout == "lavis" else state, str(target))
    return target
