"""The VQA datasets and their factories (``vqav2``, ``okvqa``, ``gqa``).

Every file layout (:mod:`pgmm_data.vqa_annotations`) is served in one of two shapes:

* ``split="train"``: one item per question, ``{"image", "question", "answers", "answer_weights",
  "question_id", "image_id"}`` — ``answers`` the distinct answers in first-given order and
  ``answer_weights`` each one's share of the annotators (LAVIS' ``VQADataset``: ``yes`` ×7,
  ``no`` ×3 -> ``[0.7, 0.3]``; GQA: its one answer, weight 1.0);
* ``split="val"``/``"test"``: ``{"image", "question", "question_id", "answers": every annotator's
  raw answer, "answer_type", "question_type"}``, and the dataset's ``answer_metric`` says how to score
  them (``"vqa"``: :func:`pgmm_core.vqa_accuracy.vqa_accuracy`; ``"exact"``: GQA's
  :func:`~pgmm_core.vqa_accuracy.exact_match`).

Questions go through LAVIS' ``blip_question``; images through the configured train processor or the
encoder's eval transform. An unreadable image comes back as ``{"bad": "path: reason"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pgmm_core.images import BadImage, open_rgb
from pgmm_core.preprocessing import ImageSpec
from pgmm_data.datasets import image_root_of
from pgmm_data.processors import blip_question, dataset_image_spec, image_processor
from pgmm_data.vqa_annotations import (
    QuestionTable,
    check_question_images_exist,
    load_lavis_vqa,
    load_official_annotations,
    load_official_vqa,
)


class _QuestionSet:
    """What both shapes share: the table, the image transform, the length limit."""

    def __init__(self, table: QuestionTable, *, name: str, transform: Callable, max_pixels: int, max_words: int,
                 answer_metric: str, max_samples: int | None = None) -> None:
        self.table = table
        self.name = name
        self.transform = transform
        self.max_pixels = max_pixels
        self.max_words = max_words
        self.answer_metric = answer_metric
        self._length = len(table) if max_samples is None else min(len(table), max_samples)

    def __len__(self) -> int:
        return self._length

    def _image(self, index: int) -> tuple[Any, str | None]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        path = self.table.images[int(self.table.question_image[index])]
        try:
            return self.transform(open_rgb(path, self.max_pixels)), None
        except BadImage as exc:
            return None, f"{path}: {exc}"


class VqaTrainSet(_QuestionSet):
    """One item per question with its distinct answers and their weights."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, bad = self._image(index)
        if bad is not None:
            return {"bad": bad}
        answers, weights = answer_weights(self.table.answers_of(index))
        table = self.table
        return {"image": image, "question": blip_question(table.questions[index], self.max_words),
                "answers": answers, "answer_weights": weights, "question_id": table.question_ids[index],
                "image_id": table.image_ids[int(table.question_image[index])]}


class VqaEvalSet(_QuestionSet):
    """One item per question with every annotator's answer and the types."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, bad = self._image(index)
        if bad is not None:
            return {"bad": bad}
        table = self.table
        return {"image": image, "question": blip_question(table.questions[index], self.max_words),
                "question_id": table.question_ids[index], "answers": table.answers_of(index),
                "answer_type": table.answer_types[index], "question_type": table.question_types[index],
                "image_id": table.image_ids[int(table.question_image[index])]}

    def ground_truth(self) -> dict[str, dict[Any, Any]]:
        """What the scorer needs for the whole split, without reading an image: ``answers``,
        ``answer_types`` and ``question_types`` keyed by question id."""
        table = self.table
        ids = [table.question_ids[i] for i in range(self._length)]
        return {"answers": {q: table.answers_of(i) for i, q in enumerate(ids)},
                "answer_types": {q: table.answer_types[i] for i, q in enumerate(ids)},
                "question_types": {q: table.question_types[i] for i, q in enumerate(ids)}}


def answer_weights(answers: list[str]) -> tuple[list[str], list[float]]:
    """Distinct answers in first-given order and count / total for each (LAVIS' ``VQADataset``)."""
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer] = counts.get(answer, 0) + 1
    total = len(answers)
    return list(counts), [count / total for count in counts.values()]


def _serve(config: Any, table: QuestionTable, *, split: str, image_spec: ImageSpec,
           answer_metric: str) -> VqaTrainSet | VqaEvalSet:
    train = split == "train"
    transform = image_processor(config.image_processor, image_spec, train=train,
                                min_scale=config.min_scale, max_scale=config.max_scale)
    kind = VqaTrainSet if train else VqaEvalSet
    return kind(table, name=f"{config.type}[{split}]", transform=transform, max_pixels=config.max_image_pixels,
                max_words=config.max_words, answer_metric=answer_metric, max_samples=config.max_samples)


def build_coco_vqa(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                   image_size: int | None = None) -> VqaTrainSet | VqaEvalSet:
    """The factory of ``vqav2`` and ``okvqa`` (their configs name the files)."""
    image_spec = dataset_image_spec(image_spec, image_size)
    root = Path(config.root).expanduser()
    image_root = image_root_of(root, config.image_root)
    hint = f"Download it from {config.download}, or set 'root' / 'annotation'"
    if config.format == "official":
        questions, annotations = config.official_paths(split)
        table = load_official_vqa(questions, annotations, image_root, config.official_subset(split), hint)
    else:
        types = None  # LAVIS' eval JSON has no types; LAVIS downloads the official annotations beside it
        if (config.split or split) != "train":
            official = root / "annotations" / config.official_annotations.format(subset=config.official_subset(split))
            if official.is_file():
                types = load_official_annotations(official, hint)
        table = load_lavis_vqa(config.lavis_paths(split), image_root, hint, types)
    check_question_images_exist(table, "set 'root' (or 'image_root') to the folder holding train2014/ and val2014/")
    return _serve(config, table, split=split, image_spec=image_spec, answer_metric="vqa")


def build_gqa(config: Any, *, split: str, image_spec: ImageSpec | None = None,
              image_size: int | None = None) -> VqaTrainSet | VqaEvalSet:
    image_spec = dataset_image_spec(image_spec, image_size)
    root = Path(config.root).expanduser()
    path = config.annotation_path(split)
    hint = ("Download LAVIS' GQA questions (its lavis/configs/datasets/gqa/balanced_*.yaml URLs) or set "
            "'annotation'")
    table = load_lavis_vqa([path], image_root_of(root, config.image_root), hint, single_answer=True)
    check_question_images_exist(table, "set 'root' (or 'image_root') to the folder holding GQA's images/")
    return _serve(config, table, split=split, image_spec=image_spec, answer_metric="exact")
