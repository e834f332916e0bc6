"""Config models of the built-in strategies (import-cheap: no torch here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig


class StrategyConfig(ComponentConfig):
    """Base of every strategy config (``strategy`` section). Strategies add their own fields."""


class AutoStrategyConfig(StrategyConfig):
    """``ddp`` when launched by torchrun with more than one process, else ``single``."""

    type: Literal["auto"] = "auto"


class SingleStrategyConfig(StrategyConfig):
    """One process, one device: no process group, the model unwrapped."""

    type: Literal["single"] = "single"


class DdpStrategyConfig(StrategyConfig):
    """``torch.nn.parallel.DistributedDataParallel`` over the ranks torchrun started."""

    type: Literal["ddp"] = "ddp"
    find_unused_parameters: bool = Field(
        False, description="Let DDP tolerate trainable parameters that get no gradient in a step (slower)."
    )
