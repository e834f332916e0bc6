"""The attention mask of image-grounded text generation (ITG), as one 4-D mask for a joint pass.

LAVIS runs ITG as a text-only decoder pass that reuses the query pass's keys and values
(``past_key_values``) with ``get_extended_attention_mask(..., is_decoder=True)``: every text token
sees all queries and the text up to itself; the queries, computed before, never saw the text. pgmm
runs queries and text in one pass of transformers' ``Blip2QFormerModel`` (which has no key/value
cache) with the equivalent UniLM-style mask (LAVIS' ``has_query`` branch): queries see the queries
only, so their hidden states are the query pass's and the text sees exactly what LAVIS' does.
transformers hands a 4-D mask to the attention layers unchanged (``masking_utils``), as an additive
bias.
"""

from __future__ import annotations

import torch


def itg_attention_mask(text_mask: torch.Tensor, num_queries: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask B×1×(Q+L)×(Q+L): 0 where attention is allowed, the dtype's minimum elsewhere.

    Rows are queries then text tokens; keys likewise. Padded text keys are masked for every row."""
    batch, length = text_mask.shape
    total = num_queries + length
    device = text_mask.device
    allowed = torch.zeros(total, total, dtype=torch.bool, device=device)
    allowed[:, :num_queries] = True  # everyone sees the queries
    allowed[num_queries:, num_queries:] = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    keys = torch.cat([torch.ones(batch, num_queries, dtype=torch.bool, device=device), text_mask.bool()], dim=1)
    allowed = allowed.unsqueeze(0) & keys[:, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias.unsqueeze(1)
