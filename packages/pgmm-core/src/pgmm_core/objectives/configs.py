"""Config models of the built-in objectives (import-cheap: no torch here)."""

from __future__ import annotations

from typing import Literal

from pgmm_core.config.sections import ComponentConfig


class CaptionObjectiveConfig(ComponentConfig):
    """BLIP-2 stage 2: captioning loss on ``model.prompt`` + caption, evaluation by generated captions
    scored with pycocoevalcap (decoding settings in ``eval.generation``)."""

    type: Literal["caption"] = "caption"
