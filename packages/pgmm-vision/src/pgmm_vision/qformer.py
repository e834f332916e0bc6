"""The BLIP-2 Q-Former on transformers' ``Blip2QFormerModel`` (query path only, as in stage 2).

LAVIS' query path and ``Blip2QFormerModel(use_qformer_text_input=False)`` are the same network: the
queries pass the embeddings LayerNorm and dropout (no position embeddings), then post-LN BERT layers
with self-attention, cross-attention to the vision tokens on every ``cross_attention_freq``-th layer
(0, 2, 4, ...), and the query FFN (``intermediate_query``/``output_query``).

With ``text_side`` the factory builds :class:`pgmm_vision.stage1.text_side.QFormerWithTextSide` instead: the
same query path plus LAVIS' stage-1 text side and heads (the stage-1 API is documented there).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class QFormerConnector(nn.Module):
    """Learned queries cross-attend to the vision tokens; returns the last hidden state (B×Q×H)."""

    def __init__(self, config, encoder_width: int, text_input: dict | None = None) -> None:
        """``text_input``: ``vocab_size``, ``max_position_embeddings``, ``pad_token_id`` of a text side
        (transformers then adds the text FFN ``intermediate``/``output`` to every layer)."""
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        qconfig = Blip2QFormerConfig(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            hidden_act="gelu",  # exact erf GELU, as BERT
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.attention_dropout,
            layer_norm_eps=1e-12,
            cross_attention_frequency=config.cross_attention_freq,
            encoder_hidden_size=encoder_width,
            use_qformer_text_input=text_input is not None,
            **(text_input or {}),
        )
        self.qformer = Blip2QFormerModel(qconfig)
        # LAVIS: query_tokens ~ N(0, initializer_range 0.02)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.hidden_size))
        nn.init.normal_(self.query_tokens, std=0.02)
        if config.grad_checkpointing:
            enable = getattr(self.qformer, "activation_checkpointing_enable", None)  # transformers >= 5.x
            if enable is not None:
                enable({"use_reentrant": False})
            else:
                self.qformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.out_features = config.hidden_size
        self.num_query_tokens = config.num_query_tokens
        self.encoder_width = encoder_width
        self.text_side = text_input is not None  # the stage-1 subclass owns the text side's modules
        self.frozen = config.freeze  # pgmm_core.build_model freezes it
        self._vision_norm: dict[str, torch.Tensor] | None = None

    def forward(self, vision_embeds: torch.Tensor, vision_mask: torch.Tensor | None = None) -> torch.Tensor:
        if vision_mask is None:
            vision_mask = torch.ones(vision_embeds.shape[:2], dtype=torch.long, device=vision_embeds.device)
        queries = self.query_tokens.expand(vision_embeds.shape[0], -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=vision_embeds,
                           encoder_attention_mask=vision_mask)
        return out.last_hidden_state

    def pretrained_vision_norm(self) -> dict[str, torch.Tensor] | None:
        """``ln_vision`` weights found in the loaded BLIP-2 checkpoint (LAVIS and transformers store
        them beside the Q-Former); ``pgmm_core.build_model`` copies them into the model's ln_vision."""
        return self._vision_norm


def build_qformer(config, *, encoder_width: int) -> QFormerConnector:
    from pgmm_vision.checkpoints import init_qformer_from_bert, load_qformer_state, not_llm, read_state_dict

    if config.text_side:
        from pgmm_vision.stage1.text_side import QFormerWithTextSide
        from pgmm_vision.stage1.tokenizer import load_tokenizer

        connector = QFormerWithTextSide(config, encoder_width, load_tokenizer(config.tokenizer_dir()))
    else:
        connector = QFormerConnector(config, encoder_width)
    if config.bert_directory_given:
        logger.info(init_qformer_from_bert(connector, str(config.bert_directory())).summary())
    if config.checkpoint:
        state = read_state_dict(config.checkpoint, hint="blip2", wanted=not_llm)
        report, connector._vision_norm = load_qformer_state(connector, state, config.checkpoint)
        logger.info(report.summary())
    return connector
