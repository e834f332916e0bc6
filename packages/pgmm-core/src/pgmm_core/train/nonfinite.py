"""Non-finite steps: a loss or gradient norm that is NaN or infinite skips the optimizer step.

A diverging run would otherwise go on stepping in NaN, evaluate and checkpoint NaN weights. The step
loop asks :meth:`NonFiniteSteps.is_bad` after clipping; a bad step is skipped (gradients cleared, no
optimizer step, so the weights and the optimizer's moments stay those of the last good step) and
counted here. After ``train.max_nonfinite_steps`` consecutive bad steps the run stops with
:class:`~pgmm_core.errors.TrainingDivergedError`, naming the first bad step of the streak.

The decision is the same on every rank: the gradient norm is global (gradients are averaged over
ranks before it is taken) and the per-rank losses are agreed through the strategy's collectives.
With fp16, an overflowing *gradient* is the grad scaler's business (it skips the step and lowers
its scale, as always); only a non-finite loss counts here then.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from pgmm_core.errors import TrainingDivergedError

logger = logging.getLogger(__name__)


class NonFiniteSteps:
    """Counts skipped non-finite steps (in total and in a row); its state goes into checkpoints."""

    def __init__(self, max_consecutive: int, *, strategy: Any, scaled: bool) -> None:
        self.max_consecutive = max_consecutive
        self.strategy = strategy
        self.scaled = scaled  # an fp16 grad scaler handles gradient overflow itself
        self.total = 0
        self.consecutive = 0
        self.first_bad_step: int | None = None

    def is_bad(self, loss: float, grad_norm: float) -> bool:
        """Whether this step's loss or gradient norm is non-finite on any rank."""
        bad = not math.isfinite(loss) or (not self.scaled and not math.isfinite(grad_norm))
        if self.strategy.world_size > 1:
            flag = torch.tensor(int(bad), dtype=torch.int64)
            bad = int(self.strategy.collectives.all_reduce(flag, op="sum")) > 0
        return bad

    def skipped(self, step: int, loss: float, grad_norm: float) -> None:
        """Record that ``step`` was skipped; raise once too many were skipped in a row."""
        self.total += 1
        self.consecutive += 1
        if self.consecutive == 1:
            self.first_bad_step = step
            if self.strategy.is_main:
                logger.warning("step %d: non-finite loss (%s) or gradient norm (%s): optimizer step skipped",
                               step, _short(loss), _short(grad_norm))
        if self.consecutive >= self.max_consecutive:
            raise TrainingDivergedError(
                f"training diverged: {self.consecutive} consecutive steps had a non-finite loss or gradient "
                f"norm, from step {self.first_bad_step} to step {step} (train.max_nonfinite_steps "
                f"{self.max_consecutive}); {self.total} step(s) were skipped in all. Lower train.lr, set "
                "train.grad_clip or check the data."
            )

    def good(self) -> None:
        """A finite step was taken: the streak ends."""
        if self.consecutive and self.strategy.is_main:
            logger.info("%d non-finite step(s) from step %d were skipped; training goes on",
                        self.consecutive, self.first_bad_step)
        self.consecutive = 0
        self.first_bad_step = None

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "consecutive": self.consecutive, "first_bad_step": self.first_bad_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.consecutive = state["total"], state["consecutive"]
        self.first_bad_step = state["first_bad_step"]


def _short(value: float) -> str:
    return f"{value:.4g}"
