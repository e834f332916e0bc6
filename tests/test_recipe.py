"""The LAVIS recipe pieces: learning-rate schedules, parameter groups, frozen parts."""

from __future__ import annotations

import math

import pytest
import torch

from pgmm_core.config.loading import validate_config
from pgmm_core.config.sections import TrainSection
from pgmm_core.model import build_model
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config
from pgmm_core.train.optim import parameter_groups
from pgmm_core.train.schedule import learning_rate


def lr(train, epoch, step_in_epoch, global_step, total=1000):
    return learning_rate(train, epoch=epoch, step_in_epoch=step_in_epoch, global_step=global_step, total_steps=total)


def test_linear_warmup_cosine_is_lavis():
    t = TrainSection(epochs=10, lr=1e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=2000)
    assert lr(t, 0, 0, 0) == pytest.approx(1e-6)
    assert lr(t, 0, 1000, 1000) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    assert lr(t, 0, 5000, 5000) == pytest.approx(1e-4)  # holds after warmup within epoch 0
    for epoch in range(1, 10):  # cosine per epoch, constant within it
        expected = 1e-5 + (1e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * epoch / 10))
        assert lr(t, epoch, 0, 99999) == pytest.approx(expected)
        assert lr(t, epoch, 777, 99999) == pytest.approx(expected)


def test_step_cosine_and_constant():
    t = TrainSection(schedule="cosine", lr=1.0, min_lr=0.0, warmup_lr=0.0, warmup_steps=10)
    assert lr(t, 0, 5, 5, total=110) == pytest.approx(0.5)
    assert lr(t, 0, 10, 10, total=110) == pytest.approx(1.0)
    assert lr(t, 0, 60, 60, total=110) == pytest.approx(0.5)
    assert lr(t, 0, 110, 110, total=110) == pytest.approx(0.0)
    c = TrainSection(schedule="constant", lr=0.3, warmup_steps=0)
    assert lr(c, 3, 50, 500) == 0.3


def test_parameter_groups_skip_decay_for_biases_and_vectors():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.register_parameter("query_tokens", torch.nn.Parameter(torch.zeros(1, 2, 4)))
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(tuple(p.shape) for p in decay["params"]) == [(1, 2, 4), (4, 4)]
    assert sorted(tuple(p.shape) for p in no_decay["params"]) == [(4,), (4,), (4,)]


def test_frozen_parts_cost_no_gradients(tmp_path):
    config = validate_config(tiny_config(tmp_path), PluginHost(environ={}))
    model = build_model(config)
    model.train()
    assert not model.vision.training and not model.llm.training  # train() cannot unfreeze them
    grad_mode = []
    model.vision.register_forward_hook(lambda module, args, out: grad_mode.append(torch.is_grad_enabled()))
    image = model.encode_image(torch.randn(2, 3, 32, 32))
    assert grad_mode == [False]  # the frozen tower runs under no_grad: no activations kept
    assert image.vision_embeds.requires_grad  # ln_vision after it is trained
    model(torch.randn(2, 3, 32, 32), ["a red circle", "a blue star"]).loss.backward()
    assert all(p.grad is None for p in model.vision.parameters())
    assert all(p.grad is None for p in model.llm.parameters())
    assert model.ln_vision.weight.grad is not None and model.connector.query_tokens.grad is not None
    counts = model.parameter_counts()
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
