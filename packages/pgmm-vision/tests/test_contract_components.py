"""pgmm-vision's components checked through the contracts plugin authors use."""

from __future__ import annotations

import pytest

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


class TestQFormerTextSide(ConnectorContract):
    """The stage-1 Q-Former is still a connector (its forward is the query path)."""

    component = "qformer"
    distribution = "pgmm-vision"
    config = {**TestQFormer.config, "text_side": True, "max_position_embeddings": 16, "max_text_len": 8,
              "embed_dim": 8}

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory, bert_writer):
        bert = bert_writer(tmp_path_factory.mktemp("bert") / "bert", hidden=32, layers=2, heads=2, ffn=64,
                              vocab_size=99, max_positions=16)
        return {**cls.config, "bert_init": str(bert)}
