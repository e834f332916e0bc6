"""Loading LAVIS, EVA, transformers and BERT files: strictness, messages, the load report."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import torch

from pgmm_core.errors import CheckpointError
from pgmm_vision.parity import component_configs

SHAPE_KEY = "Qformer.bert.encoder.layer.0.crossattention.self.key.weight"


def small_parts(meta, checkpoint):
    return component_configs(meta, checkpoint=str(checkpoint))


def test_real_lavis_save_layout_loads_with_weights_only(small_meta, small_io, lavis_state, save_lavis, build):
    """LAVIS' runner saves model, optimizer, config, scaler and epoch together; only tensors and
    plain containers, so torch.load(weights_only=True) reads it."""
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    path = save_lavis(lavis_state, optimizer=optimizer, config={"run": {"lr_sched": "linear_warmup_cosine_lr"}},
                      scaler={"scale": 65536.0}, epoch=9)
    vision_cfg, connector_cfg = small_parts(small_meta, path)
    connector = build("connector", connector_cfg, encoder_width=64).eval()  # dropout off
    tower = build("vision", vision_cfg)
    norm = torch.nn.LayerNorm(64, eps=1e-5)
    norm.load_state_dict(connector.pretrained_vision_norm())
    with torch.no_grad():
        out = connector(norm(tower(small_io["pixel_values"])))
    assert (out - small_io["query_output"]).abs().max() <= 1e-5


def test_pickled_python_objects_are_refused_with_a_way_out(lavis_state, save_lavis, build, small_meta):
    path = save_lavis(lavis_state, args=argparse.Namespace(lr=1e-4))
    _, connector_cfg = small_parts(small_meta, path)
    with pytest.raises(CheckpointError) as err:
        build("connector", connector_cfg, encoder_width=64)
    message = str(err.value)
    assert "argparse.Namespace" in message and "weights_only" in message and "torch.save" in message


def test_unreadable_and_legacy_files(tmp_path, lavis_state):
    from pgmm_vision.checkpoints import read_state_dict

    (tmp_path / "page.pth").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(CheckpointError, match="torch.load does not recognise it"):
        read_state_dict(tmp_path / "page.pth")
    torch.save({"model": lavis_state}, str(tmp_path / "old.pth"), _use_new_zipfile_serialization=False)
    assert read_state_dict(tmp_path / "old.pth").keys() == lavis_state.keys()  # not memory-mappable, still read


def test_wrong_shape_names_the_key_and_both_shapes(lavis_state, save_lavis, build, small_meta):
    lavis_state[SHAPE_KEY] = torch.zeros(48, 32)  # encoder width 32 instead of 64
    _, connector_cfg = small_parts(small_meta, save_lavis(lavis_state))
    with pytest.raises(CheckpointError, match=rf"'{SHAPE_KEY}'.*\(48, 32\).*\(48, 64\)"):
        build("connector", connector_cfg, encoder_width=64)


def test_config_that_disagrees_with_the_file_names_the_key(small_checkpoint, build, small_meta):
    _, connector_cfg = small_parts(small_meta, small_checkpoint)
    with pytest.raises(CheckpointError, match=r"'query_tokens'.*\(1, 8, 48\).*\(1, 4, 48\)"):
        build("connector", {**connector_cfg, "num_query_tokens": 4}, encoder_width=64)
    with pytest.raises(CheckpointError, match=r"does not have: Qformer\.bert\.encoder\.layer\.3\."):
        build("connector", {**connector_cfg, "num_layers": 3}, encoder_width=64)


def test_missing_qformer_key_is_named_as_lavis_spells_it(lavis_state, save_lavis, build, small_meta):
    key = "Qformer.bert.encoder.layer.1.output_query.dense.bias"
    del lavis_state[key]
    _, connector_cfg = small_parts(small_meta, save_lavis(lavis_state))
    with pytest.raises(CheckpointError, match=rf"missing key\(s\) for the Q-Former: {key}$"):
        build("connector", connector_cfg, encoder_width=64)


def test_missing_and_misshapen_vision_keys_are_named(lavis_state, save_lavis, build, small_meta):
    del lavis_state["visual_encoder.blocks.1.attn.q_bias"]
    vision_cfg, _ = small_parts(small_meta, save_lavis(lavis_state))
    with pytest.raises(CheckpointError,
                       match=r"missing key\(s\) for the vision tower: visual_encoder\.blocks\.1\.attn\.q_bias"):
        build("vision", vision_cfg)
    lavis_state["visual_encoder.blocks.1.attn.q_bias"] = torch.zeros(64)
    lavis_state["visual_encoder.blocks.0.mlp.fc1.weight"] = torch.zeros(128, 64)
    vision_cfg, _ = small_parts(small_meta, save_lavis(lavis_state, name="other.pth"))
    with pytest.raises(CheckpointError,
                       match=r"'visual_encoder\.blocks\.0\.mlp\.fc1\.weight'.*\(128, 64\).*\(256, 64\)"):
        build("vision", vision_cfg)


def test_stage1_checkpoint_without_tower_points_to_eva_weights(lavis_state, save_lavis, build, small_meta):
    """The released blip2_pretrained.pth has no visual_encoder.* keys (LAVIS drops frozen params)."""
    released = {k: v for k, v in lavis_state.items() if not k.startswith("visual_encoder.")}
    vision_cfg, connector_cfg = small_parts(small_meta, save_lavis(released))
    with pytest.raises(CheckpointError, match=r"no vision tower weights.*eva_vit_g\.pth"):
        build("vision", vision_cfg)
    build("connector", connector_cfg, encoder_width=64)  # the Q-Former side loads fine


def test_missing_file_says_where_to_get_it(build, small_meta, tmp_path):
    vision_cfg, connector_cfg = small_parts(small_meta, tmp_path / "eva_vit_g.pth")
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*eva_vit_g\.pth\. Download EVA-ViT-g"):
        build("vision", vision_cfg)
    with pytest.raises(CheckpointError, match=r"blip2_pretrained\.pth"):
        build("connector", connector_cfg, encoder_width=64)


def test_flat_fp16_eva_file_with_40th_block_and_head(lavis_state, small_meta, small_io, build, tmp_path, caplog):
    """eva_vit_g.pth: a flat fp16 state dict with one block more than LAVIS uses plus head/norm."""
    flat = {k[len("visual_encoder."):]: v.half() for k, v in lavis_state.items() if k.startswith("visual_encoder.")}
    for key in [k for k in flat if k.startswith("blocks.2.")]:
        flat[key.replace("blocks.2.", "blocks.3.")] = flat[key].clone()
    flat.update({"norm.weight": torch.ones(64).half(), "norm.bias": torch.zeros(64).half(),
                 "head.weight": torch.zeros(10, 64).half(), "head.bias": torch.zeros(10).half()})
    path = tmp_path / "eva_vit_g.pth"
    torch.save(flat, str(path))
    vision_cfg, _ = small_parts(small_meta, path)
    caplog.set_level(logging.INFO, logger="pgmm_vision")  # load reports are INFO log messages
    tower = build("vision", vision_cfg)
    report = "\n".join(caplog.messages)
    assert "(flat EVA state dict)" in report and "stored as float16" in report
    assert "blocks 3-3 beyond depth 3 (13)" in report and "EVA-CLIP head and final norm (LAVIS has none) (4)" in report
    assert next(tower.parameters()).dtype == torch.float32  # fp16 file, fp32 parameters
    assert torch.equal(tower.model.blocks[2].attn.q_bias, flat["blocks.2.attn.q_bias"].float())
    out = tower(small_io["pixel_values"])
    assert (out - small_io["vision_out"]).abs().max() < 0.05  # only fp16 rounding of the weights


def test_load_report_counts_everything(small_checkpoint, small_meta, build, caplog):
    _, connector_cfg = small_parts(small_meta, small_checkpoint)
    caplog.set_level(logging.INFO, logger="pgmm_vision")
    build("connector", connector_cfg, encoder_width=64)
    report = "\n".join(caplog.messages).splitlines()
    assert report[0] == f"pgmm: Q-Former <- {small_checkpoint} (LAVIS BLIP-2)"
    assert "  loaded 87 tensors" in report and "  ln_vision handed to the model" in report
    ignored = next(line for line in report if line.startswith("  not used here:"))
    for group in ("Q-Former text FFN (24)", "Q-Former text embeddings (3)", "Q-Former LM head (Qformer.cls) (7)",
                  "stage-1 heads (vision_proj, text_proj, itm_head, temp) (7)",
                  "vision tower weights (visual_encoder) (43)"):
        assert group in ignored
    assert "  missing (0): none" in report and "  unexpected (0): none" in report
    assert len(report) <= 10


def test_unknown_keys_in_a_lavis_file_are_reported(lavis_state, save_lavis, build, small_meta):
    lavis_state["Qformer.adapter.weight"] = torch.zeros(3)
    _, connector_cfg = small_parts(small_meta, save_lavis(lavis_state))
    with pytest.raises(CheckpointError, match=r"Qformer\.adapter\.weight"):
        build("connector", connector_cfg, encoder_width=64)


def test_bert_init_copies_the_text_ffn_into_the_query_ffn(build, tmp_path, caplog):
    """LAVIS' init_Qformer: BERT weights (old files spell LayerNorm gamma/beta), the query FFN starts as
    a copy of the text FFN, cross-attention stays random."""
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                vocab_size=100, max_position_embeddings=32), add_pooling_layer=True)
    state = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in bert.state_dict().items()}
    state["cls.predictions.bias"] = torch.zeros(100)
    torch.save(state, str(tmp_path / "pytorch_model.bin"))
    cfg = {"type": "qformer", "num_query_tokens": 4, "hidden_size": 48, "num_layers": 2, "num_heads": 4,
           "intermediate_size": 96, "bert_init": str(tmp_path)}
    caplog.set_level(logging.INFO, logger="pgmm_vision")
    connector = build("connector", cfg, encoder_width=24)
    layer = connector.qformer.encoder.layer[1]
    assert torch.equal(layer.intermediate_query.dense.weight, bert.encoder.layer[1].intermediate.dense.weight)
    assert torch.equal(layer.output_query.LayerNorm.weight, bert.encoder.layer[1].output.LayerNorm.weight)
    assert torch.equal(layer.attention.attention.query.weight, bert.encoder.layer[1].attention.self.query.weight)
    assert torch.equal(connector.qformer.layernorm.bias, bert.embeddings.LayerNorm.bias)
    assert "kept random: cross-attention and query_tokens" in "\n".join(caplog.messages)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="without model.safetensors, pytorch_model.bin"):
        build("connector", {**cfg, "bert_init": str(empty)}, encoder_width=24)


def test_transformers_directory_with_shards_loads_only_what_it_needs(lavis_state, small_meta, small_io, build,
                                                                     tmp_path):
    from safetensors.torch import save_file

    from pgmm_vision.keymap import convert_state_dict

    hf = convert_state_dict(lavis_state, "hf")
    shards = {"model-00001-of-00002.safetensors": {k: v.contiguous() for k, v in hf.items()},
              "model-00002-of-00002.safetensors": {"language_model.lm_head.weight": torch.zeros(5, 3)}}
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(tmp_path / name))
        weight_map.update({k: name for k in tensors})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    vision_cfg, connector_cfg = small_parts(small_meta, tmp_path)
    tower = build("vision", vision_cfg)
    connector = build("connector", connector_cfg, encoder_width=64).eval()
    norm = torch.nn.LayerNorm(64, eps=1e-5)
    norm.load_state_dict(connector.pretrained_vision_norm())
    with torch.no_grad():
        out = connector(norm(tower(small_io["pixel_values"])))
    assert (out - small_io["query_output"]).abs().max() <= 1e-5
