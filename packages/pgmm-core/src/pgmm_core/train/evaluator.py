"""Evaluation of a model on a list of eval datasets: in training and in ``python -m pgmm_core evaluate``.

Both use the same settings from the run's config (eval section, eval batch size, workers, precision
policy), the same per-dataset call — the objective's ``evaluate`` — and the same merging of metrics (the first dataset's
metrics unprefixed, the others' as ``<dataset name>/<metric>``), so evaluating a checkpoint
reproduces the trainer's metrics of its step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any


@dataclass
class Evaluation:
    """The merged metrics of every dataset, and each dataset's own result (captions, metrics)."""

    metrics: dict[str, Any]
    results: list[Any]


def build_datasets(config: Any, dataset_configs: Sequence[Any], *, split: str, image_spec: Any) -> list[Any]:
    """The datasets of a config section, preparing images as the run's vision tower needs them."""
    return [config.host.build("dataset", d, split=split, image_spec=image_spec, image_size=image_spec.size)
            for d in dataset_configs]


class Evaluator:
    """Evaluates ``datasets`` and remembers the latest metrics (and their step) for checkpoints."""

    def __init__(self, config: Any, objective: Any, datasets: list[Any], *, device: Any, policy: Any,
                 collectives: Any, is_main: bool,
                 scope: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.config = config
        self.objective = objective
        self.datasets = datasets
        self.device = device
        self.policy = policy
        self.collectives = collectives
        self.is_main = is_main
        self.scope = scope  # entered around every evaluation (the strategy's: see Strategy.evaluation)
        self.last_metrics: dict[str, Any] = {}
        self.metrics_step = -1

    # --- when ---------------------------------------------------------------------------------------

    def should_evaluate(self, step: int, *, epoch_end: bool) -> bool:
        """``train.eval_every`` steps, or (without it) every epoch end; never without datasets."""
        if not self.datasets:
            return False
        every = self.config.train.eval_every
        return every is None if epoch_end else bool(every) and step % every == 0

    def has_evaluated(self, step: int) -> bool:
        return self.metrics_step == step

    # --- evaluating ---------------------------------------------------------------------------------

    def _evaluate_dataset(self, model: Any, dataset: Any) -> Any:
        """One dataset's results and metrics (the objective's ``EvalOutput``), the same on every rank.

        The model is evaluated as it will be used: in eval mode (no dropout) and without autograd,
        whatever the objective does itself, and left in the mode it was in."""
        import torch

        from pgmm_core.objectives.base import EvalContext

        cfg = self.config
        context = EvalContext(device=self.device, policy=self.policy, collectives=self.collectives,
                              batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
                              num_workers=cfg.data.num_workers, eval=cfg.eval, progress=self.is_main)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return self.objective.evaluate(model, dataset, context)
        finally:
            model.train(was_training)

    def run(self, model: Any, step: int, *, on_result: Callable[[int, Any], None] | None = None) -> Evaluation:
        """Evaluate every dataset (on every rank); ``on_result(index, result)`` follows each one.
        The merged metrics become the evaluator's latest, for ``step``."""
        merged: dict[str, Any] = {}
        results = []
        for i, dataset in enumerate(self.datasets):
            with self.scope():
                result = self._evaluate_dataset(model, dataset)
            prefix = "" if i == 0 else f"{result.name}/"
            merged.update({f"{prefix}{k}": v for k, v in result.metrics.items() if k != "unavailable"})
            results.append(result)
            if on_result is not None:
                on_result(i, result)
        self.last_metrics, self.metrics_step = merged, step
        return Evaluation(merged, results)

    # --- state for checkpoints ----------------------------------------------------------------------

    def metrics_at(self, step: int) -> dict[str, Any]:
        """The latest metrics if they are ``step``'s, else none."""
        return self.last_metrics if self.metrics_step == step else {}

    def restore(self, metrics: dict[str, Any], step: int) -> None:
        self.last_metrics, self.metrics_step = metrics, step

