"""pgmm-vision components built through the plugin host."""

from __future__ import annotations

import pytest
import torch

from pgmm_core.plugins import PluginHost


@pytest.fixture(scope="module")
def host():
    return PluginHost(environ={})


def build(host, kind, data, **context):
    spec = host.registry(kind).get(data["type"])
    return spec.build(spec.config_model(**data), **context)


def test_eva_tower_outputs_all_tokens_and_lavis_keys(host):
    tower = build(host, "vision", {"type": "eva_vit_g", "image_size": 28, "patch_size": 14, "embed_dim": 32,
                                   "depth": 2, "num_heads": 2, "mlp_dim": 48})
    out = tower(torch.randn(2, 3, 28, 28))
    assert out.shape == (2, 5, 32) and out.dtype == torch.float32
    keys = set(tower.model.state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.q_bias", "blocks.1.attn.v_bias",
            "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc1.weight"} <= keys
    assert "blocks.1.attn.qkv.bias" not in keys and not any(k.startswith(("norm.", "head.")) for k in keys)
    assert tower.model.blocks[0].mlp.fc1.out_features == 48


def test_qformer_queries(host):
    connector = build(host, "connector", {"type": "qformer", "num_query_tokens": 4, "hidden_size": 32,
                                          "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
                      encoder_width=24)
    out = connector(torch.randn(3, 9, 24))
    assert out.shape == (3, 4, 32)
    assert connector.query_tokens.shape == (1, 4, 32)


@pytest.mark.parametrize("name,layers", [("mlp2x_gelu", 3), ("mlp3x_gelu", 5), ("linear", 1)])
def test_projectors(host, name, layers):
    projector = build(host, "projector", {"type": name}, in_features=8, out_features=16)
    assert projector(torch.randn(2, 4, 8)).shape == (2, 4, 16)
    assert len(list(projector.children())) == layers or name == "linear"


def test_identity_projector_refuses_width_change(host):
    from pgmm_core.errors import PgmmError

    with pytest.raises(PgmmError, match="identity"):
        build(host, "projector", {"type": "identity"}, in_features=8, out_features=16)
