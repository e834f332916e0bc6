"""The multimodal model: vision tower -> ln_vision -> connector -> projector -> LLM.

Only wiring lives here; every part comes from a registered component, and :func:`build_model`
builds the parts a run's objective needs (all four for captioning; the image side alone,
vision + connector, for Q-Former pretraining). The losses belong to the objectives
(:mod:`pgmm_core.objectives`); ``model(pixel_values, captions)`` computes the stage-2 captioning
loss of :mod:`pgmm_core.objectives.caption` for the public API.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pgmm_core import frozen_weights
from pgmm_core.components import count_parameters, freeze
from pgmm_core.config.sections import GenerationSection
from pgmm_core.errors import PgmmError
from pgmm_core.objectives.base import MODEL_PARTS
from pgmm_core.objectives.caption import IGNORE_INDEX, caption_loss

logger = logging.getLogger(__name__)

PART_NEEDS: dict[str, frozenset[str]] = {
    "connector": frozenset({"vision"}),  # its input width is the tower's
    "projector": frozenset({"connector", "llm"}),  # connector width -> LLM width
}
"""Parts that cannot be built without others (the LLM and the vision tower stand alone)."""


class ModelPartsError(PgmmError, ValueError):
    """A set of model parts that cannot be built, or a method that needs a part that was not built."""


@dataclass
class ImageEncoding:
    """``vision_embeds``: tower output after ln_vision (all tokens); ``query_embeds``: connector
    output (B×Q×H); ``llm_embeds``: projector output, the LLM's visual tokens. A part the model was
    built without gives ``None``."""

    vision_embeds: torch.Tensor
    query_embeds: torch.Tensor | None
    llm_embeds: torch.Tensor | None


@dataclass
class CaptionOutput:
    loss: torch.Tensor
    num_target_tokens: int


@dataclass
class TokenizedCaptions:
    input_ids: torch.Tensor  # B×T, right-padded
    attention_mask: torch.Tensor  # B×T
    labels: torch.Tensor  # B×T, IGNORE_INDEX on prompt (incl. BOS) and padding


class MultimodalModel(nn.Module):
    """BLIP-2 style model. Build it with :func:`build_model`.

    A part the model was built without is ``None`` (``ln_vision`` comes with the vision tower);
    methods that need it raise :class:`ModelPartsError` naming it.
    """

    def __init__(
        self,
        vision: nn.Module | None,
        connector: nn.Module | None,
        projector: nn.Module | None,
        llm: nn.Module | None,
        *,
        prompt: str = "",
        max_text_len: int = 32,
    ) -> None:
        super().__init__()
        self.vision = vision
        # Trained, outside the frozen tower, computed in float32 (LAVIS' LayerNorm does the same).
        self.ln_vision = nn.LayerNorm(vision.out_features, eps=1e-5) if vision is not None else None
        self.connector = connector
        self.projector = projector
        self.llm = llm
        self.prompt = prompt
        self.max_text_len = max_text_len
        # Fingerprint of the frozen weights as built, before any precision cast (frozen_weights.json).
        self.frozen_fingerprint: dict[str, str] = {}

    # --- parts ------------------------------------------------------------------------------------

    @property
    def parts(self) -> frozenset[str]:
        """The parts this model was built with (a subset of vision, connector, projector, llm)."""
        return frozenset(name for name in sorted(MODEL_PARTS) if getattr(self, name) is not None)

    def require_parts(self, *names: str, purpose: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ModelPartsError(
                f"{purpose} needs the model's {', '.join(missing)}, but this model was built with "
                f"{', '.join(sorted(self.parts)) or 'no parts'} only (build_model(config, parts=...) "
                "builds what the objective asks for)")

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (an objective moves its batch there)."""
        return next(self.parameters()).device

    # --- image side -------------------------------------------------------------------------------

    def vision_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``ln_vision`` of the tower's output (B×N×W): the frozen tower under ``no_grad``, ``ln_vision``
        in float32. What the connector reads; an objective that drives the connector itself (stage 1's
        query and text passes) starts here rather than from :meth:`encode_image`."""
        self.require_parts("vision", purpose="vision_embeddings")
        with torch.no_grad() if self.vision.frozen else contextlib.nullcontext():
            features = self.vision(pixel_values)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.ln_vision(features.float())

    def encode_image(self, pixel_values: torch.Tensor) -> ImageEncoding:
        self.require_parts("vision", purpose="encode_image")
        vision_embeds = self.vision_embeddings(pixel_values)
        query_embeds = self.connector(vision_embeds) if self.connector is not None else None
        llm_embeds = self.projector(query_embeds) if self.projector is not None else None
        return ImageEncoding(vision_embeds, query_embeds, llm_embeds)

    # --- text side --------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        """``[BOS] + prompt`` token ids: what precedes every caption."""
        self.require_parts("llm", purpose="the prompt's tokens")
        tok = self.llm.tokenizer
        return tok.encode(self.prompt if prompt is None else prompt, add_bos=True)

    def tokenize_captions(self, captions: list[str], device: torch.device | str = "cpu") -> TokenizedCaptions:
        """``[BOS] prompt caption [EOS]``, truncated to ``max_text_len`` tokens with EOS kept."""
        self.require_parts("llm", purpose="tokenizing captions")
        tok = self.llm.tokenizer
        prefix = self.prompt_ids()
        room = max(self.max_text_len - len(prefix) - 1, 0)
        rows = []
        for caption in captions:
            body = tok.encode(caption, add_bos=False)[:room]
            rows.append(prefix + body + [tok.eos_token_id])
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
            labels[i, len(prefix) : len(row)] = torch.tensor(row[len(prefix) :])
        return TokenizedCaptions(input_ids.to(device), attention.to(device), labels.to(device))

    # --- training ---------------------------------------------------------------------------------

    def forward(self, pixel_values: torch.Tensor, captions: list[str]) -> CaptionOutput:
        """The stage-2 captioning loss (the ``caption`` objective's, see :func:`caption_loss`)."""
        output = caption_loss(self, pixel_values, captions)
        return CaptionOutput(loss=output.loss, num_target_tokens=output.num_targets)

    # --- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, prompt: str | None = None, **settings: Any) -> list[str]:
        """Caption a batch. Settings are :class:`GenerationSection` fields (num_beams, max_new_tokens,
        min_new_tokens, do_sample, top_p, temperature, repetition_penalty, length_penalty,
        num_return_sequences); returns ``B * num_return_sequences`` strings."""
        self.require_parts("vision", "connector", "projector", "llm", purpose="generate")
        generation = settings.pop("generation", None) or GenerationSection(**settings)
        image = self.encode_image(pixel_values)
        visual = image.llm_embeds
        batch = visual.shape[0]
        prefix = torch.tensor(self.prompt_ids(prompt), dtype=torch.long, device=visual.device)
        prefix_embeds = self.llm.embed_tokens(prefix.unsqueeze(0).expand(batch, -1))
        inputs_embeds = torch.cat([visual.to(prefix_embeds.dtype), prefix_embeds], dim=1)
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=visual.device)
        ids = self.llm.generate(inputs_embeds, attention_mask, generation)
        tok = self.llm.tokenizer
        return [tok.decode(row, skip_special_tokens=True).strip() for row in ids]

    # --- weights ----------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the checkpoint never repeats frozen towers."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def parameter_counts(self) -> dict[str, int]:
        trainable, frozen = count_parameters(self)
        return {"trainable": trainable, "frozen": frozen}


