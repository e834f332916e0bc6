"""The openpangu backend computes what the release's own modeling code computes.

Goldens: ``data/model_goldens.safetensors``, produced by the release's ``modeling_openpangu_dense.py``
(transformers 4.53.2, fp32, CPU) on ``data/tiny_pangu_model`` — see ``data/README.md``. Logits at
padded query positions are meaningless, so only positions with attention mask 1 are compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pgmm_core.config.sections import GenerationSection
from pgmm_pangu.backend import build_openpangu
from pgmm_pangu.checkpoint import llama_config_from_release, parameter_count
from pgmm_pangu.configs import OpenPanguConfig

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def backend(golden_model_dir):
    return build_openpangu(OpenPanguConfig(path=str(golden_model_dir), dtype="fp32"))


def max_diff_on_valid(ours: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    valid = mask.bool()
    return (ours[valid] - reference[valid]).abs().max().item()


def greedy(**overrides) -> GenerationSection:
    settings = {"num_beams": 1, "max_new_tokens": 10, "min_new_tokens": 0, "do_sample": False} | overrides
    return GenerationSection(**settings)


def test_logits_and_hidden_states_match_the_reference(backend, goldens):
    with torch.no_grad():
        out = backend.model(input_ids=goldens["input_ids"], attention_mask=goldens["attention_mask"],
                            output_hidden_states=True)
    mask = goldens["attention_mask"]
    assert max_diff_on_valid(out.logits, goldens["logits"], mask) <= TOLERANCE
    assert len(out.hidden_states) == 3
    for ours, reference in zip(out.hidden_states, goldens["hidden_states"]):
        assert max_diff_on_valid(ours, reference, mask) <= TOLERANCE


def test_inputs_embeds_with_visual_tokens_match_the_reference(backend, goldens):
    """[4 visual vectors | text] with row 1's padding between them, as in stage 2."""
    text = backend.embed_tokens(goldens["input_ids"])
    inputs_embeds = torch.cat([goldens["visual_embeds"], text], dim=1)
    assert torch.equal(inputs_embeds, goldens["inputs_embeds"])
    with torch.no_grad():
        logits = backend.model(inputs_embeds=inputs_embeds, attention_mask=goldens["attention_mask_embeds"]).logits
    assert max_diff_on_valid(logits, goldens["logits_embeds"], goldens["attention_mask_embeds"]) <= TOLERANCE


def test_target_only_loss_equals_cross_entropy_of_the_reference_logits(backend, goldens):
    mask = goldens["attention_mask_embeds"]
    labels = torch.cat([torch.full((2, 4), -100), goldens["input_ids"]], dim=1).masked_fill(mask == 0, -100)
    labels[:, 4] = -100  # BOS of row 0 is a prompt token, not a target
    reference = F.cross_entropy(goldens["logits_embeds"][:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                ignore_index=-100)
    with torch.no_grad():
        ours = backend.caption_loss(goldens["inputs_embeds"], mask, labels)
    assert abs(ours.item() - reference.item()) <= TOLERANCE


def test_greedy_from_inputs_embeds_returns_exactly_the_new_tokens(backend, goldens):
    ids = backend.generate(goldens["inputs_embeds"], goldens["attention_mask_embeds"], greedy())
    assert ids == goldens["greedy_embeds_ids"].tolist()  # the first tokens included


def test_beam_search_from_inputs_embeds(backend, goldens):
    ids = backend.generate(goldens["inputs_embeds"], goldens["attention_mask_embeds"], greedy(num_beams=3))
    assert ids == goldens["beam3_embeds_ids"].tolist()


def test_greedy_and_beam_from_input_ids(backend, goldens):
    common = {"max_new_tokens": 10, "do_sample": False, "eos_token_id": 2, "pad_token_id": 0}
    for beams, key in ((1, "greedy_ids"), (3, "beam3_ids")):
        out = backend.model.generate(input_ids=goldens["input_ids"], attention_mask=goldens["attention_mask"],
                                     num_beams=beams, **common)
        assert torch.equal(out, goldens[key])


def test_generation_stops_at_eos(backend, goldens, monkeypatch):
    """Reference run with eos 437 (row 0's 4th new token): row 0 stops there, row 1 runs 10 tokens."""
    eos = int(goldens["greedy_eos_early_eos_token_id"].item())
    monkeypatch.setattr(backend.tokenizer, "eos_token_id", eos)
    prompt = goldens["input_ids"].shape[1]
    reference = goldens["greedy_eos_early_ids"][:, prompt:].tolist()
    inputs_embeds = backend.embed_tokens(goldens["input_ids"])
    ids = backend.generate(inputs_embeds, goldens["attention_mask"], greedy())
    assert ids[0] == reference[0][: reference[0].index(eos)] and len(ids[0]) == 3
    assert ids[1] == reference[1] and len(ids[1]) == 10


def test_release_index_is_exactly_the_llama_state_dict():
    """The release's own index: its keys are the Llama-with-bias keys plus ignored rotary buffers, and
    its total size is what the memory estimate predicts for bf16."""
    from transformers import LlamaForCausalLM

    release = json.loads((DATA / "release" / "config.json").read_text())
    index = json.loads((DATA / "release" / "model.safetensors.index.json").read_text())
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config_from_release(release))
    keys = set(index["weight_map"])
    rotary = {k for k in keys if k.endswith(".self_attn.rotary_emb.inv_freq")}
    assert len(rotary) == release["num_hidden_layers"]
    assert set(model.state_dict()) == keys - rotary
    assert sum(p.numel() for p in model.parameters()) == parameter_count(release) == 8_030_887_936
    head_dim = release["hidden_size"] // release["num_attention_heads"]
    assert 2 * parameter_count(release) + len(rotary) * head_dim // 2 * 4 == index["metadata"]["total_size"]
