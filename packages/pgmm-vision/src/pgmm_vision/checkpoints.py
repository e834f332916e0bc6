"""Loading LAVIS and transformers BLIP-2 weights into pgmm-vision's modules, with a load report.

Formats understood:

* ``eva_vit_g.pth`` — LAVIS' flat EVA state dict (``cls_token``, ``pos_embed``, ``blocks.{i}.…``),
  possibly in fp16 and possibly with EVA-CLIP's 40th block and head/norm keys (dropped).
* ``blip2_pretrained.pth`` and fine-tuned BLIP-2 ``.pth`` — ``{"model": state_dict}`` with
  ``Qformer.bert.*``, ``query_tokens``, ``ln_vision.*`` and sometimes ``visual_encoder.*``.
* transformers BLIP-2 weight files (``.safetensors``/``.bin``) — ``qformer.*``, ``query_tokens``,
  ``vision_model.*`` (``vision_model.post_layernorm`` is ln_vision).

Every loader fails with the key and both shapes on a mismatch, and names missing keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pgmm_core.errors import CheckpointError

DOWNLOAD_HINTS = {
    "eva": "EVA-ViT-g weights: https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth",
    "blip2": "BLIP-2 stage-1 weights: https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/blip2_pretrained.pth",
}


@dataclass
class LoadReport:
    """What a checkpoint load did; :meth:`summary` fits on one screen."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # group -> count of known-unused keys

    def summary(self, limit: int = 8) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.ignored:
            groups = ", ".join(f"{name} ({count})" for name, count in sorted(self.ignored.items()))
            lines.append(f"  ignored, not used in stage 2: {groups}")
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", … (+{len(keys) - limit})" if len(keys) > limit else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")
        return "\n".join(lines)


def read_state_dict(path: str | Path, *, hint: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``/``.pth``/``.bin`` file; ``{"model": …}`` wrappers are unwrapped."""
    path = Path(path)
    if not path.is_file():
        extra = f" Download: {DOWNLOAD_HINTS[hint]}" if hint in DOWNLOAD_HINTS else ""
        raise CheckpointError(f"checkpoint file not found: {path}.{extra}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return data


def assign_tensors(module: nn.Module, tensors: dict[str, torch.Tensor], source: str,
                   report: LoadReport) -> None:
    """Copy ``tensors`` into ``module``'s state; every key must exist and every shape must match."""
    own = module.state_dict()
    for key, value in tensors.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for '{key}': checkpoint has {tuple(value.shape)}, "
                f"model expects {tuple(own[key].shape)}"
            )
    if report.unexpected:
        raise CheckpointError(f"{source}: unexpected keys: {', '.join(report.unexpected[:10])}")
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value.to(own[key].dtype))
            report.loaded.append(key)


# --- EVA-ViT-g ----------------------------------------------------------------------------------------

_EVA_DROP = re.compile(r"^(head|fc_norm|norm|rope)\.|^head$")


def eva_tensors_from(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tower's tensors from a flat EVA file or from a BLIP-2 file's ``visual_encoder.*``."""
    if any(k.startswith("visual_encoder.") for k in state):
        return {k[len("visual_encoder."):]: v for k, v in state.items() if k.startswith("visual_encoder.")}
    return dict(state)


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """LAVIS' ``interpolate_pos_embed``: bicubic over the patch grid, the CLS row kept."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    old_grid = int(round(grid.shape[1] ** 0.5))
    if old_grid * old_grid != grid.shape[1]:
        raise CheckpointError(f"pos_embed has {grid.shape[1]} patch positions, not a square grid")
    if old_grid == new_grid:
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    grid = torch.nn.functional.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim)
    return torch.cat([cls.float(), grid], dim=1).to(pos_embed.dtype)


