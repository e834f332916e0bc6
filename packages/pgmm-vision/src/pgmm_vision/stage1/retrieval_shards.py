"""The per-rank pieces of the retrieval evaluation: image batches, text features, ITC candidates.

Every rank encodes its share of the images (``context.shard_loader``: items ``rank, rank + R, ...``)
and keeps their query features; texts are few and small (25,000 x 256 for COCO), so their features
are gathered to every rank. The ITC similarity of every image-text pair is computed in blocks of
images, each block at most ``block_elements`` image x query x text products, and only the
``k_test`` best candidates of each query are kept: no rank ever holds a full image x text x query
tensor, nor even the full image x text matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ImageBatch:
    """Readable images of a retrieval batch with their dataset indices and ids; unreadable ones listed
    with their indices (so the evaluation can leave them and their captions out)."""

    images: torch.Tensor
    indices: list[int]
    image_ids: list[int]
    bad: list[str] = field(default_factory=list)
    bad_indices: list[int] = field(default_factory=list)
    size_before_drop: int = 0

    def __len__(self) -> int:
        return len(self.indices)


def collate_images(items: list[dict[str, Any]]) -> ImageBatch:
    """Stack the readable items of a retrieval test set (``{"image", "index", "image_id"}``)."""
    good = [item for item in items if "bad" not in item]
    images = torch.stack([item["image"] for item in good]) if good else torch.empty(0)
    return ImageBatch(images=images, indices=[int(item["index"]) for item in good],
                      image_ids=[int(item["image_id"]) for item in good],
                      bad=[item["bad"] for item in items if "bad" in item],
                      bad_indices=[int(item["index"]) for item in items if "bad" in item],
                      size_before_drop=len(items))


def vision_embeds(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The tower's output after ``ln_vision`` (what the connector's image side and ITM read), without
    the connector's query path, which the image side runs itself."""
    return model.vision_embeddings(pixels)


@dataclass
class TextTable:
    """Token ids, attention masks (CPU) and features (on the device) of the evaluated texts, in order,
    and how many texts the tokenizer cut to its length limit."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    features: torch.Tensor
    truncated: int = 0


def _pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1])) if tensor.shape[1] < length else tensor


def encode_texts(connector: Any, texts: list[str], context: Any, batch_size: int, autocast: Any) -> TextTable:
    """Features of all ``texts``: each rank encodes texts ``rank, rank + R, ...``; all are gathered."""
    mine = list(range(context.rank, len(texts), context.world_size))
    chunks = []
    for start in range(0, len(mine), batch_size):
        positions = mine[start:start + batch_size]
        tokens = connector.tokenize([texts[p] for p in positions], context.device)
        with autocast():
            features = connector.text_feature(tokens.input_ids, tokens.attention_mask)
        chunks.append((positions, tokens.input_ids.cpu(), tokens.attention_mask.cpu(), features.float().cpu(),
                       int(getattr(tokens, "truncated", 0))))
    parts = [chunk for rank_chunks in context.gather(chunks) for chunk in rank_chunks]
    length = max(chunk[1].shape[1] for chunk in parts)
    order = torch.as_tensor([p for chunk in parts for p in chunk[0]]).argsort()
    ids = torch.cat([_pad(chunk[1], length) for chunk in parts])[order]
    mask = torch.cat([_pad(chunk[2], length) for chunk in parts])[order]
    features = torch.cat([chunk[3] for chunk in parts])[order]
    return TextTable(ids, mask, features.to(context.device), sum(chunk[4] for chunk in parts))


@dataclass
class Candidates:
    """The best ITC candidates of each query: ``ids`` (n x k; texts for image queries, dataset image
    indices for text queries) and their similarities ``sims`` (n x k)."""

    ids: torch.Tensor
    sims: torch.Tensor


def itc_candidates(image_features: torch.Tensor, image_indices: torch.Tensor, text_features: torch.Tensor,
                   k_texts: int, k_images: int, block_elements: int) -> tuple[Candidates, Candidates]:
    """For this rank's images (n x Q x D features): the ``k_texts`` best texts of each image, and for
    every text the ``k_images`` best of this rank's images (merged over ranks later).

    The similarity of an image and a text is the largest of its queries' dot products with the text
    feature (LAVIS' ``sim_i2t``). Images are taken in blocks of ``block_elements // (Q * T)``.
    """
    count, queries, width = image_features.shape
    num_texts = text_features.shape[0]
    device = text_features.device
    text_ids, text_sims = [], []
    best_sims = torch.empty(num_texts, 0, device=device)
    best_images = torch.empty(num_texts, 0, dtype=torch.long, device=device)
    block = max(1, block_elements // max(queries * num_texts, 1))
    for start in range(0, count, block):
        feats = image_features[start:start + block].to(device)
        sims = (feats.reshape(-1, width) @ text_features.T).view(feats.shape[0], queries, num_texts).amax(dim=1)
        top = sims.topk(min(k_texts, num_texts), dim=1)
        text_ids.append(top.indices.cpu())
        text_sims.append(top.values.cpu())
        indices = image_indices[start:start + block].to(device)
        pool_sims = torch.cat([best_sims, sims.T], dim=1)
        pool_images = torch.cat([best_images, indices.expand(num_texts, -1)], dim=1)
        top = pool_sims.topk(min(k_images, pool_sims.shape[1]), dim=1)
        best_sims, best_images = top.values, pool_images.gather(1, top.indices)
        del sims, pool_sims, pool_images
    k = min(k_texts, num_texts)
    for_images = Candidates(torch.cat(text_ids) if text_ids else torch.empty(0, k, dtype=torch.long),
                            torch.cat(text_sims) if text_sims else torch.empty(0, k))
    return for_images, Candidates(best_images.cpu(), best_sims.cpu())


def merge_candidates(parts: list[Candidates], k: int) -> Candidates:
    """Each rank's best images per text -> the ``k`` best over all ranks."""
    sims = torch.cat([part.sims for part in parts], dim=1)
    ids = torch.cat([part.ids for part in parts], dim=1)
    top = sims.topk(min(k, sims.shape[1]), dim=1)
    return Candidates(ids.gather(1, top.indices), top.values)
