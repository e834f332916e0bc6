"""What every pgmm-vision tower shares: dtype handling, freezing, gradient checkpointing."""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TimmTower(nn.Module):
    """Wraps a timm model whose ``forward_features`` returns all tokens (B×N×D).

    Inputs are cast to the tower's parameter dtype (a frozen tower may be stored in half precision)
    and outputs returned in float32, because ln_vision and everything after it train in float32.
    ``precision`` pins the dtype; ``None`` lets the run's precision policy choose.
    """

    def __init__(self, model: nn.Module, *, out_features: int, image_size: int, frozen: bool,
                 precision: str | None = None, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.model = model
        self.out_features = out_features
        self.image_size = image_size
        self.frozen = frozen
        self.follows_precision_policy = precision is None
        if grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)
        if precision is not None:
            self.model.to(DTYPES[precision])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return self.model.forward_features(pixel_values.to(dtype)).float()
