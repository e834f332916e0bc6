"""LoRA on the frozen LLM (``model.llm.lora``): what trains, what the checkpoint and the fingerprint
hold, precision, gradient checkpointing, and merging (same logits as the adapters, to 1e-5)."""

from __future__ import annotations

import pytest
import torch

import pgmm_core
from pgmm_core.devices.base import PrecisionPolicy
from pgmm_core.errors import ConfigError
from pgmm_core.model import build_model
from pgmm_core.testing import tiny_config, write_config
from pgmm_pangu.configs import LORA_TARGETS
from pgmm_pangu.lora import is_adapter_name, lora_layers, merge_lora

LORA = {"rank": 4, "alpha": 8, "dropout": 0.0}
CAPTIONS = ["a red circle in the top left", "a blue star"]


def _config(tmp_path, lora=LORA, **llm):
    config = tiny_config(tmp_path / "run")
    config["model"]["llm"].update({"lora": lora, **llm})
    return pgmm_core.load_config(write_config(tmp_path / f"config-{len(list(tmp_path.iterdir()))}.json", config))


def _build(config, precision="fp32"):
    torch.manual_seed(0)
    return build_model(config, policy=PrecisionPolicy.for_precision(precision, "cpu"))


def _randomise_adapters(model, scale=0.05):
    """Trained-looking adapters (a fresh B is zero: the adapter would change nothing)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if is_adapter_name(name):
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def test_only_adapters_and_the_usual_parts_train(tmp_path):
    lora_model = _build(_config(tmp_path))
    plain = _build(_config(tmp_path, lora=None))
    trainable = {n for n, p in lora_model.named_parameters() if p.requires_grad}
    usual = {n for n, p in plain.named_parameters() if p.requires_grad}
    adapters = trainable - usual
    assert usual <= trainable and not any(n.startswith("llm.") for n in usual)
    assert adapters and all(is_adapter_name(n) and n.startswith("llm.") for n in adapters)
    # every attention and MLP projection of every layer, A and B, named as in the modeling code
    layers = lora_model.llm.model.config.num_hidden_layers
    assert len(adapters) == 2 * len(LORA_TARGETS) * layers
    for target in LORA_TARGETS:
        assert any(f".{target}.lora_A.default.weight" in n for n in adapters), target
    assert set(lora_model.trainable_state_dict()) == trainable  # what the checkpoint holds
    assert all(not p.requires_grad for n, p in lora_model.named_parameters() if ".base_layer." in n)


def test_fingerprint_describes_the_base_weights(tmp_path):
    assert _build(_config(tmp_path)).frozen_fingerprint == _build(_config(tmp_path, lora=None)).frozen_fingerprint


def test_fresh_adapters_change_nothing_and_trained_ones_do(tmp_path):
    pixels = torch.randn(2, 3, 32, 32)
    lora_model, plain = _build(_config(tmp_path)).eval(), _build(_config(tmp_path, lora=None)).eval()
    assert torch.equal(lora_model(pixels, CAPTIONS).loss, plain(pixels, CAPTIONS).loss)
    _randomise_adapters(lora_model)
    assert not torch.allclose(lora_model(pixels, CAPTIONS).loss, plain(pixels, CAPTIONS).loss)


def test_target_modules_that_match_nothing_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="match no layer.*q_proj"):
        _build(_config(tmp_path, lora={"target_modules": ["query_key_value"]}))


def test_lora_needs_a_frozen_llm(tmp_path):
    with pytest.raises(ConfigError, match="lora adapts a frozen LLM"):
        _config(tmp_path, freeze=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_adapters_train_in_float32_under_each_policy(tmp_path, precision):
    model = _build(_config(tmp_path), precision)
    frozen_llm = {p.dtype for n, p in model.llm.named_parameters() if not p.requires_grad}
    assert frozen_llm == {torch.float32 if precision == "fp32" else torch.bfloat16}
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.float32}
    _randomise_adapters(model)
    policy = PrecisionPolicy.for_precision(precision, "cpu")
    with policy.autocast():
        loss = model(torch.randn(2, 3, 32, 32), CAPTIONS).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if is_adapter_name(n)}
    assert all(g is not None and g.dtype == torch.float32 for g in grads.values())
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_gradient_checkpointing_gives_the_same_adapter_gradients(tmp_path):
    pixels = torch.randn(2, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        model = _build(_config(tmp_path, grad_checkpointing=checkpointing))
        _randomise_adapters(model)
        model(pixels, CAPTIONS).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if is_adapter_name(n)})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-7, msg=name)


def test_dropout_acts_while_training_only(tmp_path):
    """The frozen LLM stays in eval mode for good; its adapters' dropout follows the gradient mode."""
    model = _build(_config(tmp_path, lora={**LORA, "dropout": 0.5})).eval()  # the rest: no dropout
    _randomise_adapters(model)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        evaluated = [model(pixels, CAPTIONS).loss for _ in range(2)]
    trained = [model(pixels, CAPTIONS).loss.detach() for _ in range(2)]
    assert torch.equal(evaluated[0], evaluated[1])  # no gradients (evaluation): deterministic
    assert not torch.equal(trained[0], trained[1])  # gradients on: the adapters' input is dropped


def test_merged_llm_gives_the_adapter_models_logits(tmp_path):
    model = _build(_config(tmp_path))
    _randomise_adapters(model)
    llm = model.llm.model
    ids = torch.randint(3, 300, (2, 12))
    base = _build(_config(tmp_path, lora=None)).llm.model
    with torch.no_grad():
        adapted = llm(input_ids=ids).logits
        assert (adapted - base(input_ids=ids).logits).abs().max() > 1e-3  # the adapters matter
        merge_lora(llm)
        merged = llm(input_ids=ids).logits
    assert next(lora_layers(llm), None) is None
    assert set(llm.state_dict()) == set(base.state_dict())  # the original layout's names again
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-5)


def test_fsdp2_shards_the_adapted_llm_as_one_mixed_part_with_a_unit_per_layer(tmp_path):
    from pgmm_core.strategies.sharding_plan import find_parts

    model = _build(_config(tmp_path, num_layers=2))
    parts = {p.name: p for p in find_parts(model)}
    assert sorted(parts) == ["connector", "llm", "ln_vision", "projector", "vision"]
    llm = parts["llm"]
    assert llm.mixed and llm.trainable and list(llm.blocks) == list(model.llm.model.model.layers)
    assert {"caption_loss", "embed_tokens", "generate"} <= set(llm.entry_points)
    assert not any(p.mixed for name, p in parts.items() if name != "llm")
    plain = {p.name: p for p in find_parts(_build(_config(tmp_path, lora=None, num_layers=2)))}
    assert not plain["llm"].mixed and not plain["llm"].trainable  # without adapters: a frozen part as before
