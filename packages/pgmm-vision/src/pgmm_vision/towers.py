"""What every pgmm-vision tower shares: freezing, storage precision, gradient checkpointing, tokens out."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pgmm_core.preprocessing import ImageSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TimmTower(nn.Module):
    """A timm model as a vision tower: ``forward(B×3×H×W) -> B×N×out_features`` float32 tokens.

    * ``frozen``: the tower is to be frozen — ``pgmm_core.build_model`` freezes it (no gradients,
      eval mode that ``train()`` cannot undo, so drop-path and dropout stay off as the tower was
      trained); its forward runs under ``torch.no_grad``.
    * ``precision``: storage dtype of a frozen tower (``fp16``/``bf16`` halve its memory). Inputs are
      cast to it and outputs returned in float32, because ln_vision and everything after it train in
      float32. ``None`` lets the run's device precision policy choose (fp32 unless configured).
    * ``grad_checkpointing``: recompute blocks in backward (only matters for a trainable tower).
    * ``image_spec``: the preprocessing its pixels need (size, mean/std, interpolation, crop), as
      the tower was trained; ``image_size`` is its size.

    Models whose ``forward_features`` returns a feature map (CNNs) give one token per position.
    """

    def __init__(self, model: nn.Module, *, out_features: int, image_spec: ImageSpec, frozen: bool,
                 precision: str | None = None, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.model = model
        self.out_features = out_features
        self.image_spec = image_spec
        self.image_size = image_spec.size
        self.frozen = frozen
        self.follows_precision_policy = precision is None
        if grad_checkpointing:
            model.set_grad_checkpointing(True)
        if precision is not None:
            model.to(DTYPES[precision])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            features = self.model.forward_features(pixel_values.to(dtype))
        if features.ndim == 4:  # B×C×H×W feature map -> B×(H·W)×C tokens
            features = features.flatten(2).transpose(1, 2)
        return features.float()
