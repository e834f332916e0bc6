"""``ddp``: data parallel over the processes torchrun started (``DistributedDataParallel``).

Every rank holds the whole model; DDP all-reduces (averages) the gradients of the last micro-batch
of each step, overlapping communication with the backward, and ``no_sync`` skips the all-reduce
on the micro-batches before it. Rank 0 writes checkpoints.
"""

from __future__ import annotations

from typing import Any

from pgmm_core.strategies.base import Strategy
from pgmm_core.strategies.process_group import destroy_process_group


class DdpStrategy(Strategy):
    name = "ddp"

    def __init__(self, config: Any, *, device_backend: Any, env: Any = None) -> None:
        super().__init__(config, device_backend=device_backend, env=env)
        self.wrapped: Any = None

    def setup(self) -> Any:
        return self.join_launched_job()

    def teardown(self) -> None:
        self.trained_module = self.wrapped = None  # DDP's reducer holds the process group
        destroy_process_group()

    def wrap(self, module: Any) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        self.trained_module = module
        ids = [self.device.index] if self.device is not None and self.device.type != "cpu" else None
        self.wrapped = DistributedDataParallel(module, device_ids=ids,
                                               find_unused_parameters=self.config.find_unused_parameters)
        return self.wrapped

    def accumulation(self, *, sync: bool) -> Any:
        if sync or self.wrapped is None:
            return super().accumulation(sync=sync)
        return self.wrapped.no_sync()


def build_ddp(config: Any, *, device_backend: Any) -> DdpStrategy:
    return DdpStrategy(config, device_backend=device_backend)
