"""Config models of the built-in strategies (import-cheap: no torch here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig


class StrategyConfig(ComponentConfig):
    """Base of every strategy config (``strategy`` section). Strategies add their own fields."""


class ProcessGroupStrategyConfig(StrategyConfig):
    """Base of the configs of strategies whose ranks meet in a process group (``ddp``, ``fsdp2``)."""

    timeout_s: float | None = Field(
        None, gt=0, description="Seconds a collective waits for the other ranks before the run fails "
                                "(default: PGMM_DIST_TIMEOUT, else 1800).")


class AutoStrategyConfig(StrategyConfig):
    """``ddp`` when launched by torchrun with more than one process, else ``single``."""

    type: Literal["auto"] = "auto"


class SingleStrategyConfig(StrategyConfig):
    """One process, one device: no process group, the model unwrapped."""

    type: Literal["single"] = "single"


class DdpStrategyConfig(ProcessGroupStrategyConfig):
    """``torch.nn.parallel.DistributedDataParallel`` over the ranks torchrun started."""

    type: Literal["ddp"] = "ddp"
    find_unused_parameters: bool = Field(
        False, description="Let DDP tolerate trainable parameters that get no gradient in a step (slower)."
    )


class Fsdp2StrategyConfig(ProcessGroupStrategyConfig):
    """``torch.distributed.fsdp.fully_shard`` (FSDP2) over the ranks torchrun started: every
    block of the frozen towers and of the trainable parts is its own unit, sharded over the ranks."""

    type: Literal["fsdp2"] = "fsdp2"
    reshard_after_forward: bool = Field(
        True, description="Free each block's gathered weights after its forward and gather them again "
                          "in backward (least memory); false keeps them until the backward (less traffic).")
    trainable: Literal["shard", "replicate"] = Field(
        "shard", description="Trainable parts (ln_vision, connector, projector): 'shard' splits their "
                             "weights, gradients and optimizer state over the ranks (the memory FSDP "
                             "exists for); 'replicate' keeps whole copies on every rank, gradients "
                             "all-reduced as under ddp (no all-gather of them per forward).")
