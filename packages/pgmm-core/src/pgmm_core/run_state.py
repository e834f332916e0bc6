"""What training callbacks see of a run (a read-mostly view; the only action is asking to stop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        """Finish after the current step (a final checkpoint is still written)."""
        self.stop_reason = reason
