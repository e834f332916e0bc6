"""``synthetic_shapes_vqa`` and ``synthetic_shapes_chat``: questions about the synthetic shapes.

The images are :mod:`pgmm_data.synthetic`'s (same seed, split and index: the same picture); each
image is asked its colour, its shape and its place. Everything is a pure function of
``(seed, split, index)``.

VQA items follow LAVIS's VQA datasets: a train item carries the distinct answers and their weights
(count / total over ten annotators), an eval item the ten annotators' answers, its ``answer_type``
and ``question_type``; the dataset's ``answer_metric`` is ``"vqa"``. Places have a second wording
that three of the ten annotators use ("upper left" for "top left", "middle" for "center"), so the
answer weights and the official accuracy's "3 annotators give full credit" both matter. Chat items
are conversations (``{"role", "content"}`` turns, ``<image>`` in the first user turn).
"""

from __future__ import annotations

import random
from typing import Any

from pgmm_core.preprocessing import ImageSpec
from pgmm_data.synthetic import render

KINDS = ("colour", "shape", "place")
QUESTIONS = {
    "colour": ("what colour is the shape?", "what color is it?", "which colour does the shape have?"),
    "shape": ("what shape is it?", "which shape is shown?", "what is the shape?"),
    "place": ("where is the shape?", "where is it?", "in which part of the image is the shape?"),
}
QUESTION_TYPES = {"colour": "what color", "shape": "what shape", "place": "where"}
ALTERNATIVE_PLACES = {"top left": "upper left", "top right": "upper right", "bottom left": "lower left",
                      "bottom right": "lower right", "center": "middle"}
ANNOTATORS = 10
ALTERNATIVE_VOTES = 3


def annotators_answers(kind: str, labels: tuple[str, str, str]) -> list[str]:
    """The ten annotators' answers to a question of ``kind`` about an image with ``labels``."""
    colour, shape, place = labels
    if kind == "colour":
        return [colour] * ANNOTATORS
    if kind == "shape":
        return [shape] * ANNOTATORS
    return [place] * (ANNOTATORS - ALTERNATIVE_VOTES) + [ALTERNATIVE_PLACES[place]] * ALTERNATIVE_VOTES


def distinct_answers(answers: list[str]) -> tuple[list[str], list[float]]:
    """LAVIS's ``VQADataset``: each distinct answer once, weighted by its share of the annotators."""
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer] = counts.get(answer, 0) + 1
    return list(counts), [count / len(answers) for count in counts.values()]


def chat_reply(kind: str, labels: tuple[str, str, str]) -> str:
    colour, shape, place = labels
    return {"colour": colour, "shape": f"a {shape}", "place": f"in the {place}"}[kind]


class _ShapesQa:
    """The images and their labels (shared by both datasets)."""

    def __init__(self, config: Any, *, split: str, image_spec: ImageSpec | None = None,
                 image_size: int | None = None) -> None:
        from pgmm_data.processors import blip_image_eval, dataset_image_spec

        self.config = config
        self.split = split
        self.name = f"{config.type}[{split}]"
        self.image_spec = dataset_image_spec(image_spec, image_size)
        self.image_size = self.image_spec.size
        self.transform = blip_image_eval(self.image_spec)

    def image(self, index: int) -> tuple[Any, tuple[str, str, str]]:
        picture, labels = render(self.config.seed, self.split, index, self.image_size)
        return self.transform(picture), labels

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.config.type}:{self.config.seed}:{self.split}:{index}")


class SyntheticShapesVqa(_ShapesQa):
    """Item ``i`` asks image ``i // 3`` question kind ``i % 3`` (colour, shape, place)."""

    answer_metric = "vqa"

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        total = config.num_samples * len(KINDS)
        self._length = min(total, config.max_samples or total)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        image_index, kind = divmod(index, len(KINDS))
        kind_name = KINDS[kind]
        pixels, labels = self.image(image_index)
        question = self.rng(index).choice(QUESTIONS[kind_name])
        answers = annotators_answers(kind_name, labels)
        item = {"image": pixels, "question": question, "question_id": index, "image_id": image_index}
        if self.split == "train":
            distinct, weights = distinct_answers(answers)
            return item | {"answers": distinct, "answer_weights": weights}
        return item | {"answers": answers, "answer_type": "other", "question_type": QUESTION_TYPES[kind_name]}


class SyntheticShapesChat(_ShapesQa):
    """Item ``i`` is a conversation about image ``i``: ``turns`` question kinds in a per-image order."""

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._length = min(config.num_samples, config.max_samples or config.num_samples)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        pixels, labels = self.image(index)
        rng = self.rng(index)
        kinds = list(KINDS)
        rng.shuffle(kinds)
        conversation = []
        for turn, kind in enumerate(kinds[: self.config.turns]):
            question = rng.choice(QUESTIONS[kind])
            conversation.append({"role": "user", "content": f"<image>\n{question}" if turn == 0 else question})
            conversation.append({"role": "assistant", "content": chat_reply(kind, labels)})
        return {"image": pixels, "conversation": conversation, "id": f"shapes_chat_{index}"}


def build_synthetic_shapes_vqa(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                               image_size: int | None = None) -> SyntheticShapesVqa:
    return SyntheticShapesVqa(config, split=split, image_spec=image_spec, image_size=image_size)


def build_synthetic_shapes_chat(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                                image_size: int | None = None) -> SyntheticShapesChat:
    return SyntheticShapesChat(config, split=split, image_spec=image_spec, image_size=image_size)
