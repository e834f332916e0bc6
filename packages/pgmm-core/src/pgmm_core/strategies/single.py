"""``single``: one process on one device — no process group, the model called as it is."""

from __future__ import annotations

from typing import Any

from pgmm_core.errors import ConfigError
from pgmm_core.strategies.base import Strategy


class SingleStrategy(Strategy):
    name = "single"

    def setup(self) -> Any:
        if self.env.world_size > 1:
            raise ConfigError([
                f"strategy.type: 'single' trains in one process, but this one was launched as one of "
                f"{self.env.world_size} (torchrun); use strategy.type=ddp or auto"
            ])
        self.device = self.device_backend.setup(self.env.local_rank)
        return self.device

    def teardown(self) -> None:
        """Nothing to leave."""

    def wrap(self, module: Any) -> Any:
        self.trained_module = module
        return module


def build_single(config: Any, *, device_backend: Any) -> SingleStrategy:
    return SingleStrategy(config, device_backend=device_backend)
