"""The Q-Former's stage-1 text side (``text_side: true``): what each pass sees, and the ITG loss."""

from __future__ import annotations

import math

import pytest
import torch

CAPTIONS = ["a dog sitting on the grass", "two cats", "a man holding a red frisbee in a field near the water",
            "people walking down the street"]


@pytest.fixture(scope="module")
def connector(build, text_side_config, small_checkpoint):
    """The small case's LAVIS weights (text side included), dropout off."""
    return build("connector", text_side_config(small_checkpoint), encoder_width=64).eval()


@pytest.fixture(scope="module")
def vision():
    return torch.randn(4, 17, 64, generator=torch.Generator().manual_seed(3))


def test_tokenize_pads_truncates_and_counts_like_lavis(connector):
    batch = connector.tokenize(CAPTIONS)
    tok = connector.tokenizer
    assert tok.bos_token == "[DEC]" and tok.bos_token_id == 99 and len(tok) == 100  # [DEC] after BERT's words
    assert batch.input_ids.shape == batch.attention_mask.shape == (4, 12)  # padding="max_length"
    assert (batch.input_ids[:, 0] == tok.cls_token_id).all()
    assert batch.truncated == 1  # the third caption has 13 words: cut to 12 tokens with [SEP] kept
    assert batch.input_ids[2, -1] == tok.sep_token_id and batch.attention_mask[2].all()
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 1] + [0] * 8
    assert (batch.input_ids[1, 4:] == tok.pad_token_id).all()


def test_image_side_is_the_query_path_with_unit_features(connector, vision):
    query_output, image_feats = connector.image_side(vision)
    with torch.no_grad():
        assert torch.equal(query_output, connector(vision))
    assert image_feats.shape == (4, 8, 16)
    assert torch.allclose(image_feats.norm(dim=-1), torch.ones(4, 8), atol=1e-6)
    manual = connector.vision_proj(query_output)
    assert torch.allclose(image_feats, manual / manual.norm(dim=-1, keepdim=True), atol=1e-6)


def test_text_feature_is_the_cls_of_a_text_only_pass(connector):
    batch = connector.tokenize(CAPTIONS)
    feats = connector.text_feature(batch.input_ids, batch.attention_mask)
    assert feats.shape == (4, 16)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(4), atol=1e-6)
    # padded positions are not seen: other ids there change nothing
    ids = batch.input_ids.clone()
    ids[batch.attention_mask == 0] = 7
    assert torch.allclose(connector.text_feature(ids, batch.attention_mask), feats, atol=1e-6)
    # the text pass uses the text FFN, not the query FFN
    with torch.no_grad():
        connector.qformer.encoder.layer[0].intermediate.dense.bias.add_(1.0)
        try:
            changed = connector.text_feature(batch.input_ids, batch.attention_mask)
        finally:
            connector.qformer.encoder.layer[0].intermediate.dense.bias.sub_(1.0)
    assert (changed - feats).abs().max() > 1e-3


