"""Conversation datasets (``llava_conversations``, ``jsonl_conversations``): visual instruction data.

Items, in every split: ``{"image", "conversation": [{"role": "user"|"assistant", "content"}, ...],
"id": str}`` — LLaVA's ``from: human/gpt`` become ``user``/``assistant`` and its ``value`` the
content, unchanged: the ``<image>`` marker stays in the user text, where the objective puts the
image's tokens. Datasets do not tokenize; the objective truncates and counts.

Rules, checked once at load time: turns alternate user/assistant from a user turn and end with an
assistant turn, none is empty, and the marker appears exactly once, in a user turn. A conversation
that breaks one is skipped and counted per reason (``dataset.skipped``, logged with the first
positions) or, with ``bad_conversations: refuse``, stops the load naming file, entry / line and
rule. A malformed file (not JSON, a turn that is not ``{"from", "value"}``, an unknown role) is
always refused. Entries without an image (LLaVA's text-only conversations) are skipped and counted.
Storage is flat (:class:`~pgmm_data.annotations.StringTable`), as for captions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pgmm_core.errors import DataError
from pgmm_core.files import read_utf8_text
from pgmm_core.images import BadImage, open_rgb
from pgmm_core.preprocessing import ImageSpec
from pgmm_data.annotations import StringTable, join_image_path, read_json
from pgmm_data.processors import dataset_image_spec, image_processor

logger = logging.getLogger(__name__)

IMAGE_MARKER = "<image>"
ROLES = ("user", "assistant")
LLAVA_ROLES = {"human": "user", "gpt": "assistant"}
LLAVA_DOWNLOAD = "https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K"
SHOWN = 5  # positions named per reason in the skip summary


def conversation_problem(turns: list[tuple[str, str]]) -> str | None:
    """Which rule ``(role, content)`` turns break, or None."""
    if not turns:
        return "no turns"
    for position, (role, content) in enumerate(turns):
        if role != ROLES[position % 2]:
            return "turns do not alternate user/assistant from a user turn"
        if not content.strip():
            return f"empty {role} turn"
    if turns[-1][0] != "assistant":
        return "ends with a user turn"
    markers = [content.count(IMAGE_MARKER) for _, content in turns]
    if sum(markers) == 0:
        return f"no {IMAGE_MARKER} marker"
    if sum(markers) > 1:
        return f"{sum(markers)} {IMAGE_MARKER} markers"
    if turns[markers.index(1)][0] != "user":
        return f"{IMAGE_MARKER} marker in an assistant turn"
    return None


@dataclass
class ConversationTable:
    """Conversation ``c`` shows ``images[c]``, is named ``ids[c]`` and owns turns
    ``[offsets[c], offsets[c + 1])``, which alternate user/assistant (so roles are not stored)."""

    source: str
    images: StringTable
    ids: StringTable
    turns: StringTable
    offsets: np.ndarray
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.images)

    def conversation(self, index: int) -> list[dict[str, str]]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return [{"role": ROLES[k % 2], "content": self.turns[start + k]} for k in range(end - start)]


@dataclass
class _Builder:
    source: str
    refuse: bool
    images: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    turns: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, where: str, reason: str) -> None:
        self.skipped.setdefault(reason, []).append(where)

    def add(self, where: str, image: str, ident: str, turns: list[tuple[str, str]]) -> None:
        problem = conversation_problem(turns)
        if problem is not None:
            if self.refuse:
                raise DataError(f"{self.source}: {where}: {problem} (set bad_conversations: skip to leave such "
                                "conversations out)")
            self.skip(where, problem)
            return
        self.images.append(image)
        self.ids.append(ident)
        self.turns.extend(content for _, content in turns)
        self.counts.append(len(turns))

    def finish(self) -> ConversationTable:
        if self.skipped:
            summary = "; ".join(f"{len(places)} {reason} ({', '.join(places[:SHOWN])}"
                                f"{', ...' if len(places) > SHOWN else ''})" for reason, places in self.skipped.items())
            logger.warning("%s: skipped %d conversation(s): %s", self.source,
                           sum(len(p) for p in self.skipped.values()), summary)
        if not self.images:
            raise DataError(f"{self.source}: no usable conversations"
                            + (f" (all skipped: {', '.join(self.skipped)})" if self.skipped else ""))
        offsets = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        return ConversationTable(source=self.source, images=StringTable(self.images), ids=StringTable(self.ids),
                                 turns=StringTable(self.turns), offsets=offsets,
                                 skipped={reason: len(places) for reason, places in self.skipped.items()})


def _fail(source: str, where: str, problem: str) -> DataError:
    return DataError(f"{source}: {where}: {problem}")


def _image_of(source: str, where: str, entry: dict[str, Any]) -> str | None:
    image = entry.get("image")
    if image is None:
        return None
    if not isinstance(image, str) or not image:
        raise _fail(source, where, f"'image' must be a non-empty string (got {json.dumps(image)[:60]})")
    return image


def load_llava(path: Path, image_root: Path, *, refuse: bool) -> ConversationTable:
    """LLaVA's conversation JSON (a list of ``{"id", "image", "conversations"}``)."""
    data = read_json(path, "LLaVA conversation file", f"Download it from {LLAVA_DOWNLOAD} or set 'path'")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of conversations, got a JSON {type(data).__name__}")
    source = str(path)
    builder = _Builder(source, refuse)
    for i, entry in enumerate(data):
        where = f"entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
            raise _fail(source, where, "expected an object with a 'conversations' list")
        turns = []
        for k, turn in enumerate(entry["conversations"]):
            if not (isinstance(turn, dict) and isinstance(turn.get("value"), str)
                    and turn.get("from") in LLAVA_ROLES):
                raise _fail(source, where, f"conversations[{k}] must be {{\"from\": \"human\"|\"gpt\", \"value\": str}}, "
                            f"got {json.dumps(turn, ensure_ascii=False)[:80]}")
            turns.append((LLAVA_ROLES[turn["from"]], turn["value"]))
        image = _image_of(source, where, entry)
        if image is None:
            builder.skip(where, "without an image")
            continue
        ident = entry.get("id")
        builder.add(where, join_image_path(image_root, image), str(ident) if ident is not None else where, turns)
    return builder.finish()


