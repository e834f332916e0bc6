"""Annotation files -> compact, validated tables.

Every format pgmm-data reads (COCO Karpathy, LAVIS' Visual Genome captions, JSONL) becomes one
:class:`Annotations`: the unique images (path, train id, evaluation id) and the captions, each
pointing at its image. Problems are found here, before the first step, and reported with the file
and the entry or line — not as a ``KeyError`` in a worker process hours into a run.

Storage is a handful of numpy arrays rather than a list of dicts: a DataLoader worker touching
half a million Python objects bumps their reference counts and so copies every page that holds
them ("copy-on-read"), once per worker and per rank; flat arrays stay shared.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pgmm_core.errors import DataError
from pgmm_core.files import decode_utf8, read_utf8_text

LAVIS_DOWNLOADS = "https://storage.googleapis.com/sfr-vision-language-research/datasets/"
VG_DOWNLOAD = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/datasets/visual_genome/vg_caption.json"

_DIGITS = re.compile(r"\d+")


class StringTable:
    """Many strings in one UTF-8 buffer plus offsets (indexable like a list)."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.data[start:end].tobytes().decode("utf-8")

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass
class Annotations:
    """Images and captions of one annotation file.

    ``images[i]`` is the path to open, ``keys[i]`` the id used in training logs (``"coco_391895"``),
    ``eval_ids[i]`` the integer id of results files; caption ``c`` belongs to ``caption_image[c]``.
    """

    source: str
    images: StringTable
    keys: StringTable
    eval_ids: np.ndarray
    captions: StringTable
    caption_image: np.ndarray

    def grouped_captions(self) -> tuple[StringTable, np.ndarray]:
        """Captions reordered by image, and ``offsets`` so that image ``i`` owns
        ``[offsets[i], offsets[i + 1])`` (the references of an evaluation item)."""
        order = np.argsort(self.caption_image, kind="stable")
        counts = np.bincount(self.caption_image, minlength=len(self.images))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return StringTable([self.captions[int(i)] for i in order]), offsets


class _Builder:
    """Collects (image, captions) entries; an image named twice gets one row and all captions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.row: dict[str, int] = {}
        self.images: list[str] = []
        self.keys: list[str] = []
        self.eval_ids: list[int] = []
        self.captions: list[str] = []
        self.caption_image: list[int] = []

    def add(self, image: str, captions: Iterable[str], key: str, eval_id: int) -> None:
        row = self.row.get(image)
        if row is None:
            row = self.row[image] = len(self.images)
            self.images.append(image)
            self.keys.append(key)
            self.eval_ids.append(eval_id)
        for caption in captions:
            self.captions.append(caption)
            self.caption_image.append(row)

    def finish(self) -> Annotations:
        if not self.images:
            raise DataError(f"{self.source}: no entries")
        eval_ids = np.asarray(self.eval_ids, dtype=np.int64)
        unique, first, counts = np.unique(eval_ids, return_index=True, return_counts=True)
        if len(unique) != len(eval_ids):
            dup = int(unique[counts > 1][0])
            rows = np.flatnonzero(eval_ids == dup)[:2]
            raise DataError(
                f"{self.source}: images {self.images[rows[0]]!r} and {self.images[rows[1]]!r} have the same "
                f"evaluation id {dup}; results files are keyed by it, so it must be unique per image"
            )
        return Annotations(
            source=self.source,
            images=StringTable(self.images),
            keys=StringTable(self.keys),
            eval_ids=eval_ids,
            captions=StringTable(self.captions),
            caption_image=np.asarray(self.caption_image, dtype=np.int64),
        )


# --- helpers --------------------------------------------------------------------------------------


def read_json(path: Path, what: str, hint: str = "") -> Any:
    """Parse a JSON file; a missing file or bad JSON becomes a :class:`DataError` with the position."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}" + (f". {hint}" if hint else "")) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        decode_utf8(raw, path)  # raises NotUtf8Error: one line with the file's byte offset, exit 2
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def id_from_name(path: str) -> int | None:
    """The last number in a file name: ``COCO_val2014_000000391895.jpg`` -> 391895 (LAVIS' rule)."""
    found = _DIGITS.findall(PurePosixPath(path.replace("\\", "/")).stem)
    return int(found[-1]) if found else None


