"""Config models of the built-in objectives (import-cheap: no torch here). Their base,
:class:`~pgmm_core.config.sections.ObjectiveConfig`, is re-exported by :mod:`pgmm_core.objectives.base`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pgmm_core.config.sections import GenerationSection, ObjectiveConfig


class CaptionObjectiveConfig(ObjectiveConfig):
    """BLIP-2 stage 2: captioning loss on ``model.prompt`` + caption, evaluation by generated captions
    scored with pycocoevalcap (decoding settings in ``eval.generation``)."""

    type: Literal["caption"] = "caption"


def _vqa_generation() -> GenerationSection:
    """BLIP-2's zero-shot VQA decoding (LAVIS ``vqav2_zeroshot_opt_eval.yaml``: num_beams 5, max_len 10,
    min_len 1; ``Blip2OPT.predict_answers``' length_penalty 0, which the task leaves at its default)."""
    return GenerationSection(num_beams=5, max_new_tokens=10, min_new_tokens=1, length_penalty=0.0)


def _chat_generation() -> GenerationSection:
    """Chat replies: greedy (so that they stream token by token), up to 128 tokens, stopped by EOS."""
    return GenerationSection(num_beams=1, max_new_tokens=128, min_new_tokens=1)


class VqaObjectiveConfig(ObjectiveConfig):
    """Visual question answering (BLIP-2 style): the visual tokens, then ``[BOS]`` + ``prompt`` with the
    question, then the answer and EOS. Every distinct answer of a question is a target, its loss (summed
    over its tokens) weighted by its share of the annotators (LAVIS's answer weights), as BLIP's VQA
    loss; evaluation generates answers with ``generation`` and scores them with the official VQA
    accuracy (``exact`` match for GQA-style datasets)."""

    type: Literal["vqa"] = "vqa"
    prompt: str = Field("Question: {} Short answer:",
                        description="The question's text; {} is replaced by the question (BLIP-2's zero-shot prompt).")
    max_question_len: int = Field(32, gt=1, description="Prompt tokens kept, BOS included (LAVIS max_txt_len); "
                                  "longer questions are truncated and counted.")
    max_answer_len: int = Field(10, gt=0, description="Answer tokens kept before EOS; longer answers are "
                                "truncated and counted.")
    generation: GenerationSection = Field(default_factory=_vqa_generation,
                                          description="Answer decoding in evaluation and `ask` (LAVIS's zero-shot VQA).")

    @field_validator("prompt")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("the prompt needs exactly one {} where the question goes")
        return value


class InstructObjectiveConfig(ObjectiveConfig):
    """Visual instruction tuning: conversations rendered by the LLM tokenizer's chat template, the visual
    tokens where ``<image>`` stands, loss on the assistant turns only (content and end of turn), every
    turn of a conversation in one sequence. Evaluation answers each assistant turn of the held-out
    conversations (earlier turns given) and reports exact match after VQA answer normalisation."""

    type: Literal["instruct"] = "instruct"
    max_text_len: int = Field(512, gt=1, description="Text tokens of a conversation kept (visual tokens not "
                              "counted); longer conversations are cut at the end and counted.")
    system: str | None = Field(None, description="A system turn put before conversations that have none.")
    generation: GenerationSection = Field(default_factory=_chat_generation,
                                          description="Reply decoding in evaluation and `ask`.")