def load_eva_checkpoint(model: nn.Module, path: str, *, image_size: int, patch_size: int) -> LoadReport:
    state = eva_tensors_from(read_state_dict(path, hint="eva"))
    report = LoadReport(str(path))
    depth = len(model.blocks)
    kept: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = re.match(r"^blocks\.(\d+)\.", key)
        if _EVA_DROP.match(key) or (block and int(block.group(1)) >= depth):
            report.ignored["EVA-CLIP head/norm/extra blocks"] = report.ignored.get("EVA-CLIP head/norm/extra blocks", 0) + 1
            continue
        kept[key] = value.float()
    if "pos_embed" in kept:
        kept["pos_embed"] = resample_pos_embed(kept["pos_embed"], image_size // patch_size)
    report.missing = sorted(set(model.state_dict()) - set(kept))
    if report.missing:
        raise CheckpointError(
            f"{path}: missing EVA keys: {', '.join(report.missing[:10])} — is this an eva_vit_g.pth "
            "or a BLIP-2 checkpoint with visual_encoder.* keys? (the released blip2_pretrained.pth has none; "
            f"{DOWNLOAD_HINTS['eva']})"
        )
    assign_tensors(model, kept, str(path), report)
    return report


# --- Q-Former -----------------------------------------------------------------------------------------

_LAVIS_IGNORED = (
    (re.compile(r"^visual_encoder\."), "visual_encoder (loaded by the vision tower)"),
    (re.compile(r"^Qformer\.cls\."), "Qformer.cls (stage-1 LM head)"),
    (re.compile(r"^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)"), "Qformer text embeddings"),
    (re.compile(r"^Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\."), "Qformer text FFN"),
    (re.compile(r"^(vision_proj|text_proj|itm_head)\.|^temp$"), "stage-1 heads (vision_proj, text_proj, itm_head, temp)"),
    (re.compile(r"^(opt_proj|llm_proj|t5_proj)\.|^(opt_model|llm_model|t5_model)\."), "stage-2 LLM and projection of another LLM"),
)

_HF_IGNORED = (
    (re.compile(r"^vision_model\.(?!post_layernorm)"), "vision_model (loaded by the vision tower)"),
    (re.compile(r"^(language_model|language_projection)\."), "language model and projection"),
    (re.compile(r"^qformer\.embeddings\."), "Q-Former text embeddings"),
)


def lavis_to_pgmm_qformer_key(key: str) -> str | None:
    """LAVIS ``Qformer.bert.*`` name -> transformers ``Blip2QFormerModel`` name (None if not a query-path key)."""
    if key == "query_tokens":
        return "query_tokens"
    if not key.startswith("Qformer.bert."):
        return None
    key = key[len("Qformer.bert."):]
    if key.startswith("embeddings.LayerNorm."):
        return "qformer.layernorm." + key.rsplit(".", 1)[1]
    key = re.sub(r"\.attention\.self\.", ".attention.attention.", key)
    key = re.sub(r"\.crossattention\.self\.", ".crossattention.attention.", key)
    return "qformer." + key


def pgmm_to_lavis_qformer_key(key: str) -> str:
    """Inverse of :func:`lavis_to_pgmm_qformer_key` (used by the converter)."""
    if key == "query_tokens":
        return key
    key = key[len("qformer."):]
    if key.startswith("layernorm."):
        return "Qformer.bert.embeddings.LayerNorm." + key.split(".", 1)[1]
    key = re.sub(r"\.attention\.attention\.", ".attention.self.", key)
    key = re.sub(r"\.crossattention\.attention\.", ".crossattention.self.", key)
    return "Qformer.bert." + key


def _ignored_group(key: str, table) -> str | None:
    for pattern, group in table:
        if pattern.search(key):
            return group
    return None


def load_qformer_checkpoint(connector: nn.Module, path: str) -> dict[str, torch.Tensor] | None:
    """Load the Q-Former and query tokens; return the checkpoint's ln_vision tensors (if any)."""
    state = read_state_dict(path, hint="blip2")
    report = LoadReport(str(path))
    tensors: dict[str, torch.Tensor] = {}
    vision_norm: dict[str, torch.Tensor] = {}
    hf_format = any(k.startswith("qformer.") for k in state)
    for key, value in state.items():
        if hf_format:
            if key.startswith("vision_model.post_layernorm."):
                vision_norm[key.rsplit(".", 1)[1]] = value.float()
                continue
            group = _ignored_group(key, _HF_IGNORED)
            target = key if (key.startswith("qformer.") or key == "query_tokens") else None
        else:
            if key.startswith("ln_vision."):
                vision_norm[key.rsplit(".", 1)[1]] = value.float()
                continue
            group = _ignored_group(key, _LAVIS_IGNORED)
            target = None if group else lavis_to_pgmm_qformer_key(key)
        if group:
            report.ignored[group] = report.ignored.get(group, 0) + 1
        elif target is None:
            report.unexpected.append(key)
        else:
            tensors[target] = value.float()
    report.missing = sorted(set(connector.state_dict()) - set(tensors))
    if report.missing:
        raise CheckpointError(f"{path}: missing Q-Former keys: {', '.join(report.missing[:10])}"
                              + (f" (+{len(report.missing) - 10} more)" if len(report.missing) > 10 else ""))
    if report.unexpected:
        raise CheckpointError(f"{path}: unexpected keys: {', '.join(report.unexpected[:10])}")
    assign_tensors(connector, tensors, str(path), report)
    print(report.summary())
    return vision_norm or None


def init_qformer_from_bert(connector: nn.Module, directory: str) -> LoadReport:
    """LAVIS' ``init_Qformer``: BERT-base self-attention and FFN weights; the query FFN copies the
    text FFN; cross-attention stays randomly initialised."""
    root = Path(directory)
    candidates = [root / "model.safetensors", root / "pytorch_model.bin"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CheckpointError(
            f"no BERT weights in {root} (expected model.safetensors or pytorch_model.bin of bert-base-uncased)"
        )
    state = read_state_dict(path)
    report = LoadReport(str(path))
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("bert."):] if key.startswith("bert.") else key
        if key.startswith("embeddings.LayerNorm."):
            tensors["qformer.layernorm." + key.rsplit(".", 1)[1]] = value
            continue
        match = re.match(r"^encoder\.layer\.(\d+)\.(.*)$", key)
        if not match:
            continue
        layer, rest = match.groups()
        rest = rest.replace("attention.self.", "attention.attention.")
        rest = rest.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if rest.startswith("intermediate."):
            rest = rest.replace("intermediate.", "intermediate_query.", 1)
        elif rest.startswith("output."):
            rest = rest.replace("output.", "output_query.", 1)
        tensors[f"qformer.encoder.layer.{layer}.{rest}"] = value
    own = connector.state_dict()
    usable = {k: v for k, v in tensors.items() if k in own}
    assign_tensors(connector, usable, str(path), report)
    print(report.summary())
    return report


def load_timm_checkpoint(model: nn.Module, path: str) -> LoadReport:
    state = read_state_dict(path)
    state = {re.sub(r"^(module\.|model\.)", "", k): v for k, v in state.items()}
    report = LoadReport(str(path))
    own = model.state_dict()
    head = {k for k in state if k not in own and re.match(r"^(head|fc|classifier|last_linear)\b", k)}
    report.ignored["classifier head"] = len(head) if head else 0
    if not head:
        report.ignored.pop("classifier head")
    tensors = {k: v for k, v in state.items() if k not in head}
    report.missing = sorted(set(own) - set(tensors))
    if report.missing:
        raise CheckpointError(f"{path}: missing keys for this timm model: {', '.join(report.missing[:10])}")
    assign_tensors(model, tensors, str(path), report)
    return report
