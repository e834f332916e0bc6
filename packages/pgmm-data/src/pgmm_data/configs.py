"""Config models of pgmm-data's datasets (pydantic only: importing this never imports torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig


class CaptionDatasetConfig(ComponentConfig):
    """Fields shared by caption datasets."""

    max_words: int = Field(50, gt=0, description="blip_caption: keep at most this many words.")
    max_samples: int | None = Field(None, gt=0, description="Use only the first N entries (quick runs).")


class SyntheticShapesConfig(CaptionDatasetConfig):
    """Procedural images of one coloured shape, captioned with its colour, shape and position.

    Deterministic from ``seed`` and the index; each split draws from its own stream. Augmentation
    is off: flips and crops would change the position the caption names.
    """

    type: Literal["synthetic_shapes"] = "synthetic_shapes"
    num_samples: int = Field(2000, gt=0)
    seed: int = 0