def test_itm_logits_see_both_image_and_text(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    logits = connector.itm_logits(vision, batch.input_ids, batch.attention_mask)
    assert logits.shape == (4, 2)
    other_image = connector.itm_logits(vision.flip(0), batch.input_ids, batch.attention_mask)
    other_text = connector.itm_logits(vision, batch.input_ids.flip(0), batch.attention_mask.flip(0))
    assert (other_image - logits).abs().max() > 1e-4 and (other_text - logits).abs().max() > 1e-4
    # the head is applied per query and averaged (LAVIS: itm_head(vl_embeddings).mean(dim=1))
    captured = {}
    hook = connector.qformer.register_forward_hook(lambda m, a, k, out: captured.update(out=out.last_hidden_state),
                                                   with_kwargs=True)
    try:
        connector.itm_logits(vision, batch.input_ids, batch.attention_mask)
    finally:
        hook.remove()
    per_query = connector.itm_head(captured["out"][:, :8, :])
    assert torch.allclose(logits, per_query.mean(dim=1), atol=1e-6)


def _itg_hidden(connector, vision, batch):
    captured = {}
    hook = connector.qformer.register_forward_hook(lambda m, a, k, out: captured.update(out=out.last_hidden_state),
                                                   with_kwargs=True)
    try:
        logits = connector.itg_logits(vision, _decoder_ids(connector, batch), batch.attention_mask)
    finally:
        hook.remove()
    return captured["out"], logits


def _decoder_ids(connector, batch):
    ids = batch.input_ids.clone()
    ids[:, 0] = connector.tokenizer.convert_tokens_to_ids("[DEC]")
    return ids


def test_itg_queries_see_only_queries_and_text_sees_only_its_past(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    hidden, logits = _itg_hidden(connector, vision, batch)
    query_output, _ = connector.image_side(vision)
    assert torch.allclose(hidden[:, :8, :], query_output, atol=1e-5)  # LAVIS reuses the query pass's keys/values
    assert logits.shape == (4, 12, 100)
    # causal: changing the text from position 5 on leaves positions 0..4 unchanged, later ones not
    later = batch.input_ids.clone()
    later[:, 5:] = torch.where(batch.attention_mask[:, 5:] == 1, torch.full_like(later[:, 5:], 20), later[:, 5:])
    _, changed = _itg_hidden(connector, vision, type(batch)(later, batch.attention_mask))
    assert torch.allclose(changed[:, :5], logits[:, :5], atol=1e-5)
    assert (changed[0, 5:7] - logits[0, 5:7]).abs().max() > 1e-4
    # and the text sees the image through the queries
    other, _ = _itg_hidden(connector, vision.flip(0), batch)
    assert (other[:, 8] - hidden[:, 8]).abs().max() > 1e-4


def test_itg_loss_is_lavis_label_smoothed_shifted_cross_entropy(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    loss = connector.itg_loss(vision, batch.input_ids, batch.attention_mask)
    logits = connector.itg_logits(vision, _decoder_ids(connector, batch), batch.attention_mask)
    ids = _decoder_ids(connector, batch)
    total, count = 0.0, 0
    for row in range(4):
        for t in range(11):  # position t predicts token t+1; pads are not predicted
            target = ids[row, t + 1].item()
            if target == connector.tokenizer.pad_token_id:
                continue
            logp = torch.log_softmax(logits[row, t].double(), dim=-1)
            total += 0.9 * -logp[target].item() + 0.1 * -logp.mean().item()
            count += 1
    assert count == int(batch.attention_mask[:, 1:].sum())
    assert math.isclose(loss.item(), total / count, rel_tol=1e-5)
    assert connector.itg_loss(vision, batch.input_ids, batch.attention_mask, label_smoothing=0.0) < loss


def test_lm_head_is_tied_as_in_lavis_and_temp_starts_at_007(build, text_side_config):
    connector = build("connector", text_side_config(), encoder_width=64)
    predictions = connector.cls.predictions
    assert predictions.decoder.weight is connector.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    names = {name for name, _ in connector.named_parameters()}
    assert "cls.predictions.decoder.weight" not in names  # one parameter: the optimizer steps it once
    state = connector.state_dict()
    assert {"cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"} <= set(state)
    assert connector.temp.item() == pytest.approx(0.07) and connector.temp.requires_grad
    assert connector.vision_proj.out_features == connector.text_proj.out_features == 16
    assert connector.itm_head.out_features == 2


def test_gradients_of_each_pass_reach_what_lavis_trains(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    connector.zero_grad()
    connector.itg_loss(vision, batch.input_ids, batch.attention_mask).backward()
    layer = connector.qformer.encoder.layer[0]
    for param in (connector.query_tokens, layer.crossattention.attention.key.weight, layer.intermediate_query.dense.weight,
                  layer.intermediate.dense.weight, connector.embeddings.word_embeddings.weight,
                  connector.cls.predictions.transform.dense.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert connector.itm_head.weight.grad is None and connector.text_proj.weight.grad is None
    connector.zero_grad()


def test_itg_mask_by_hand():
    from pgmm_vision.stage1.masks import itg_attention_mask

    allowed = itg_attention_mask(torch.tensor([[1, 1, 0]]), 2, torch.float32)  # 2 queries, 3 tokens (1 pad)
    expected = [[1, 1, 0, 0, 0],   # query 0: the queries only
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],   # token 0: queries + itself
                [1, 1, 1, 1, 0],   # token 1: queries + tokens 0, 1
                [1, 1, 1, 1, 0]]   # the pad: never a key
    assert allowed.shape == (1, 1, 5, 5) and allowed.dtype == torch.bool
    assert allowed[0, 0].int().tolist() == expected
    bias = itg_attention_mask(torch.tensor([[1, 1, 0]]), 2, torch.float32, "eager")
    assert torch.equal(bias[0, 0] == 0, torch.tensor(expected, dtype=torch.bool))
    assert bias.min() == torch.finfo(torch.float32).min


def test_itg_loss_is_the_same_with_eager_attention(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    sdpa = connector.itg_loss(vision, batch.input_ids, batch.attention_mask)
    connector.qformer.set_attn_implementation("eager")
    try:
        assert connector.qformer.config._attn_implementation == "eager"
        eager = connector.itg_loss(vision, batch.input_ids, batch.attention_mask)
    finally:
        connector.qformer.set_attn_implementation("sdpa")
    assert abs(eager.item() - sdpa.item()) < 1e-5
