"""The ``instruct`` objective: visual instruction tuning in the LLM's own chat format.

Items are conversations (``{"image", "conversation": [{"role", "content"}, ...], "id"}``, LLaVA's
``human``/``gpt`` turns mapped to ``user``/``assistant`` by the datasets). Each conversation is
rendered by the LLM tokenizer's chat template into one sequence (:mod:`pgmm_core.objectives.chat`):
the projected visual tokens stand where ``<image>`` is, every assistant turn's content and its end
of turn (openPangu: ``[unused10]``, its EOS) are the targets, everything else — system and user
turns, the template's role headers, the visual tokens, padding — is not. The loss is the mean
next-token cross-entropy over the micro-batch's target tokens, as the ``caption`` objective's.

Text limits: a conversation's text tokens (the visual tokens are not counted) are cut at the end to
``max_text_len``; cut conversations are counted and logged, as are conversations whose ``<image>``
marker was missing (the image is then put at the start of the first user turn) or repeated (the
extra markers are dropped). A conversation cut before its first assistant turn trains nothing.

Evaluation: for every assistant turn of the held-out conversations, the reply is generated after the
earlier turns (the reference ones: teacher forcing) with ``objective.generation`` and compared with
the reference after VQA answer normalisation (:func:`pgmm_core.vqa_accuracy.normalize_answer`):
``exact_match`` over all turns, ``exact_match/turn_<n>`` per turn position.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from pgmm_core.objectives.base import MODEL_PARTS, EvalContext, EvalOutput, LossOutput
from pgmm_core.objectives.chat import ChatRow, conversation_row
from pgmm_core.objectives.sequences import TruncationCount, assemble, generate_from_rows

logger = logging.getLogger(__name__)


@dataclass
class ChatBatch:
    """Readable conversations of a micro-batch."""

    images: torch.Tensor
    conversations: list[list[dict[str, str]]]
    ids: list[Any]
    bad: list[str] = field(default_factory=list)
    size_before_drop: int = 0

    def __len__(self) -> int:
        return len(self.conversations)


def collate_chat(items: list[dict[str, Any]]) -> ChatBatch:
    good = [item for item in items if "bad" not in item]
    return ChatBatch(images=torch.stack([item["image"] for item in good]) if good else torch.empty(0),
                     conversations=[list(item["conversation"]) for item in good],
                     ids=[item.get("id", i) for i, item in enumerate(good)],
                     bad=[item["bad"] for item in items if "bad" in item], size_before_drop=len(items))


class InstructObjective:
    """See the module docstring. ``config``: :class:`~pgmm_core.objectives.configs.InstructObjectiveConfig`."""

    parts = MODEL_PARTS

    def __init__(self, config: Any) -> None:
        self.config = config
        self.cuts = TruncationCount("conversation(s)", logger)
        self.markers_added = 0
        self.markers_removed = 0

    def collate(self, samples: list[dict[str, Any]]) -> ChatBatch:
        return collate_chat(samples)

    def with_system(self, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.config.system is None or (conversation and conversation[0]["role"] == "system"):
            return list(conversation)
        return [{"role": "system", "content": self.config.system}, *conversation]

    def row(self, tokenizer: Any, conversation: list[dict[str, str]], *, add_generation_prompt: bool = False,
            limit: int | None = None) -> ChatRow:
        """The conversation's row (system turn added when configured); marker fixes are counted."""
        rendered = conversation_row(tokenizer, self.with_system(conversation), max_text_len=limit,
                                    add_generation_prompt=add_generation_prompt)
        if rendered.marker_added or rendered.markers_removed:
            self.markers_added += int(rendered.marker_added)
            self.markers_removed += rendered.markers_removed
            logger.debug("image marker placed: %d conversation(s) without one so far, %d extra marker(s) removed",
                         self.markers_added, self.markers_removed)
        return rendered

    def loss(self, model: Any, batch: ChatBatch) -> LossOutput:
        model.require_parts("vision", "connector", "projector", "llm", purpose="the instruction loss")
        tok = model.llm.tokenizer
        rows = []
        for conversation in batch.conversations:
            rendered = self.row(tok, conversation, limit=self.config.max_text_len)
            self.cuts.add(rendered.truncated, self.config.max_text_len)
            rows.append(rendered.row)
        visual = model.encode_image(batch.images.to(model.device, non_blocking=True)).llm_embeds
        inputs = assemble(model.llm, visual, rows, padding="right")
        loss = model.llm.caption_loss(inputs.inputs_embeds, inputs.attention_mask, inputs.labels)
        return LossOutput(loss=loss, num_targets=sum(row.num_targets for row in rows))

    # --- generation and evaluation --------------------------------------------------------------

    def reply(self, model: Any, pixel_values: torch.Tensor, conversations: list[list[dict[str, str]]],
              settings: Any = None, streamer: Any = None) -> list[str]:
        """The next assistant turn of each conversation (one image each; the last turn is the user's)."""
        tok = model.llm.tokenizer
        rows = [self.row(tok, conversation, add_generation_prompt=True).row for conversation in conversations]
        return generate_from_rows(model, pixel_values, rows, settings or self.config.generation, streamer)

    def evaluate(self, model: Any, dataset: Any, context: EvalContext) -> EvalOutput:
        from pgmm_core.vqa_accuracy import normalize_answer

        results, bad = self.reply_shard(model, dataset, context)
        all_results: list[dict[str, Any]] = []
        total_bad = 0
        for part_results, part_bad in context.gather((results, bad)):
            all_results.extend(part_results)
            total_bad += part_bad
        all_results.sort(key=lambda r: (str(r["id"]), r["turn"]))
        by_turn: dict[int, list[float]] = defaultdict(list)
        for result in all_results:
            hit = float(normalize_answer(result["answer"]) == normalize_answer(result["reference"]))
            by_turn[result["turn"]].append(hit)
        every = [hit for hits in by_turn.values() for hit in hits]
        metrics: dict[str, Any] = {"exact_match": sum(every) / len(every)} if every else {}
        for turn, hits in sorted(by_turn.items()):
            metrics[f"exact_match/turn_{turn}"] = sum(hits) / len(hits)
        return EvalOutput(getattr(dataset, "name", "dataset"), all_results, metrics, total_bad)

    def reply_shard(self, model: Any, dataset: Any, context: EvalContext) -> tuple[list[dict[str, Any]], int]:
        loader = context.shard_loader(dataset, self.collate, max_items=context.eval.max_images)
        results: list[dict[str, Any]] = []
        bad = 0
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                bad += len(batch.bad)
                prompts, images, keys = [], [], []
                for i, conversation in enumerate(batch.conversations):
                    turn = 0
                    for j, message in enumerate(conversation):
                        if message["role"] != "assistant":
                            continue
                        turn += 1
                        prompts.append(conversation[:j])
                        images.append(batch.images[i])
                        keys.append((batch.ids[i], turn, conversation[j - 1]["content"] if j else "",
                                     message["content"]))
                if not prompts:
                    continue
                with torch.no_grad(), context.policy.autocast():
                    replies = self.reply(model, torch.stack(images).to(context.device), prompts)
                step = self.config.generation.num_return_sequences
                for k, (item_id, turn, question, reference) in enumerate(keys):
                    results.append({"id": item_id, "turn": turn, "question": question,
                                    "answer": replies[k * step], "reference": reference})
        finally:
            model.train(was_training)
        return results, bad


def build_instruct_objective(config: Any) -> InstructObjective:
    return InstructObjective(config)
