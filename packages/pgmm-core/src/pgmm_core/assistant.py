"""Asking a trained run about an image: ``Assistant.from_run(run_dir).ask(image, question)``.

The run's objective decides how a question is put to the model (:attr:`Assistant.mode`):

* ``vqa`` — BLIP-2's VQA prompt (``Question: {} Short answer:`` or the run's), answers decoded with
  the objective's ``generation`` (LAVIS's zero-shot VQA settings by default). Earlier turns of a
  ``history`` are written before the question in the same format (``Question: q Short answer: a``).
* ``instruct`` — the conversation (history plus the new user turn, ``<image>`` on the first user turn)
  rendered by the LLM's chat template, the reply generated until EOS.
* ``caption`` — a run trained for captions only: it cannot read a question. A warning says so and the
  answer is the image's caption, made with the prompt rules it was trained on (``model.prompt``).

:meth:`Assistant.stream` yields the reply's text pieces as tokens are generated (greedy or sampled
decoding; beam search, which settles the answer only at its end, yields it in one piece).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from pgmm_core.captioner import Captioner, _validated_generation
from pgmm_core.config.sections import GenerationSection

logger = logging.getLogger(__name__)

MODES = ("vqa", "instruct", "caption")
CAPTION_ONLY_NOTE = ("this run was trained for captions only (objective `caption`): it cannot read the question "
                     "and answers with a caption of the image, made with the prompt it was trained on")


class Assistant:
    """A trained model answering questions about images (see the module docstring).

    ``objective`` is the run's objective object (``vqa`` or ``instruct``; ``None`` for a captioning
    run), ``captioner`` holds the model, its device, precision and preprocessing.
    """

    def __init__(self, captioner: Captioner, *, mode: str, objective: Any = None,
                 generation: GenerationSection | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        if mode != "caption" and objective is None:
            raise ValueError(f"mode {mode!r} needs the run's objective")
        self.captioner = captioner
        self.model = captioner.model
        self.mode = mode
        self.objective = objective
        self.generation = generation or (objective.config.generation if objective is not None
                                         else captioner.generation)
        self.run: Any = None  # the LoadedRun, when made by from_run
        if mode == "caption":
            logger.warning(CAPTION_ONLY_NOTE)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", overrides: Sequence[str] = (),
                 host: Any | None = None) -> Assistant:
        """Load ``run_dir``'s model like :meth:`Captioner.from_run` (same ``checkpoint`` and
        ``overrides``); the mode is the run's objective type (``caption`` for any other objective
        that trains the whole model)."""
        captioner = Captioner.from_run(run_dir, checkpoint=checkpoint, overrides=overrides, host=host)
        config = captioner.run.config
        kind = getattr(config.objective, "type", "caption")
        mode = kind if kind in ("vqa", "instruct") else "caption"
        objective = config.host.build("objective", config.objective) if mode != "caption" else None
        assistant = cls(captioner, mode=mode, objective=objective)
        assistant.run = captioner.run
        return assistant

    # --- the API ------------------------------------------------------------------------------------

    def ask(self, image: Any, question: str, *, history: list[dict[str, str]] | None = None,
            **generation: Any) -> str:
        """The answer to ``question`` about ``image`` (a path, a PIL image or a tensor, as the
        Captioner takes them). ``history``: earlier ``{"role", "content"}`` turns; ``generation``
        overrides the decoding settings (num_beams, max_new_tokens, do_sample, ...)."""
        return self.ask_many([image], [question], histories=[history], **generation)[0]

    def ask_many(self, images: Sequence[Any], questions: Sequence[str], *,
                 histories: Sequence[list[dict[str, str]] | None] | None = None, **generation: Any) -> list[str]:
        """One batch: ``ask`` for each (image, question, history), equal to asking one by one
        (left padding keeps every row's positions what they are alone)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} image(s) for {len(questions)} question(s)")
        histories = list(histories) if histories is not None else [None] * len(questions)
        if len(histories) != len(questions):
            raise ValueError(f"{len(histories)} histories for {len(questions)} question(s)")
        settings = self.settings(**generation)
        if self.mode == "caption":
            captions = self.captioner.caption(list(images), **settings.model_dump())
            step = settings.num_return_sequences
            return captions[::step]
        pixels = self.captioner.pixel_values(list(images)).to(self.captioner.device)
        with torch.no_grad(), self.captioner.policy.autocast():
            answers = self._generate(pixels, questions, histories, settings)
        return answers[:: settings.num_return_sequences]

    def stream(self, image: Any, question: str, *, history: list[dict[str, str]] | None = None,
               **generation: Any) -> Iterator[str]:
        """The answer's text pieces as they are generated (joined, they equal :meth:`ask`'s answer)."""
        settings = self.settings(**generation).model_copy(update={"num_return_sequences": 1})
        if self.mode == "caption" or settings.num_beams > 1:
            yield self.ask(image, question, history=history, **settings.model_dump())
            return
        from pgmm_core.text_stream import stream_generation

        pixels = self.captioner.pixel_values([image]).to(self.captioner.device)
        policy = self.captioner.policy

        def run(streamer: Any) -> None:
            with torch.no_grad(), policy.autocast():  # autocast is per thread
                self._generate(pixels, [question], [history], settings, streamer)

        yield from stream_generation(run, self.model.llm.tokenizer)

    # --- helpers ------------------------------------------------------------------------------------

    def settings(self, **generation: Any) -> GenerationSection:
        """The mode's decoding settings with ``generation`` overrides, validated like the config."""
        if "generation" in generation:  # a whole GenerationSection
            given = generation.pop("generation")
            generation = {**given.model_dump(), **generation}
        merged = {**self.generation.model_dump(), **generation}
        return _validated_generation(merged)

    def conversation(self, question: str, history: list[dict[str, str]] | None) -> list[dict[str, str]]:
        """``history`` plus the new user turn, with ``<image>`` on the first user turn (instruct mode)."""
        from pgmm_core.objectives.chat import IMAGE_MARKER

        turns = [dict(turn) for turn in (history or [])] + [{"role": "user", "content": question}]
        if not any(IMAGE_MARKER in turn["content"] for turn in turns):
            first = next(i for i, turn in enumerate(turns) if turn["role"] == "user")
            turns[first]["content"] = f"{IMAGE_MARKER}\n{turns[first]['content']}"
        return turns

    def vqa_text(self, question: str, history: list[dict[str, str]] | None) -> str:
        """The VQA prompt of ``question``, after the earlier question/answer pairs of ``history`` in the
        same format (``Question: q1 Short answer: a1 Question: q2 Short answer:``)."""
        prompt = self.objective.config.prompt
        pairs, pending = [], None
        for turn in history or []:
            if turn["role"] == "user":
                pending = turn["content"]
            elif turn["role"] == "assistant" and pending is not None:
                pairs.append(f"{prompt.format(pending)} {turn['content']}")
                pending = None
        return " ".join([*pairs, prompt.format(question)])

    def _generate(self, pixels: torch.Tensor, questions: Sequence[str],
                  histories: Sequence[list[dict[str, str]] | None], settings: GenerationSection,
                  streamer: Any = None) -> list[str]:
        if self.mode == "vqa":
            texts = [self.vqa_text(q, h) for q, h in zip(questions, histories)]
            return self.objective.answer(self.model, pixels, texts, settings, streamer, prompt="{}")
        conversations = [self.conversation(q, h) for q, h in zip(questions, histories)]
        return self.objective.reply(self.model, pixels, conversations, settings, streamer)
