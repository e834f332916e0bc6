"""The Q-Former with LAVIS' stage-1 text side and heads (``Blip2Qformer`` minus the vision tower).

Built on transformers: ``Blip2QFormerModel(use_qformer_text_input=True)`` (every layer gains the
text FFN ``intermediate``/``output`` beside the query FFN; with ``query_length`` the first Q
positions take the query FFN and cross-attend the image, the rest take the text FFN),
``Blip2TextEmbeddings`` (word + absolute position embeddings; the concatenation [queries; text]
then passes the Q-Former's ``layernorm``, LAVIS' ``embeddings.LayerNorm``), and BERT's
``BertOnlyMLMHead`` as the LM head ``cls``. As in LAVIS (transformers' ``tie_weights`` in
``BertLMHeadModel``), the LM head's decoder weight *is* the word-embedding matrix and its bias *is*
``cls.predictions.bias``: both names stay in ``state_dict()`` for LAVIS' key layout, one parameter
each in ``parameters()``.

pgmm names (under ``connector.``): ``embeddings.*``, ``qformer.encoder.layer.{i}.intermediate|output.*``,
``cls.predictions.*``, ``vision_proj.*``, ``text_proj.*``, ``itm_head.*``, ``temp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pgmm_vision.qformer import QFormerConnector
from pgmm_vision.stage1.decoder import decode_text

IGNORE_INDEX = -100
LM_LABEL_SMOOTHING = 0.1  # LAVIS' BertLMHeadModel.forward
INITIAL_TEMP = 0.07

# state-dict aliases of one tensor each (tied as in LAVIS); the first name is the one loaded
TIED = (("embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"),
        ("cls.predictions.bias", "cls.predictions.decoder.bias"))


@dataclass
class QueryPass:
    """One batch's query pass: ``query_output`` B×Q×H, ``image_feats`` B×Q×embed_dim (unit norm), and
    each layer's query input, which ITG's text attends to (LAVIS's ``past_key_values``)."""

    query_output: torch.Tensor
    image_feats: torch.Tensor
    layer_inputs: tuple[torch.Tensor, ...]


@dataclass
class TextBatch:
    """Tokenized captions: ``input_ids``/``attention_mask`` B×max_text_len; ``truncated``: how many
    captions were longer than ``max_text_len`` tokens and were cut (LAVIS cuts them silently)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: int = 0


class QFormerWithTextSide(QFormerConnector):
    """The query path of :class:`QFormerConnector` plus the text side, the LM head and the ITC/ITM
    heads; the stage-1 losses' building blocks (the losses themselves are the objective's)."""

    def __init__(self, config, encoder_width: int, tokenizer: Any) -> None:
        text_input = {"vocab_size": len(tokenizer), "max_position_embeddings": config.max_position_embeddings,
                      "pad_token_id": tokenizer.pad_token_id}
        super().__init__(config, encoder_width, text_input=text_input)
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertOnlyMLMHead
        from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

        hidden = config.hidden_size
        self.embeddings = Blip2TextEmbeddings(self.qformer.config)
        self.cls = BertOnlyMLMHead(BertConfig(hidden_size=hidden, vocab_size=len(tokenizer), hidden_act="gelu",
                                              layer_norm_eps=1e-12))
        self.vision_proj = nn.Linear(hidden, config.embed_dim)
        self.text_proj = nn.Linear(hidden, config.embed_dim)
        self.itm_head = nn.Linear(hidden, 2)
        self.temp = nn.Parameter(INITIAL_TEMP * torch.ones([]))
        self._init_bert_like(std=self.qformer.config.initializer_range)
        self.cls.predictions.decoder.weight = self.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias
        self.tokenizer = tokenizer
        self.max_text_len = config.max_text_len
        self.embed_dim = config.embed_dim

    def _init_bert_like(self, std: float) -> None:
        """BERT's initialisation (transformers' ``_init_weights``) for the modules that live in LAVIS'
        ``BertLMHeadModel``; the projections and ``itm_head`` keep PyTorch's, as in ``Blip2Qformer``."""
        with torch.no_grad():
            for module in (self.embeddings, self.cls):
                for sub in module.modules():
                    if isinstance(sub, (nn.Linear, nn.Embedding)):
                        sub.weight.normal_(0.0, std)
                    if isinstance(sub, nn.Linear) and sub.bias is not None:
                        sub.bias.zero_()
            pad = self.embeddings.word_embeddings.padding_idx
            if pad is not None:
                self.embeddings.word_embeddings.weight[pad].zero_()
            self.cls.predictions.bias.zero_()

    # --- text -------------------------------------------------------------------------------------

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> TextBatch:
        """LAVIS' ``tokenizer(text, padding="max_length", truncation=True, max_length=max_txt_len)``."""
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_text_len,
                                 return_tensors="pt", return_token_type_ids=False)
        full = self.tokenizer(list(texts), return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        truncated = sum(len(ids) > self.max_text_len for ids in full)
        return TextBatch(encoded["input_ids"].to(device), encoded["attention_mask"].to(device), truncated)

    def _vision_mask(self, vision_embeds: torch.Tensor) -> torch.Tensor:
        return torch.ones(vision_embeds.shape[:2], dtype=torch.long, device=vision_embeds.device)

    def _queries(self, batch: int) -> torch.Tensor:
        return self.query_tokens.expand(batch, -1, -1)

    # --- the three passes ---------------------------------------------------------------------------

    def query_pass(self, vision_embeds: torch.Tensor) -> QueryPass:
        """The queries cross-attend ``vision_embeds`` (B×N×W); keeps what ITG reuses."""
        out = self.qformer(query_embeds=self._queries(vision_embeds.shape[0]), encoder_hidden_states=vision_embeds,
                           encoder_attention_mask=self._vision_mask(vision_embeds), output_hidden_states=True)
        query_output = out.last_hidden_state
        return QueryPass(query_output, F.normalize(self.vision_proj(query_output), dim=-1), out.hidden_states[:-1])

    def image_side(self, vision_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query pass: ``(query_output B×Q×H, image_feats B×Q×embed_dim)``, ``image_feats`` unit-norm."""
        query = self.query_pass(vision_embeds)
        return query.query_output, query.image_feats

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text-only pass (bidirectional, no image, text FFN): last hidden state B×L×H."""
        embeds = self.embeddings(input_ids=input_ids)
        out = self.qformer(query_embeds=embeds, query_length=0, attention_mask=attention_mask)
        return out.last_hidden_state

    def text_feature(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ITC text feature: ``normalize(text_proj(CLS))``, B×embed_dim."""
        cls = self.text_hidden(input_ids, attention_mask)[:, 0, :]
        return F.normalize(self.text_proj(cls), dim=-1)

    def itm_logits(self, vision_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """Image-text matching logits k×2 (index 1: match): queries and text attend to each other,
        the queries cross-attend ``vision_embeds`` (k×N×W); ``itm_head`` averaged over the queries."""
        batch, num_queries = input_ids.shape[0], self.num_query_tokens
        embeds = self.embeddings(input_ids=input_ids, query_embeds=self._queries(batch))
        query_mask = torch.ones(batch, num_queries, dtype=attention_mask.dtype, device=attention_mask.device)
        out = self.qformer(query_embeds=embeds, query_length=num_queries,
                           attention_mask=torch.cat([query_mask, attention_mask], dim=1),
                           encoder_hidden_states=vision_embeds,
                           encoder_attention_mask=self._vision_mask(vision_embeds))
        return self.itm_head(out.last_hidden_state[:, :num_queries, :]).mean(dim=1)

    def itg_logits(self, source: torch.Tensor | QueryPass, decoder_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """LM logits B×L×V of the text: each token sees all queries of ``source`` (a :class:`QueryPass`,
        or vision embeddings to run one) and the text up to itself (:mod:`pgmm_vision.stage1.decoder`)."""
        query = source if isinstance(source, QueryPass) else self.query_pass(source)
        hidden = decode_text(self.qformer, self.embeddings(input_ids=decoder_ids), attention_mask,
                             query.layer_inputs)
        return self.cls(hidden)

    def itg_loss(self, source: torch.Tensor | QueryPass, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 label_smoothing: float = LM_LABEL_SMOOTHING) -> torch.Tensor:
        """Image-grounded generation loss as LAVIS: ``[DEC]`` replaces the first token ([CLS]), labels are
        the ids with pads -100, logits at position t predict token t+1, cross-entropy with label
        smoothing 0.1 averaged over the labelled tokens. ``source``: the batch's :class:`QueryPass`
        (what LAVIS does: the queries are not run again) or its vision embeddings."""
        decoder_ids = input_ids.clone()
        decoder_ids[:, 0] = self.tokenizer.bos_token_id
        labels = decoder_ids.masked_fill(decoder_ids == self.tokenizer.pad_token_id, IGNORE_INDEX)
        logits = self.itg_logits(source, decoder_ids, attention_mask)
        shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1])
        return F.cross_entropy(shifted.float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                               label_smoothing=label_smoothing)
