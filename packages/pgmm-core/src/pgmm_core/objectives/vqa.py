"""The ``vqa`` objective: visual question answering, BLIP-2 style, with LAVIS's answer handling.

A question becomes the row ``[visual tokens] [BOS] prompt(question)`` (BLIP-2's zero-shot prompt
``Question: {} Short answer:`` by default), its answer the target: ``answer [EOS]``.

Loss (BLIP's VQA loss): LAVIS's VQA datasets give each question its distinct answers with weights
``count / total`` over the annotators. Every distinct answer is a row of its own (the question's
visual tokens repeated); a row's loss is its answer's summed token cross-entropy, and the batch loss
is ``sum(weight * row loss) / questions`` — BLIP's ``(weights * answer_loss).sum() / batch``, without
its label smoothing. GQA-style items (one answer, weight 1) reduce it to plain answer likelihood.

Evaluation: answers are generated from left-padded prompts with ``objective.generation`` — LAVIS's
zero-shot VQA settings by default (beam search of 5, at most 10 new tokens, at least 1, length
penalty 0) — and scored with the official VQA accuracy (:func:`pgmm_core.vqa_accuracy.vqa_accuracy`,
fractions in [0, 1]) or, for datasets whose ``answer_metric`` is ``"exact"`` (GQA), exact match of the
normalised answers. Results are LAVIS's ``[{"question_id", "answer"}]``.

Text limits: the prompt is cut to ``max_question_len`` tokens (BOS included; the question's end goes,
the prompt's last token is kept) and the answer to ``max_answer_len`` tokens before EOS; both are
counted and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from pgmm_core.objectives.base import MODEL_PARTS, EvalContext, EvalOutput, LossOutput
from pgmm_core.objectives.sequences import (
    IGNORE_INDEX,
    IMAGE_SLOT,
    TokenRow,
    TruncationCount,
    assemble,
    generate_from_rows,
)

logger = logging.getLogger(__name__)


@dataclass
class VqaBatch:
    """Readable VQA items of a micro-batch. Train items carry the distinct ``answers`` and their
    ``answer_weights``; eval items all annotators' answers (``answer_weights`` empty)."""

    images: torch.Tensor
    questions: list[str]
    answers: list[list[str]]
    answer_weights: list[list[float]]
    question_ids: list[Any]
    answer_types: list[str | None] = field(default_factory=list)
    question_types: list[str | None] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    size_before_drop: int = 0

    def __len__(self) -> int:
        return len(self.questions)


def collate_vqa(items: list[dict[str, Any]]) -> VqaBatch:
    """Stack the readable items; keep the reasons of the unreadable ones (dropped and counted)."""
    good = [item for item in items if "bad" not in item]
    bad = [item["bad"] for item in items if "bad" in item]
    return VqaBatch(
        images=torch.stack([item["image"] for item in good]) if good else torch.empty(0),
        questions=[item["question"] for item in good],
        answers=[list(item.get("answers", [])) for item in good],
        answer_weights=[list(item["answer_weights"]) for item in good if "answer_weights" in item],
        question_ids=[item.get("question_id", i) for i, item in enumerate(good)],
        answer_types=[item.get("answer_type") for item in good],
        question_types=[item.get("question_type") for item in good],
        bad=bad,
        size_before_drop=len(items),
    )


def question_ids(tokenizer: Any, prompt: str, question: str, limit: int) -> tuple[list[int], bool]:
    """``[BOS] prompt(question)`` cut to ``limit`` tokens (the question's end is dropped, the prompt's
    last token kept: it is what the answer follows); whether it was cut."""
    ids = tokenizer.encode(prompt.format(question), add_bos=True)
    if len(ids) <= limit:
        return ids, False
    return ids[: limit - 1] + ids[-1:], True


def prompt_row(tokenizer: Any, prompt: str, question: str, limit: int) -> tuple[TokenRow, bool]:
    """The generation row of one question (image slot, then the prompt) and whether it was cut."""
    ids, cut = question_ids(tokenizer, prompt, question, limit)
    return TokenRow([IMAGE_SLOT, *ids], [IGNORE_INDEX] * (len(ids) + 1)), cut


