"""pgmm-vision's components checked through the contracts plugin authors use."""

from __future__ import annotations

from pgmm_core.testing.contracts import ConnectorContract, ProjectorContract, VisionEncoderContract

TINY_EVA = {"image_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}


class TestEvaViTG(VisionEncoderContract):
    component = "eva_vit_g"
    distribution = "pgmm-vision"
    config = TINY_EVA


class TestTimmViT(VisionEncoderContract):
    component = "timm"
    distribution = "pgmm-vision"
    config = {"model_name": "vit_tiny_patch16_224", "image_size": 32,
              "model_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}


class TestQFormer(ConnectorContract):
    component = "qformer"
    distribution = "pgmm-vision"
    config = {"num_query_tokens": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


class TestMlpGelu(ProjectorContract):
    component = "mlp2x_gelu"
    distribution = "pgmm-vision"


class TestLinear(ProjectorContract):
    component = "linear"
    distribution = "pgmm-vision"


class TestIdentity(ProjectorContract):
    component = "identity"
    distribution = "pgmm-vision"
    in_features = out_features = 32
