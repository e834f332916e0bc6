"""Names of the vision-side weights in the three layouts pgmm meets, and conversion between them.

* **LAVIS** (``blip2_pretrained.pth``, fine-tuned BLIP-2 ``.pth``): ``visual_encoder.*``,
  ``ln_vision.*``, ``Qformer.bert.*``, ``query_tokens``, plus stage-1 text-path keys and heads.
  ``eva_vit_g.pth`` is the same tower as a flat state dict (no ``visual_encoder.`` prefix).
* **pgmm** (``MultimodalModel.state_dict()``): ``vision.model.*`` (timm ``Eva``, whose names equal
  LAVIS'), ``ln_vision.*``, ``connector.qformer.*`` (transformers ``Blip2QFormerModel``),
  ``connector.query_tokens``.
* **transformers BLIP-2** (``Blip2Model``/``Blip2ForConditionalGeneration`` files):
  ``vision_model.*`` (``post_layernorm`` is ln_vision), ``qformer.*``, ``query_tokens``.

pgmm is the hub: every format converts to pgmm names and back. LAVIS <-> pgmm is a renaming key by
key; pgmm <-> transformers is not, because transformers keeps one ``qkv.bias`` (q, zeros, v) where
EVA keeps ``q_bias`` and ``v_bias``. The key bias adds the same amount to every score of a query, so
softmax cancels it: dropping it when reading a transformers file is exact.

Stage 2 uses only the Q-Former's query path. The stage-1 text side (word/position embeddings, the
text FFN, the LM head ``Qformer.cls``, ``vision_proj``/``text_proj``/``itm_head``/``temp``) has pgmm
names too (``connector.embeddings.*``, ``connector.qformer.encoder.layer.{i}.intermediate|output.*``,
``connector.cls.*``, ``connector.vision_proj.*``, ...; see :mod:`pgmm_vision.stage1`): conversions
keep it when asked (``text_side=True``), otherwise it is recognised and reported as ignored, by group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch

Format = Literal["lavis", "eva", "hf", "pgmm"]

VISION = "vision.model."
LN_VISION = "ln_vision."
QFORMER = "connector.qformer."
QUERY_TOKENS = "connector.query_tokens"

# The stage-1 text side in pgmm names, by group (the group names appear in load reports when a
# connector without a text side, or a stage-2 conversion, leaves it out).
TEXT_SIDE_GROUPS = (
    (r"^connector\.embeddings\.", "Q-Former text embeddings"),
    (r"^connector\.qformer\.encoder\.layer\.\d+\.(intermediate|output)\.", "Q-Former text FFN"),
    (r"^connector\.cls\.", "Q-Former LM head (Qformer.cls)"),
    (r"^connector\.(vision_proj|text_proj|itm_head)\.|^connector\.temp$",
     "stage-1 heads (vision_proj, text_proj, itm_head, temp)"),
)
# LAVIS' stage-1 keys outside ``Qformer.bert.encoder`` -> pgmm prefix (the text FFN is renamed with the
# query path's rules by lavis_qformer_key_to_pgmm).
_LAVIS_TEXT_SIDE = (
    ("Qformer.bert.embeddings.word_embeddings.", "connector.embeddings.word_embeddings."),
    ("Qformer.bert.embeddings.position_embeddings.", "connector.embeddings.position_embeddings."),
    ("Qformer.bert.embeddings.position_ids", "connector.embeddings.position_ids"),
    ("Qformer.cls.", "connector.cls."),
    ("vision_proj.", "connector.vision_proj."),
    ("text_proj.", "connector.text_proj."),
    ("itm_head.", "connector.itm_head."),
    ("temp", "connector.temp"),
)
# LAVIS' BertLMHeadModel ties its LM head to the word embeddings (transformers' tie_weights, again
# after resize_token_embeddings) and the decoder bias to ``cls.predictions.bias``: one tensor each,
# two keys each in a state dict.
LAVIS_TIED = (
    ("Qformer.bert.embeddings.word_embeddings.weight", "Qformer.cls.predictions.decoder.weight"),
    ("Qformer.cls.predictions.bias", "Qformer.cls.predictions.decoder.bias"),
)
# Known keys that pgmm does not use, by group (the group names appear in load reports).
_LAVIS_IGNORED = (
    (r"^(opt_proj|llm_proj|t5_proj)\.", "another LLM's projection"),
    (r"^(opt_model|llm_model|t5_model)\.", "another LLM"),
)
_EVA_IGNORED = (
    (r"^(head|fc_norm|norm|lm_head)\.|^head$", "EVA-CLIP head and final norm (LAVIS has none)"),
    (r"^rope\.", "EVA rotary embedding buffers"),
)
_HF_IGNORED = (
    (r"^(language_model|language_projection)\.", "language model and its projection"),
    (r"^(embeddings|qformer\.embeddings)\.", "Q-Former text embeddings"),
    (r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.", "Q-Former text FFN"),
    (r"^(vision_projection|text_projection|itm_head)\.|^temp$", "retrieval heads"),
)


def _group(key: str, table) -> str | None:
    for pattern, group in table:
        if re.search(pattern, key):
            return group
    return None


@dataclass
class Converted:
    """A state dict in pgmm names, what was left out and why, and where each key came from."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # pgmm key -> key in the source file
    ignored: dict[str, list[str]] = field(default_factory=dict)  # group -> source keys
    unrecognised: list[str] = field(default_factory=list)

    def add(self, key: str, value: torch.Tensor, source_key: str) -> None:
        self.tensors[key] = value
        self.origin[key] = source_key

    def ignore(self, group: str, source_key: str) -> None:
        self.ignored.setdefault(group, []).append(source_key)


