"""Config models of the built-in callbacks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig


class EarlyStoppingConfig(ComponentConfig):
    type: Literal["early_stopping"] = "early_stopping"
    metric: str = Field("CIDEr", description="Metric name from metrics.json, or a sum like CIDEr+Bleu_4.")
    patience: int = Field(3, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0)
