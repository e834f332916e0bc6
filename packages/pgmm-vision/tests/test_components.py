"""pgmm-vision components built through the plugin host: towers, Q-Former, projectors."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from pgmm_core.config.loading import validate_config
from pgmm_core.errors import CheckpointError, ConfigError, PgmmError
from pgmm_core.model import build_model
from pgmm_core.testing import tiny_config

TINY_EVA = {"type": "eva_vit_g", "image_size": 28, "patch_size": 14, "embed_dim": 32, "depth": 2, "num_heads": 2,
            "mlp_dim": 48}
TINY_QFORMER = {"type": "qformer", "num_query_tokens": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                "intermediate_size": 64}


def test_plugins_json_lists_the_vision_components():
    out = subprocess.run([sys.executable, "-m", "pgmm_core", "plugins", "--json"], capture_output=True, text=True,
                         check=True).stdout
    vision = next(p for p in json.loads(out) if p["module"] == "pgmm_vision.plugin")
    assert vision["status"] == "loaded"
    assert {"vision:eva_vit_g", "vision:timm", "connector:qformer", "projector:linear", "projector:mlp2x_gelu",
            "projector:identity"} <= set(vision["components"])


def test_eva_defaults_are_lavis_eva_vit_g(host):
    config = host.registry("vision").get("eva_vit_g").config_model()
    sizes = (config.depth, config.embed_dim, config.num_heads, config.mlp_dim, config.patch_size)
    assert sizes == (39, 1408, 16, 6144, 14)
    assert config.freeze and config.precision is None and config.image_size == 224


def test_eva_tower_outputs_all_tokens_and_lavis_keys(build):
    tower = build("vision", TINY_EVA)
    out = tower(torch.randn(2, 3, 28, 28))
    assert out.shape == (2, 5, 32) and out.dtype == torch.float32
    keys = set(tower.model.state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.q_bias", "blocks.1.attn.v_bias",
            "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc1.weight"} <= keys
    assert "blocks.1.attn.qkv.bias" not in keys and not any(k.startswith(("norm.", "head.", "fc_norm.")) for k in keys)
    assert tower.model.blocks[0].mlp.fc1.out_features == 48
    assert tower.model.blocks[0].norm1.eps == 1e-6


def test_eva_keeps_lavis_preprocessing(host, build):
    from pgmm_core.preprocessing import ImageSpec

    # LAVIS BlipImageBaseProcessor's defaults (OpenAI CLIP statistics), blip_image_eval's bicubic Resize
    lavis = ImageSpec(size=28, mean=(0.48145466, 0.4578275, 0.40821073),
                      std=(0.26862954, 0.26130258, 0.27577711), interpolation="bicubic", crop_pct=1.0)
    config = host.registry("vision").get("eva_vit_g").config_model.model_validate(TINY_EVA)
    assert config.image_spec() == lavis
    tower = build("vision", TINY_EVA)
    assert tower.image_spec == lavis and tower.image_size == 28


def built_alone(host, **model):
    """The image side built by build_model (which owns freezing) from the tiny config with ``model`` slots."""
    data = tiny_config("unused")
    data["model"].update(model)
    return build_model(validate_config(data, host), parts={"vision", "connector"})


def test_frozen_tower_stays_in_eval_and_out_of_autograd(host):
    tower = built_alone(host, vision={**TINY_EVA, "drop_path_rate": 0.5}).vision
    assert tower.frozen
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train()
    assert not any(m.training for m in tower.modules())
    pixels = torch.randn(2, 3, 28, 28, requires_grad=True)
    out = tower(pixels)
    assert out.grad_fn is None
    assert torch.equal(out, tower(pixels))  # drop-path (0.5) stays off


def test_model_train_cannot_unfreeze_the_tower(host):
    data = tiny_config("unused")
    data["model"]["vision"] = {**TINY_EVA, "image_size": 32, "patch_size": 8}
    model = build_model(validate_config(data, host))
    model.train()
    assert not any(m.training for m in model.vision.modules())
    assert model.connector.training and model.ln_vision.training and model.projector.training
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"ln_vision", "connector", "projector"}


def saved_tensor_count(module, *inputs):
    """How many tensors autograd keeps for backward: what gradient checkpointing reduces."""
    count = 0

    def pack(tensor):
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = module(*inputs)
    return out, count


def assert_same_gradients(plain, checkpointed, *inputs):
    out_plain, saved_plain = saved_tensor_count(plain, *inputs)
    out_ckpt, saved_ckpt = saved_tensor_count(checkpointed, *inputs)
    assert saved_ckpt < saved_plain / 2
    out_plain.square().sum().backward()
    out_ckpt.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert a.grad is not None and torch.allclose(a.grad, b.grad, atol=1e-5), name


def test_trainable_tower_gets_gradients_and_checkpointing_keeps_them(build):
    plain = build("vision", {**TINY_EVA, "freeze": False})
    checkpointed = build("vision", {**TINY_EVA, "freeze": False, "grad_checkpointing": True})
    checkpointed.load_state_dict(plain.state_dict())
    assert plain.training and checkpointed.training
    assert_same_gradients(plain, checkpointed, torch.randn(2, 3, 28, 28))


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_frozen_tower(build, precision, dtype):
    reference = build("vision", TINY_EVA)
    tower = build("vision", {**TINY_EVA, "precision": precision})
    tower.model.load_state_dict({k: v.to(dtype) for k, v in reference.model.state_dict().items()})
    assert all(p.dtype == dtype for p in tower.parameters()) and not tower.follows_precision_policy
    pixels = torch.randn(2, 3, 28, 28)
    out = tower(pixels)
    assert out.dtype == torch.float32
    expected = reference(pixels)
    assert (out - expected).abs().max() < 0.05 * expected.abs().max()


def test_half_precision_needs_a_frozen_tower(host):
    with pytest.raises(ValidationError, match="trainable tower must keep precision fp32"):
        host.registry("vision").get("eva_vit_g").config_model(**{**TINY_EVA, "freeze": False, "precision": "bf16"})


def test_untrained_tower_gets_sincos_positions(build):
    from timm.layers import build_sincos2d_pos_embed

    tower = build("vision", TINY_EVA)
    assert torch.allclose(tower.model.pos_embed[0, 1:], build_sincos2d_pos_embed([2, 2], dim=32))


# --- Q-Former ---------------------------------------------------------------------------------------------


def test_qformer_queries_and_cross_attention_layers(build):
    connector = build("connector", {**TINY_QFORMER, "num_layers": 4}, encoder_width=24)
    out = connector(torch.randn(3, 9, 24))
    assert out.shape == (3, 4, 32) and connector.out_features == 32
    assert connector.query_tokens.shape == (1, 4, 32)
    assert [layer.has_cross_attention for layer in connector.qformer.encoder.layer] == [True, False, True, False]
    assert connector.qformer.encoder.layer[0].crossattention.attention.key.in_features == 24
    assert not hasattr(connector.qformer.encoder.layer[0], "intermediate")  # query path only


def test_qformer_grad_checkpointing_gives_the_same_gradients(build):
    no_dropout = {**TINY_QFORMER, "dropout": 0.0, "attention_dropout": 0.0}  # train mode, deterministic
    plain = build("connector", no_dropout, encoder_width=24)
    checkpointed = build("connector", {**no_dropout, "grad_checkpointing": True}, encoder_width=24)
    checkpointed.load_state_dict(plain.state_dict())
    assert plain.training and checkpointed.training
    assert_same_gradients(plain, checkpointed, torch.randn(2, 9, 24))


def test_frozen_qformer(build, host):
    assert build("connector", {**TINY_QFORMER, "freeze": True}, encoder_width=24).frozen
    connector = built_alone(host, vision=TINY_EVA, connector={**TINY_QFORMER, "freeze": True}).connector
    connector.train()
    assert not connector.training and not any(p.requires_grad for p in connector.parameters())


# --- timm towers ---------------------------------------------------------------------------------------------


def test_timm_vit_tower_discovers_its_width(build):
    tower = build("vision", {"type": "timm", "model_name": "test_vit"})
    assert tower.out_features == 64 and tower.image_size == 160
    assert tower(torch.randn(1, 3, 160, 160)).shape == (1, 101, 64)


def test_timm_tower_takes_timms_data_config_and_the_config_tells_it_without_a_model(host, build, monkeypatch):
    import timm
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config

    from pgmm_core.preprocessing import ImageSpec

    fields = {"type": "timm", "model_name": "test_byobnet", "image_size": 64}  # ImageNet-trained defaults
    tower = build("vision", fields)
    timms = resolve_model_data_config(tower.model, args={"input_size": (3, 64, 64)})
    assert tower.image_spec == ImageSpec(size=64, mean=timms["mean"], std=timms["std"],
                                         interpolation=timms["interpolation"], crop_pct=timms["crop_pct"])
    assert tower.image_spec.mean == tuple(IMAGENET_DEFAULT_MEAN) and tower.image_spec.std == tuple(IMAGENET_DEFAULT_STD)
    config = host.registry("vision").get("timm").config_model.model_validate(fields)

    def no_model(*args, **kwargs):
        raise AssertionError("resolving the image spec built a model")

    monkeypatch.setattr(timm, "create_model", no_model)
    assert config.image_spec() == tower.image_spec
    default_size = host.registry("vision").get("timm").config_model.model_validate({**fields, "image_size": None})
    assert default_size.image_spec().size == 160  # the pretrained config's input size


def test_timm_preprocessing_fields_beat_the_models_config(host, build):
    from pgmm_core.preprocessing import ImageSpec

    fields = {"type": "timm", "model_name": "test_byobnet", "image_size": 64, "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "crop_pct": 1.0}
    expected = ImageSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")
    config = host.registry("vision").get("timm").config_model.model_validate(fields)
    assert config.image_spec() == expected
    assert build("vision", fields).image_spec == expected
    model = host.registry("vision").get("timm").config_model
    with pytest.raises(ValidationError, match="image_std must be positive"):
        model.model_validate({**fields, "image_std": [0.5, 0.0, 0.5]})
    with pytest.raises(ValidationError, match="interpolation"):
        model.model_validate({**fields, "interpolation": "random"})


def test_timm_cnn_feature_map_becomes_tokens(build):
    tower = build("vision", {"type": "timm", "model_name": "test_resnet", "image_size": 96})
    assert tower(torch.randn(2, 3, 96, 96)).shape == (2, 9, tower.out_features)


def test_timm_weights_from_a_local_file(build, tmp_path, caplog):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_vit", pretrained=False, num_classes=10)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    caplog.set_level(logging.INFO, logger="pgmm_vision")  # the load report is an INFO log message
    tower = build("vision", {"type": "timm", "model_name": "test_vit",
                             "checkpoint": str(tmp_path / "model.safetensors")})
    assert torch.equal(tower.model.pos_embed, source.pos_embed)
    assert "classifier head (2)" in "\n".join(caplog.messages)
    broken = {k: v for k, v in source.state_dict().items() if k != "blocks.0.attn.qkv.weight"}
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing key\(s\).*blocks\.0\.attn\.qkv\.weight"):
        build("vision", {"type": "timm", "model_name": "test_vit", "checkpoint": str(tmp_path / "broken.safetensors")})


def test_timm_refuses_hub_downloads(host, build):
    model = host.registry("vision").get("timm").config_model
    with pytest.raises(ValidationError, match="download.*never downloads weights"):
        model(model_name="hf-hub:timm/vit_base_patch16_224.augreg_in21k")
    with pytest.raises(ValidationError, match="may not set pretrained"):
        model(model_name="vit_base_patch16_224", model_kwargs={"pretrained": True})
    with pytest.raises(ConfigError, match="no model 'vit_base_patch16_22'.*vit_base_patch16_224"):
        build("vision", {"type": "timm", "model_name": "vit_base_patch16_22"})
    with pytest.raises(ConfigError, match="hf-hub:timm/some_model"):
        build("vision", {"type": "timm", "model_name": "timm/some_model"})


# --- projectors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,linears", [("mlp2x_gelu", 2), ("mlp3x_gelu", 3), ("linear", 1)])
def test_projectors(build, name, linears):
    projector = build("projector", {"type": name}, in_features=8, out_features=16)
    assert projector(torch.randn(2, 4, 8)).shape == (2, 4, 16)
    found = [m for m in projector.modules() if isinstance(m, torch.nn.Linear)]
    assert len(found) == linears and found[0].in_features == 8
    assert all(isinstance(m, torch.nn.GELU) and m.approximate == "none" for m in projector.modules()
               if not isinstance(m, (torch.nn.Linear, torch.nn.Sequential)))


def test_mlp2x_gelu_at_llm_width(build):
    projector = build("projector", {"type": "mlp2x_gelu"}, in_features=768, out_features=4096)
    assert sum(p.numel() for p in projector.parameters()) == 768 * 4096 + 4096 + 4096 * 4096 + 4096


def test_identity_projector_refuses_width_change(build):
    assert isinstance(build("projector", {"type": "identity"}, in_features=8, out_features=8), torch.nn.Identity)
    with pytest.raises(PgmmError, match="identity"):
        build("projector", {"type": "identity"}, in_features=8, out_features=16)


def test_freeze_survives_deepcopy(host):
    tower = copy.deepcopy(built_alone(host, vision=TINY_EVA).vision)
    tower.train()
    assert not tower.training
