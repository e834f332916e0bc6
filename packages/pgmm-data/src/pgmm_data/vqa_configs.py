"""Config models of the question-answering and conversation datasets (pydantic only: no torch).

As for the caption datasets (:mod:`pgmm_data.configs`), paths are plain strings, ``required_paths``
tells ``validate`` what the run will open, and files are read when the dataset is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pgmm_core.config.files import RequiredPath
from pydantic import Field

from pgmm_data.configs import ImageFilesConfig, under


class ImageDatasetConfig(ImageFilesConfig):
    """Image fields shared by the VQA and conversation datasets (the same as the caption datasets')."""

    max_samples: int | None = Field(None, gt=0, description="Use only the first N questions / conversations.")


class VqaDatasetConfig(ImageDatasetConfig):
    """Fields shared by the VQA datasets. Train items carry the distinct answers and their weights
    (count / annotators, LAVIS' ``VQADataset``); val/test items every annotator's raw answer, the
    answer and question type when the files have them."""

    root: str = Field(..., min_length=1, description="The dataset directory (LAVIS: cache/<dataset>).")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="Which split's files to read; default: the list it is in (data.val -> val, ...)."
    )
    max_words: int = Field(50, gt=0, description="blip_question: keep at most this many words of a question.")


class CocoVqaConfig(VqaDatasetConfig):
    """Fields of the COCO-image VQA datasets (VQAv2, OK-VQA): official files or LAVIS' JSON."""

    format: Literal["official", "lavis"] = Field(
        "official", description="'official': the question + annotation files of the dataset's site; "
        "'lavis': LAVIS' annotation JSON.")
    subset: str | None = Field(
        None, description="official: the COCO subset of the files, default train2014 for train and "
        "val2014 for val/test (the test2015 answers are not public).")
    questions: str | None = Field(None, description="official: the question file (default under root/annotations).")
    annotation: str | list[str] | None = Field(
        None, description="official: the annotation file; lavis: the JSON file(s) of the split, concatenated "
        "(default per dataset under root/annotations).")

    # official file names ({subset} filled in), LAVIS' default files per split, words for messages
    official_questions: ClassVar[str]
    official_annotations: ClassVar[str]
    lavis_files: ClassVar[dict[str, tuple[str, ...]]]
    title: ClassVar[str]
    download: ClassVar[str]

    def official_subset(self, split: str) -> str:
        return self.subset or ("train2014" if (self.split or split) == "train" else "val2014")

    def official_paths(self, split: str) -> tuple[Path, Path]:
        root = Path(self.root).expanduser()
        subset = self.official_subset(split)
        questions = under(root, self.questions) or root / "annotations" / self.official_questions.format(subset=subset)
        annotation = self.annotation if isinstance(self.annotation, str) else None
        annotations = under(root, annotation) or root / "annotations" / self.official_annotations.format(subset=subset)
        return questions, annotations

    def lavis_paths(self, split: str) -> list[Path]:
        root = Path(self.root).expanduser()
        if self.annotation is not None:
            given = [self.annotation] if isinstance(self.annotation, str) else self.annotation
            return [under(root, p) for p in given]  # type: ignore[misc]
        return [root / "annotations" / name for name in self.lavis_files[self.split or split]]

    def required_paths(self, *, split: str) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.root).expanduser()
        field = "annotation" if self.annotation else "root"
        if self.format == "official":
            questions, annotations = self.official_paths(split)
            files = [RequiredPath(questions, "file", f"the official {self.title} questions",
                                  "questions" if self.questions else "root"),
                     RequiredPath(annotations, "file", f"the official {self.title} annotations", field)]
        else:
            files = [RequiredPath(p, "file", f"LAVIS's {self.title} annotation", field) for p in self.lavis_paths(split)]
        return [RequiredPath(root, "directory", f"{self.title} annotations", "root"), *files,
                *self._image_root_paths(root)]


class Vqav2Config(CocoVqaConfig):
    """VQAv2 on COCO images, layout under ``root`` (LAVIS' cache/coco)::

        root/annotations/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json   (format: official)
        root/annotations/v2_mscoco_{train2014,val2014}_annotations.json
        root/annotations/vqa_train.json, vqa_val_eval.json                        (format: lavis)
        root/images/train2014/COCO_train2014_….jpg, root/images/val2014/…        (image_root: root/images, else root)

    format ``lavis`` reads ``vqa_train.json`` for train (LAVIS' own recipe adds ``vqa_val.json``:
    ``annotation: ["annotations/vqa_train.json", "annotations/vqa_val.json"]``, then do not evaluate on
    val) and ``vqa_val_eval.json`` for val/test; answer and question types come from
    ``v2_mscoco_val2014_annotations.json`` when it is there (LAVIS downloads it too), else are null.
    Official files: https://visualqa.org/download.html; LAVIS' JSON: its ``defaults_vqa.yaml`` URLs.
    """

    type: Literal["vqav2"] = "vqav2"
    official_questions: ClassVar[str] = "v2_OpenEnded_mscoco_{subset}_questions.json"
    official_annotations: ClassVar[str] = "v2_mscoco_{subset}_annotations.json"
    lavis_files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("vqa_train.json",), "val": ("vqa_val_eval.json",), "test": ("vqa_val_eval.json",)}
    title: ClassVar[str] = "VQAv2"
    download: ClassVar[str] = "https://visualqa.org/download.html (or LAVIS' vqav2 annotation JSON)"


