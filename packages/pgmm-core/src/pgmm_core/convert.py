"""``python -m pgmm_core convert``: checkpoints between LAVIS, pgmm and transformers BLIP-2 layouts.

The source is a checkpoint file (LAVIS ``blip2_pretrained.pth`` or a fine-tuned BLIP-2 ``.pth``,
``eva_vit_g.pth``, a transformers BLIP-2 weight file or directory, a pgmm ``model.safetensors``) or a
pgmm run directory (its best/last checkpoint's trainable weights). The vision side (tower,
ln_vision, Q-Former query path, query tokens) is renamed by :mod:`pgmm_vision.keymap`; a pgmm
projector is carried along as ``language_projection.*`` (transformers) or ``llm_proj.*`` (LAVIS).
A pgmm-layout ``.safetensors`` output loads as ``model.vision.checkpoint`` and
``model.connector.checkpoint``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError

PROJECTOR_NAMES = {"pgmm": "projector.", "hf": "language_projection.", "lavis": "llm_proj."}


def _read_source(source: Path, checkpoint: str) -> tuple[dict[str, Any], str | None]:
    """Tensors of ``source`` and, for a run directory, its layout ("pgmm")."""
    from pgmm_vision.checkpoints import not_llm, read_state_dict

    if (source / "config.json").is_file() and (source / "checkpoints").is_dir():
        from safetensors.torch import load_file

        from pgmm_core.runs import resolve_checkpoint
        from pgmm_core.train.checkpoint import verify_checkpoint

        path = resolve_checkpoint(source, checkpoint)
        verify_checkpoint(path)
        print(f"reading {path / 'model.safetensors'}")
        return load_file(str(path / "model.safetensors")), "pgmm"
    return read_state_dict(source, wanted=not_llm), None


def _split_projector(state: dict[str, Any], fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix = PROJECTOR_NAMES.get(fmt, "projector.")
    projector = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return rest, projector


def convert(source: str | Path, target: str | Path, *, to: str, source_format: str | None = None,
            checkpoint: str = "best") -> dict[str, Any]:
    """Convert and write ``target`` (``.safetensors``, or ``.pth`` for LAVIS); print a load report."""
    from pgmm_vision.convert import write_state_dict
    from pgmm_vision.keymap import convert_state_dict, detect_format, to_pgmm

    source = Path(source)
    if Path(target).suffix not in (".safetensors", ".pth", ".pt", ".bin"):  # before reading gigabytes
        raise CheckpointError(f"{target}: write .safetensors, .pth, .pt or .bin")
    state, run_format = _read_source(source, checkpoint)
    detected = run_format or detect_format(state)
    if source_format and source_format != detected:
        raise CheckpointError(f"{source}: --from {source_format}, but its keys are in the {detected} layout "
                              f"(e.g. {next(iter(state), 'none')!r}); leave --from out to use the detected one")
    fmt = detected
    state, projector = _split_projector(state, fmt)
    pgmm = to_pgmm(state, fmt)
    out = convert_state_dict(pgmm.tensors, to, "pgmm") if pgmm.tensors else {}
    out.update({PROJECTOR_NAMES[to] + k: v for k, v in projector.items()})
    if not out:
        raise CheckpointError(f"{source} holds no vision-side or projector weights to convert")
    write_state_dict(out, target, to)
    groups = Counter(k.split(".", 1)[0] for k in out)
    print(f"converted {source} ({fmt}) -> {target} ({to}): {len(out)} tensors")
    print("  written: " + ", ".join(f"{name}.* ({count})" for name, count in sorted(groups.items())))
    for group, keys in sorted(pgmm.ignored.items()):
        print(f"  ignored, not used in stage 2: {group} ({len(keys)})")
    if pgmm.unrecognised:
        print(f"  unrecognised, dropped ({len(pgmm.unrecognised)}): {', '.join(pgmm.unrecognised[:8])}")
    return out