# --- format detection ----------------------------------------------------------------------------------


def detect_format(keys) -> Format:
    """Which layout a state dict's keys are in (pgmm, transformers, LAVIS BLIP-2 or flat EVA)."""
    keys = list(keys)
    if any(k.startswith((VISION, "connector.")) for k in keys):
        return "pgmm"
    if any(k.startswith(("qformer.", "vision_model.")) for k in keys):
        return "hf"
    if any(k.startswith(("Qformer.", "visual_encoder.", LN_VISION)) or k == "query_tokens" for k in keys):
        return "lavis"
    return "eva"


# --- LAVIS <-> pgmm (key by key) -------------------------------------------------------------------------


def lavis_qformer_key_to_pgmm(key: str) -> str | None:
    """``Qformer.bert.*`` query-path name -> ``Blip2QFormerModel`` name (transformers' own converter
    rules: ``embeddings.LayerNorm`` -> ``layernorm``, ``attention.self`` -> ``attention.attention``)."""
    if not key.startswith("Qformer.bert."):
        return None
    key = key[len("Qformer.bert."):]
    if key.startswith("embeddings.LayerNorm."):
        return "layernorm." + key[len("embeddings.LayerNorm."):]
    if not key.startswith("encoder.layer."):
        return None
    return key.replace(".attention.self.", ".attention.attention.").replace(
        ".crossattention.self.", ".crossattention.attention.")


def pgmm_qformer_key_to_lavis(key: str) -> str:
    if key.startswith("layernorm."):
        return "Qformer.bert.embeddings.LayerNorm." + key[len("layernorm."):]
    return "Qformer.bert." + key.replace(".attention.attention.", ".attention.self.").replace(
        ".crossattention.attention.", ".crossattention.self.")


def text_side_group(key: str) -> str | None:
    """The report group of a pgmm key on the Q-Former's stage-1 text side, or None (query path etc.)."""
    return _group(key, TEXT_SIDE_GROUPS)


def _lavis_text_side_to_pgmm(key: str) -> str | None:
    for lavis, pgmm in _LAVIS_TEXT_SIDE:
        if key == lavis or (lavis.endswith(".") and key.startswith(lavis)):
            return pgmm + key[len(lavis):]
    return None


def _pgmm_text_side_to_lavis(key: str) -> str | None:
    for lavis, pgmm in _LAVIS_TEXT_SIDE:
        if key == pgmm or (pgmm.endswith(".") and key.startswith(pgmm)):
            return lavis + key[len(pgmm):]
    return None


def lavis_key_to_pgmm(key: str, *, flat_eva: bool = False) -> str | None:
    """The pgmm name of one LAVIS key (the stage-1 text side included), or None for keys pgmm does
    not use (another LLM and its projection, EVA-CLIP's head)."""
    if flat_eva:
        return None if _group(key, _EVA_IGNORED) else VISION + key
    if key.startswith("visual_encoder."):
        rest = key[len("visual_encoder."):]
        return None if _group(rest, _EVA_IGNORED) else VISION + rest
    if key.startswith("ln_vision."):
        return key
    if key == "query_tokens":
        return QUERY_TOKENS
    if _group(key, _LAVIS_IGNORED):
        return None
    text_side = _lavis_text_side_to_pgmm(key)
    if text_side is not None:
        return text_side
    qformer = lavis_qformer_key_to_pgmm(key)
    return QFORMER + qformer if qformer else None


