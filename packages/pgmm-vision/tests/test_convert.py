"""The converter: LAVIS keys -> pgmm -> transformers BLIP-2 keys, and back, checked numerically."""

from __future__ import annotations

import re

import pytest
import torch

from pgmm_vision.convert import convert_file
from pgmm_vision.keymap import convert_state_dict, detect_format, to_pgmm


def transformers_blip2_parts(meta):
    """transformers' own BLIP-2 vision model and Q-Former at the small case's sizes."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

    vit, q = meta["vit"], meta["qformer"]
    vision = Blip2VisionModel(Blip2VisionConfig(
        hidden_size=vit["embed_dim"], intermediate_size=int(vit["embed_dim"] * vit["mlp_ratio"]),
        num_hidden_layers=vit["depth"], num_attention_heads=vit["num_heads"], image_size=vit["img_size"],
        patch_size=vit["patch_size"], qkv_bias=True, layer_norm_eps=1e-6, hidden_act="gelu"))
    qformer = Blip2QFormerModel(Blip2QFormerConfig(
        hidden_size=q["hidden_size"], num_hidden_layers=q["num_layers"], num_attention_heads=q["num_heads"],
        intermediate_size=q["intermediate_size"], encoder_hidden_size=vit["embed_dim"],
        cross_attention_frequency=meta["cross_attention_freq"], use_qformer_text_input=False))
    return vision.eval(), qformer.eval()


def split(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_lavis_to_pgmm_to_transformers_runs_in_transformers_blip2(lavis_state, small_meta, small_io):
    """The converted keys load strictly into transformers' Blip2VisionModel and Blip2QFormerModel
    (the attributes vision_model / qformer / query_tokens of Blip2Model), which then reproduce LAVIS."""
    pgmm = to_pgmm(lavis_state)
    assert detect_format(lavis_state) == "lavis" and detect_format(pgmm.tensors) == "pgmm"
    hf = convert_state_dict(pgmm.tensors, "hf")
    assert detect_format(hf) == "hf"
    vision, qformer = transformers_blip2_parts(small_meta)
    vision.load_state_dict(split(hf, "vision_model."), strict=True)
    qformer.load_state_dict(split(hf, "qformer."), strict=True)
    assert set(hf) == {f"vision_model.{k}" for k in vision.state_dict()} | {
        f"qformer.{k}" for k in qformer.state_dict()} | {"query_tokens"}
    bias = hf["vision_model.encoder.layers.0.self_attn.qkv.bias"]
    assert torch.equal(bias[64:128], torch.zeros(64))  # EVA has no key bias
    vision.post_layernorm.eps = 1e-5  # transformers uses the tower's 1e-6 for it; LAVIS' ln_vision has 1e-5
    with torch.no_grad():
        out = vision(small_io["pixel_values"], output_hidden_states=True)
        queries = hf["query_tokens"].expand(2, -1, -1)
        query_output = qformer(query_embeds=queries, encoder_hidden_states=out.last_hidden_state).last_hidden_state
    assert (out.hidden_states[-1] - small_io["vision_out"]).abs().max() <= 1e-5
    assert (out.last_hidden_state - small_io["vision_embeds"]).abs().max() <= 1e-5
    assert (query_output - small_io["query_output"]).abs().max() <= 1e-5


def test_round_trip_returns_every_stage2_tensor_unchanged(lavis_state):
    hf = convert_state_dict(lavis_state, "hf")
    back = convert_state_dict(hf, "lavis")
    text_ffn = re.compile(r"^Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.")
    stage2 = {k for k in lavis_state if k.startswith(("visual_encoder.", "ln_vision.", "Qformer.bert.encoder",
                                                      "Qformer.bert.embeddings.LayerNorm", "query_tokens"))
              and not text_ffn.match(k)}
    assert set(back) == stage2
    for key in stage2:
        assert torch.equal(back[key], lavis_state[key]), key
    assert set(convert_state_dict(hf, "pgmm")) == set(to_pgmm(lavis_state).tensors)


def test_convert_file_writes_loadable_files(small_checkpoint, small_meta, small_io, build, tmp_path):
    hf_path = tmp_path / "blip2_vision.safetensors"
    summary = convert_file(small_checkpoint, hf_path, "hf")
    assert summary.source_format == "lavis"
    assert summary.tensors == 43 - 3 + 2 + 87  # tower (q/v biases fused per block), ln_vision, Q-Former
    lavis_path = tmp_path / "back.pth"
    convert_file(hf_path, lavis_path, "lavis")
    saved = torch.load(str(lavis_path), weights_only=True)
    assert set(saved) == {"model"} and "Qformer.bert.embeddings.LayerNorm.weight" in saved["model"]
    from pgmm_vision.parity import component_configs

    vision_cfg, connector_cfg = component_configs(small_meta, checkpoint=str(hf_path))
    tower = build("vision", vision_cfg)
    assert torch.allclose(tower(small_io["pixel_values"]), small_io["vision_out"], atol=1e-5)
    with pytest.raises(Exception, match="write .safetensors"):
        convert_file(small_checkpoint, tmp_path / "out.txt", "hf")
