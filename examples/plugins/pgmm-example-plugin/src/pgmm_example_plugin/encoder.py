"""``cnn_tokens``: any timm CNN as a pgmm vision encoder.

pgmm's connector expects tokens (B×N×D), while a CNN ends in a feature map (B×C×h×w); this tower
flattens the map so that every spatial position is one token. Everything else follows the
vision-encoder contract (``pgmm_core.testing.contracts.VisionEncoderContract``): ``out_features``,
``image_size``, ``image_spec`` (the CNN's preprocessing, from timm's data config), ``frozen`` and
``follows_precision_policy`` attributes, float32 pixels accepted whatever dtype the frozen tower is
stored in, float32 tokens out. Freezing itself is ``pgmm_core.build_model``'s job: the tower only
says whether it is frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pgmm_core.errors import CheckpointError, PgmmError
from pgmm_core.preprocessing import ImageSpec


def timm_image_spec(config: Any, backbone: nn.Module | None = None) -> ImageSpec:
    """The CNN's preprocessing from timm's data config at the configured size: the built backbone's
    (``resolve_model_data_config``) or, without one, the model name's pretrained config (no weights)."""
    from timm.data import resolve_data_config, resolve_model_data_config
    from timm.models import get_pretrained_cfg

    args = {"input_size": (3, config.image_size, config.image_size)}
    if backbone is not None:
        data = resolve_model_data_config(backbone, args=args)
    else:
        pretrained_cfg = get_pretrained_cfg(config.model_name)
        data = resolve_data_config(args=args, pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)
    return ImageSpec(size=config.image_size, mean=tuple(data["mean"]), std=tuple(data["std"]),
                     interpolation=data["interpolation"], crop_pct=float(data["crop_pct"]))


class CnnTokens(nn.Module):
    def __init__(self, backbone: nn.Module, *, image_spec: ImageSpec, frozen: bool, position_embedding: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_features = int(backbone.num_features)
        self.image_spec = image_spec
        self.image_size = image_spec.size
        self.frozen = frozen
        self.follows_precision_policy = True  # no dtype option: a frozen CNN takes the run's precision
        self.position_embedding = position_embedding
        if position_embedding and self.out_features % 4:
            raise PgmmError(f"cnn_tokens: a sin-cos position embedding needs a feature width divisible by 4 "
                            f"(this CNN has {self.out_features}); set position_embedding to false")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.backbone.parameters()).dtype
        feature_map = self.backbone.forward_features(pixel_values.to(dtype))  # B×C×h×w
        tokens = feature_map.flatten(2).transpose(1, 2).float()  # B×(h·w)×C
        if self.position_embedding:
            from timm.layers import build_sincos2d_pos_embed

            height, width = feature_map.shape[-2:]
            tokens = tokens + build_sincos2d_pos_embed([height, width], dim=self.out_features, device=tokens.device)
        return tokens


def build_cnn_tokens(config: Any) -> CnnTokens:
    import timm

    pretrained = {"pretrained": True, "pretrained_cfg_overlay": {"file": config.checkpoint}} if config.checkpoint \
        else {"pretrained": False}
    try:
        backbone = timm.create_model(config.model_name, num_classes=0, **pretrained, **config.model_kwargs)
    except FileNotFoundError:
        raise CheckpointError(f"cnn_tokens: checkpoint not found: {config.checkpoint}") from None
    except RuntimeError as exc:
        if config.checkpoint and "state_dict" in str(exc):
            raise CheckpointError(f"cnn_tokens: {config.checkpoint} does not fit {config.model_name} "
                                  f"{config.model_kwargs or ''}: {exc}") from None
        raise PgmmError(f"cnn_tokens: timm cannot create '{config.model_name}': {exc}") from None
    if not hasattr(backbone, "forward_features") or getattr(backbone, "num_features", 0) <= 0:
        raise PgmmError(f"cnn_tokens: '{config.model_name}' has no feature map (forward_features)")
    return CnnTokens(backbone, image_spec=timm_image_spec(config, backbone), frozen=config.freeze,
                     position_embedding=config.position_embedding)