def check_parts(parts: Iterable[str]) -> frozenset[str]:
    """``parts`` as a frozenset, refused when it names an unknown part or lacks one a part needs."""
    chosen = frozenset(parts)
    unknown = sorted(chosen - MODEL_PARTS)
    if unknown:
        raise ModelPartsError(f"unknown model part(s) {', '.join(unknown)} (parts: {', '.join(sorted(MODEL_PARTS))})")
    for part, needs in PART_NEEDS.items():
        if part in chosen and not needs <= chosen:
            raise ModelPartsError(f"the {part} cannot be built without the {' and '.join(sorted(needs - chosen))} "
                                  f"(parts asked for: {', '.join(sorted(chosen))})")
    return chosen


def apply_precision_policy(model: MultimodalModel, policy: Any) -> None:
    """Store frozen towers (vision, LLM) in the policy's dtype unless their own config pinned one
    (``follows_precision_policy`` false). Trainable parts stay float32 for their optimizer."""
    for part in (model.vision, model.llm):
        if part is not None and part.frozen and part.follows_precision_policy:
            part.to(policy.frozen_dtype)


def config_precision_policy(config: Any) -> Any:
    """The precision policy of the device backend a run with ``config`` uses, chosen the way the
    trainer chooses it (``device`` section, ``PGMM_DEVICE``, auto-detection), without setting up a
    device."""
    from pgmm_core.devices.select import select_device_backend

    return select_device_backend(config.device, config.host).precision_policy()


