"""The ``qformer_pretrain`` objective: BLIP-2 stage 1 (ITC + ITM + ITG) on the vision tower and Q-Former.

Only ``vision`` and ``connector`` are built (no projector, no LLM). The connector must be the
Q-Former with its text side (``model.connector.text_side: true``, :mod:`pgmm_vision.stage1`). A batch
is the core's image-caption batch; captions are tokenized by the connector as LAVIS does (padded and
truncated to ``max_text_len``; truncated captions are counted and logged). The losses are
:func:`~pgmm_vision.stage1.losses.stage1_losses` over the global batch of all ranks, weighted by the
config (``itc``, ``itm``, ``itg``) and logged separately as ``loss/itc``, ``loss/itm``, ``loss/itg``.
Evaluation is zero-shot retrieval (:mod:`pgmm_vision.stage1.retrieval`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from pgmm_core.errors import ConfigError
from pgmm_core.objectives.base import EvalContext, EvalOutput, LossOutput
from pgmm_vision.stage1.configs import MIN_GLOBAL_BATCH, QFormerPretrainConfig, global_batch_problem

logger = logging.getLogger(__name__)


@dataclass
class PairBatch:
    """Image-caption pairs of one micro-batch (what the trainer reads: ``len``, ``bad``,
    ``size_before_drop``); ``image_ids`` say which pairs show the same image."""

    images: torch.Tensor
    image_ids: list[Any]
    captions: list[str]
    bad: list[str] = field(default_factory=list)
    size_before_drop: int = 0

    def __len__(self) -> int:
        return len(self.image_ids)


def collate_pairs(items: list[dict[str, Any]]) -> PairBatch:
    """Stack the readable items (``image``, ``caption``, ``image_id``); keep the reasons of the
    unreadable ones (``{"bad": reason}``), which are dropped and counted."""
    good = [item for item in items if "bad" not in item]
    bad = [item["bad"] for item in items if "bad" in item]
    images = torch.stack([item["image"] for item in good]) if good else torch.empty(0)
    return PairBatch(images=images, image_ids=[item["image_id"] for item in good],
                     captions=[item["caption"] for item in good if "caption" in item], bad=bad,
                     size_before_drop=len(items))


class TruncationCounter:
    """Counts captions cut to the text limit; logs the first one and then at every doubling, so a
    data set of long captions is visible without a line per batch."""

    def __init__(self) -> None:
        self.truncated = 0
        self.seen = 0
        self._next_report = 1

    def add(self, truncated: int, seen: int, limit: int) -> None:
        self.truncated += truncated
        self.seen += seen
        if self.truncated >= self._next_report:
            logger.info("%d of %d caption(s) so far were longer than %d tokens and were truncated (as LAVIS does)",
                        self.truncated, self.seen, limit)
            while self._next_report <= self.truncated:
                self._next_report *= 2


class QFormerPretrainObjective:
    """Stage-1 Q-Former pretraining (see the module docstring).

    ``collectives``: the run's dtype-safe collectives for the cross-rank gathers (a backend-agnostic
    instance when left ``None``: only float32 and int64 tensors are sent). ``sampler``: how ITM's
    negatives are drawn (default: one multinomial draw per row, as LAVIS).
    """

    parts = QFormerPretrainConfig.parts

    def __init__(self, config: QFormerPretrainConfig) -> None:
        from pgmm_vision.stage1.losses import draw_negatives

        self.config = config
        self.collectives: Any = None
        self.sampler = draw_negatives
        self.truncation = TruncationCounter()

    def collate(self, samples: list[dict[str, Any]]) -> PairBatch:
        return collate_pairs(samples)

    def loss(self, model: Any, batch: PairBatch) -> LossOutput:
        from pgmm_vision.stage1.gather import GlobalBatch
        from pgmm_vision.stage1.losses import stage1_losses

        model.require_parts("vision", "connector", purpose="Q-Former pretraining (qformer_pretrain)")
        connector = _text_side(model.connector)
        if len(batch.captions) != len(batch):
            raise ValueError(f"qformer_pretrain trains on image-caption pairs: {len(batch)} image(s) but "
                             f"{len(batch.captions)} caption(s) in the batch (is the train split a caption data set?)")
        device = model.device
        pairs = GlobalBatch(len(batch), self.collectives, device)
        if pairs.total < MIN_GLOBAL_BATCH:
            raise ConfigError([global_batch_problem(len(batch), pairs.world_size)
                               + f" (this step's global batch: {pairs.total} usable pair(s))"])
        text = connector.tokenize(batch.captions, device=device)
        self.truncation.add(text.truncated, len(batch), connector.max_text_len)
        vision_embeds = model.vision_embeddings(batch.images.to(device, non_blocking=True))
        keys = pairs.image_keys(batch.image_ids, device) if self.config.same_image_by_id else None
        losses = stage1_losses(connector, vision_embeds, text.input_ids, text.attention_mask, pairs, keys,
                               query=connector.query_pass(vision_embeds), sampler=self.sampler)
        cfg = self.config
        total = cfg.itc * losses.itc + cfg.itm * losses.itm + cfg.itg * losses.itg
        parts = {"itc": float(losses.itc.detach()), "itm": float(losses.itm.detach()),
                 "itg": float(losses.itg.detach())}
        return LossOutput(loss=total, num_targets=len(batch), parts=parts)

    def evaluate(self, model: Any, dataset: Any, context: EvalContext) -> EvalOutput:
        """Zero-shot image-text retrieval (ITC ranking, ITM re-ranking): R@1/5/10 both ways."""
        from pgmm_vision.stage1.retrieval import evaluate_retrieval

        return evaluate_retrieval(model, dataset, context, self.config.retrieval)



def _text_side(connector: Any) -> Any:
    if not getattr(connector, "text_side", False):
        raise ConfigError(["model.connector.text_side: the qformer_pretrain objective trains the Q-Former's text "
                           "side and heads; set model.connector.text_side to true (type 'qformer')"])
    return connector


def build_qformer_pretrain(config: QFormerPretrainConfig) -> QFormerPretrainObjective:
    return QFormerPretrainObjective(config)
