"""The BLIP-2 Q-Former on transformers' ``Blip2QFormerModel`` (query path only, as in stage 2)."""

from __future__ import annotations

import torch
from torch import nn


class QFormerConnector(nn.Module):
    """32 learned queries cross-attend to the vision tokens; returns the last hidden state (B×Q×H)."""

    def __init__(self, config, encoder_width: int) -> None:
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        qconfig = Blip2QFormerConfig(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.attention_dropout,
            layer_norm_eps=1e-12,
            cross_attention_frequency=config.cross_attention_freq,
            encoder_hidden_size=encoder_width,
            use_qformer_text_input=False,
        )
        self.qformer = Blip2QFormerModel(qconfig)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.hidden_size))
        nn.init.normal_(self.query_tokens, std=0.02)
        self.out_features = config.hidden_size
        self.num_query_tokens = config.num_query_tokens
        self.encoder_width = encoder_width
        self._vision_norm: dict[str, torch.Tensor] | None = None

    def forward(self, vision_embeds: torch.Tensor, vision_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch = vision_embeds.shape[0]
        if vision_mask is None:
            vision_mask = torch.ones(vision_embeds.shape[:2], dtype=torch.long, device=vision_embeds.device)
        queries = self.query_tokens.expand(batch, -1, -1)
        out = self.qformer(
            query_embeds=queries,
            encoder_hidden_states=vision_embeds,
            encoder_attention_mask=vision_mask,
        )
        return out.last_hidden_state

    def pretrained_vision_norm(self) -> dict[str, torch.Tensor] | None:
        """``ln_vision`` weights found in the loaded BLIP-2 checkpoint (LAVIS stores them beside the
        Q-Former); the model copies them into its own ``ln_vision``."""
        return self._vision_norm


def build_qformer(config, *, encoder_width: int) -> QFormerConnector:
    connector = QFormerConnector(config, encoder_width)
    if config.bert_init:
        from pgmm_vision.checkpoints import init_qformer_from_bert

        init_qformer_from_bert(connector, config.bert_init)
    if config.checkpoint:
        from pgmm_vision.checkpoints import load_qformer_checkpoint

        connector._vision_norm = load_qformer_checkpoint(connector, config.checkpoint)
    if config.freeze:
        from pgmm_core.components import freeze

        freeze(connector)
    return connector
