"""Reading checkpoint files and loading them into pgmm-vision's modules, with a one-screen report.

Files understood (see :mod:`pgmm_vision.keymap` for the key layouts):

* ``eva_vit_g.pth``: LAVIS' flat EVA state dict, stored in fp16, with EVA-CLIP's 40th block and
  head/norm keys (dropped: LAVIS uses 39 blocks and no final norm).
* ``blip2_pretrained.pth`` and other LAVIS BLIP-2 ``.pth`` files: ``{"model": state_dict, ...}``
  (possibly with ``optimizer``, ``config``, ``scaler``, ``epoch`` beside it).
* transformers BLIP-2 weights: a ``.safetensors``/``.bin`` file or a model directory (sharded or not).

``.pth``/``.bin`` files are read with ``torch.load(weights_only=True)`` (memory-mapped when the
format allows), so a checkpoint cannot run code. Loading is strict: a missing key or a shape that
differs fails with the key and both shapes; keys of other components or of the stage-1 text path
are counted in the report, never silently dropped. A Q-Former with a text side
(:mod:`pgmm_vision.stage1`) loads that text path too, from LAVIS files and from pgmm checkpoints of
stage-1 runs; a Q-Former without one takes a stage-1 checkpoint's query path and reports the rest.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pgmm_core.errors import CheckpointError
from pgmm_vision.keymap import LN_VISION, Converted, Format, detect_format, source_name, to_pgmm

LAVIS_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
DOWNLOAD_HINTS = {
    "eva": f"EVA-ViT-g weights: {LAVIS_URL}eva_vit_g.pth",
    "blip2": f"BLIP-2 stage-1 weights: {LAVIS_URL}blip2_pretrained.pth",
}
FORMAT_NAMES = {"lavis": "LAVIS BLIP-2", "eva": "flat EVA state dict", "hf": "transformers BLIP-2",
                "pgmm": "pgmm"}


# --- reading -----------------------------------------------------------------------------------------


def _torch_load(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # files from torch < 1.6 cannot be memory-mapped
            raise
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        return []


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = _torch_load(path)
    except pickle.UnpicklingError:
        found = _unsafe_globals(path)
        if not found:
            raise CheckpointError(f"cannot read checkpoint {path}: torch.load does not recognise it (truncated, "
                                  "or a web page saved by a failed download?)") from None
        raise CheckpointError(
            f"{path} holds Python objects besides tensors ({', '.join(found)}), which pgmm does not "
            "unpickle (torch.load(weights_only=True)). If you trust the file, save its state dict once: "
            "python -c \"import torch; c = torch.load('IN', weights_only=False); "
            "torch.save(c.get('model', c), 'OUT')\"") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    # LAVIS: {"model": ..., "optimizer": ..., "config": ..., "epoch": ...}; others: state_dict/module.
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (nor a {{'model': state_dict}})")
    return data


def _read_safetensors(path: Path, wanted: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys() if wanted(k)}
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def _directory_files(root: Path) -> list[Path]:
    """Weight files of a transformers model directory, sharded or not."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = root / index_name
        if index.is_file():
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            return [root / name for name in names]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (root / name).is_file():
            return [root / name]
    raise CheckpointError(f"{root} is a directory without model.safetensors, pytorch_model.bin or a shard index")


def not_llm(key: str) -> bool:
    """Key filter for BLIP-2 files that carry a language model the vision side never reads."""
    return not key.startswith(("language_model.", "opt_model.", "t5_model.", "llm_model."))


