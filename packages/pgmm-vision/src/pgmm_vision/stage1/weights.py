"""Loading the Q-Former's stage-1 text side: checkpoints (LAVIS, pgmm) and BERT initialisation.

Checkpoints: LAVIS stores the tied tensors under two keys each (the LM decoder's weight is the word
embeddings, its bias ``cls.predictions.bias``) and the ``position_ids`` buffer; a pgmm checkpoint
(trainable parameters only) holds one name of each tied pair and no buffer. :func:`prepare_checkpoint`
brings both to the connector's ``state_dict()`` keys, refusing a file whose two copies differ.

BERT (LAVIS ``init_Qformer`` + ``Blip2Qformer.__init__``): the word and position embeddings, every
layer's text FFN, and the LM head's transform and bias come from BERT; the word embeddings and the
LM bias get one more row per added token (``[DEC]``): a new embedding row N(0, 0.02) and bias 0, as
transformers' ``resize_token_embeddings`` gives LAVIS. ``vision_proj``, ``text_proj``, ``itm_head``
and ``temp`` are new.
"""

from __future__ import annotations

import torch
from torch import nn

from pgmm_core.errors import CheckpointError
from pgmm_vision.stage1.text_side import TIED

POSITION_IDS = "embeddings.position_ids"
HEADS = ("vision_proj.", "text_proj.", "itm_head.", "temp")


def prepare_checkpoint(tensors: dict[str, torch.Tensor], origin: dict[str, str], source: str,
                       notes: list[str]) -> None:
    """Check and drop the ``position_ids`` buffer; give each tied pair both of its names."""
    ids = tensors.pop(POSITION_IDS, None)
    if ids is not None:
        if not torch.equal(ids.flatten().long(), torch.arange(ids.numel())):
            raise CheckpointError(f"{source}: '{origin.get(POSITION_IDS)}' is not 0..{ids.numel() - 1}; "
                                  "pgmm's text embeddings use absolute positions from 0 as LAVIS")
        notes.append(f"{origin.get(POSITION_IDS)} checked (positions 0..{ids.numel() - 1}; a buffer, not a weight)")
    for first, second in TIED:
        a, b = tensors.get(first), tensors.get(second)
        if a is not None and b is not None:
            if a.shape != b.shape or not torch.equal(a, b):
                raise CheckpointError(f"{source}: '{origin.get(first, first)}' and '{origin.get(second, second)}' "
                                      "differ, but they are one tensor in LAVIS' Q-Former (tied) and in pgmm's")
        elif a is not None:
            tensors[second], origin[second] = a, origin.get(first, first)
        elif b is not None:
            tensors[first], origin[first] = b, origin.get(second, second)


def bert_text_side_key(key: str) -> str | None:
    """The connector name of a BERT key (``bert.`` removed, LayerNorm gamma/beta renamed) on the text
    side, or None. The text FFN is not here: :func:`pgmm_vision.checkpoints.bert_to_qformer` maps it."""
    if key in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "cls.predictions.bias"):
        return key
    if key.startswith("cls.predictions.transform."):
        return key
    return None


def _grow_rows(own: torch.Tensor, bert: torch.Tensor, key: str, directory: str) -> torch.Tensor:
    if bert.shape[0] > own.shape[0] or bert.shape[1:] != own.shape[1:]:
        raise CheckpointError(f"{directory}: BERT's '{key}' is {tuple(bert.shape)}, the Q-Former's text side "
                              f"expects {tuple(own.shape)} (rows: the tokenizer's vocabulary incl. [DEC])")
    grown = own.detach().clone()
    grown[: bert.shape[0]] = bert.to(grown.dtype)
    return grown


def fit_vocabulary(connector: nn.Module, tensors: dict[str, torch.Tensor], directory: str,
                   notes: list[str]) -> list[str]:
    """Give BERT's word embeddings and LM bias the tokenizer's added rows (kept from the connector's
    initialisation) and fill the tied aliases; returns the keys BERT does not provide (new weights)."""
    own = connector.state_dict()
    words = "embeddings.word_embeddings.weight"
    if words not in tensors:
        raise CheckpointError(f"{directory} holds no BERT word embeddings (bert.embeddings.word_embeddings.weight), "
                              "which the Q-Former's text side starts from")
    if not any(k.startswith("cls.predictions.transform.") for k in tensors):
        raise CheckpointError(f"{directory} holds no BERT LM head (cls.predictions.*), which the Q-Former's LM head "
                              "starts from: use bert-base-uncased's own weights (BertForMaskedLM/BertForPreTraining "
                              "layout, as released), not a BertModel without heads")
    added = own[words].shape[0] - tensors[words].shape[0]
    for key in (words, "cls.predictions.bias"):
        if key in tensors:
            tensors[key] = _grow_rows(own[key], tensors[key], key, directory)
    if added:
        notes.append(f"vocabulary: {tensors[words].shape[0] - added} BERT tokens + {added} added ([DEC]), "
                     "new rows initialised as LAVIS' resize_token_embeddings")
    prepare_checkpoint(tensors, {}, directory, notes)
    return [k for k in own if k.startswith(HEADS)]
