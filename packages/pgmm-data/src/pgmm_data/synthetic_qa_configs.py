"""Config models of the synthetic-shapes question and conversation datasets (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig


class SyntheticShapesQaConfig(ComponentConfig):
    """Fields shared by the synthetic-shapes VQA and chat datasets: the images are
    ``synthetic_shapes``' (same ``seed`` and index, same picture)."""

    num_samples: int = Field(2000, gt=0, description="Images; each gives one item per question kind (VQA) "
                             "or one conversation (chat).")
    seed: int = 0
    max_samples: int | None = Field(None, gt=0, description="Use only the first N items.")


class SyntheticShapesVqaConfig(SyntheticShapesQaConfig):
    """Questions on the colour, the shape and the place of ``synthetic_shapes``' images, as VQA items
    (LAVIS's answer weights in train; ten annotators' answers in val/test)."""

    type: Literal["synthetic_shapes_vqa"] = "synthetic_shapes_vqa"


class SyntheticShapesChatConfig(SyntheticShapesQaConfig):
    """Conversations about ``synthetic_shapes``' images: the colour, shape and place questions in a
    per-image order, one assistant answer each, ``<image>`` in the first user turn."""

    type: Literal["synthetic_shapes_chat"] = "synthetic_shapes_chat"
    turns: int = Field(3, ge=1, le=3, description="Question/answer pairs per conversation.")