def read_state_dict(path: str | Path, *, wanted: Callable[[str], bool] = lambda key: True,
                    hint: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file or transformers model directory.

    ``wanted`` filters keys; with safetensors only the wanted tensors are read (a BLIP-2 directory
    holds a whole LLM that the vision side never needs).
    """
    path = Path(path).expanduser()
    if not path.exists():
        extra = f" Download {DOWNLOAD_HINTS[hint]}" if hint in DOWNLOAD_HINTS else ""
        raise CheckpointError(f"checkpoint not found: {path}.{extra}")
    files = _directory_files(path) if path.is_dir() else [path]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            state.update(_read_safetensors(file, wanted))
        else:
            state.update({k: v for k, v in _read_pickle(file).items() if wanted(k)})
    return state


# --- reports ---------------------------------------------------------------------------------------------


def _shorten(keys: list[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass
class LoadReport:
    """What one checkpoint load did. :meth:`summary` fits on one screen."""

    component: str
    source: str
    format: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # group -> number of keys
    notes: list[str] = field(default_factory=list)

    def summary(self, limit: int = 6) -> str:
        lines = [f"pgmm: {self.component} <- {self.source}" + (f" ({self.format})" if self.format else ""),
                 f"  loaded {len(self.loaded)} tensors"]
        lines += [f"  {note}" for note in self.notes]
        if self.ignored:
            lines.append("  not used here: " + ", ".join(f"{g} ({n})" for g, n in sorted(self.ignored.items())))
        lines.append(f"  missing ({len(self.missing)}): " + (_shorten(self.missing, limit) if self.missing else "none"))
        lines.append(f"  unexpected ({len(self.unexpected)}): "
                     + (_shorten(self.unexpected, limit) if self.unexpected else "none"))
        return "\n".join(lines)


# --- loading into modules ------------------------------------------------------------------------------------


def copy_into(module: nn.Module, tensors: dict[str, torch.Tensor], *, origin: dict[str, str],
              source: str, report: LoadReport, optional: Iterable[str] = (),
              spell: Callable[[str], str] = lambda key: key) -> None:
    """Copy ``tensors`` into ``module``: every state key must be present (unless ``optional``), every
    tensor must have a home and the right shape. Errors name keys as the file spells them
    (``origin`` for keys it has, ``spell`` for keys it lacks)."""
    own = module.state_dict()
    optional = set(optional)
    unexpected = sorted(origin.get(k, k) for k in tensors if k not in own)
    if unexpected:
        report.unexpected = unexpected
        raise CheckpointError(
            f"{source}: {len(unexpected)} key(s) that this {report.component} does not have: "
            f"{_shorten(unexpected, 8)} (is the config's size/depth the checkpoint's?)")
    missing = sorted(spell(k) for k in own if k not in tensors and k not in optional)
    if missing:
        report.missing = missing
        raise CheckpointError(f"{source}: missing key(s) for the {report.component}: {_shorten(missing, 8)}")
    for key, value in tensors.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for '{origin.get(key, key)}': checkpoint has "
                f"{tuple(value.shape)}, the {report.component} expects {tuple(own[key].shape)}")
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value.to(own[key].dtype))
            report.loaded.append(key)


def _owner(key: str) -> str:
    if key.startswith("vision."):
        return "vision tower weights (visual_encoder)"
    if key.startswith(LN_VISION):
        return "ln_vision"
    if key.startswith("connector."):
        return "Q-Former weights"
    return key.split(".", 1)[0]


def _take(converted: Converted, prefix: str, report: LoadReport) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors under ``prefix`` (prefix removed) and their names in the file; everything else is
    counted in the report, by owner or by ignored group."""
    mine: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in converted.tensors.items():
        if key.startswith(prefix):
            mine[key[len(prefix):]] = value
            origin[key[len(prefix):]] = converted.origin.get(key, key)
        else:
            report.ignored[_owner(key)] = report.ignored.get(_owner(key), 0) + 1
    for group, keys in converted.ignored.items():
        report.ignored[group] = report.ignored.get(group, 0) + len(keys)
    return mine, origin


def convert_checkpoint(state: dict[str, torch.Tensor], source: str, report: LoadReport,
                       fmt: Format | None = None, *, text_side: bool = False) -> tuple[Converted, Format]:
    fmt = fmt or detect_format(state)
    report.format = FORMAT_NAMES[fmt]
    converted = to_pgmm(state, fmt, text_side=text_side)
    if converted.unrecognised:
        report.unexpected = sorted(converted.unrecognised)
        raise CheckpointError(f"{source}: keys that no {report.format} checkpoint has: "
                              f"{_shorten(report.unexpected, 8)}")
    return converted, fmt


# --- the vision tower -------------------------------------------------------------------------------------


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """LAVIS' ``interpolate_pos_embed``: bicubic over the patch grid (no antialiasing), prefix rows kept."""
    from timm.layers import resample_abs_pos_embed

    positions = pos_embed.shape[1] - num_prefix_tokens
    side = int(round(positions ** 0.5))
    if side * side != positions:
        raise CheckpointError(f"pos_embed has {positions} patch positions, not a square grid")
    return resample_abs_pos_embed(pos_embed, list(grid), old_size=[side, side],
                                  num_prefix_tokens=num_prefix_tokens, antialias=False)


def load_vision_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, *,
                      component: str = "vision tower") -> LoadReport:
    """Load EVA weights (flat, LAVIS ``visual_encoder.*`` or transformers ``vision_model.*``) into a
    timm ``Eva``: blocks beyond the model's depth are dropped (EVA-CLIP-g has 40, LAVIS uses 39) and
    ``pos_embed`` is resampled when the checkpoint's grid differs from ``image_size``."""
    report = LoadReport(component, source)
    converted, fmt = convert_checkpoint(state, source, report)
    if not any(k.startswith("vision.") for k in converted.tensors):
        raise CheckpointError(
            f"{source} ({report.format}) holds no vision tower weights. The released blip2_pretrained.pth "
            f"stores only the trained parts; give the tower {DOWNLOAD_HINTS['eva']}")
    tensors, origin = _take(converted, "vision.model.", report)
    depth = len(model.blocks)
    extra = [k for k in tensors if (m := re.match(r"^blocks\.(\d+)\.", k)) and int(m.group(1)) >= depth]
    if extra:
        blocks = sorted({int(k.split(".")[1]) for k in extra})
        report.ignored[f"blocks {blocks[0]}-{blocks[-1]} beyond depth {depth}"] = len(extra)
        for key in extra:
            del tensors[key]
    if "pos_embed" in tensors and tensors["pos_embed"].shape != model.pos_embed.shape:
        old = tensors["pos_embed"].shape[1] - model.num_prefix_tokens
        grid = tuple(model.patch_embed.grid_size)
        tensors["pos_embed"] = resample_pos_embed(tensors["pos_embed"].float(), grid, model.num_prefix_tokens)
        side = int(round(old ** 0.5))
        report.notes.append(f"pos_embed resampled from {side}x{side} to {grid[0]}x{grid[1]} patches (bicubic)")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values()})
    report.notes.append(f"stored as {'/'.join(dtypes)}")
    copy_into(model, tensors, origin=origin, source=source, report=report,
              spell=lambda key: source_name(fmt, "vision.model." + key))
    return report


