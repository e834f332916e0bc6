"""``CIDEr+Bleu_4``-style metric expressions used to pick the best checkpoint."""

from __future__ import annotations


def evaluate_metric_expression(expression: str, metrics: dict[str, float]) -> float | None:
    """Sum of the named metrics; ``None`` when any of them is absent (e.g. no evaluation yet)."""
    total = 0.0
    for name in (part.strip() for part in expression.split("+")):
        if name not in metrics:
            return None
        total += float(metrics[name])
    return total
