"""A training callback that watches gradient norms, written from docs/plugins.md.

It implements ``pgmm_on_before_optimizer_step``: there the gradients of the step are still on the
parameters (averaged over ranks, unscaled, clipped), which ``pgmm_on_step_end`` no longer sees.
Every ``every`` steps it takes the global norm and the norm of each model part (vision, connector,
projector, llm: the first component of the parameter names), appends them to
``<output_dir>/grad_norms.jsonl`` on rank 0, and keeps the largest norm seen as its checkpoint state,
so a resumed run reports the whole run's maximum.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import torch

from pgmm_core.hookspecs import hookimpl

logger = logging.getLogger(__name__)

FILE = "grad_norms.jsonl"


def gradient_norms(model: torch.nn.Module) -> dict[str, float]:
    """The global L2 norm of the gradients present (``"total"``) and that of each model part."""
    squares: dict[str, float] = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            part = name.split(".", 1)[0]
            squares[part] = squares.get(part, 0.0) + float(param.grad.detach().float().pow(2).sum())
    norms = {part: math.sqrt(value) for part, value in sorted(squares.items())}
    norms["total"] = math.sqrt(sum(squares.values()))
    return norms


class GradNormLog:
    """Records gradient norms before optimizer steps; warns when one exceeds ``warn_above``."""

    def __init__(self, config: Any) -> None:
        self.every = config.every
        self.warn_above = config.warn_above
        self.max_norm = 0.0
        self.max_step = 0

    @hookimpl
    def pgmm_on_before_optimizer_step(self, run: Any, step: int) -> None:
        if step % self.every:
            return
        norms = gradient_norms(run.model)
        if norms["total"] > self.max_norm:
            self.max_norm, self.max_step = norms["total"], step
        if not run.is_main:  # every rank sees the same (averaged) gradients; one writes
            return
        with (run.output_dir / FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **norms}) + "\n")
        if self.warn_above is not None and norms["total"] > self.warn_above:
            logger.warning("step %d: gradient norm %.3g > %.3g", step, norms["total"], self.warn_above)

    @hookimpl
    def pgmm_on_train_end(self, run: Any, summary: dict[str, Any]) -> None:
        if run.is_main and self.max_step:
            logger.info("largest gradient norm: %.4g at step %d", self.max_norm, self.max_step)

    def state_dict(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "max_step": self.max_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.max_norm, self.max_step = state["max_norm"], state["max_step"]


def build_grad_norm_log(config: Any) -> GradNormLog:
    return GradNormLog(config)
