"""AdamW with LAVIS' parameter groups (``BaseModel.get_optimizer_params``): no weight decay for
parameters with ndim < 2 and for names containing ``bias``, ``ln`` or ``bn``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, train: Any) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(model, train.weight_decay), lr=train.lr,
                             betas=tuple(train.betas), weight_decay=train.weight_decay)
