"""``CIDEr+Bleu_4``-style metric expressions used to pick the best checkpoint."""

from __future__ import annotations

from typing import Literal

BestMode = Literal["max", "min"]


def evaluate_metric_expression(expression: str, metrics: dict[str, float]) -> float | None:
    """Sum of the named metrics; ``None`` when any of them is absent (e.g. no evaluation yet)."""
    total = 0.0
    for name in metric_names(expression):
        if name not in metrics:
            return None
        total += float(metrics[name])
    return total


def metric_names(expression: str) -> list[str]:
    """The metric names an expression sums (``"CIDEr+Bleu_4"`` -> ``["CIDEr", "Bleu_4"]``)."""
    return [part.strip() for part in expression.split("+")]


def is_better(value: float, than: float | None, mode: BestMode = "max") -> bool:
    """Whether ``value`` beats ``than`` (``None``: nothing to beat yet): higher for ``max`` (scores such
    as CIDEr), lower for ``min`` (errors and losses such as ``mse``). A tie is not better, so the
    earlier checkpoint stays the best."""
    if than is None:
        return True
    return value < than if mode == "min" else value > than
