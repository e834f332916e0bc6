"""Image-grounded text generation's decoder pass, reusing the query pass as LAVIS does.

LAVIS runs ITG as a text-only pass of its Q-Former whose self-attention keys and values are the
query pass's (``past_key_values`` of ``Qformer.bert(query_embeds=..., use_cache=True)``) followed by
the text's own: every text token sees all queries and the text up to itself; the queries are not run
again. transformers' ``Blip2QFormerModel`` has no key/value cache, so this module drives its layers'
own submodules (``attention.attention.query/key/value``, ``attention.output``, the text FFN) for the
text stream, with the keys and values of each layer's query input (``QueryPass.layer_inputs``)
prepended. Gradients reach the query pass through them, as LAVIS's do through its cache; dropout
is the query pass's for the queries and the text's own for the text, as in LAVIS.

Equivalent (and tested equal) to one joint pass of queries and text with the UniLM mask of
:func:`pgmm_vision.stage1.masks.itg_attention_mask`, which recomputes the whole query stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgmm_vision.stage1.masks import itg_attention_mask


def _heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    batch, length, _ = states.shape
    return states.view(batch, length, -1, head_dim).transpose(1, 2)


def decode_text(qformer: nn.Module, text_embeds: torch.Tensor, text_mask: torch.Tensor,
                layer_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The text stream's last hidden state B×L×H. ``text_embeds``: word + position embeddings (before
    the Q-Former's ``layernorm``); ``layer_inputs[i]``: the queries' input to layer i in the query pass."""
    layers = qformer.encoder.layer
    if len(layer_inputs) < len(layers):
        raise ValueError(f"the query pass gave {len(layer_inputs)} layer inputs for {len(layers)} layers")
    num_queries = layer_inputs[0].shape[1]
    hidden = qformer.dropout(qformer.layernorm(text_embeds.to(qformer.layernorm.weight.dtype)))
    # the text rows of the joint mask (boolean, True: attend), B×1×L×(Q+L)
    allowed = itg_attention_mask(text_mask, num_queries, hidden.dtype)[:, :, num_queries:, :]
    for layer, queries in zip(layers, layer_inputs):
        attention = layer.attention.attention
        head_dim = attention.attention_head_size
        keys_from = torch.cat([queries.to(hidden.dtype), hidden], dim=1)
        context = F.scaled_dot_product_attention(
            _heads(attention.query(hidden), head_dim), _heads(attention.key(keys_from), head_dim),
            _heads(attention.value(keys_from), head_dim), attn_mask=allowed,
            dropout_p=attention.attention_dropout if attention.training else 0.0, scale=attention.scaling)
        context = context.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)
        hidden = layer.feed_forward_chunk(layer.attention.output(context, hidden))  # the text FFN
    return hidden
