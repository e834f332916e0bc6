"""Stand-ins for testing and benchmarking the retrieval evaluation without a Q-Former.

:class:`TableModel` implements the stage-1 connector API the evaluation uses (``tokenize``,
``text_feature``, ``image_side``, ``itm_logits``) by table look-up: image ``i``'s query features,
text ``t``'s feature and the ITM "match" logit of every pair are given, so a test fixes the ITC
similarities and ITM logits and can work out the expected ranks by hand. Images carry their index
in their pixels and texts in their first token, which is how the look-ups find them.
:class:`TableDataset` is a retrieval test set in memory (the interface of
:class:`pgmm_data.retrieval.RetrievalEvalSet`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from pgmm_core.objectives.base import EvalContext


class TableConnector(nn.Module):
    """The connector API backed by tables; records every scored pair in ``itm_pairs`` (unless
    ``record_pairs`` is off: a benchmark's millions of pairs)."""

    def __init__(self, image_features: torch.Tensor, text_features: torch.Tensor, itm: torch.Tensor | None,
                 max_text_len: int = 4, record_pairs: bool = True) -> None:
        super().__init__()
        self.register_buffer("image_features", image_features.float())
        self.register_buffer("text_features", text_features.float())
        self.itm = None if itm is None else itm.float()  # None: a logit made from the pair's indices
        self.max_text_len = max_text_len
        self.record_pairs = record_pairs
        self.itm_pairs: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def tokenize(self, texts: list[str], device: Any) -> SimpleNamespace:
        """Text ``"t<j>"`` -> ids ``[j + 1, 0, ...]`` (padded to ``max_text_len``)."""
        ids = torch.zeros(len(texts), self.max_text_len, dtype=torch.long)
        ids[:, 0] = torch.as_tensor([int(text[1:]) + 1 for text in texts], dtype=torch.long)
        mask = (ids != 0).long()
        return SimpleNamespace(input_ids=ids.to(device), attention_mask=mask.to(device))

    def text_feature(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_features[input_ids[:, 0] - 1]

    def image_side(self, vision_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.image_features[_image_index(vision_embeds)]
        return features, features

    def itm_logits(self, vision_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        images, texts = _image_index(vision_embeds), input_ids[:, 0] - 1
        if self.record_pairs:
            with self.lock:
                self.itm_pairs += list(zip(images.tolist(), texts.tolist()))
        logits = torch.zeros(len(images), 2, device=vision_embeds.device)
        if self.itm is None:
            logits[:, 1] = ((images * 7919 + texts * 104729) % 1009).float() / 1009
        else:
            logits[:, 1] = self.itm.to(logits.device)[images, texts]
        return logits


def _image_index(vision_embeds: torch.Tensor) -> torch.Tensor:
    return vision_embeds[:, 0, 0].round().long()


class TableModel(nn.Module):
    """A model whose tower output is its pixels' first value: the image index."""

    def __init__(self, connector: TableConnector) -> None:
        super().__init__()
        self.connector = connector

    def vision_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.flatten(1)[:, None, :1]


@dataclass
class TableDataset:
    """``images`` test images whose captions are ``texts`` (``"t<j>"``) of image ``txt2img[j]``;
    indices in ``bad`` read as unreadable."""

    txt2img: np.ndarray
    image_ids: list[int]
    bad: frozenset[int] = frozenset()
    name: str = "table[test]"

    @property
    def texts(self) -> list[str]:
        return [f"t{j}" for j in range(len(self.txt2img))]

    @property
    def img2txt(self) -> list[list[int]]:
        return [np.flatnonzero(self.txt2img == i).tolist() for i in range(len(self.image_ids))]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index in self.bad:
            return {"bad": f"image{index}.jpg: cannot identify image file", "index": index}
        return {"image": torch.full((3, 2, 2), float(index)), "index": index, "image_id": self.image_ids[index],
                "references": [f"t{j}" for j in np.flatnonzero(self.txt2img == index)]}


def table_model(similarity: torch.Tensor, itm: torch.Tensor, queries: int = 2) -> TableModel:
    """A model whose ITC similarity (max over ``queries`` queries) is ``similarity`` (images x texts,
    entries in (0, 1]) and whose ITM match logits are ``itm``: text features are one-hot, each image's
    first query holds its similarity row, the others a smaller copy of it."""
    num_texts = similarity.shape[1]
    scale = torch.linspace(1.0, 0.5, queries)
    image_features = similarity[:, None, :] * scale[None, :, None]
    return TableModel(TableConnector(image_features, torch.eye(num_texts), itm))


@dataclass
class ThreadRankContext(EvalContext):
    """An :class:`EvalContext` for rank ``thread_rank`` of a :class:`ThreadGroup`."""

    group: Any = None
    thread_rank: int = 0

    @property
    def rank(self) -> int:
        return self.thread_rank

    @property
    def world_size(self) -> int:
        return 1 if self.group is None else self.group.world_size

    def gather(self, obj: Any) -> list[Any]:
        return [obj] if self.group is None else self.group.all_gather_object(self.thread_rank, obj)


class ThreadGroup:
    """``all_gather_object`` for ranks run as threads of one process (a test's stand-in for a
    process group): every rank's object, in rank order, once all ranks have called it."""

    def __init__(self, world_size: int, timeout: float = 60.0) -> None:
        self.world_size = world_size
        self.slots: list[Any] = [None] * world_size
        self.barrier = threading.Barrier(world_size, timeout=timeout)

    def all_gather_object(self, rank: int, obj: Any) -> list[Any]:
        self.slots[rank] = obj
        self.barrier.wait()
        gathered = list(self.slots)
        self.barrier.wait()
        return gathered
