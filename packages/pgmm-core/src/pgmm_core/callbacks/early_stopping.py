"""Stop a run whose validation metric stopped improving."""

from __future__ import annotations

from typing import Any

from pgmm_core.hookspecs import hookimpl
from pgmm_core.metrics_expr import evaluate_metric_expression


class EarlyStopping:
    """Counts evaluations without improvement of ``metric`` and asks the trainer to stop."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.best: float | None = None
        self.bad_evals = 0

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run still knows its best value and patience count."""
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_evals = state["best"], state["bad_evals"]

    @hookimpl
    def pgmm_on_eval_end(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        value = evaluate_metric_expression(self.config.metric, metrics)
        if value is None:
            return
        if self.best is None or value > self.best + self.config.min_delta:
            self.best, self.bad_evals = value, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.config.patience:
            run.request_stop(
                f"early stopping: {self.config.metric} has not improved for {self.bad_evals} evaluations "
                f"(best {self.best:.4f})"
            )
