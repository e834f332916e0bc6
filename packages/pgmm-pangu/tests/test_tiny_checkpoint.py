"""The tiny checkpoint has the release layout and loads through the openpangu backend."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pgmm_pangu.make_tiny import TinySpec, write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("pangu"), TinySpec(hidden_size=32, intermediate_size=64,
                                                                             num_layers=2, num_heads=2, num_kv_heads=1))


def test_release_layout(tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "PanguEmbedded" and config["bias"] is True
    assert config["architectures"] == ["PanguEmbeddedForCausalLM"]
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2
    assert "model.layers.0.self_attn.rotary_emb.inv_freq" in index["weight_map"]
    tok_config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "[unused10]"
    assert config["eos_token_id"] == int(next(k for k, v in tok_config["added_tokens_decoder"].items()
                                              if v["content"] == "[unused10]"))


def test_backend_loss_equals_full_logits_cross_entropy(tiny_dir):
    from pgmm_core.config.loading import validate_config  # noqa: F401  (import check)
    from pgmm_pangu.backend import build_openpangu
    from pgmm_pangu.configs import OpenPanguConfig

    backend = build_openpangu(OpenPanguConfig(path=str(tiny_dir)))
    tok = backend.tokenizer
    ids = torch.tensor([tok.encode("a red circle in the top left") + [tok.eos_token_id]])
    labels = ids.clone()
    labels[:, :1] = -100
    embeds = backend.embed_tokens(ids)
    mask = torch.ones_like(ids)
    ours = backend.caption_loss(embeds, mask, labels)
    logits = backend.model(inputs_embeds=embeds, attention_mask=mask).logits
    reference = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_missing_directory_is_a_clear_error(tmp_path):
    from pgmm_core.errors import CheckpointError
    from pgmm_pangu.backend import build_openpangu
    from pgmm_pangu.configs import OpenPanguConfig

    with pytest.raises(CheckpointError, match="openPangu directory not found"):
        build_openpangu(OpenPanguConfig(path=str(tmp_path / "nowhere")))
