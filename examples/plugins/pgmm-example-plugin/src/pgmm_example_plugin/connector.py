"""``attention_pool``: learned queries that cross-attend once to the vision tokens.

A small connector that shows every rule of the connector protocol
(:class:`pgmm_core.components.Connector`, checked by ``ConnectorContract``):

* ``connector(vision_embeds, vision_mask=None)``: ``vision_embeds`` is ``B×N×encoder_width``
  (float32, after the model's ``ln_vision``); ``vision_mask`` is ``B×N``, integer or bool, where
  1/``True`` means *attend to this token* and 0/``False`` means *ignore it*; ``None`` means every
  token is real. Masked tokens must not change the output. pgmm's model passes no mask today (all
  images give the same tokens), but a connector must honour one: a tower with a variable number of
  tokens pads them and masks the padding.
* the output is ``B×num_query_tokens×out_features`` whatever ``N`` is.
* ``frozen`` is the config's ``freeze``; freezing itself is ``pgmm_core.build_model``'s job.
* ``pretrained_vision_norm()``: this connector has no checkpoint, so ``None``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AttentionPool(nn.Module):
    def __init__(self, config: Any, encoder_width: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, config.num_query_tokens, config.hidden_size) * 0.02)
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_heads, kdim=encoder_width,
                                               vdim=encoder_width, batch_first=True)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.out_features = config.hidden_size
        self.num_query_tokens = config.num_query_tokens
        self.frozen = config.freeze  # pgmm_core.build_model freezes it; the connector never does

    def forward(self, vision_embeds: torch.Tensor, vision_mask: torch.Tensor | None = None) -> torch.Tensor:
        queries = self.queries.expand(vision_embeds.shape[0], -1, -1)
        # pgmm's mask keeps what is 1; torch's key_padding_mask ignores what is True: invert it.
        ignored = None if vision_mask is None else ~vision_mask.bool()
        attended, _ = self.attention(queries, vision_embeds, vision_embeds, key_padding_mask=ignored,
                                     need_weights=False)
        return self.norm(queries + attended)

    def pretrained_vision_norm(self) -> dict[str, torch.Tensor] | None:
        return None  # no checkpoint, so no ln_vision weights to hand over


def build_attention_pool(config: Any, *, encoder_width: int) -> AttentionPool:
    """``encoder_width`` is the vision encoder's ``out_features``: the width of the tokens it attends to."""
    return AttentionPool(config, encoder_width)