def _int_id(value: Any) -> int | None:
    """An integer id given as an int or as a string ending in digits (``"vg_12"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        found = _DIGITS.findall(value)
        return int(found[-1]) if found else None
    return None


def _fail(source: str, where: str, problem: str) -> DataError:
    return DataError(f"{source}: {where}: {problem}")


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _entry(source: str, where: str, entry: Any) -> tuple[str, list[str]]:
    """Validate the ``image`` and ``caption`` fields every format shares."""
    if not isinstance(entry, dict):
        raise _fail(source, where, f"expected an object with 'image' and 'caption', got {_describe(entry)}")
    image = entry.get("image")
    if not isinstance(image, str) or not image:
        raise _fail(source, where, f"'image' must be a non-empty string (got {_describe(image)})")
    caption = entry.get("caption")
    if isinstance(caption, str):
        return image, [caption]
    if isinstance(caption, list) and caption and all(isinstance(c, str) for c in caption):
        return image, caption
    raise _fail(source, where, f"'caption' must be a string or a non-empty list of strings (got {_describe(caption)})")


def _expect_list(data: Any, path: Path, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {what}, got a JSON {type(data).__name__}")
    return data


def join_image_path(image_root: Path, image: str) -> str:
    return image if os.path.isabs(image) else os.path.join(image_root, image)


# --- COCO Karpathy --------------------------------------------------------------------------------


def load_coco_karpathy(annotation: Path, image_root: Path, what: str = "COCO Karpathy annotation file") -> Annotations:
    """``coco_karpathy_*.json`` as published: train entries ``{caption, image, image_id}``, val/test
    entries ``{image, caption: [..]}``. The evaluation id is the number in the file name (LAVIS' rule),
    else the number in ``image_id``. LAVIS' Flickr30k files (``flickr30k_*.json``) have the same
    structure; ``what`` names the kind of file in messages."""
    hint = (f"Download {LAVIS_DOWNLOADS}{annotation.name} or set 'annotation'"
            if annotation.name.startswith(("coco_karpathy_", "flickr30k_")) else "Check 'annotation'")
    data = _expect_list(read_json(annotation, what, hint), annotation, "entries")
    source = str(annotation)
    builder = _Builder(source)
    for i, raw in enumerate(data):
        image, captions = _entry(source, f"entry {i}", raw)
        key = raw.get("image_id")
        eval_id = id_from_name(image)
        if eval_id is None:  # a photo of the user's own added to a train file: its image_id will do
            eval_id = _int_id(key)
        if eval_id is None:
            raise _fail(source, f"entry {i}",
                        f"no image id in the file name {image!r} (expected COCO_<split>_<id>.jpg) "
                        "and no number in its 'image_id'")
        builder.add(join_image_path(image_root, image), captions,
                    str(key) if key is not None else f"coco_{eval_id}", eval_id)
    return builder.finish()


def load_coco_ground_truth(path: Path) -> dict[int, list[str]]:
    """References from a COCO-format caption file (``coco_karpathy_{val,test}_gt.json``)."""
    data = read_json(path, "COCO ground-truth file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: expected a COCO caption file: an object with an 'annotations' list")
    source = str(path)
    references: dict[int, list[str]] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise _fail(source, where, f"expected an object, got {_describe(ann)}")
        image_id = ann.get("image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise _fail(source, where, f"'image_id' must be an integer (got {_describe(image_id)})")
        caption = ann.get("caption")
        if not isinstance(caption, str):
            raise _fail(source, where, f"'caption' must be a string (got {_describe(caption)})")
        references.setdefault(image_id, []).append(caption)
    return references


def references_from(ground_truth: dict[int, list[str]], annotations: Annotations,
                    gt_path: Path) -> tuple[StringTable, np.ndarray]:
    """Per-image references (grouped like :meth:`Annotations.grouped_captions`) from a gt file."""
    texts: list[str] = []
    offsets = [0]
    for row, eval_id in enumerate(annotations.eval_ids.tolist()):
        refs = ground_truth.get(eval_id)
        if not refs:
            raise DataError(
                f"{gt_path}: no references for image id {eval_id} ({annotations.images[row]}) of "
                f"{annotations.source}; the ground truth must belong to the same Karpathy split"
            )
        texts.extend(refs)
        offsets.append(len(texts))
    return StringTable(texts), np.asarray(offsets, dtype=np.int64)


# --- Visual Genome ----------------------------------------------------------------------------------


def load_vg_captions(annotation: Path, image_root: Path, path_prefix: str | None = None) -> Annotations:
    """LAVIS ``vg_caption.json``: ``{image: "/abs/path/on/another/machine/1.jpg", caption, image_id: "vg_1"}``.

    Image paths are rewritten against ``image_root``: with ``path_prefix`` by replacing that prefix,
    otherwise by file name (Visual Genome names files by their unique image id; when several files
    share a name, the one whose path shares the longest tail with the annotation's wins).
    """
    hint = f"Download {VG_DOWNLOAD} or set 'annotation'"
    data = _expect_list(read_json(annotation, "Visual Genome annotation file", hint), annotation, "entries")
    source = str(annotation)
    entries = []
    for i, raw in enumerate(data):
        image, captions = _entry(source, f"entry {i}", raw)
        eval_id = _int_id(raw.get("image_id"))
        if eval_id is None:
            eval_id = id_from_name(image)
        if eval_id is None:
            raise _fail(source, f"entry {i}",
                        f"no image id: neither 'image_id' nor the file name {image!r} has a number")
        key = raw.get("image_id")
        entries.append((image, captions, str(key) if key is not None else f"vg_{eval_id}", eval_id))
    resolve = _prefix_resolver(source, image_root, path_prefix) if path_prefix else _name_resolver(image_root)
    builder = _Builder(source)
    resolved: dict[str, str] = {}
    for i, (image, captions, key, eval_id) in enumerate(entries):
        path = resolved.get(image)
        if path is None:
            path = resolved[image] = resolve(image, i)
        builder.add(path, captions, key, eval_id)
    return builder.finish()


def _prefix_resolver(source: str, image_root: Path, prefix: str):
    def resolve(image: str, index: int) -> str:
        if image.startswith(prefix):
            return os.path.join(image_root, image[len(prefix):].lstrip("/\\"))
        if not os.path.isabs(image):
            return os.path.join(image_root, image)
        raise _fail(source, f"entry {index}", f"image path {image!r} does not start with path_prefix {prefix!r}")

    return resolve


def _name_resolver(image_root: Path):
    by_name: dict[str, list[str]] = {}
    for folder, _, files in os.walk(image_root):
        for name in files:
            by_name.setdefault(name, []).append(os.path.join(folder, name))

    def resolve(image: str, index: int) -> str:
        if not os.path.isabs(image):
            direct = os.path.join(image_root, image)
            if os.path.exists(direct):
                return direct
        name = PurePosixPath(image.replace("\\", "/")).name
        candidates = by_name.get(name)
        if not candidates:
            return os.path.join(image_root, name)  # reported as missing when loaded
        if len(candidates) == 1:
            return candidates[0]
        return max(candidates, key=lambda c: _common_tail(c, image))

    return resolve


def _common_tail(a: str, b: str) -> int:
    parts_a, parts_b = Path(a).parts[::-1], PurePosixPath(b.replace("\\", "/")).parts[::-1]
    n = 0
    while n < min(len(parts_a), len(parts_b)) and parts_a[n] == parts_b[n]:
        n += 1
    return n


# --- JSONL ------------------------------------------------------------------------------------------


def load_jsonl_captions(path: Path, image_root: Path) -> Annotations:
    """Lines ``{"image": path, "caption": str | [str], "image_id"?: int | str}``; blank lines are skipped.

    The evaluation id is ``image_id`` when it is an integer, else the image's position in the file."""
    source = str(path)
    builder = _Builder(source)
    try:
        handle = path.open("r", encoding="utf-8-sig")  # a BOM (Windows editors, Excel) is not part of line 1
    except FileNotFoundError:
        raise DataError(f"JSONL caption file not found: {path}. Check 'path'") from None
    except OSError as exc:
        raise DataError(f"cannot read JSONL caption file {path}: {exc.strerror}") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"line {lineno}"
                try:
                    raw = json.loads(line.rstrip("\r\n"))  # errors at the line's end stay on this line
                except json.JSONDecodeError as exc:
                    raise _fail(source, where, f"invalid JSON at column {exc.colno}: {exc.msg}") from None
                image, captions = _entry(source, where, raw)
                given = raw.get("image_id")
                full = join_image_path(image_root, image)
                row = builder.row.get(full)
                if row is not None:
                    eval_id = builder.eval_ids[row]
                elif isinstance(given, int) and not isinstance(given, bool):
                    eval_id = given
                else:
                    eval_id = len(builder.images)
                builder.add(full, captions, str(given) if given is not None else image, eval_id)
        except UnicodeDecodeError as exc:
            read_utf8_text(path)  # raises NotUtf8Error: one line with the file's byte offset, exit 2
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start} of a line)") from None
    return builder.finish()


def check_images_exist(annotations: Annotations, fix: str, probes: int = 50) -> None:
    """Fail at start when none of a spread of ``probes`` images exists: the root is wrong, and
    training would only count every image as bad. (Individual missing files are fine: they are
    skipped and counted during training.)"""
    count = len(annotations.images)
    step = max(1, count // probes)
    paths = [annotations.images[i] for i in range(0, count, step)]
    if not any(os.path.exists(p) for p in paths):
        raise DataError(
            f"{annotations.source}: none of {len(paths)} images checked exists (e.g. {paths[0]}); {fix}"
        )
