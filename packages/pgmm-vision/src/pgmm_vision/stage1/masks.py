"""The attention mask of image-grounded text generation (ITG).

LAVIS's ``get_extended_attention_mask(..., is_decoder=True)``: every text token sees all queries
and the text up to itself, padded text is never a key; with ``has_query`` (queries and text in one
pass, UniLM style) the queries see only the queries. :mod:`pgmm_vision.stage1.decoder` uses the text
rows with the query pass's keys; the whole mask runs queries and text in one pass of transformers'
``Blip2QFormerModel``, which hands a 4-D mask to the attention layers unchanged (``masking_utils``
returns it as-is) — so it is given in the form each attention implementation takes, as
transformers' own masks are: boolean (True: attend) for SDPA, an additive bias for eager.
"""

from __future__ import annotations

import torch


def itg_attention_mask(text_mask: torch.Tensor, num_queries: int, dtype: torch.dtype,
                       implementation: str = "sdpa") -> torch.Tensor:
    """The mask B×1×(Q+L)×(Q+L) for ``implementation``: boolean (True where attention is allowed)
    for ``sdpa``, else additive (0 where allowed, the dtype's minimum elsewhere).

    Rows are queries then text tokens; keys likewise. Padded text keys are masked for every row."""
    batch, length = text_mask.shape
    total = num_queries + length
    device = text_mask.device
    allowed = torch.zeros(total, total, dtype=torch.bool, device=device)
    allowed[:, :num_queries] = True  # everyone sees the queries
    allowed[num_queries:, num_queries:] = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    keys = torch.cat([torch.ones(batch, num_queries, dtype=torch.bool, device=device), text_mask.bool()], dim=1)
    allowed = allowed.unsqueeze(0) & keys[:, None, :]
    if implementation == "sdpa":
        return allowed.unsqueeze(1)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias.unsqueeze(1)