class OkVqaConfig(CocoVqaConfig):
    """OK-VQA (COCO images; 5 answers, each given twice, per question), layout under ``root``::

        root/annotations/OpenEnded_mscoco_{train2014,val2014}_questions.json      (format: official)
        root/annotations/mscoco_{train2014,val2014}_annotations.json
        root/annotations/okvqa_train.json, vqa_val_eval.json                      (format: lavis)

    The images are COCO's: set ``image_root`` to the folder holding train2014/ and val2014/ (LAVIS:
    cache/coco/images). Official files: https://okvqa.allenai.org/download.html.
    """

    type: Literal["okvqa"] = "okvqa"
    official_questions: ClassVar[str] = "OpenEnded_mscoco_{subset}_questions.json"
    official_annotations: ClassVar[str] = "mscoco_{subset}_annotations.json"
    lavis_files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("okvqa_train.json",), "val": ("vqa_val_eval.json",), "test": ("vqa_val_eval.json",)}
    title: ClassVar[str] = "OK-VQA"
    download: ClassVar[str] = "https://okvqa.allenai.org/download.html (or LAVIS' okvqa annotation JSON)"


class GqaConfig(VqaDatasetConfig):
    """GQA in LAVIS' format (one answer per question; scored by exact match), layout under ``root``::

        root/annotations/train_balanced_questions.json, val_balanced_questions.json,
                         testdev_balanced_questions.json
        root/images/n161313.jpg, …                        (image_root: root/images, else root)

    Entries ``{"question_id", "question", "image", "answer": str}``; train reads the train file,
    val the val file, test the test-dev file (what BLIP-2's GQA numbers are on). LAVIS' files:
    its ``gqa/balanced_*.yaml`` URLs; images: https://cs.stanford.edu/people/dorarad/gqa/download.html.
    """

    type: Literal["gqa"] = "gqa"
    annotation: str | None = Field(None, description="The split's JSON file (default under root/annotations).")
    files: ClassVar[dict[str, str]] = {"train": "train_balanced_questions.json", "val": "val_balanced_questions.json",
                                       "test": "testdev_balanced_questions.json"}

    def annotation_path(self, split: str) -> Path:
        root = Path(self.root).expanduser()
        return under(root, self.annotation) or root / "annotations" / self.files[self.split or split]

    def required_paths(self, *, split: str) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.root).expanduser()
        return [RequiredPath(root, "directory", "GQA in LAVIS's layout", "root"),
                RequiredPath(self.annotation_path(split), "file", "LAVIS's GQA questions",
                             "annotation" if self.annotation else "root"),
                *self._image_root_paths(root)]


class ConversationDatasetConfig(ImageDatasetConfig):
    """Fields of the conversation datasets.

    A conversation must have the ``<image>`` marker exactly once, in a user turn, turns alternating
    user/assistant from a user turn, and no empty turn. ``bad_conversations`` says what happens to
    one that breaks a rule: ``skip`` (default) leaves it out, counts it per reason
    (``dataset.skipped``) and logs the count with the first few file:entry positions; ``refuse``
    stops at load time naming the file, the entry (JSON) or line (JSONL) and the rule. Entries
    without an image (LLaVA's text-only conversations) are always skipped and counted.
    """

    path: str = Field(..., min_length=1, description="The conversation file.")
    bad_conversations: Literal["skip", "refuse"] = Field(
        "skip", description="A conversation breaking the marker / turn rules: skip and count it, or refuse the file.")

    file_title: ClassVar[str] = ""

    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        path = Path(self.path).expanduser()
        return [RequiredPath(path, "file", self.file_title, "path"), *self._image_root_paths(path.parent)]


class LlavaConversationsConfig(ConversationDatasetConfig):
    """Visual instruction data in LLaVA's JSON (``llava_instruct_150k.json``, ``llava_v1_5_mix665k.json``):
    a list of ``{"id", "image": relative path, "conversations": [{"from": "human"|"gpt", "value"}, ...]}``.

    ``human`` turns become ``user``, ``gpt`` turns ``assistant``; the ``<image>`` marker stays in the
    user text. Image paths are relative to ``image_root``, itself relative to the JSON file's folder
    (default: that folder; LLaVA's ``--image_folder``). Data: https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K
    (COCO train2017 images for ``llava_instruct_150k.json``).
    """

    type: Literal["llava_conversations"] = "llava_conversations"
    file_title: ClassVar[str] = "LLaVA's conversation JSON, from huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K"


class JsonlConversationsConfig(ConversationDatasetConfig):
    """Your own conversations: one JSON object per line,
    ``{"image": path, "conversation": [{"role": "user"|"assistant", "content": str}, ...], "id"?: str}``.

    One user turn holds the ``<image>`` marker (where the image's tokens go). Relative image
    paths are relative to ``image_root``, itself relative to the file's folder (default: that folder);
    ``id`` defaults to ``line <n>``. Blank lines are skipped.
    """

    type: Literal["jsonl_conversations"] = "jsonl_conversations"
