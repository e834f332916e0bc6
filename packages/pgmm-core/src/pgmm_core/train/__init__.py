"""The stage-2 trainer. ``python -m pgmm_core.train --config FILE [k=v ...]`` runs :func:`train`."""

from __future__ import annotations

from typing import Any


def train(config: Any, *, resume: str | None = None) -> dict[str, Any]:
    """Train the model a validated config describes; returns a summary (steps, losses, metrics)."""
    from pgmm_core.train.loop import Trainer

    return Trainer(config, resume=resume).run()
