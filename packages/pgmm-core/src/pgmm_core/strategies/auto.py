"""``auto`` (the default): ``ddp`` when torchrun started more than one process, else ``single``."""

from __future__ import annotations

from typing import Any

from pgmm_core.strategies.base import Strategy
from pgmm_core.strategies.configs import DdpStrategyConfig, SingleStrategyConfig
from pgmm_core.strategies.process_group import DistEnv


def build_auto(config: Any, *, device_backend: Any) -> Strategy:
    if DistEnv.from_environ().distributed:
        from pgmm_core.strategies.ddp import DdpStrategy

        return DdpStrategy(DdpStrategyConfig(), device_backend=device_backend)
    from pgmm_core.strategies.single import SingleStrategy

    return SingleStrategy(SingleStrategyConfig(), device_backend=device_backend)
