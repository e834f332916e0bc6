"""Small VQA and conversation trees in the real on-disk formats (for tests), from real photographs.

Like :mod:`pgmm_data.testing` (whose photographs and image writer they use): VQAv2 and OK-VQA as the
official question + annotation files *and* LAVIS' annotation JSON over the same questions, GQA in
LAVIS' format, LLaVA's conversation JSON and pgmm's conversation JSONL. Needs ``scikit-image``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgmm_data.testing import PHOTOS, Tree, write_image

# per photo: (question, ten annotators' answers); answers disagree the way real annotators do
_QUESTIONS: tuple[tuple[str, list[str]], ...] = (
    ("What is in the picture?", ["{noun}"] * 6 + ["a {noun}"] * 2 + ["{noun}s", "photo"]),
    ("Is this photo taken indoors?", ["no"] * 7 + ["yes"] * 3),
    ("How many objects are shown?", ["1"] * 4 + ["one"] * 3 + ["2", "many", "1"]),
)
_NOUNS = ("astronaut", "cat", "coffee", "rocket", "camera", "galaxy", "tissue", "coins", "eye", "moon")


def vqa_questions(index: int) -> list[tuple[str, list[str]]]:
    """The questions about photo ``index`` and their ten answers."""
    noun = _NOUNS[index % len(_NOUNS)]
    return [(q, [a.format(noun=noun) for a in answers]) for q, answers in _QUESTIONS]


def write_coco_vqa_tree(root: str | Path, *, dataset: str = "vqav2", train: int = 4, val: int = 3,
                        size: tuple[int, int] = (64, 48), broken: Mapping[int, str] | None = None) -> Tree:
    """``root/annotations/`` with the official files of train2014 and val2014 (``v2_`` names for
    ``vqav2``, ``mscoco_`` names and 5 answers given twice with ``raw_answer`` for ``okvqa``) and
    LAVIS' JSON of the same questions; images in ``root/images/{train,val}2014/``. ``broken`` indexes
    the train images."""
    root = Path(root)
    okvqa = dataset == "okvqa"
    prefix = "" if okvqa else "v2_"
    tree = Tree(root, broken={"train": dict(broken or {})})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    lavis_names = {"train2014": "okvqa_train.json" if okvqa else "vqa_train.json", "val2014": "vqa_val_eval.json"}
    for subset, count, first_image in (("train2014", train, 100), ("val2014", val, 900)):
        questions, annotations, lavis = [], [], []
        tree.images[subset] = []
        for i in range(count):
            image_id = first_image + i
            relative = f"{subset}/COCO_{subset}_{image_id:012d}.jpg"
            write_image(root / "images" / relative, image_id, size,
                        tree.broken["train"].get(i) if subset == "train2014" else None)
            tree.images[subset].append(root / "images" / relative)
            for k, (question, answers) in enumerate(vqa_questions(image_id)):
                qid = image_id * 1000 + k
                if okvqa:
                    answers = [a for a in answers[:5] for _ in range(2)]
                questions.append({"image_id": image_id, "question": question, "question_id": qid})
                ann_answers = [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                               for j, a in enumerate(answers)]
                if okvqa:
                    for a in ann_answers:
                        a["raw_answer"] = a["answer"]
                annotations.append({"question_type": "eight" if okvqa else question.split(" ")[0].lower(),
                                    "multiple_choice_answer": answers[0], "answers": ann_answers,
                                    "image_id": image_id, "answer_type": "other" if okvqa else ("yes/no" if k == 1 else
                                                                                             "number" if k == 2 else "other"),
                                    "question_id": qid})
                lavis.append({"question_id": qid, "question": question, "answer": answers, "image": relative,
                              "dataset": dataset})
        info = {"description": "tiny test set", "version": "2.0"}
        _write(root / "annotations" / f"{prefix}OpenEnded_mscoco_{subset}_questions.json",
               {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                "data_subtype": subset, "questions": questions})
        _write(root / "annotations" / f"{prefix}mscoco_{subset}_annotations.json",
               {"info": info, "license": {}, "data_subtype": subset, "annotations": annotations,
                "data_type": "mscoco"})
        _write(root / "annotations" / lavis_names[subset], lavis)
        tree.annotation_files[subset] = root / "annotations" / f"{prefix}mscoco_{subset}_annotations.json"
        tree.annotation_files[f"lavis_{subset}"] = root / "annotations" / lavis_names[subset]
    return tree


def write_gqa_tree(root: str | Path, *, train: int = 4, val: int = 3, test: int = 3,
                   size: tuple[int, int] = (64, 48)) -> Tree:
    """LAVIS' GQA files ``root/annotations/{train,val,testdev}_balanced_questions.json`` (string
    question ids with leading zeros, one answer each) and images ``root/images/n<id>.jpg``."""
    root = Path(root)
    tree = Tree(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    names = {"train": "train_balanced_questions.json", "val": "val_balanced_questions.json",
             "test": "testdev_balanced_questions.json"}
    first = 161313
    for split, count in (("train", train), ("val", val), ("test", test)):
        entries: list[dict[str, Any]] = []
        tree.images[split] = []
        for i in range(count):
            name = f"n{first + i}.jpg"
            write_image(root / "images" / name, first + i, size)
            tree.images[split].append(root / "images" / name)
            for k, (question, answers) in enumerate(vqa_questions(first + i)):
                entries.append({"image": name, "question": question, "question_id": f"0{first + i}{k}",
                                "answer": answers[0], "fullAnswer": f"The answer is {answers[0]}."})
        first += count
        _write(root / "annotations" / names[split], entries)
        tree.annotation_files[split] = root / "annotations" / names[split]
    return tree


def llava_conversation(index: int, turns: int = 2) -> list[dict[str, str]]:
    """A LLaVA ``conversations`` list: ``turns`` question/answer pairs, ``<image>`` in the first."""
    noun = _NOUNS[index % len(_NOUNS)]
    subject = PHOTOS[index % len(PHOTOS)][1]
    pairs = [("What is shown in this image?", f"The image shows {subject}."),
             ("What is the main object?", f"The main object is a {noun}."),
             ("Describe it in one word.", noun.capitalize() + ".")]
    out = []
    for t in range(turns):
        question, answer = pairs[t % len(pairs)]
        out.append({"from": "human", "value": ("<image>\n" + question) if t == 0 else question})
        out.append({"from": "gpt", "value": answer})
    return out


def write_llava_tree(root: str | Path, *, conversations: int = 5, size: tuple[int, int] = (64, 48),
                     extra: list[dict[str, Any]] | None = None) -> Tree:
    """``root/llava_instruct.json`` (LLaVA's fields; 1 to 3 turns) and images in
    ``root/coco/train2017/<id>.jpg``; ``extra`` entries are appended as given (bad ones, on purpose)."""
    root = Path(root)
    tree = Tree(root)
    entries: list[dict[str, Any]] = []
    tree.images["train"] = []
    for i in range(conversations):
        ident = f"{33471 + i:012d}"
        relative = f"coco/train2017/{ident}.jpg"
        write_image(root / relative, i, size)
        tree.images["train"].append(root / relative)
        entries.append({"id": ident, "image": relative, "conversations": llava_conversation(i, 1 + i % 3)})
    entries.extend(extra or [])
    _write(root / "llava_instruct.json", entries)
    tree.annotation_files["train"] = root / "llava_instruct.json"
    return tree


def write_conversation_jsonl(root: str | Path, *, conversations: int = 5, size: tuple[int, int] = (64, 48),
                             extra_lines: list[str] | None = None) -> Tree:
    """``root/chat.jsonl`` in pgmm's own format (``role``/``content`` turns; every other line without
    ``id``) with images in ``root/photos/``; ``extra_lines`` are appended verbatim."""
    root = Path(root)
    tree = Tree(root)
    lines = []
    tree.images["train"] = []
    for i in range(conversations):
        relative = f"photos/chat_{i:03d}.jpg"
        write_image(root / relative, i + 2, size)
        tree.images["train"].append(root / relative)
        turns = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                 for t in llava_conversation(i + 2, 1 + i % 2)]
        entry: dict[str, Any] = {"image": relative, "conversation": turns}
        if i % 2 == 0:
            entry["id"] = f"chat-{i}"
        lines.append(json.dumps(entry, ensure_ascii=False))
    lines.extend(extra_lines or [])
    (root / "chat.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tree.annotation_files["train"] = root / "chat.jsonl"
    return tree


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
