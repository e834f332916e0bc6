"""The ``caption`` objective: BLIP-2 stage 2 (the default).

Loss: the projected query tokens are placed before ``[BOS] prompt caption [EOS]`` and the LLM's
next-token cross-entropy supervises the caption and EOS only (LAVIS BLIP-2 stage 2 with openPangu's
EOS), averaged over the micro-batch's target tokens. Evaluation: every rank captions its share of the
dataset with ``eval.generation``, rank 0 scores all captions with pycocoevalcap (BLEU, METEOR,
ROUGE-L, CIDEr; SPICE when it can run), and every rank returns the same result.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from pgmm_core.data import Batch, collate
from pgmm_core.objectives.base import MODEL_PARTS, EvalContext, EvalOutput, LossOutput

IGNORE_INDEX = -100

logger = logging.getLogger(__name__)


def caption_loss(model: Any, pixel_values: torch.Tensor, captions: list[str]) -> LossOutput:
    """The stage-2 captioning loss of ``model`` (a :class:`~pgmm_core.model.MultimodalModel` with all
    four parts) on one batch; ``model(pixel_values, captions)`` computes exactly this."""
    if isinstance(captions, str) or len(captions) != pixel_values.shape[0]:
        count = "a string" if isinstance(captions, str) else f"{len(captions)} caption(s)"
        raise ValueError(f"one caption per image: got {pixel_values.shape[0]} image(s) and {count}")
    model.require_parts("vision", "connector", "projector", "llm", purpose="the captioning loss")
    image = model.encode_image(pixel_values)
    visual = image.llm_embeds
    text = model.tokenize_captions(captions, device=visual.device)
    text_embeds = model.llm.embed_tokens(text.input_ids)
    batch, queries = visual.shape[:2]
    inputs_embeds = torch.cat([visual.to(text_embeds.dtype), text_embeds], dim=1)
    visual_mask = torch.ones((batch, queries), dtype=text.attention_mask.dtype, device=visual.device)
    attention_mask = torch.cat([visual_mask, text.attention_mask], dim=1)
    visual_labels = torch.full((batch, queries), IGNORE_INDEX, dtype=torch.long, device=visual.device)
    labels = torch.cat([visual_labels, text.labels], dim=1)
    loss = model.llm.caption_loss(inputs_embeds, attention_mask, labels)
    return LossOutput(loss=loss, num_targets=int((labels[:, 1:] != IGNORE_INDEX).sum()))


class CaptionObjective:
    """Stage-2 captioning: all four model parts, :func:`pgmm_core.data.collate` batches (images,
    captions or references, unreadable images dropped and counted), :func:`caption_loss`, and
    caption generation scored against the references."""

    parts = MODEL_PARTS

    def __init__(self, config: Any) -> None:
        self.config = config

    def collate(self, samples: list[dict[str, Any]]) -> Batch:
        return collate(samples)

    def loss(self, model: Any, batch: Batch) -> LossOutput:
        return caption_loss(model, batch.images.to(model.device, non_blocking=True), batch.captions)

    def evaluate(self, model: Any, dataset: Any, context: EvalContext) -> EvalOutput:
        """Caption on every rank, gather everything, score once, and give every rank the same result."""
        from pgmm_core.metrics import caption_metrics

        settings = context.eval
        results, references, bad = self.caption_shard(model, dataset, context)
        all_results: list[dict[str, Any]] = []
        all_references: dict[Any, list[str]] = {}
        total_bad = 0
        for part_results, part_refs, part_bad in context.gather((results, references, bad)):
            all_results.extend(part_results)
            all_references.update(part_refs)
            total_bad += part_bad
        all_results.sort(key=lambda r: str(r["image_id"]))
        metrics: dict[str, Any] = {}
        if context.rank == 0 and all_results:
            predictions = {r["image_id"]: r["caption"] for r in all_results}
            metrics = caption_metrics(predictions, all_references, java=settings.java)
        metrics = context.gather(metrics)[0]
        name = getattr(dataset, "name", "dataset")
        logger.debug("evaluated %s: %d captions, %d unreadable image(s)", name, len(all_results), total_bad)
        return EvalOutput(name, all_results, metrics, total_bad)

    def caption_shard(self, model: Any, dataset: Any,
                      context: EvalContext) -> tuple[list[dict[str, Any]], dict[Any, list[str]], int]:
        """This rank's captions (LAVIS results format), references and bad-image count for ``dataset``."""
        generation = context.eval.generation
        loader = context.shard_loader(dataset, self.collate, max_items=context.eval.max_images)
        results: list[dict[str, Any]] = []
        references: dict[Any, list[str]] = {}
        bad = 0
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                bad += len(batch.bad)
                if len(batch) == 0:
                    continue
                with context.policy.autocast():
                    captions = model.generate(batch.images.to(context.device), generation=generation)
                step = generation.num_return_sequences
                for i, image_id in enumerate(batch.image_ids):
                    results.append({"image_id": image_id, "caption": captions[i * step]})
                    references[image_id] = list(batch.references[i])
        finally:
            model.train(was_training)
        return results, references, bad


def build_caption_objective(config: Any) -> CaptionObjective:
    return CaptionObjective(config)
