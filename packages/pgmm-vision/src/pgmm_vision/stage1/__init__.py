"""BLIP-2 stage 1: Q-Former pretraining (ITC, ITM, ITG) with the Q-Former's text side and heads (LAVIS
``Blip2Qformer``), and its zero-shot image-text retrieval evaluation.

``model.connector.text_side: true`` on the ``qformer`` connector builds :class:`QFormerWithTextSide`,
which the ITC/ITM/ITG objective and the retrieval evaluation use through ``model.connector``:

=========================================================  ==========================================
``connector.tokenizer``                                     transformers ``BertTokenizer`` + ``[DEC]`` as bos
``connector.max_text_len``                                  32 by default (LAVIS ``max_txt_len``)
``connector.tokenize(texts, device=None) -> TextBatch``     ``input_ids``, ``attention_mask`` (B×max_text_len,
                                                            padded and truncated as LAVIS), ``truncated`` count
``connector.query_pass(vision_embeds) -> QueryPass``        ``query_output`` B×Q×H, ``image_feats`` B×Q×embed_dim
                                                            (L2-normalised ``vision_proj``), and the per-layer
                                                            query states ITG reuses
``connector.image_side(vision_embeds)``                     ``(query_output, image_feats)`` of a query pass
``connector.text_feature(input_ids, attention_mask)``       B×embed_dim, L2-normalised ``text_proj`` of the
                                                            text-only pass's [CLS]
``connector.itm_logits(vision_embeds, input_ids, mask)``    k×2: queries and text in one bidirectional pass,
                                                            queries cross-attend the image, ``itm_head`` on
                                                            the query positions averaged
``connector.itg_loss(query_pass, input_ids, mask)``         scalar LM loss (label smoothing 0.1; ``[DEC]``
                                                            replaces the first token; pads -100); the text
                                                            attends to the given QueryPass's queries as LAVIS
                                                            (vision embeddings instead run a query pass)
``connector.temp``                                          ``nn.Parameter`` 0.07 (LAVIS' ``Blip2Qformer``
                                                            neither clamps nor otherwise touches it)
=========================================================  ==========================================

``vision_embeds`` is the tower's output after ``ln_vision`` (``model.vision_embeddings(pixels)``).
The connector's ``forward`` is still the query path (stage 2's contract). One step of LAVIS's
``Blip2Qformer.forward`` in these terms::

    query = connector.query_pass(vision_embeds)                      # B×Q×H, B×Q×256
    text = connector.tokenize(captions, device)
    text_feat = connector.text_feature(text.input_ids, text.attention_mask)   # B×256
    # ITC: max over queries of query.image_feats · text_feat (all ranks) / connector.temp
    # ITM: connector.itm_logits(vision_embeds of [pos, neg, pos], ids of [pos, pos, neg], masks) -> 3B×2
    loss_itg = connector.itg_loss(query, text.input_ids, text.attention_mask)

Modules: :mod:`.text_side` (the connector), :mod:`.tokenizer` (BERT + ``[DEC]``), :mod:`.decoder`
(ITG's text pass over the query pass's keys/values), :mod:`.masks` (ITG's attention mask),
:mod:`.weights` (loading and BERT initialisation of the text side), :mod:`.tiny_bert` (a tiny BERT
for demos and tests); the ``qformer_pretrain`` objective: :mod:`.configs`, :mod:`.objective`,
:mod:`.losses` (ITC, ITM, ITG as LAVIS computes them), :mod:`.gather` (the global batch across
ranks), :mod:`.parity` (against LAVIS goldens); zero-shot image-text retrieval, the objective's
evaluation: :mod:`.retrieval` and its ``retrieval_*`` modules.
This package's ``__init__`` imports nothing, so that config modules placed here stay import-cheap.
"""
