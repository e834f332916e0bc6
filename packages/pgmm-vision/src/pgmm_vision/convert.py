"""Convert checkpoints between LAVIS, pgmm and transformers BLIP-2 layouts.

:func:`convert` is what ``python -m pgmm_core convert`` (:mod:`pgmm_vision.command`) runs. The source
is a checkpoint file (LAVIS ``blip2_pretrained.pth`` or a fine-tuned BLIP-2 ``.pth``,
``eva_vit_g.pth``, a transformers BLIP-2 weight file or directory, a pgmm ``model.safetensors``) or a
pgmm run directory (its best/last checkpoint's trainable weights). The vision side (tower,
ln_vision, Q-Former query path, query tokens) is renamed by :mod:`pgmm_vision.keymap`; a pgmm
projector is carried along as ``language_projection.*`` (transformers) or ``llm_proj.*`` (LAVIS).
A pgmm-layout ``.safetensors`` output loads as ``model.vision.checkpoint`` and
``model.connector.checkpoint``. Outputs: ``.safetensors`` (any layout) or ``.pth`` (LAVIS writes
``{"model": state_dict}``, as LAVIS' own loaders expect).

The Q-Former's stage-1 text side (embeddings, text FFN, LM head, ``vision_proj``, ``text_proj``,
``itm_head``, ``temp``) is carried over from pgmm sources (a stage-1 run exports to LAVIS'
``Blip2Qformer`` layout) and, with ``text_side=True`` (``--text-side``), from LAVIS files too;
otherwise it is counted as not used in stage 2.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pgmm_core.errors import CheckpointError
from pgmm_core.files import usual_permissions
from pgmm_vision.keymap import Format, convert_state_dict, detect_format

PROJECTOR_NAMES = {"pgmm": "projector.", "hf": "language_projection.", "lavis": "llm_proj."}
WRITABLE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass
class ConvertReport:
    """What :func:`convert` wrote, kept and dropped; ``lines()`` is the command's output."""

    source: str
    target: str
    source_format: str
    target_format: str
    written: dict[str, int]
    ignored: dict[str, int] = field(default_factory=dict)
    unrecognised: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> int:
        return sum(self.written.values())

    def lines(self) -> list[str]:
        out = [f"converted {self.source} ({self.source_format}) -> {self.target} ({self.target_format}): "
               f"{self.tensors} tensors",
               "  written: " + ", ".join(f"{name}.* ({count})" for name, count in sorted(self.written.items()))]
        out += [f"  ignored, not used in stage 2: {group} ({count})" for group, count in sorted(self.ignored.items())]
        if self.unrecognised:
            out.append(f"  unrecognised, dropped ({len(self.unrecognised)}): {', '.join(self.unrecognised[:8])}")
        return out


def _read_source(source: Path, checkpoint: str) -> tuple[dict[str, Any], str | None]:
    """Tensors of ``source`` and, for a run directory, its layout ("pgmm")."""
    from pgmm_core import is_run_directory, read_run_weights
    from pgmm_vision.checkpoints import not_llm, read_state_dict

    if is_run_directory(source):
        return read_run_weights(source, checkpoint)[1], "pgmm"
    return read_state_dict(source, wanted=not_llm), None


def _split_projector(state: dict[str, Any], fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix = PROJECTOR_NAMES.get(fmt, "projector.")
    projector = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return rest, projector


def convert(source: str | Path, target: str | Path, *, to: str, source_format: str | None = None,
            checkpoint: str = "best", text_side: bool | None = None) -> ConvertReport:
    """Convert ``source`` and write ``target`` (``.safetensors``, or ``.pth`` for LAVIS).

    ``text_side``: keep the Q-Former's stage-1 text side and heads; default: kept from a pgmm source
    (only a stage-1 run has one), dropped from the others (stage 2 does not use it)."""
    from pgmm_vision.keymap import to_pgmm

    source = Path(source)
    if Path(target).suffix not in WRITABLE_SUFFIXES:  # before reading gigabytes
        raise CheckpointError(f"{target}: write .safetensors, .pth, .pt or .bin")
    state, run_format = _read_source(source, checkpoint)
    detected = run_format or detect_format(state)
    if source_format and source_format != detected:
        raise CheckpointError(f"{source}: --from {source_format}, but its keys are in the {detected} layout "
                              f"(e.g. {next(iter(state), 'none')!r}); leave --from out to use the detected one")
    state, projector = _split_projector(state, detected)
    keep = detected == "pgmm" if text_side is None else text_side
    pgmm = to_pgmm(state, detected, text_side=keep)
    out = convert_state_dict(pgmm.tensors, to, "pgmm", text_side=keep) if pgmm.tensors else {}
    out.update({PROJECTOR_NAMES[to] + k: v for k, v in projector.items()})
    if not out:
        raise CheckpointError(f"{source} holds no vision-side or projector weights to convert")
    write_state_dict(out, target, to)
    return ConvertReport(str(source), str(target), detected, to,
                         written=dict(Counter(k.split(".", 1)[0] for k in out)),
                         ignored={group: len(keys) for group, keys in pgmm.ignored.items()},
                         unrecognised=list(pgmm.unrecognised))


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
    """Read ``source`` (file or transformers directory, no projector), keep the stage-2 vision side (tower,
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
    target = Path(target)
    if target.suffix not in WRITABLE_SUFFIXES:
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
