"""Config of the ``qformer_pretrain`` objective (BLIP-2 stage 1; import-cheap: no torch here)."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pgmm_core.config.sections import ObjectiveConfig
from pgmm_vision.stage1.retrieval_settings import RetrievalSettings

MIN_GLOBAL_BATCH = 2


def global_batch_problem(batch_size: int, world_size: int) -> str | None:
    """Why ``batch_size`` per process on ``world_size`` processes cannot train stage 1, or ``None``.

    ITC contrasts each image with every caption of the global batch (all ranks' pairs) and ITM draws
    its hard negatives from them: a global batch of one pair has no negative at all (LAVIS would fail
    with a shape error deep in its loss)."""
    total = batch_size * world_size
    if total >= MIN_GLOBAL_BATCH:
        return None
    return (f"data.batch_size: {batch_size} per process x {world_size} process(es) is a global batch of "
            f"{total} pair(s); the qformer_pretrain objective needs at least {MIN_GLOBAL_BATCH} (ITC and ITM "
            "take their negatives from the other pairs of the global batch): raise data.batch_size or run "
            "on more processes")


class QFormerPretrainConfig(ObjectiveConfig):
    """BLIP-2 stage 1, LAVIS' ``Blip2Qformer.forward``: image-text contrastive (ITC), image-text matching
    with hard negatives (ITM) and image-grounded text generation (ITG) on the Q-Former (the connector
    with ``text_side: true``); no projector and no LLM are built. Evaluation: zero-shot retrieval."""

    type: Literal["qformer_pretrain"] = "qformer_pretrain"
    parts: ClassVar[frozenset[str]] = frozenset({"vision", "connector"})

    itc: float = Field(1.0, ge=0, description="Weight of the image-text contrastive loss (LAVIS: 1).")
    itm: float = Field(1.0, ge=0, description="Weight of the image-text matching loss (LAVIS: 1).")
    itg: float = Field(1.0, ge=0, description="Weight of the image-grounded generation loss (LAVIS: 1).")
    same_image_by_id: bool = Field(
        True, description="Pairs whose items share an image_id count as the same image, as LAVIS does when its "
        "samples carry image_id (its COCO/VG stage-1 data do): ITC spreads the target over them and ITM never "
        "draws them as negatives. False: only a pair itself is positive (LAVIS without image_id).")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings,
                                         description="The evaluation: zero-shot image-text retrieval settings.")

    @model_validator(mode="after")
    def _some_loss(self) -> QFormerPretrainConfig:
        if self.itc == 0 and self.itm == 0 and self.itg == 0:
            raise ValueError("itc, itm and itg are all 0: nothing would be trained")
        return self

    def config_problems(self, config: Any, world_size: int | None = None) -> list[str]:
        """Problems of a whole validated run config for this objective: the global batch
        (``data.batch_size`` x the launch's world size — ``WORLD_SIZE`` as torchrun sets it, 1 in a
        plain shell) must hold a negative. The loss checks the real global batch again at run time."""
        if world_size is None:
            world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        problem = global_batch_problem(config.data.batch_size, world_size)
        return [problem] if problem else []