def pgmm_key_to_lavis(key: str) -> str | None:
    if key.startswith(VISION):
        return "visual_encoder." + key[len(VISION):]
    if key.startswith(LN_VISION):
        return key
    if key == QUERY_TOKENS:
        return "query_tokens"
    if key.startswith(QFORMER):
        return pgmm_qformer_key_to_lavis(key[len(QFORMER):])
    return _pgmm_text_side_to_lavis(key)


def lavis_to_pgmm(state: dict[str, torch.Tensor], *, flat_eva: bool = False) -> Converted:
    out = Converted()
    for key, value in state.items():
        target = lavis_key_to_pgmm(key, flat_eva=flat_eva)
        if target is not None:
            out.add(target, value, key)
            continue
        group = _group(key[len("visual_encoder."):] if key.startswith("visual_encoder.") else key,
                       _EVA_IGNORED if flat_eva or key.startswith("visual_encoder.") else _LAVIS_IGNORED)
        if group:
            out.ignore(group, key)
        else:
            out.unrecognised.append(key)
    return out


def pgmm_to_lavis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pgmm's vision side in LAVIS BLIP-2 names (other keys, e.g. ``projector.*``, are left out).

    A stage-1 text side is written as LAVIS' ``Blip2Qformer.state_dict()`` spells it: the LM head's
    decoder weight and bias, tied in LAVIS to the word embeddings and ``cls.predictions.bias``, under
    both names, and the ``position_ids`` buffer, so that LAVIS loads the file without missing keys.
    """
    out = {lavis: v for k, v in state.items() if (lavis := pgmm_key_to_lavis(k)) is not None}
    for first, second in LAVIS_TIED:
        if first in out and second not in out:
            out[second] = out[first]
        elif second in out and first not in out:
            out[first] = out[second]
    positions = out.get("Qformer.bert.embeddings.position_embeddings.weight")
    if positions is not None and "Qformer.bert.embeddings.position_ids" not in out:
        out["Qformer.bert.embeddings.position_ids"] = torch.arange(positions.shape[0]).unsqueeze(0)
    return out


def drop_text_side(converted: Converted) -> Converted:
    """Move the stage-1 text side out of ``converted.tensors`` into its report groups (stage 2, and any
    connector without a text side, leaves it out)."""
    for key in list(converted.tensors):
        group = text_side_group(key)
        if group is not None:
            converted.ignore(group, converted.origin.get(key, key))
            del converted.tensors[key]
            converted.origin.pop(key, None)
    return converted


# --- pgmm <-> transformers ---------------------------------------------------------------------------------

_EVA_TO_HF_BLOCK = (
    ("norm1.", "layer_norm1."),
    ("norm2.", "layer_norm2."),
    ("attn.qkv.weight", "self_attn.qkv.weight"),
    ("attn.proj.", "self_attn.projection."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
)
_EVA_TO_HF_TOP = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
)


def _eva_to_hf(key: str) -> str | None:
    match = re.match(r"^blocks\.(\d+)\.(.*)$", key)
    if match:
        layer, rest = match.groups()
        for old, new in _EVA_TO_HF_BLOCK:
            if rest.startswith(old):
                return f"encoder.layers.{layer}.{new}{rest[len(old):]}"
        return None
    for old, new in _EVA_TO_HF_TOP:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _hf_to_eva(key: str) -> str | None:
    match = re.match(r"^encoder\.layers\.(\d+)\.(.*)$", key)
    if match:
        layer, rest = match.groups()
        for old, new in _EVA_TO_HF_BLOCK:
            if rest.startswith(new):
                return f"blocks.{layer}.{old}{rest[len(new):]}"
        for bias in ("q_bias", "v_bias"):  # files written before transformers fused the bias
            if rest == f"self_attn.{bias}":
                return f"blocks.{layer}.attn.{bias}"
        return None
    for old, new in _EVA_TO_HF_TOP:
        if key.startswith(new):
            return old + key[len(new):]
    return None


def pgmm_key_to_hf(key: str) -> str | None:
    """The transformers name of one pgmm key (``q_bias``/``v_bias`` both live in ``qkv.bias``)."""
    if key.startswith(VISION):
        rest = key[len(VISION):]
        match = re.match(r"^blocks\.(\d+)\.attn\.(q_bias|v_bias)$", rest)
        if match:
            return f"vision_model.encoder.layers.{match.group(1)}.self_attn.qkv.bias"
        hf = _eva_to_hf(rest)
        return None if hf is None else "vision_model." + hf
    if key.startswith(LN_VISION):
        return "vision_model.post_layernorm." + key[len(LN_VISION):]
    if key.startswith(QFORMER):
        return "qformer." + key[len(QFORMER):]
    if key == QUERY_TOKENS:
        return "query_tokens"
    return None


def source_name(fmt: Format, key: str) -> str:
    """How a checkpoint of layout ``fmt`` spells the pgmm key ``key`` (for error messages)."""
    if fmt == "hf":
        name = pgmm_key_to_hf(key)
    elif fmt in ("lavis", "eva"):
        name = pgmm_key_to_lavis(key)
        if fmt == "eva" and name and name.startswith("visual_encoder."):
            name = name[len("visual_encoder."):]
    else:
        name = key
    return name or key


def pgmm_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pgmm's vision side in transformers BLIP-2 names (``Blip2Model`` / ``…ForConditionalGeneration``).

    ``ln_vision`` becomes ``vision_model.post_layernorm``; note that transformers gives that norm the
    vision config's ``layer_norm_eps`` (1e-6) where LAVIS and pgmm use 1e-5. Keys outside the vision
    side are left out.
    """
    out: dict[str, torch.Tensor] = {}
    biases: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith((VISION, LN_VISION, QFORMER)) and key != QUERY_TOKENS:
            continue
        hf = pgmm_key_to_hf(key)
        if hf is None:
            raise KeyError(f"no transformers name for '{key}'")
        if hf.endswith(".self_attn.qkv.bias"):
            biases.setdefault(hf, {})[key.rsplit(".", 1)[1]] = value
        else:
            out[hf] = value
    for hf, pair in biases.items():
        q, v = pair["q_bias"], pair["v_bias"]
        out[hf] = torch.cat([q, torch.zeros_like(v), v])
    return out


