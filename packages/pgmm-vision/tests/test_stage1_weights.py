"""The stage-1 text side's weights: every key of a LAVIS file, BERT initialisation, the hand-off of a
stage-1 checkpoint to stage 2, and the export back to LAVIS' layout."""

from __future__ import annotations

import logging

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from pgmm_core.errors import CheckpointError
from pgmm_vision.configs import QFormerConfig
from pgmm_vision.parity import component_configs


def _report(caplog) -> list[str]:
    return "\n".join(caplog.messages).splitlines()


def test_every_key_of_a_lavis_stage1_file_loads(build, text_side_config, small_checkpoint, small_meta, lavis_state,
                                                caplog):
    caplog.set_level(logging.INFO, logger="pgmm_vision")
    connector = build("connector", text_side_config(small_checkpoint), encoder_width=64)
    report = _report(caplog)
    start = report.index(f"pgmm: Q-Former with text side <- {small_checkpoint} (LAVIS BLIP-2)")
    mine = report[start:]
    # 173 keys: 43 of the tower (its own load), 2 ln_vision (handed to the model), position_ids (checked),
    # the other 127 (both names of the 2 tied pairs included) into the connector
    assert "  loaded 127 tensors" in mine and "  ln_vision handed to the model" in mine
    assert "  Qformer.bert.embeddings.position_ids checked (positions 0..31; a buffer, not a weight)" in mine
    assert "  not used here: vision tower weights (visual_encoder) (43)" in mine
    assert "  missing (0): none" in mine and "  unexpected (0): none" in mine
    tower = build("vision", component_configs(small_meta, checkpoint=str(small_checkpoint))[0])
    assert len(tower.state_dict()) == 43  # the 43 visual_encoder keys load there: nothing is left unused
    state = connector.state_dict()
    pairs = {"embeddings.word_embeddings.weight": "Qformer.bert.embeddings.word_embeddings.weight",
             "embeddings.position_embeddings.weight": "Qformer.bert.embeddings.position_embeddings.weight",
             "qformer.encoder.layer.3.output.LayerNorm.bias": "Qformer.bert.encoder.layer.3.output.LayerNorm.bias",
             "qformer.encoder.layer.1.intermediate.dense.weight":
                 "Qformer.bert.encoder.layer.1.intermediate.dense.weight",
             "cls.predictions.transform.dense.weight": "Qformer.cls.predictions.transform.dense.weight",
             "cls.predictions.decoder.weight": "Qformer.cls.predictions.decoder.weight",
             "cls.predictions.bias": "Qformer.cls.predictions.bias",
             "vision_proj.weight": "vision_proj.weight", "text_proj.bias": "text_proj.bias",
             "itm_head.weight": "itm_head.weight", "temp": "temp", "query_tokens": "query_tokens"}
    for mine_key, lavis_key in pairs.items():
        assert torch.equal(state[mine_key], lavis_state[lavis_key]), mine_key
    assert connector.pretrained_vision_norm()["weight"].equal(lavis_state["ln_vision.weight"])


def test_untied_copies_in_a_file_are_refused(build, text_side_config, lavis_state, save_lavis):
    lavis_state["Qformer.cls.predictions.decoder.weight"] = lavis_state["Qformer.cls.predictions.decoder.weight"] + 1
    with pytest.raises(CheckpointError, match=r"'Qformer\.bert\.embeddings\.word_embeddings\.weight' and "
                                              r"'Qformer\.cls\.predictions\.decoder\.weight' differ"):
        build("connector", text_side_config(save_lavis(lavis_state)), encoder_width=64)


def test_without_text_side_the_same_file_reports_the_text_side_as_unused(build, small_meta, small_checkpoint,
                                                                        caplog):
    caplog.set_level(logging.INFO, logger="pgmm_vision")
    connector = build("connector", component_configs(small_meta, checkpoint=str(small_checkpoint))[1],
                      encoder_width=64)
    assert not connector.text_side and not hasattr(connector, "cls")
    assert not any(".intermediate." in k for k in connector.state_dict())
    assert "Q-Former text FFN (24)" in "\n".join(caplog.messages)


