"""VQA annotation files -> one compact, validated question table.

Three layouts are read, all into :class:`QuestionTable`:

* the official VQA files (VQAv2 ``v2_OpenEnded_mscoco_<subset>_questions.json`` +
  ``v2_mscoco_<subset>_annotations.json``; OK-VQA the same without ``v2_``): questions
  ``{question_id, image_id, question}``, annotations ``{question_id, image_id, question_type,
  answer_type, answers: [{answer, answer_confidence, answer_id}, ...]}``; the image is
  ``<subset>/COCO_<subset>_<image_id:012d>.jpg``;
* LAVIS' annotation JSON (``vqa_train.json``, ``vqa_val_eval.json``, ``okvqa_train.json``): a list of
  ``{question_id, question, image: "train2014/COCO_….jpg", answer: [str, ...]}``;
* LAVIS' GQA files (``train_balanced_questions.json``, ``testdev_balanced_questions.json``): a list of
  ``{question_id, question, image: "n161313.jpg", answer: str}``.

As for captions (:mod:`pgmm_data.annotations`), the table is flat arrays and one UTF-8 buffer per
text column, not a list of dicts: VQAv2 train has 443,757 questions and 4.4 million answers, and a
DataLoader worker that touches millions of Python objects copies the pages that hold them. Problems
are reported with the file and the entry, before the first step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pgmm_core.errors import DataError
from pgmm_data.annotations import StringTable, join_image_path, read_json

LAVIS_VQA_DOWNLOADS = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/datasets/"
OFFICIAL_VQA = "https://visualqa.org/download.html"
OKVQA = "https://okvqa.allenai.org/download.html"
GQA = "https://cs.stanford.edu/people/dorarad/gqa/download.html"


class IdColumn:
    """Ids as written: an int64 array when every id is an integer, else a :class:`StringTable`
    (GQA's ids are strings with leading zeros, which an int would lose)."""

    def __init__(self, values: Sequence[int | str]) -> None:
        self.ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        self.values: np.ndarray | StringTable = (
            np.asarray(values, dtype=np.int64) if self.ints else StringTable([str(v) for v in values]))

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> int | str:
        value = self.values[index]
        return int(value) if self.ints else value


class Categories:
    """A column of few distinct strings (answer types, question types) or ``None``s, as small codes."""

    def __init__(self, values: Sequence[str | None]) -> None:
        self.names: list[str] = sorted({v for v in values if v is not None})
        lookup = {name: i for i, name in enumerate(self.names)}
        self.codes = np.asarray([-1 if v is None else lookup[v] for v in values], dtype=np.int32)

    def __getitem__(self, index: int) -> str | None:
        code = int(self.codes[index])
        return None if code < 0 else self.names[code]


@dataclass
class QuestionTable:
    """Questions, their images and every annotator's answer.

    ``images[r]`` is an image path and ``image_ids[r]`` its id; question ``q`` asks about image
    ``question_image[q]`` and owns answers ``[answer_offsets[q], answer_offsets[q + 1])``.
    """

    source: str
    images: StringTable
    image_ids: IdColumn
    questions: StringTable
    question_ids: IdColumn
    question_image: np.ndarray
    answers: StringTable
    answer_offsets: np.ndarray
    answer_types: Categories
    question_types: Categories

    def __len__(self) -> int:
        return len(self.questions)

    def answers_of(self, index: int) -> list[str]:
        return [self.answers[i] for i in range(int(self.answer_offsets[index]), int(self.answer_offsets[index + 1]))]


class TableBuilder:
    """Collects questions; an image asked about several times gets one row."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.row: dict[str, int] = {}
        self.images: list[str] = []
        self.image_ids: list[int | str] = []
        self.questions: list[str] = []
        self.question_ids: list[int | str] = []
        self.question_image: list[int] = []
        self.answers: list[str] = []
        self.answer_counts: list[int] = []
        self.answer_types: list[str | None] = []
        self.question_types: list[str | None] = []
        self.where: dict[int | str, str] = {}

    def add(self, where: str, *, image: str, image_id: int | str, question: str, question_id: int | str,
            answers: Iterable[str], answer_type: str | None = None, question_type: str | None = None) -> None:
        if question_id in self.where:
            raise DataError(f"{self.source}: {where}: question_id {question_id!r} was already used by "
                            f"{self.where[question_id]}; results are keyed by it, so it must be unique")
        self.where[question_id] = where
        row = self.row.get(image)
        if row is None:
            row = self.row[image] = len(self.images)
            self.images.append(image)
            self.image_ids.append(image_id)
        answers = list(answers)
        self.questions.append(question)
        self.question_ids.append(question_id)
        self.question_image.append(row)
        self.answers.extend(answers)
        self.answer_counts.append(len(answers))
        self.answer_types.append(answer_type)
        self.question_types.append(question_type)

    def finish(self) -> QuestionTable:
        if not self.questions:
            raise DataError(f"{self.source}: no questions")
        offsets = np.zeros(len(self.answer_counts) + 1, dtype=np.int64)
        np.cumsum(self.answer_counts, out=offsets[1:])
        return QuestionTable(
            source=self.source, images=StringTable(self.images), image_ids=IdColumn(self.image_ids),
            questions=StringTable(self.questions), question_ids=IdColumn(self.question_ids),
            question_image=np.asarray(self.question_image, dtype=np.int64),
            answers=StringTable(self.answers), answer_offsets=offsets,
            answer_types=Categories(self.answer_types), question_types=Categories(self.question_types))


# --- field checks ---------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(source: str, where: str, problem: str) -> DataError:
    return DataError(f"{source}: {where}: {problem}")


def _object(source: str, where: str, entry: Any, fields: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise _fail(source, where, f"expected an object with {fields}, got {_describe(entry)}")
    return entry


def _string(source: str, where: str, entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, where, f"'{key}' must be a non-empty string (got {_describe(value)})")
    return value


def _id(source: str, where: str, entry: dict[str, Any], key: str) -> int | str:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise _fail(source, where, f"'{key}' must be an integer or a non-empty string (got {_describe(value)})")
    return value


def _answer_list(source: str, where: str, value: Any) -> list[str]:
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return value
    raise _fail(source, where, f"'answer' must be a non-empty list of strings (got {_describe(value)})")


def _expect_list(data: Any, path: Path, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {what}, got a JSON {type(data).__name__}")
    return data


# --- official VQA files ---------------------------------------------------------------------------


def coco_image(subset: str, image_id: int) -> str:
    """Where COCO keeps an image of ``subset`` (``val2014/COCO_val2014_000000391895.jpg``)."""
    return f"{subset}/COCO_{subset}_{image_id:012d}.jpg"


def load_official_annotations(path: Path, hint: str) -> dict[int | str, dict[str, Any]]:
    """``question_id -> {answers: [str], answer_type, question_type}`` from an official annotation file."""
    data = read_json(path, "VQA annotation file", hint)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: expected an official VQA annotation file: an object with an 'annotations' list")
    source = str(path)
    out: dict[int | str, dict[str, Any]] = {}
    for i, raw in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        ann = _object(source, where, raw, "'question_id' and 'answers'")
        qid = _id(source, where, ann, "question_id")
        answers = ann.get("answers")
        if not (isinstance(answers, list) and answers and all(isinstance(a, dict) and isinstance(a.get("answer"), str)
                                                               for a in answers)):
            raise _fail(source, where, "'answers' must be a non-empty list of {\"answer\": str, ...} objects "
                        f"(got {_describe(answers)})")
        out[qid] = {"answers": [a["answer"] for a in answers],
                    "answer_type": ann.get("answer_type") if isinstance(ann.get("answer_type"), str) else None,
                    "question_type": ann.get("question_type") if isinstance(ann.get("question_type"), str) else None}
    return out


def load_official_vqa(questions_path: Path, annotations_path: Path, image_root: Path, subset: str,
                      hint: str) -> QuestionTable:
    """The official question + annotation pair of one subset (``train2014``, ``val2014``)."""
    data = read_json(questions_path, "VQA question file", hint)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise DataError(f"{questions_path}: expected an official VQA question file: an object with a 'questions' list")
    annotations = load_official_annotations(annotations_path, hint)
    source = str(questions_path)
    builder = TableBuilder(source)
    for i, raw in enumerate(data["questions"]):
        where = f"questions[{i}]"
        entry = _object(source, where, raw, "'question_id', 'image_id' and 'question'")
        qid = _id(source, where, entry, "question_id")
        image_id = entry.get("image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise _fail(source, where, f"'image_id' must be an integer (got {_describe(image_id)})")
        ann = annotations.get(qid)
        if ann is None:
            raise _fail(source, where, f"question_id {qid} has no entry in {annotations_path}; the question "
                        "and annotation files must be of the same subset")
        builder.add(where, image=join_image_path(image_root, coco_image(subset, image_id)), image_id=image_id,
                    question=_string(source, where, entry, "question"), question_id=qid, answers=ann["answers"],
                    answer_type=ann["answer_type"], question_type=ann["question_type"])
    return builder.finish()


# --- LAVIS annotation JSON ------------------------------------------------------------------------


def lavis_image_id(image: str, given: Any) -> int | str:
    """An entry's image id: its ``image_id`` if given, else the last number of a COCO file name, else
    the file's stem (GQA: ``n161313``)."""
    if isinstance(given, (int, str)) and not isinstance(given, bool) and given != "":
        return given
    from pgmm_data.annotations import id_from_name

    stem = PurePosixPath(image.replace("\\", "/")).stem
    found = id_from_name(image) if stem.upper().startswith("COCO_") else None
    return found if found is not None else stem


def load_lavis_vqa(paths: Sequence[Path], image_root: Path, hint: str,
                   types: dict[int | str, dict[str, Any]] | None = None, *, single_answer: bool = False) -> QuestionTable:
    """LAVIS' VQA (``answer``: list) or GQA (``answer``: str, ``single_answer``) lists, several files
    concatenated (LAVIS trains VQAv2 on ``vqa_train.json`` + ``vqa_val.json``). An entry without
    ``answer`` takes its answers from ``types`` (an official annotation file), when given; types
    (answer, question) come from ``types`` too."""
    builder = TableBuilder(", ".join(str(p) for p in paths))
    for path in paths:
        source = str(path)
        data = _expect_list(read_json(path, "VQA annotation file", hint), path, "questions")
        for i, raw in enumerate(data):
            where = f"entry {i}"
            entry = _object(source, where, raw, "'question_id', 'question', 'image' and 'answer'")
            qid = _id(source, where, entry, "question_id")
            image = _string(source, where, entry, "image")
            official = types.get(qid) if types is not None else None
            if "answer" in entry:
                value = entry["answer"]
                if single_answer:
                    if not isinstance(value, str) or not value.strip():
                        raise _fail(source, where, f"'answer' must be a non-empty string (got {_describe(value)})")
                    answers = [value]
                else:
                    answers = _answer_list(source, where, value)
            elif official is not None:
                answers = official["answers"]
            else:
                raise _fail(source, where, "no 'answer' (and no official annotation file gives this question's "
                            "answers)")
            qtype = entry.get("question_type") if isinstance(entry.get("question_type"), str) else None
            builder.add(f"{source}: {where}", image=join_image_path(image_root, image),
                        image_id=lavis_image_id(image, entry.get("image_id")),
                        question=_string(source, where, entry, "question"), question_id=qid, answers=answers,
                        answer_type=official["answer_type"] if official else None,
                        question_type=official["question_type"] if official else qtype)
    return builder.finish()


def check_question_images_exist(table: QuestionTable, fix: str, probes: int = 50) -> None:
    """Fail at start when none of a spread of images exists (the root is wrong); single missing
    files are skipped and counted during training."""
    import os

    count = len(table.images)
    step = max(1, count // probes)
    paths = [table.images[i] for i in range(0, count, step)]
    if not any(os.path.exists(p) for p in paths):
        raise DataError(f"{table.source}: none of {len(paths)} images checked exists (e.g. {paths[0]}); {fix}")
