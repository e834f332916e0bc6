"""What training callbacks see of a run (a read-mostly view; the only action is asking to stop)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class RunView:
    config: Any
    output_dir: Path
    rank: int
    world_size: int
    model: Any
    step: int = 0
    epoch: int = 0
    stop_reason: str | None = field(default=None)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def request_stop(self, reason: str) -> None:
        """Finish after the current step (a final checkpoint is still written).

        The reason is shown to the user (logged by rank 0, like the trainer's messages), kept as
        ``stop_reason`` in the run summary and repeated in the command's final line. Only the first
        request counts."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self.is_main:
            logger.info("stopping after step %d: %s", self.step, reason)
