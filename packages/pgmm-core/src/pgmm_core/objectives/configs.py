"""Config models of the built-in objectives (import-cheap: no torch here). Their base,
:class:`~pgmm_core.config.sections.ObjectiveConfig`, is re-exported by :mod:`pgmm_core.objectives.base`."""

from __future__ import annotations

from typing import Literal

from pgmm_core.config.sections import ObjectiveConfig


class CaptionObjectiveConfig(ObjectiveConfig):
    """BLIP-2 stage 2: captioning loss on ``model.prompt`` + caption, evaluation by generated captions
    scored with pycocoevalcap (decoding settings in ``eval.generation``)."""

    type: Literal["caption"] = "caption"