def load_jsonl_conversations(path: Path, image_root: Path, *, refuse: bool) -> ConversationTable:
    """Lines ``{"image", "conversation": [{"role", "content"}, ...], "id"?}``; blank lines skipped."""
    try:
        text = read_utf8_text(path)  # a file that is not UTF-8 is reported with its byte offset
    except FileNotFoundError:
        raise DataError(f"JSONL conversation file not found: {path}. Check 'path'") from None
    except OSError as exc:
        raise DataError(f"cannot read JSONL conversation file {path}: {exc.strerror}") from None
    source = str(path)
    builder = _Builder(source, refuse)
    # split on "\n" only: JSON strings may hold U+2028 and other characters str.splitlines breaks at
    for lineno, line in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(source, where, f"invalid JSON at column {exc.colno}: {exc.msg}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("conversation"), list):
            raise _fail(source, where, "expected an object with 'image' and a 'conversation' list")
        turns = []
        for k, turn in enumerate(entry["conversation"]):
            if not (isinstance(turn, dict) and turn.get("role") in ROLES and isinstance(turn.get("content"), str)):
                raise _fail(source, where, f"conversation[{k}] must be {{\"role\": \"user\"|\"assistant\", "
                            f"\"content\": str}}, got {json.dumps(turn, ensure_ascii=False)[:80]}")
            turns.append((turn["role"], turn["content"]))
        image = _image_of(source, where, entry)
        if image is None:
            builder.skip(where, "without an image")
            continue
        ident = entry.get("id")
        builder.add(where, join_image_path(image_root, image), str(ident) if ident is not None else where, turns)
    return builder.finish()


class ConversationSet:
    """One item per conversation."""

    def __init__(self, table: ConversationTable, *, name: str, transform: Callable, max_pixels: int,
                 max_samples: int | None = None) -> None:
        self.table = table
        self.name = name
        self.transform = transform
        self.max_pixels = max_pixels
        self.skipped = dict(table.skipped)
        self._length = len(table) if max_samples is None else min(len(table), max_samples)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        path = self.table.images[index]
        try:
            image = open_rgb(path, self.max_pixels)
        except BadImage as exc:
            return {"bad": f"{path}: {exc}"}
        return {"image": self.transform(image), "conversation": self.table.conversation(index),
                "id": self.table.ids[index]}


def _build(config: Any, loader: Callable[..., ConversationTable], split: str, image_spec: ImageSpec | None,
           image_size: int | None) -> ConversationSet:
    spec = dataset_image_spec(image_spec, image_size)
    path = Path(config.path).expanduser()
    image_root = path.parent if config.image_root is None else path.parent / Path(config.image_root).expanduser()
    table = loader(path, image_root, refuse=config.bad_conversations == "refuse")
    _check_images_exist(table, "relative image paths are relative to 'image_root' (default: the file's folder)")
    transform = image_processor(config.image_processor, spec, train=split == "train",
                                min_scale=config.min_scale, max_scale=config.max_scale)
    return ConversationSet(table, name=f"{config.type}[{split}]", transform=transform,
                           max_pixels=config.max_image_pixels, max_samples=config.max_samples)


def _check_images_exist(table: ConversationTable, fix: str, probes: int = 50) -> None:
    import os

    step = max(1, len(table) // probes)
    paths = [table.images[i] for i in range(0, len(table), step)]
    if not any(os.path.exists(p) for p in paths):
        raise DataError(f"{table.source}: none of {len(paths)} images checked exists (e.g. {paths[0]}); {fix}")


def build_llava_conversations(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                              image_size: int | None = None) -> ConversationSet:
    return _build(config, load_llava, split, image_spec, image_size)


def build_jsonl_conversations(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                              image_size: int | None = None) -> ConversationSet:
    return _build(config, load_jsonl_conversations, split, image_spec, image_size)
