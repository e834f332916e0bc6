"""fp16 and bf16 autocast through the whole model on padded batches stay finite; the seed's naive
additive fp16 mask does not (which is why it gave up AMP) — so these checks can fail."""

from __future__ import annotations

import pytest
import torch

from pgmm_core.config.loading import validate_config
from pgmm_core.devices.base import PrecisionPolicy
from pgmm_core.model import build_model
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config

CAPTIONS = ["a red circle", "a very small green triangle in the bottom right corner of the picture", "a", "blue"]


@pytest.fixture(scope="module")
def host():
    return PluginHost(environ={})


def _model(host, tmp_path, precision):
    config = validate_config(tiny_config(tmp_path, device={"type": "cpu", "precision": precision}), host)
    torch.manual_seed(0)
    model = build_model(config)  # applies the config's precision policy (device.precision)
    policy = PrecisionPolicy.for_precision(precision, "cpu")
    return model, policy


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_padded_batch_is_finite_under_autocast(host, tmp_path, precision):
    model, policy = _model(host, tmp_path, precision)
    model.train()
    assert model.llm.dtype == policy.frozen_dtype
    pixels = torch.randn(len(CAPTIONS), 3, 32, 32)
    with policy.autocast():
        loss = model(pixels, CAPTIONS).loss
    scaler = policy.grad_scaler()
    (scaler.scale(loss) if scaler else loss).backward()
    assert torch.isfinite(loss), loss
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.llm.parameters())


def test_naive_additive_mask_overflows_in_fp16(host, tmp_path):
    model, _ = _model(host, tmp_path, "fp16")
    llm = model.llm
    body = llm.model.model
    llm.model.config._attn_implementation = "eager"  # the seed's explicit softmax(scores + mask)
    try:
        ids = torch.randint(3, 200, (2, 7))
        mask = torch.ones(2, 7, dtype=torch.long)
        mask[1, :3] = 0  # left padding: the first query rows of sample 1 see only padding
        embeds = llm.embed_tokens(ids)
        fill = torch.finfo(torch.float32).min
        causal = torch.triu(torch.full((7, 7), fill), diagonal=1)
        padding = (1.0 - mask[:, None, None, :].float()) * fill
        naive = (causal + padding).to(torch.float16)  # two added fill planes -> -inf in fp16
        assert torch.isinf(naive).any()
        naive_out = body(inputs_embeds=embeds, attention_mask=naive).last_hidden_state
        safe_out = body(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    finally:
        llm.model.config._attn_implementation = "sdpa"
    assert not torch.isfinite(naive_out).all()
    assert torch.isfinite(safe_out).all()