def build_model(config: Any, parts: Iterable[str] | None = None, *, policy: Any = None) -> MultimodalModel:
    """Build the model a validated config describes, using the config's plugin host.

    ``parts`` (default: the config objective's ``parts``) are the parts built, in the order vision,
    connector, LLM, projector; the connector needs the vision tower, the projector needs connector
    and LLM (so ``{"vision", "connector"}`` is the image side alone, without projector or LLM).

    Freezing has one owner, this function: every part whose ``frozen`` is true is frozen here with
    :func:`pgmm_core.components.freeze` (factories only declare it). The frozen weights are then
    fingerprinted (``model.frozen_fingerprint``, recorded by the trainer, compared by
    :func:`pgmm_core.runs.load_run`), and the precision policy — ``policy``, or the config's device
    backend's — stores frozen towers in its dtype. Last, a part with an ``add_adapters()`` method
    (an LLM backend with LoRA) adds its trainable adapters to itself.
    """
    host = config.host
    if host is None:
        raise ValueError("config has no plugin host; load it with pgmm_core.load_config")
    if parts is None:
        parts = host.build("objective", config.objective).parts
    chosen = check_parts(parts)
    model_cfg = config.model
    vision = host.build("vision", model_cfg.vision) if "vision" in chosen else None
    connector = (host.build("connector", model_cfg.connector, encoder_width=vision.out_features)
                 if "connector" in chosen else None)
    llm = host.build("llm", model_cfg.llm) if "llm" in chosen else None
    projector = host.build(
        "projector", model_cfg.projector, in_features=connector.out_features, out_features=llm.hidden_size
    ) if "projector" in chosen else None
    model = MultimodalModel(
        vision, connector, projector, llm, prompt=model_cfg.prompt, max_text_len=model_cfg.max_text_len
    )
    if connector is not None:
        # LAVIS stores ln_vision beside the Q-Former; a connector that loaded it hands it over.
        norm_state = connector.pretrained_vision_norm()
        if norm_state:
            model.ln_vision.load_state_dict(norm_state)
    for part in (vision, connector, llm):
        if part is not None and part.frozen:
            freeze(part)
    model.frozen_fingerprint = frozen_weights.fingerprint(model)
    policy = policy if policy is not None else config_precision_policy(config)
    apply_precision_policy(model, policy)
    for part in (vision, connector, llm):
        add_adapters = getattr(part, "add_adapters", None)
        if add_adapters is not None:
            add_adapters()  # trainable adapters inside a frozen part (LoRA), float32, not fingerprinted
    logger.debug("built model parts %s; frozen: %s; frozen towers stored as %s", sorted(chosen),
                 sorted(model.frozen_fingerprint), policy.frozen_dtype)
    return model