# --- the Q-Former -------------------------------------------------------------------------------------------


def load_qformer_state(connector: nn.Module, state: dict[str, torch.Tensor], source: str,
                       ) -> tuple[LoadReport, dict[str, torch.Tensor] | None]:
    """Load ``query_tokens`` and the Q-Former's query path (and its stage-1 text side when the connector
    has one); return the file's ``ln_vision`` tensors (LAVIS and transformers store them beside the
    Q-Former), which the model copies into its own."""
    text_side = getattr(connector, "text_side", False)
    report = LoadReport("Q-Former" + (" with text side" if text_side else ""), source)
    converted, fmt = convert_checkpoint(state, source, report, text_side=text_side)
    norm = {k[len(LN_VISION):]: v for k, v in converted.tensors.items() if k.startswith(LN_VISION)}
    if norm:
        report.notes.append("ln_vision handed to the model")
        for key in list(converted.tensors):
            if key.startswith(LN_VISION):
                del converted.tensors[key]
    tensors, origin = _take(converted, "connector.", report)
    if not tensors:
        raise CheckpointError(f"{source} ({report.format}) holds no Q-Former weights (Qformer.bert.*, "
                              f"query_tokens); {DOWNLOAD_HINTS['blip2']}")
    check_encoder_width(connector, tensors, origin, source)
    if text_side:
        from pgmm_vision.stage1.weights import prepare_checkpoint

        prepare_checkpoint(tensors, origin, source, report.notes)
    copy_into(connector, tensors, origin=origin, source=source, report=report,
              spell=lambda key: source_name(fmt, "connector." + key))
    return report, norm or None


def check_encoder_width(connector: nn.Module, tensors: dict[str, torch.Tensor], origin: dict[str, str],
                        source: str) -> None:
    """A Q-Former's cross-attention reads features of one width: refuse a checkpoint trained on another
    encoder's, naming both widths (before the strict load would name one shape)."""
    for key, value in tensors.items():
        if re.match(r"^qformer\.encoder\.layer\.\d+\.crossattention\.attention\.key\.weight$", key):
            width = value.shape[-1]
            if width != connector.encoder_width:
                raise CheckpointError(
                    f"{source}: this Q-Former reads {width}-wide vision features, but the model's vision tower "
                    f"gives {connector.encoder_width}-wide ones: '{origin.get(key, key)}' has shape "
                    f"{tuple(value.shape)}, this tower needs {(value.shape[0], connector.encoder_width)}. Use it "
                    f"with the encoder it was trained with (width {width}), or pretrain a Q-Former for this "
                    "tower (stage 1)")
            return