def test_bert_init_seeds_the_text_side(build, text_side_config, small_bert_dir, caplog):
    bert = load_file(str(small_bert_dir / "model.safetensors"))
    caplog.set_level(logging.INFO, logger="pgmm_vision")
    torch.manual_seed(0)
    connector = build("connector", text_side_config(), encoder_width=64)
    report = "\n".join(caplog.messages)
    assert "vocabulary: 99 BERT tokens + 1 added ([DEC])" in report
    assert "kept random: cross-attention, query_tokens, vision_proj, text_proj, itm_head and temp" in report
    assert "missing (0): none" in report
    words = connector.embeddings.word_embeddings.weight
    assert words.shape == (100, 48) and torch.equal(words[:99], bert["bert.embeddings.word_embeddings.weight"])
    assert 0 < words[99].std() < 0.05  # [DEC]: a new row, N(0, 0.02) as resize_token_embeddings gives LAVIS
    assert torch.equal(connector.cls.predictions.bias[:99], bert["cls.predictions.bias"])
    assert connector.cls.predictions.bias[99] == 0
    assert connector.cls.predictions.decoder.weight is words
    assert torch.equal(connector.embeddings.position_embeddings.weight,
                       bert["bert.embeddings.position_embeddings.weight"])
    assert torch.equal(connector.cls.predictions.transform.dense.weight,
                       bert["cls.predictions.transform.dense.weight"])
    layer, bert_ffn = connector.qformer.encoder.layer[2], bert["bert.encoder.layer.2.intermediate.dense.weight"]
    assert torch.equal(layer.intermediate.dense.weight, bert_ffn)  # text FFN
    assert torch.equal(layer.intermediate_query.dense.weight, bert_ffn)  # query FFN: a copy of it
    assert torch.equal(layer.output.LayerNorm.weight, bert["bert.encoder.layer.2.output.LayerNorm.weight"])
    assert connector.temp.item() == pytest.approx(0.07)


def test_bert_without_its_lm_head_is_refused_for_the_text_side(build, text_side_config, small_bert_dir, tmp_path):
    import shutil

    from safetensors.torch import save_file

    bert = {k: v for k, v in load_file(str(small_bert_dir / "model.safetensors")).items() if k.startswith("bert.")}
    save_file(bert, str(tmp_path / "model.safetensors"))
    shutil.copy(small_bert_dir / "vocab.txt", tmp_path / "vocab.txt")
    with pytest.raises(CheckpointError, match=r"holds no BERT LM head \(cls\.predictions\.\*\)"):
        build("connector", text_side_config(bert_init=str(tmp_path)), encoder_width=64)


def test_text_side_without_a_tokenizer_is_refused_when_validated(tmp_path):
    fields = {"text_side": True}
    for extra in ({}, {"checkpoint": str(tmp_path / "blip2_pretrained.pth")}):
        with pytest.raises(ValidationError) as info:
            QFormerConfig(**fields, **extra)
        message = str(info.value)
        assert "huggingface.co/google-bert/bert-base-uncased" in message and "vocab.txt" in message
        assert "model.connector.bert_init" in message
    # a BERT directory without its files: validate lists each
    bert = tmp_path / "bert"
    bert.mkdir()
    needs = QFormerConfig(text_side=True, bert_init=str(bert)).required_paths()
    missing = sorted(str(need.path.relative_to(bert)) for need in needs if not need.exists())
    assert missing == ["model.safetensors", "vocab.txt"]
    assert all(need.field == "bert_init" for need in needs)
    assert not [need for need in QFormerConfig(bert_init=str(bert)).required_paths() if need.path.name == "vocab.txt"]


def test_validate_names_the_field_and_every_missing_file(tmp_path):
    from pgmm_core.config.files import missing_paths
    from pgmm_core.config.loading import validate_config
    from pgmm_core.errors import ConfigError
    from pgmm_core.plugins import PluginHost
    from pgmm_core.testing import tiny_config

    config = tiny_config(tmp_path / "run")
    connector = {"type": "qformer", "num_query_tokens": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                 "intermediate_size": 64, "text_side": True}
    config["model"]["connector"] = connector
    with pytest.raises(ConfigError, match=r"model\.connector.*download bert-base-uncased"):
        validate_config(config, PluginHost(environ={}))
    bert = tmp_path / "bert"
    bert.mkdir()
    config["model"]["connector"] = {**connector, "bert_init": str(bert)}
    problems = missing_paths(validate_config(config, PluginHost(environ={})))
    assert problems == [
        f"model.connector.bert_init: file not found: {bert / 'model.safetensors'} (BERT's weights "
        "(https://huggingface.co/google-bert/bert-base-uncased))",
        f"model.connector.bert_init: file not found: {bert / 'vocab.txt'} (BERT's tokenizer "
        "(https://huggingface.co/google-bert/bert-base-uncased))"]


def test_missing_vocab_is_one_clear_error_at_build(build, text_side_config, tmp_path):
    with pytest.raises(CheckpointError, match=r"has no vocab\.txt.*google-bert/bert-base-uncased.*bert_init"):
        build("connector", text_side_config(bert_init=str(tmp_path)), encoder_width=64)


# --- hand-off to stage 2 and export ------------------------------------------------------------------------


