"""``webdataset_captions``: image–caption pairs from WebDataset tar shards (img2dataset's layout).

The train split is a shard stream (:mod:`pgmm_core.streaming`): the trainer deals its shards to ranks
and workers, shuffles through a buffer and keeps its position in checkpoints; this module only
reads shards (:mod:`pgmm_data.tar_shards`) and turns a sample's members into a train item, through
the same processors as the other caption datasets (the encoder's image spec, LAVIS' train transform,
``blip_caption``). A sample without an image or a caption, or whose image does not decode, comes
back as ``{"bad": "shard:key: reason"}`` and is counted like any unreadable image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pgmm_core.errors import DataError
from pgmm_core.images import BadImage, decode_rgb
from pgmm_core.preprocessing import ImageSpec
from pgmm_core.streaming import Record
from pgmm_data.processors import blip_caption, dataset_image_spec, image_processor
from pgmm_data.tar_shards import check_local_shards, expand_shards, manifest_counts, read_records

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def caption_of(members: dict[str, bytes]) -> str | None:
    """The ``.txt`` member, else the ``caption`` field of the ``.json`` member."""
    if "txt" in members:
        return members["txt"].decode("utf-8", errors="replace")
    if "json" in members:
        try:
            caption = json.loads(members["json"]).get("caption")
        except (ValueError, AttributeError):
            return None
        return caption if isinstance(caption, str) else None
    return None


class SampleDecoder:
    """A sample's members -> ``{"image", "caption", "image_id"}`` (or ``{"bad": ...}``)."""

    def __init__(self, *, transform: Callable, max_words: int, max_pixels: int) -> None:
        self.transform = transform
        self.max_words = max_words
        self.max_pixels = max_pixels

    def __call__(self, shard: str, key: str, members: dict[str, bytes]) -> dict[str, Any]:
        extension = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if extension is None:
            return {"bad": f"{shard}:{key}: no image member (.{', .'.join(IMAGE_EXTENSIONS)})"}
        caption = caption_of(members)
        if caption is None or not caption.strip():
            return {"bad": f"{shard}:{key}: no caption (.txt, or a .json with a caption field)"}
        try:
            image = decode_rgb(members[extension], self.max_pixels)
        except BadImage as exc:
            return {"bad": f"{shard}:{key}.{extension}: {exc}"}
        return {"image": self.transform(image), "caption": blip_caption(caption, self.max_words), "image_id": key}


class WebdatasetCaptions:
    """The train split: a shard stream (no ``len``/indexing; the trainer streams it)."""

    def __init__(self, shards: list[str], *, samples_per_epoch: int, buffer_size: int, decoder: SampleDecoder,
                 name: str = "webdataset_captions") -> None:
        self.name = name
        self.shards = shards
        self.samples_per_epoch = samples_per_epoch
        self.buffer_size = buffer_size
        self.decoder = decoder

    def read_shard(self, shard: int, offset: int) -> Iterator[Record]:
        return read_records(self.shards[shard], shard, offset)

    def decode(self, record: Record) -> dict[str, Any]:
        if record.bad is not None:
            return {"bad": record.bad}
        return self.decoder(self.shards[record.shard], record.key, record.members)


class WebdatasetCaptionsEval:
    """A val/test split: every sample of the shards, read once into memory, its caption the reference."""

    def __init__(self, shards: list[str], *, decoder: SampleDecoder, max_samples: int | None) -> None:
        self.decoder = decoder
        self.records: list[tuple[str, Record]] = []
        for number, name in enumerate(shards):
            for record in read_records(name, number, 0):
                if record.bad is not None and not record.members:
                    raise DataError(f"webdataset_captions: {record.bad}")
                self.records.append((name, record))
                if max_samples is not None and len(self.records) >= max_samples:
                    return

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.records):
            raise IndexError(index)
        shard, record = self.records[index]
        item = self.decoder(shard, record.key, record.members)
        if "bad" in item:
            return item
        return {"image": item["image"], "image_id": index, "references": [caption_of(record.members) or ""]}


def build_webdataset_captions(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                              image_size: int | None = None) -> WebdatasetCaptions | WebdatasetCaptionsEval:
    image_spec = dataset_image_spec(image_spec, image_size)
    shards = expand_shards(config.shards)
    if not shards:
        raise DataError("webdataset_captions: 'shards' names no shard")
    check_local_shards(shards)
    train = split == "train"
    decoder = SampleDecoder(
        transform=image_processor(config.image_processor, image_spec, train=train, min_scale=config.min_scale,
                                  max_scale=config.max_scale),
        max_words=config.max_words, max_pixels=config.max_image_pixels)
    if not train:
        return WebdatasetCaptionsEval(shards, decoder=decoder, max_samples=config.max_samples)
    samples = config.samples_per_epoch or manifest_counts(shards, config.manifest)
    if samples is None:
        raise DataError("webdataset_captions: how many samples make an epoch is unknown: set samples_per_epoch, or "
                        "'manifest' (written by `data shard`), or keep img2dataset's NNNNN_stats.json beside the shards")
    if config.max_samples is not None:
        samples = min(samples, config.max_samples)
    return WebdatasetCaptions(shards, samples_per_epoch=samples, buffer_size=config.buffer_size, decoder=decoder)
