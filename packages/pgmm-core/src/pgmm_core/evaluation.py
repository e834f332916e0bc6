"""Caption evaluation under its earlier names.

Evaluation belongs to the objective (``objective.evaluate(model, dataset, context)``); the caption
evaluation lives in :mod:`pgmm_core.objectives.caption`. These wrappers keep code written against
``evaluate_dataset`` working and produce exactly the objective's results.
"""

from __future__ import annotations

from typing import Any

import torch

from pgmm_core.config.sections import EvalSection
from pgmm_core.devices.collectives import Collectives
from pgmm_core.objectives.base import EvalContext, EvalOutput

EvalResult = EvalOutput


def _context(*, generation: Any, batch_size: int, num_workers: int, device: torch.device, policy: Any,
             collectives: Any, java: str, max_images: int | None, progress: bool) -> EvalContext:
    section = EvalSection(generation=generation, java=java, max_images=max_images)
    return EvalContext(device=device, policy=policy, collectives=collectives, batch_size=batch_size,
                       num_workers=num_workers, eval=section, progress=progress)


def caption_dataset(model: Any, dataset: Any, *, generation: Any, batch_size: int, num_workers: int,
                    device: torch.device, policy: Any, max_images: int | None = None,
                    progress: bool = False) -> tuple[list[dict[str, Any]], dict[Any, list[str]], int]:
    """This rank's share of captions, references and bad-image count for ``dataset``."""
    from pgmm_core.objectives.caption import CaptionObjective

    context = _context(generation=generation, batch_size=batch_size, num_workers=num_workers, device=device,
                       policy=policy, collectives=None, java="java", max_images=max_images, progress=progress)
    return CaptionObjective(None).caption_shard(model, dataset, context)


def evaluate_dataset(model: Any, dataset: Any, *, generation: Any, batch_size: int, num_workers: int,
                     device: torch.device, policy: Any, collectives: Collectives, java: str = "java",
                     max_images: int | None = None, progress: bool = False) -> EvalOutput:
    """Caption on every rank, gather everything, score once, and give every rank the same result."""
    from pgmm_core.objectives.caption import CaptionObjective

    context = _context(generation=generation, batch_size=batch_size, num_workers=num_workers, device=device,
                       policy=policy, collectives=collectives, java=java, max_images=max_images, progress=progress)
    return CaptionObjective(None).evaluate(model, dataset, context)
