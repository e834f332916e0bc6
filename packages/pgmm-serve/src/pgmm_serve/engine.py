"""The model side of the server: one run's Captioner (and Assistant, for questions), used from one thread.

:meth:`Engine.run_batch` is what the :class:`~pgmm_serve.batcher.Batcher` calls with a batch of
requests that share a key: ``("caption", prompt, settings)`` or ``("ask", settings)``. Captions of a
batch come from one ``Captioner.caption`` call, answers from one ``Assistant.ask_many`` call; both
give what the same requests would get one by one (deterministic decoding; sampling draws differ).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def caption_key(prompt: str | None, settings: dict[str, Any]) -> tuple:
    return ("caption", prompt, tuple(sorted(settings.items())))


def ask_key(settings: dict[str, Any]) -> tuple:
    return ("ask", tuple(sorted(settings.items())))


class Engine:
    """A loaded run. ``assistant`` is ``None`` when questions cannot be answered; ``ask_unavailable``
    then says why (shown by ``/v1/model`` and in the 501 of ``/v1/ask``)."""

    def __init__(self, captioner: Any, *, assistant: Any = None, ask_unavailable: str | None = None,
                 checkpoint: str = "best") -> None:
        self.captioner = captioner
        self.assistant = assistant
        self.ask_unavailable = ask_unavailable if assistant is None else None
        self.checkpoint = checkpoint

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", overrides: Sequence[str] = (),
                 questions: bool = True) -> Engine:
        """Load ``run_dir``'s model for captions and, when ``questions`` and pgmm-core provides an
        ``Assistant``, for questions too."""
        import pgmm_core

        assistant, reason = None, "disabled (--no-ask)"
        if questions:
            try:
                assistant_class = pgmm_core.Assistant
            except AttributeError:
                reason = "this pgmm-core has no Assistant (questions need a newer pgmm-core)"
            else:
                try:
                    assistant = assistant_class.from_run(run_dir, checkpoint=checkpoint, overrides=overrides)
                except pgmm_core.PgmmError as exc:
                    reason = f"the run cannot answer questions: {exc}"
                    logger.warning("pgmm serve: questions are off: %s", reason)
        if assistant is not None:  # one model for both routes: the Assistant's Captioner
            captioner = assistant.captioner
        else:
            captioner = pgmm_core.Captioner.from_run(run_dir, checkpoint=checkpoint, overrides=overrides)
        return cls(captioner, assistant=assistant, ask_unavailable=reason, checkpoint=checkpoint)

    # --- what the batcher runs (model thread) ----------------------------------------------------

    def run_batch(self, key: Hashable, items: list[Any]) -> list[Any]:
        task = key[0]
        if task == "caption":
            _, prompt, settings = key
            return self.caption_many(items, prompt=prompt, settings=dict(settings))
        if task == "ask":
            return self.ask_many(items, settings=dict(key[1]))
        raise ValueError(f"unknown task {task!r}")

    def caption_many(self, images: list[Any], *, prompt: str | None, settings: dict[str, Any]) -> list[list[str]]:
        """Captions of ``images`` in one generate call: a list of ``num_return_sequences`` per image."""
        captions = self.captioner.caption(images, batch_size=len(images), prompt=prompt, **settings)
        per_image = len(captions) // len(images)
        return [captions[i * per_image:(i + 1) * per_image] for i in range(len(images))]

    def ask_many(self, items: list[tuple[Any, str, list[dict] | None]], *, settings: dict[str, Any]) -> list[str]:
        images = [image for image, _, _ in items]
        questions = [question for _, question, _ in items]
        histories = [history for _, _, history in items]
        return list(self.assistant.ask_many(images, questions, histories=histories, **settings))

    def ask_stream(self, image: Any, question: str, history: list[dict] | None,
                   settings: dict[str, Any]) -> Iterator[str]:
        return self.assistant.stream(image, question, history=history, **settings)

    def caption_stream(self, image: Any, prompt: str | None, settings: dict[str, Any]) -> Iterator[str]:
        """Captions are not generated token by token here: the whole caption is one piece."""
        yield from self.caption_many([image], prompt=prompt, settings=settings)[0][:1]

    # --- what /v1/model shows ------------------------------------------------------------------------

    @property
    def generation_defaults(self) -> Any:
        """The run's ``eval.generation``: what a caption request's options are merged into."""
        return self.captioner.generation

    @property
    def ask_defaults(self) -> Any:
        """The Assistant's decoding settings (the ``vqa``/``instruct`` objective's ``generation``)."""
        return self.assistant.generation if self.assistant is not None else self.captioner.generation

    def describe(self) -> dict[str, Any]:
        run = self.captioner.run
        config = run.config
        components = {part: getattr(getattr(config.model, part, None), "type", None)
                      for part in ("vision", "connector", "projector", "llm")}
        components["objective"] = getattr(config.objective, "type", None)
        return {
            "run": str(run.run_dir),
            "checkpoint": {"requested": self.checkpoint, "path": str(run.checkpoint), "step": run.step},
            "components": components,
            "device": str(self.captioner.device),
            "prompt": config.model.prompt,
            "generation": self.generation_defaults.model_dump(),
            "ask": {"available": self.assistant is not None,
                    "mode": getattr(self.assistant, "mode", None),  # vqa, instruct, or caption (answers are captions)
                    "generation": self.ask_defaults.model_dump() if self.assistant is not None else None,
                    "reason": self.ask_unavailable},
        }