def hf_to_pgmm(state: dict[str, torch.Tensor]) -> Converted:
    out = Converted()
    for key, value in state.items():
        if key.startswith("vision_model."):
            rest = key[len("vision_model."):]
            match = re.match(r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.bias$", rest)
            if match:
                q, _k, v = value.chunk(3)
                out.add(f"{VISION}blocks.{match.group(1)}.attn.q_bias", q, key)
                out.add(f"{VISION}blocks.{match.group(1)}.attn.v_bias", v, key)
            elif rest.startswith("post_layernorm."):
                out.add(LN_VISION + rest[len("post_layernorm."):], value, key)
            elif (eva := _hf_to_eva(rest)) is not None:
                out.add(VISION + eva, value, key)
            else:
                out.unrecognised.append(key)
        elif key == "query_tokens":
            out.add(QUERY_TOKENS, value, key)
        elif (group := _group(key, _HF_IGNORED)) is not None:
            out.ignore(group, key)
        elif key.startswith("qformer."):
            out.add(QFORMER + key[len("qformer."):], value, key)
        else:
            out.unrecognised.append(key)
    return out


# --- any -> any ------------------------------------------------------------------------------------------


def to_pgmm(state: dict[str, torch.Tensor], source: Format | None = None, *,
            text_side: bool = False) -> Converted:
    """Bring a state dict of any known layout to pgmm names (``source`` is detected when omitted).
    The Q-Former's stage-1 text side is kept with ``text_side``, else reported as ignored."""
    source = source or detect_format(state)
    if source == "pgmm":
        converted = Converted(tensors=dict(state), origin={k: k for k in state})
    elif source == "hf":
        converted = hf_to_pgmm(state)
    else:
        converted = lavis_to_pgmm(state, flat_eva=source == "eva")
    return converted if text_side else drop_text_side(converted)


def convert_state_dict(state: dict[str, torch.Tensor], to: Format,
                       source: Format | None = None, *, text_side: bool = False) -> dict[str, torch.Tensor]:
    """Convert the vision side of a checkpoint between LAVIS, pgmm and transformers BLIP-2 names.

    This is what ``python -m pgmm_core convert`` calls. Keys that stage 2 does not use are dropped,
    unless ``text_side`` keeps the Q-Former's stage-1 text side and heads (transformers' BLIP-2 has
    no LM head nor ``temp``: a transformers output keeps only the text FFN of them).
    """
    pgmm = to_pgmm(state, source, text_side=text_side).tensors
    if to == "pgmm":
        return pgmm
    if to == "hf":
        return pgmm_to_hf(pgmm)
    if to == "lavis":
        return pgmm_to_lavis(pgmm)
    raise ValueError(f"unknown target format {to!r}; expected pgmm, hf or lavis")
