"""Opening a finished (or running) run directory: its config, its checkpoints, its model.

A run directory is self-contained — ``config.json`` plus ``checkpoints/`` — so a run trained on
another machine can be used here; paths to the frozen weights (``model.llm.path``,
``model.vision.checkpoint``, …) are overridden with ``key=value`` pairs like any config value.
The model is built under the run's seed, as the trainer built it, so frozen parts initialised at
random (no checkpoint named) come out the same; ``frozen_weights.json`` confirms it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError, ConfigError
from pgmm_core.run_dir import RunDirectory

logger = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    run_dir: Path
    config: Any
    model: Any
    checkpoint: Path
    step: int
    frozen_mismatch: list[str] | None = None  # parts whose frozen weights differ from the run's record


def resolve_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best`` (falls back to ``last`` when no evaluation picked one), ``last``, or a directory path."""
    from pgmm_core.train import checkpoint as ckpt

    run = RunDirectory(run_dir)
    root = run.checkpoints
    if which not in ("best", "last"):
        path = Path(which)
        if not path.is_absolute() and not path.exists():
            path = root / which
        if not path.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {which}")
        return path
    best = run.read_best() if which == "best" else None
    if best is not None:
        path = run.checkpoint(best["step"])
        if path.is_dir():
            return path
    found = ckpt.latest_complete(root)
    if found is None:
        raise CheckpointError(f"no complete checkpoint in {root}")
    return found[0]


def load_run(run_dir: str | Path, *, checkpoint: str = "best", overrides: tuple[str, ...] | list[str] = (),
             host: Any | None = None) -> LoadedRun:
    """Rebuild the model of a run and load its trainable weights from a verified checkpoint."""
    from pgmm_core.config.loading import load_config
    from pgmm_core import frozen_weights
    from pgmm_core.model import build_model
    from pgmm_core.train import checkpoint as ckpt
    from pgmm_core.train.rng import seeded_on_cpu

    run_dir = Path(run_dir)
    layout = RunDirectory(run_dir)
    if not layout.is_run():
        raise ConfigError([f"{run_dir} is not a pgmm run directory (no {layout.CONFIG})"])
    config = load_config(layout.config, overrides, host=host)
    path = resolve_checkpoint(run_dir, checkpoint)
    with seeded_on_cpu(config.train.seed):
        model = build_model(config)
    mismatch = frozen_weights.differing_parts(run_dir, model.frozen_fingerprint)
    if mismatch:
        logger.warning("pgmm: warning: %s", frozen_weights.mismatch_warning(run_dir, mismatch))
    shapes = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    weights, _, meta = ckpt.load_checkpoint(path, shapes)
    _, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise CheckpointError(f"{path}: unexpected weights {unexpected[:5]}")
    model.eval()
    return LoadedRun(run_dir, config, model, path, int(meta["step"]), mismatch)
