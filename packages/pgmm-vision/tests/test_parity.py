"""pgmm's EVA tower + ln_vision + Q-Former against LAVIS' own code (goldens in tests/data)."""

from __future__ import annotations

import pytest
import torch

from pgmm_core.config.loading import validate_config
from pgmm_core.model import build_model
from pgmm_core.testing import tiny_config
from pgmm_vision import parity

SMALL_OUTPUTS = {"vision_out", "vision_embeds", "query_output",
                 "pos_embed_84", "vision_out_84", "vision_embeds_84", "query_output_84"}


def test_small_case_matches_lavis_through_the_checkpoint_loaders():
    result = parity.run_small()
    assert set(result.errors) == SMALL_OUTPUTS
    for name, error in result.errors.items():
        assert error <= 1e-5, (name, error)  # fp32 rerun noise in LAVIS itself: 2.2e-6
    assert result.errors["pos_embed_84"] == 0.0  # the same bicubic resampling as LAVIS


@pytest.mark.slow
def test_full_width_case_matches_lavis():
    """EVA-ViT-g width (1408, 16 heads of 88, MLP 6144), 2 blocks, bert-base Q-Former (~157 M
    parameters regenerated from seeds; about 7 s)."""
    result = parity.run_full("full_width")
    assert result.passed, result.summary()
    assert result.worst <= 1e-4 and result.errors["query_output"] <= 1e-4
    assert result.errors["pixel_values_first16"] == 0.0


def test_lavis_settings_are_bit_exact_without_fused_attention(small_meta, small_io, small_checkpoint, build):
    """timm's explicit attention reproduces LAVIS' EVA bit for bit (the fused default differs ~1e-7)."""
    vision_cfg, _ = parity.component_configs(small_meta, checkpoint=str(small_checkpoint))
    tower = build("vision", {**vision_cfg, "fused_attention": False})
    assert torch.equal(tower(small_io["pixel_values"]), small_io["vision_out"])


def test_build_model_encode_image_reproduces_lavis(small_meta, small_io, small_checkpoint, host):
    """The public path: pgmm_core.build_model(config).encode_image with the LAVIS file as checkpoint."""
    vision_cfg, connector_cfg = parity.component_configs(small_meta, checkpoint=str(small_checkpoint))
    data = tiny_config("unused")
    data["model"].update(vision=vision_cfg, connector=connector_cfg, projector={"type": "mlp2x_gelu"})
    model = build_model(validate_config(data, host))
    model.eval()
    encoding = model.encode_image(small_io["pixel_values"])
    assert (encoding.vision_embeds - small_io["vision_embeds"]).abs().max() <= 1e-5
    assert (encoding.query_embeds - small_io["query_output"]).abs().max() <= 1e-5
    hidden = model.llm.hidden_size
    assert encoding.llm_embeds.shape == (2, small_meta["num_query_token"], hidden)
    # ln_vision came from the checkpoint (LAVIS stores it beside the Q-Former) and stays trainable
    state = torch.load(str(small_checkpoint), weights_only=True)["model"]
    assert torch.equal(model.ln_vision.weight.detach(), state["ln_vision.weight"])
    assert model.ln_vision.weight.requires_grad and model.ln_vision.eps == 1e-5
