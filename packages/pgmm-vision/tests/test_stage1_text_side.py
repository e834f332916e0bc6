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


def _decoder_ids(connector, batch):
    ids = batch.input_ids.clone()
    ids[:, 0] = connector.tokenizer.convert_tokens_to_ids("[DEC]")
    return ids


def _joint_pass(connector, vision, decoder_ids, mask):
    """Reference: queries and text in one pass of transformers' Q-Former with the UniLM mask (queries
    see queries, text sees queries and its past): (query hidden states, text LM logits)."""
    from pgmm_vision.stage1.masks import itg_attention_mask

    queries = connector.query_tokens.expand(vision.shape[0], -1, -1)
    embeds = connector.embeddings(input_ids=decoder_ids, query_embeds=queries)
    joint = itg_attention_mask(mask, 8, torch.float32, connector.qformer.config._attn_implementation)
    out = connector.qformer(query_embeds=embeds, query_length=8, attention_mask=joint, encoder_hidden_states=vision,
                            encoder_attention_mask=torch.ones(vision.shape[:2], dtype=torch.long)).last_hidden_state
    return out[:, :8], connector.cls(out[:, 8:])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_itg_reuses_the_query_pass_and_equals_one_joint_pass(connector, vision, implementation):
    batch = connector.tokenize(CAPTIONS)
    ids = _decoder_ids(connector, batch)
    connector.qformer.set_attn_implementation(implementation)
    try:
        assert connector.qformer.config._attn_implementation == implementation
        query_states, reference = _joint_pass(connector, vision, ids, batch.attention_mask)
        query = connector.query_pass(vision)
        logits = connector.itg_logits(query, ids, batch.attention_mask)
    finally:
        connector.qformer.set_attn_implementation("sdpa")
    assert torch.allclose(query_states, query.query_output, atol=1e-5)  # the queries never see the text
    assert logits.shape == (4, 12, 100)
    assert torch.allclose(logits, reference, atol=1e-5)
    assert torch.allclose(connector.itg_logits(vision, ids, batch.attention_mask), logits, atol=1e-6)


def test_itg_gradients_reach_the_query_pass_as_in_one_joint_pass(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    ids = _decoder_ids(connector, batch)
    labels = ids.masked_fill(ids == 0, -100)[:, 1:].reshape(-1)
    layer = connector.qformer.encoder.layer[2]
    params = [connector.query_tokens, layer.crossattention.attention.value.weight, layer.intermediate_query.dense.weight,
              layer.attention.attention.key.weight, layer.intermediate.dense.weight]

    def grads(logits):
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 100), labels, label_smoothing=0.1)
        return torch.autograd.grad(loss, params)

    reused = grads(connector.itg_logits(connector.query_pass(vision), ids, batch.attention_mask))
    joint = grads(_joint_pass(connector, vision, ids, batch.attention_mask)[1])
    for mine, theirs in zip(reused, joint, strict=True):
        assert theirs.abs().max() > 0 and torch.allclose(mine, theirs, atol=1e-6, rtol=1e-4)


def test_itg_text_sees_only_its_past_and_the_image(connector, vision):
    batch = connector.tokenize(CAPTIONS)
    logits = connector.itg_logits(vision, _decoder_ids(connector, batch), batch.attention_mask)
    # causal: changing the text from position 5 on leaves positions 0..4 unchanged, later ones not
    later = batch.input_ids.clone()
    later[:, 5:] = torch.where(batch.attention_mask[:, 5:] == 1, torch.full_like(later[:, 5:], 20), later[:, 5:])
    changed = connector.itg_logits(vision, _decoder_ids(connector, type(batch)(later, batch.attention_mask)),
                                   batch.attention_mask)
    assert torch.allclose(changed[:, :5], logits[:, :5], atol=1e-5)
    assert (changed[0, 5:7] - logits[0, 5:7]).abs().max() > 1e-4
    # the first token sees nothing of the text but itself: only the image (through the queries) moves it
    other = connector.itg_logits(vision.flip(0), _decoder_ids(connector, batch), batch.attention_mask)
    assert (other[:, 0] - logits[:, 0]).abs().max() > 1e-5


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


def test_image_side_model_with_a_text_side_trains_and_saves(bert_writer, tmp_path):
    """build_model(parts={vision, connector}) as the stage-1 objective asks: the connector's passes
    run on encode_image's vision_embeds and the trainable weights save as one safetensors file (one
    name per tied tensor) that the same config loads back."""
    from safetensors.torch import save_file

    from pgmm_core.config.loading import validate_config
    from pgmm_core.model import build_model
    from pgmm_core.plugins import PluginHost
    from pgmm_core.testing import tiny_config

    bert = bert_writer(tmp_path / "bert", hidden=32, layers=2, heads=2, ffn=64, vocab_size=99, max_positions=16)
    config = tiny_config(tmp_path / "run")
    config["model"]["connector"].update(text_side=True, bert_init=str(bert), max_text_len=8, max_position_embeddings=16,
                                        embed_dim=8)
    validated = validate_config(config, PluginHost(environ={}))
    model = build_model(validated, parts={"vision", "connector"})
    assert model.llm is None and model.projector is None
    pixels = torch.randn(2, 3, 32, 32)
    vision_embeds = model.encode_image(pixels).vision_embeds
    batch = model.connector.tokenize(["a dog on the grass", "two cats"])
    loss = model.connector.itg_loss(vision_embeds, batch.input_ids, batch.attention_mask)
    loss.backward()
    assert model.ln_vision.weight.grad is not None  # ITG trains ln_vision through the queries, as in LAVIS
    weights = model.trainable_state_dict()
    assert "connector.temp" in weights and "connector.embeddings.word_embeddings.weight" in weights
    assert "connector.cls.predictions.decoder.weight" not in weights  # the tied alias is not repeated
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    config["model"]["connector"]["checkpoint"] = str(tmp_path / "model.safetensors")
    again = build_model(validate_config(config, PluginHost(environ={})), parts={"vision", "connector"})
    for key, value in weights.items():
        assert torch.equal(again.state_dict()[key], value), key
