"""The trainable weights of a finished run, for tools outside the core (``convert`` in pgmm-vision).

Public through ``pgmm_core.read_run_weights``: a plugin reads a run's checkpoint without knowing the
checkpoint layout or importing the trainer's modules.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def is_run_directory(path: str | Path) -> bool:
    """Whether ``path`` is a pgmm run directory (``config.json`` beside ``checkpoints/``)."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def read_run_weights(run_dir: str | Path, checkpoint: str = "best") -> tuple[Path, dict[str, Any]]:
    """``(checkpoint directory, {name: tensor})``: the trainable weights of the run's ``best``
    (default), ``last`` or named checkpoint, after verifying its sizes and hashes."""
    from safetensors.torch import load_file

    from pgmm_core.runs import resolve_checkpoint
    from pgmm_core.train.checkpoint import WEIGHTS, verify_checkpoint

    path = resolve_checkpoint(Path(run_dir), checkpoint)
    verify_checkpoint(path)
    logger.info("reading %s", path / WEIGHTS)
    return path, load_file(str(path / WEIGHTS))
