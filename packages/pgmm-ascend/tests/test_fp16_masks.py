"""Why fp16 failed in the original project, and that pgmm's model stays finite under the fp16 policy.

The original project built additive attention masks from ``torch.finfo(torch.float32).min``; in fp16
that value overflows to ``-inf`` and a fully masked row's softmax is NaN, which then spreads through
every later layer (0 * NaN is NaN). pgmm's model passes 0/1 masks to transformers, which fills masks
in the compute dtype with that dtype's own minimum. This test runs the tiny model on CPU under the
same fp16 policy the ``npu`` backend uses (frozen towers in fp16, autocast, grad scaler); NPU fp16
kernels themselves are only covered by the ``npu``-marked tests.
"""

from __future__ import annotations

import torch

from pgmm_core.devices.base import PrecisionPolicy
from pgmm_core.testing import tiny_config, write_config


def test_the_original_mask_overflows_in_fp16_and_a_dtype_minimum_does_not():
    scores = torch.zeros(1, 4, dtype=torch.float16)
    seed_style = scores + torch.full((1, 4), torch.finfo(torch.float32).min).to(torch.float16)  # all masked
    assert torch.isneginf(seed_style).all() and torch.isnan(seed_style.softmax(-1)).all()
    dtype_min = scores.masked_fill(torch.ones(1, 4, dtype=torch.bool), torch.finfo(torch.float16).min)
    assert torch.isfinite(dtype_min.float().softmax(-1)).all()


def test_tiny_model_is_finite_under_the_fp16_policy(tmp_path):
    import pgmm_core

    config = pgmm_core.load_config(write_config(tmp_path / "tiny.json", tiny_config(tmp_path / "run")))
    model = pgmm_core.build_model(config)
    policy = PrecisionPolicy.for_precision("fp16", "cpu")
    for part in (model.vision, model.llm):
        part.to(policy.frozen_dtype)  # what the trainer does with frozen towers under this policy
    scaler = policy.grad_scaler()
    assert scaler is not None
    torch.manual_seed(0)
    captions = ["a red square", "a long caption that pads every other caption of this batch", ""]
    with policy.autocast():
        loss = model(torch.randn(3, 3, 32, 32), captions).loss
    scaler.scale(loss).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
