"""The multimodal model: vision tower -> ln_vision -> connector -> projector -> LLM.

Only wiring lives here; every part comes from a registered component. The stage-2 captioning loss
places the projected query tokens before ``[BOS] prompt caption [EOS]`` and supervises the caption
and EOS only (LAVIS BLIP-2 stage 2 with openPangu's EOS).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pgmm_core.components import count_parameters, freeze
from pgmm_core.config.sections import GenerationSection

IGNORE_INDEX = -100


@dataclass
class ImageEncoding:
    """``vision_embeds``: tower output after ln_vision (all tokens); ``query_embeds``: connector
    output (B×Q×H); ``llm_embeds``: projector output, the LLM's visual tokens."""

    vision_embeds: torch.Tensor
    query_embeds: torch.Tensor
    llm_embeds: torch.Tensor


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
    """BLIP-2 style captioner. Build it with :func:`build_model`."""

    def __init__(
        self,
        vision: nn.Module,
        connector: nn.Module,
        projector: nn.Module,
        llm: nn.Module,
        *,
        prompt: str = "",
        max_text_len: int = 32,
    ) -> None:
        super().__init__()
        self.vision = vision
        # Trained, outside the frozen tower, computed in float32 (LAVIS' LayerNorm does the same).
        self.ln_vision = nn.LayerNorm(vision.out_features, eps=1e-5)
        self.connector = connector
        self.projector = projector
        self.llm = llm
        self.prompt = prompt
        self.max_text_len = max_text_len

    # --- image side -------------------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor) -> ImageEncoding:
        no_grad = getattr(self.vision, "frozen", False)
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            features = self.vision(pixel_values)
        with torch.autocast(device_type=features.device.type, enabled=False):
            vision_embeds = self.ln_vision(features.float())
        query_embeds = self.connector(vision_embeds)
        llm_embeds = self.projector(query_embeds)
        return ImageEncoding(vision_embeds, query_embeds, llm_embeds)

    # --- text side --------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        """``[BOS] + prompt`` token ids: what precedes every caption."""
        tok = self.llm.tokenizer
        return tok.encode(self.prompt if prompt is None else prompt, add_bos=True)

    def tokenize_captions(self, captions: list[str], device: torch.device | str = "cpu") -> TokenizedCaptions:
        """``[BOS] prompt caption [EOS]``, truncated to ``max_text_len`` tokens with EOS kept."""
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
        if isinstance(captions, str) or len(captions) != pixel_values.shape[0]:
            count = "a string" if isinstance(captions, str) else f"{len(captions)} caption(s)"
            raise ValueError(f"one caption per image: got {pixel_values.shape[0]} image(s) and {count}")
        image = self.encode_image(pixel_values)
        visual = image.llm_embeds
        text = self.tokenize_captions(captions, device=visual.device)
        text_embeds = self.llm.embed_tokens(text.input_ids)
        batch, queries = visual.shape[:2]
        inputs_embeds = torch.cat([visual.to(text_embeds.dtype), text_embeds], dim=1)
        visual_mask = torch.ones((batch, queries), dtype=text.attention_mask.dtype, device=visual.device)
        attention_mask = torch.cat([visual_mask, text.attention_mask], dim=1)
        visual_labels = torch.full((batch, queries), IGNORE_INDEX, dtype=torch.long, device=visual.device)
        labels = torch.cat([visual_labels, text.labels], dim=1)
        loss = self.llm.caption_loss(inputs_embeds, attention_mask, labels)
        return CaptionOutput(loss=loss, num_target_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()))

    # --- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, prompt: str | None = None, **settings: Any) -> list[str]:
        """Caption a batch. Settings are :class:`GenerationSection` fields (num_beams, max_new_tokens,
        min_new_tokens, do_sample, top_p, temperature, repetition_penalty, length_penalty,
        num_return_sequences); returns ``B * num_return_sequences`` strings."""
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


def build_model(config: Any) -> MultimodalModel:
    """Build the model a validated config describes, using the config's plugin host."""
    host = config.host
    if host is None:
        raise ValueError("config has no plugin host; load it with pgmm_core.load_config")
    model_cfg = config.model
    vision = host.build("vision", model_cfg.vision)
    connector = host.build("connector", model_cfg.connector, encoder_width=vision.out_features)
    llm = host.build("llm", model_cfg.llm)
    projector = host.build(
        "projector", model_cfg.projector, in_features=connector.out_features, out_features=llm.hidden_size
    )
    model = MultimodalModel(
        vision, connector, projector, llm, prompt=model_cfg.prompt, max_text_len=model_cfg.max_text_len
    )
    # LAVIS stores ln_vision beside the Q-Former; a connector that loaded it hands it over.
    pretrained_norm = getattr(connector, "pretrained_vision_norm", None)
    norm_state = pretrained_norm() if callable(pretrained_norm) else None
    if norm_state:
        model.ln_vision.load_state_dict(norm_state)
    if getattr(vision, "frozen", False):
        freeze(vision)
    if getattr(llm, "frozen", False):
        freeze(llm)
    return model
