"""What training callbacks see of a run (a read-mostly view; the only action is asking to stop)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class RunView:
    """The ``run`` argument of every ``pgmm_on_*`` event hook.

    ``config``: the run's validated root config; ``output_dir``: its run directory; ``rank`` and
    ``world_size``: this process among the strategy's processes (events are called on every rank;
    see ``is_main``); ``step``: optimizer steps taken so far (the resumed step in
    ``pgmm_on_train_start`` after a resume); ``epoch``: the current epoch, counted from 0.

    ``model`` is the run's :class:`pgmm_core.MultimodalModel` itself — not the strategy's wrapper —
    on the run's device, built with the objective's parts only (a part it was built without is
    ``None``: ``run.model.llm is None`` under an image-side objective). The trainer sets it before
    ``pgmm_on_train_start``, on every rank, so in a training run it is never ``None``. It is ``None``
    (and ``config`` too) only where events are called without a trainer: the callback contract suite
    (:class:`pgmm_core.testing.contracts.CallbackContract`) calls a callback's events with
    ``RunView(config=None, model=None, ...)``, so a callback that reads the model checks
    ``run.model is not None`` first. Treat the model as read-only: changing weights or modes from an
    event bypasses the optimizer, the strategy and checkpoints.
    """

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