def _stage1_checkpoint(connector, root):
    """A stage-1 run's checkpoint as the trainer writes it: trainable parameters (one name per tied
    tensor, as ``named_parameters``) under ``connector.``, plus ``ln_vision``."""
    from pgmm_core.train.checkpoint import save_checkpoint

    weights = {f"connector.{name}": p.detach() for name, p in connector.named_parameters()}
    weights.update({"ln_vision.weight": torch.full((64,), 1.5), "ln_vision.bias": torch.zeros(64)})
    return save_checkpoint(root, 10, weights, {}, {})


@pytest.fixture(scope="module")
def stage1(build, text_side_config, small_checkpoint, tmp_path_factory):
    connector = build("connector", text_side_config(small_checkpoint), encoder_width=64)
    with torch.no_grad():  # "trained": every tensor differs from the file's
        for param in connector.parameters():
            param.add_(0.01)
    return connector, _stage1_checkpoint(connector, tmp_path_factory.mktemp("run") / "checkpoints")


def test_stage1_checkpoint_loads_as_a_stage2_connector(build, small_meta, stage1, caplog):
    trained, directory = stage1
    caplog.set_level(logging.INFO, logger="pgmm_vision")
    _, cfg = component_configs(small_meta, checkpoint=str(directory))
    connector = build("connector", cfg, encoder_width=64)
    report = "\n".join(caplog.messages)
    assert "(pgmm)" in report and "missing (0): none" in report and "unexpected (0): none" in report
    for group in ("Q-Former text FFN (24)", "Q-Former text embeddings (2)", "Q-Former LM head (Qformer.cls) (5)",
                  "stage-1 heads (vision_proj, text_proj, itm_head, temp) (7)"):
        assert group in report
    theirs = trained.state_dict()
    for key, value in connector.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    assert torch.equal(connector.pretrained_vision_norm()["weight"], torch.full((64,), 1.5))
    # the file path itself works as well as its directory
    build("connector", {**cfg, "checkpoint": str(directory / "model.safetensors")}, encoder_width=64)


def test_stage1_checkpoint_continues_with_its_text_side(build, text_side_config, stage1):
    trained, directory = stage1
    connector = build("connector", text_side_config(directory), encoder_width=64)
    theirs = trained.state_dict()
    for key, value in connector.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    assert connector.cls.predictions.decoder.weight is connector.embeddings.word_embeddings.weight


def test_a_stage1_qformer_of_another_encoder_width_names_both_widths(build, small_meta, stage1):
    _, directory = stage1
    _, cfg = component_configs(small_meta, checkpoint=str(directory))
    with pytest.raises(CheckpointError, match=r"reads 64-wide vision features.*tower gives 1408-wide"):
        build("connector", cfg, encoder_width=1408)


def test_export_to_lavis_round_trips(build, text_side_config, stage1, lavis_state, tmp_path):
    from pgmm_vision.convert import convert

    trained, directory = stage1
    report = convert(directory, tmp_path / "blip2_stage1.pth", to="lavis")
    assert report.source_format == "pgmm" and report.target_format == "lavis"
    exported = torch.load(str(tmp_path / "blip2_stage1.pth"), weights_only=True)["model"]
    # LAVIS' key layout exactly (the tower is not in a stage-1 checkpoint: it was frozen)
    assert set(exported) == {k for k in lavis_state if not k.startswith("visual_encoder.")}
    for key in exported:
        assert exported[key].shape == lavis_state[key].shape, key
    assert torch.equal(exported["Qformer.cls.predictions.decoder.weight"],
                       exported["Qformer.bert.embeddings.word_embeddings.weight"])
    assert torch.equal(exported["Qformer.bert.embeddings.position_ids"], lavis_state["Qformer.bert.embeddings.position_ids"])
    # pgmm -> LAVIS -> pgmm: identical tensors
    back = build("connector", text_side_config(tmp_path / "blip2_stage1.pth"), encoder_width=64)
    theirs = trained.state_dict()
    for key, value in back.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_lavis_file_converts_with_its_text_side_on_request(small_checkpoint, lavis_state, tmp_path):
    from pgmm_vision.convert import convert

    stage2 = convert(small_checkpoint, tmp_path / "stage2.safetensors", to="pgmm")
    assert "Q-Former LM head (Qformer.cls)" in stage2.ignored
    full = convert(small_checkpoint, tmp_path / "pgmm.safetensors", to="pgmm", text_side=True)
    assert full.ignored == {}
    pgmm = load_file(str(tmp_path / "pgmm.safetensors"))
    assert "connector.cls.predictions.transform.dense.weight" in pgmm and "connector.temp" in pgmm
    convert(tmp_path / "pgmm.safetensors", tmp_path / "back.pth", to="lavis")
    back = torch.load(str(tmp_path / "back.pth"), weights_only=True)["model"]
    assert set(back) == set(lavis_state)
    for key, value in lavis_state.items():
        assert torch.equal(back[key], value), key