def bert_to_qformer(state: dict[str, torch.Tensor], *, text_side: bool = False,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """LAVIS' ``init_Qformer`` from bert-base: embeddings LayerNorm, self-attention and FFN of each
    layer; the query FFN starts as a copy of the text FFN (``Blip2Qformer.__init__``). With
    ``text_side``, the text FFN, the word/position embeddings and the LM head too. Old BERT files
    spell LayerNorm parameters ``gamma``/``beta``."""
    from pgmm_vision.stage1.weights import bert_text_side_key  # (a small module; torch is loaded already)

    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for source_key, value in state.items():
        key = source_key[len("bert."):] if source_key.startswith("bert.") else source_key
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        targets = []
        if key.startswith("embeddings.LayerNorm."):
            targets.append("qformer.layernorm." + key.rsplit(".", 1)[1])
        elif (match := re.match(r"^encoder\.layer\.(\d+)\.(.*)$", key)):
            layer, rest = match.groups()
            rest = rest.replace("attention.self.", "attention.attention.")
            if rest.startswith(("intermediate.", "output.")):  # BERT's FFN: the query FFN's start
                head, tail = rest.split(".", 1)
                targets.append(f"qformer.encoder.layer.{layer}.{head}_query.{tail}")
                if text_side:  # and the text FFN's
                    targets.append(f"qformer.encoder.layer.{layer}.{rest}")
            else:
                targets.append(f"qformer.encoder.layer.{layer}.{rest}")
        elif text_side and (target := bert_text_side_key(key)) is not None:
            targets.append(target)
        # else: token-type embeddings, pooler, NSP head (and without a text side the embeddings and
        # MLM head): not used
        for target in targets:
            tensors[target] = value
            origin[target] = source_key
    return tensors, origin


def init_qformer_from_bert(connector: nn.Module, directory: str) -> LoadReport:
    """Initialise the Q-Former from a local bert-base checkpoint directory, as LAVIS does before
    stage 1. Cross-attention and the query tokens keep their random initialisation."""
    text_side = getattr(connector, "text_side", False)
    report = LoadReport("Q-Former (BERT init)", directory, format="BERT")
    state = read_state_dict(directory)
    tensors, origin = bert_to_qformer(state, text_side=text_side)
    if not tensors:
        raise CheckpointError(f"{directory} holds no BERT encoder weights (bert.encoder.layer.*)")
    own = connector.state_dict()
    # a 12-layer BERT may seed a shallower Q-Former; the extra layers are reported
    deeper = [k for k in tensors if k not in own and re.match(r"^qformer\.encoder\.layer\.\d+\.", k)]
    if deeper:
        report.ignored["BERT layers beyond the Q-Former's depth"] = len(deeper)
        for key in deeper:
            del tensors[key]
    optional = [k for k in own if ".crossattention." in k or k == "query_tokens"]
    kept = "cross-attention and query_tokens"
    if text_side:
        from pgmm_vision.stage1.weights import fit_vocabulary

        heads = fit_vocabulary(connector, tensors, directory, report.notes)
        optional += heads
        kept = "cross-attention, query_tokens, vision_proj, text_proj, itm_head and temp"
    copy_into(connector, tensors, origin=origin, source=directory, report=report, optional=optional)
    report.notes.append(f"kept random: {kept} ({len(optional)} tensors)")
    return report


# --- timm backbones -----------------------------------------------------------------------------------------


def load_timm_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Load a timm model's own weights file, through the model's ``checkpoint_filter_fn`` when its
    module has one (timm uses it to convert original layouts and resample position embeddings)."""
    import importlib

    report = LoadReport("vision tower (timm)", source, format="timm")
    state = {re.sub(r"^(module\.|model\.)", "", k): v for k, v in state.items()}
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as exc:
            raise CheckpointError(f"{source}: timm could not adapt this checkpoint to "
                                  f"{type(model).__name__}: {type(exc).__name__}: {exc}") from None
    own = model.state_dict()
    head = [k for k in state if k not in own and re.match(r"^(head|fc|classifier|last_linear)(\.|$)", k)]
    if head:
        report.ignored["classifier head"] = len(head)
        state = {k: v for k, v in state.items() if k not in head}
    copy_into(model, state, origin={}, source=source, report=report)
    return report
