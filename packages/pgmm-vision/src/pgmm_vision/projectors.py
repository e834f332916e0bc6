"""Projectors from connector width to LLM width (LLaVA naming: linear, mlpNx_gelu, identity)."""

from __future__ import annotations

from torch import nn

from pgmm_core.errors import PgmmError


def build_mlp_gelu(config, *, in_features: int, out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    for _ in range(config.depth - 1):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)


def build_linear(config, *, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features)


def build_identity(config, *, in_features: int, out_features: int) -> nn.Identity:
    if in_features != out_features:
        raise PgmmError(
            f"projector 'identity' needs the connector width ({in_features}) to equal the LLM hidden "
            f"size ({out_features}); use 'linear' or 'mlp2x_gelu'"
        )
    return nn.Identity()