class VqaObjective:
    """See the module docstring. ``config``: :class:`~pgmm_core.objectives.configs.VqaObjectiveConfig`."""

    parts = MODEL_PARTS

    def __init__(self, config: Any) -> None:
        self.config = config
        self.question_cuts = TruncationCount("question(s)", logger)
        self.answer_cuts = TruncationCount("answer(s)", logger)
        self.prompt_cuts = TruncationCount("question(s) asked", logger, logging.DEBUG)

    def collate(self, samples: list[dict[str, Any]]) -> VqaBatch:
        return collate_vqa(samples)

    # --- loss -----------------------------------------------------------------------------------

    def answer_rows(self, tokenizer: Any, batch: VqaBatch) -> tuple[list[TokenRow], list[int], list[float]]:
        """One row per (question, distinct answer): the rows, each question's row count and each row's
        weight (uniform over a question's answers when the items carry no weights)."""
        cfg = self.config
        rows, counts, weights = [], [], []
        for i, question in enumerate(batch.questions):
            prefix, cut = question_ids(tokenizer, cfg.prompt, question, cfg.max_question_len)
            self.question_cuts.add(cut, cfg.max_question_len)
            answers = batch.answers[i]
            if not answers:
                raise ValueError(f"question {batch.question_ids[i]!r} has no answer to train on")
            answer_weights = (batch.answer_weights[i] if i < len(batch.answer_weights)
                              else [1.0 / len(answers)] * len(answers))
            for answer, weight in zip(answers, answer_weights):
                body = tokenizer.encode(answer, add_bos=False)
                self.answer_cuts.add(len(body) > cfg.max_answer_len, cfg.max_answer_len)
                target = body[: cfg.max_answer_len] + [tokenizer.eos_token_id]
                rows.append(TokenRow([IMAGE_SLOT, *prefix, *target],
                                     [IGNORE_INDEX] * (len(prefix) + 1) + target))
                weights.append(float(weight))
            counts.append(len(answers))
        return rows, counts, weights

    def loss(self, model: Any, batch: VqaBatch) -> LossOutput:
        model.require_parts("vision", "connector", "projector", "llm", purpose="the VQA loss")
        rows, counts, weights = self.answer_rows(model.llm.tokenizer, batch)
        visual = model.encode_image(batch.images.to(model.device, non_blocking=True)).llm_embeds
        repeats = torch.tensor(counts, device=visual.device)
        inputs = assemble(model.llm, visual.repeat_interleave(repeats, dim=0), rows, padding="right")
        row_losses = model.llm.sequence_loss(inputs.inputs_embeds, inputs.attention_mask, inputs.labels)
        weight = torch.tensor(weights, dtype=row_losses.dtype, device=row_losses.device)
        loss = (weight * row_losses).sum() / len(batch)
        return LossOutput(loss=loss, num_targets=len(batch))

    # --- evaluation -----------------------------------------------------------------------------

    def answer(self, model: Any, pixel_values: torch.Tensor, questions: list[str], settings: Any = None,
               streamer: Any = None, prompt: str | None = None) -> list[str]:
        """Generated answers to ``questions`` (one per image) with ``settings`` (default: the config's);
        ``prompt`` replaces the config's prompt (``"{}"``: the questions are whole prompts already)."""
        tok = model.llm.tokenizer
        rows = []
        for question in questions:
            row, cut = prompt_row(tok, prompt or self.config.prompt, question, self.config.max_question_len)
            self.prompt_cuts.add(cut, self.config.max_question_len)
            rows.append(row)
        return generate_from_rows(model, pixel_values, rows, settings or self.config.generation, streamer)

    def evaluate(self, model: Any, dataset: Any, context: EvalContext) -> EvalOutput:
        """Answer on every rank, gather, score once on rank 0, give every rank the same result."""
        results, annotations, types, bad = self.answer_shard(model, dataset, context)
        all_results: list[dict[str, Any]] = []
        all_annotations: dict[Any, list[str]] = {}
        all_types: dict[Any, tuple[Any, Any]] = {}
        total_bad = 0
        for part_results, part_annotations, part_types, part_bad in context.gather((results, annotations, types, bad)):
            all_results.extend(part_results)
            all_annotations.update(part_annotations)
            all_types.update(part_types)
            total_bad += part_bad
        all_results.sort(key=lambda r: str(r["question_id"]))
        metrics: dict[str, Any] = {}
        if context.rank == 0 and all_results:
            metrics = self.score(all_results, all_annotations, all_types, getattr(dataset, "answer_metric", "vqa"))
        metrics = context.gather(metrics)[0]
        return EvalOutput(getattr(dataset, "name", "dataset"), all_results, metrics, total_bad)

    def answer_shard(self, model: Any, dataset: Any, context: EvalContext) -> tuple[list[dict[str, Any]],
                                                                                 dict[Any, list[str]], dict[Any, Any], int]:
        loader = context.shard_loader(dataset, self.collate, max_items=context.eval.max_images)
        results, annotations, types, bad = [], {}, {}, 0
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                bad += len(batch.bad)
                if len(batch) == 0:
                    continue
                with torch.no_grad(), context.policy.autocast():
                    answers = self.answer(model, batch.images.to(context.device), batch.questions)
                step = self.config.generation.num_return_sequences
                for i, qid in enumerate(batch.question_ids):
                    results.append({"question_id": qid, "answer": answers[i * step]})
                    annotations[qid] = list(batch.answers[i])
                    types[qid] = (batch.answer_types[i], batch.question_types[i])
        finally:
            model.train(was_training)
        return results, annotations, types, bad

    @staticmethod
    def score(results: list[dict[str, Any]], annotations: dict[Any, list[str]], types: dict[Any, Any],
              metric: str) -> dict[str, Any]:
        """``vqa_accuracy`` (and ``vqa_accuracy/<answer type>``) or, for ``exact``, ``exact_match``."""
        from pgmm_core.vqa_accuracy import exact_match, vqa_accuracy

        predictions = {r["question_id"]: r["answer"] for r in results}
        if metric == "exact":
            return {"exact_match": exact_match(predictions, {q: a[0] for q, a in annotations.items()})}
        answer_types = {q: t[0] for q, t in types.items() if t[0] is not None} or None
        question_types = {q: t[1] for q, t in types.items() if t[1] is not None} or None
        scores = vqa_accuracy(predictions, annotations, answer_types=answer_types, question_types=question_types)
        metrics = {"vqa_accuracy": scores["overall"]}
        for name, value in sorted((scores.get("per_answer_type") or {}).items()):
            metrics[f"vqa_accuracy/{name}"] = value
        return metrics


def build_vqa_objective(config: Any) -> VqaObjective:
    return VqaObjective(config)
