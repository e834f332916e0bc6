"""Token rows with an image slot, turned into the LLM's ``inputs_embeds``.

The ``vqa`` and ``instruct`` objectives and the :class:`~pgmm_core.assistant.Assistant` describe a
sample as one row of token ids in which :data:`IMAGE_SLOT` marks where the projected visual tokens
go (before ``[BOS] Question: ... Short answer:`` for VQA, where ``<image>`` stands in a chat), with
labels aligned to the ids (``-100`` where nothing is supervised). :func:`assemble` embeds the ids,
puts each image's visual tokens in its slot and pads the rows: on the right for training (the Hugging
Face label convention), on the left for generation, so that every row's last position is the one the
next token follows. Padding sits before the visual tokens, so a row's positions (from the attention
mask) are the same whether it was padded or not, in training and in generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

IGNORE_INDEX = -100
IMAGE_SLOT = -1
"""The id that stands for the image's visual tokens in a row (never a real token id)."""


@dataclass
class TokenRow:
    """One sample: ``ids`` with exactly one :data:`IMAGE_SLOT`, ``labels`` of the same length."""

    ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels):
            raise ValueError(f"{len(self.ids)} ids but {len(self.labels)} labels")
        if self.ids.count(IMAGE_SLOT) != 1:
            raise ValueError(f"a row needs exactly one image slot, found {self.ids.count(IMAGE_SLOT)}")

    @property
    def num_targets(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class Assembled:
    """``inputs_embeds`` (B×T×H), ``attention_mask`` (B×T) and ``labels`` (B×T, ``-100`` on the visual
    tokens, the unsupervised text and padding)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def assemble(llm: object, visual: torch.Tensor, rows: list[TokenRow], *,
             padding: Literal["left", "right"] = "right") -> Assembled:
    """The LLM inputs of ``rows``; ``visual[i]`` (Q×H, the projector's output) fills row ``i``'s slot."""
    if visual.shape[0] != len(rows):
        raise ValueError(f"{visual.shape[0]} image(s) for {len(rows)} row(s)")
    device = visual.device
    queries = visual.shape[1]
    flat = torch.tensor([t if t != IMAGE_SLOT else 0 for row in rows for t in row.ids], dtype=torch.long,
                        device=device)
    text_embeds = llm.embed_tokens(flat)  # one lookup for the whole batch
    dtype = text_embeds.dtype
    embeds, labels = [], []
    start = 0
    for i, row in enumerate(rows):
        slot = row.ids.index(IMAGE_SLOT)
        row_embeds = text_embeds[start : start + len(row.ids)]
        start += len(row.ids)
        embeds.append(torch.cat([row_embeds[:slot], visual[i].to(dtype), row_embeds[slot + 1 :]]))
        labels.append(row.labels[:slot] + [IGNORE_INDEX] * queries + row.labels[slot + 1 :])
    width = max(e.shape[0] for e in embeds)
    hidden = text_embeds.shape[-1]
    inputs = text_embeds.new_zeros((len(rows), width, hidden))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    label_tensor = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long, device=device)
    for i, (row_embeds, row_labels) in enumerate(zip(embeds, labels)):
        n = row_embeds.shape[0]
        part = slice(0, n) if padding == "right" else slice(width - n, width)
        inputs[i, part] = row_embeds
        mask[i, part] = 1
        label_tensor[i, part] = torch.tensor(row_labels, dtype=torch.long, device=device)
    return Assembled(inputs, mask, label_tensor)


class TruncationCount:
    """How many texts were cut to a limit; the first cut and every doubling are logged, so a data set
    of long texts is visible without a line per batch."""

    def __init__(self, what: str, logger: object, level: int = 20) -> None:
        self.what = what
        self.logger = logger
        self.level = level  # logging.INFO; DEBUG where the texts are questions put to a trained model
        self.truncated = 0
        self.seen = 0
        self._next_report = 1

    def add(self, truncated: bool, limit: int) -> None:
        self.seen += 1
        self.truncated += int(truncated)
        if self.truncated >= self._next_report:
            self.logger.log(self.level, "%d of %d %s so far were longer than %d tokens and were truncated",
                            self.truncated, self.seen, self.what, limit)
            while self._next_report <= self.truncated:
                self._next_report *= 2


def generate_from_rows(model: object, pixel_values: torch.Tensor, rows: list[TokenRow], settings: object,
                       streamer: object = None) -> list[str]:
    """Generate after each row (left-padded, the image's visual tokens in its slot) with ``settings``
    (a :class:`~pgmm_core.config.sections.GenerationSection`); the decoded new text per row
    (``num_return_sequences`` per row). ``streamer`` goes to the LLM backend's ``generate``."""
    model.require_parts("vision", "connector", "projector", "llm", purpose="answer generation")
    visual = model.encode_image(pixel_values).llm_embeds
    inputs = assemble(model.llm, visual, rows, padding="left")
    extra = {"streamer": streamer} if streamer is not None else {}
    ids = model.llm.generate(inputs.inputs_embeds, inputs.attention_mask, settings, **extra)
    tok = model.llm.tokenizer
    return [tok.decode(row, skip_special_tokens=True).strip() for row in ids]
