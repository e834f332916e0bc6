"""What ``data shard`` writes: the raw samples of a configured dataset, before any transform.

A source lists samples in a fixed order; each sample names the image it needs (``ref``: samples of
the same image share it, so the image is read and verified once), its caption and the metadata that
goes into ``{key}.json``. Images are returned as file bytes plus the extension to store them under:

* JPEG, PNG and WebP files are stored **byte for byte** (``.jpg``, ``.png``, ``.webp``) after a full
  decode has shown they are usable: a shard holds exactly what the loose file held;
* any other format (GIF, BMP, TIFF, …) is decoded as training decodes it
  (:func:`pgmm_core.images.open_rgb`: 8-bit RGB) and stored as a lossless PNG, so readers need only
  the three formats img2dataset writes;
* ``synthetic_shapes`` images are rendered at the model's image size and stored as PNG (lossless:
  the same pixels as the procedural dataset gives).

An image that cannot be used raises :class:`~pgmm_core.images.BadImage`; the writer skips its
samples and counts them in the manifest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pgmm_core.errors import DataError

# PIL format name -> extension of the member (img2dataset's names)
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class StoredImage:
    """The bytes of one image member and what ``{key}.json`` says about it."""

    data: bytes
    extension: str
    width: int
    height: int
    reencoded: bool


@dataclass(frozen=True)
class RawSample:
    """One sample before it gets its key: the image it needs, its caption and its metadata."""

    ref: int
    caption: str
    meta: dict[str, Any]


class ShardSource(Protocol):
    """The samples of one dataset split, in the order they are written."""

    name: str

    def __len__(self) -> int: ...

    def sample(self, index: int) -> RawSample: ...

    def load_image(self, ref: int) -> StoredImage: ...

    def image_label(self, ref: int) -> str: ...


def encode_png(image: Any) -> bytes:
    """A lossless PNG of ``image`` (Pillow writes no timestamp: same pixels, same bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def stored_file(path: str, max_pixels: int, *, verified: bool = False) -> StoredImage:
    """``path`` as a member: original bytes for JPEG/PNG/WebP, else a PNG of its RGB pixels.

    ``verified``: the file already decoded completely for an earlier sample, so only its header is read.
    """
    from pgmm_core.images import open_rgb
    from PIL import Image

    rgb = None if verified else open_rgb(path, max_pixels)  # raises BadImage: the same verdict as training
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as header:
        extension = KEPT_FORMATS.get(header.format or "")
        width, height = header.size
    if extension is not None:
        return StoredImage(data, extension, width, height, reencoded=False)
    return StoredImage(encode_png(rgb if rgb is not None else open_rgb(path, max_pixels)), "png", width, height,
                       reencoded=True)


class AnnotationSource:
    """``coco_caption``, ``vg_caption``, ``jsonl_captions`` and the retrieval sets: their annotation
    tables and image files as pgmm-data resolved them.

    ``train``: one sample per caption (what the map-style train set serves; an image with five
    captions is stored five times, as img2dataset stores one pair per sample). ``val``/``test``: one
    sample per image, ``.txt`` holding its first reference and ``.json`` all of them.
    """

    def __init__(self, dataset: Any, *, train: bool) -> None:
        self.dataset = dataset
        self.annotations = dataset.annotations
        self.name = dataset.name
        self.train = train
        self.max_pixels = int(dataset.max_pixels)
        self._length = len(dataset)
        # images that decoded completely once: captions of one image far apart (or shuffled) cost one
        # full decode, not one per caption
        self._usable: set[int] = set()

    def __len__(self) -> int:
        return self._length

    def sample(self, index: int) -> RawSample:
        ann = self.annotations
        if self.train:
            row = int(ann.caption_image[index])
            meta = {"caption": ann.captions[index], "image_id": ann.keys[row], "eval_id": int(ann.eval_ids[row]),
                    "source_image": ann.images[row], "source": self.name, "source_index": index}
            return RawSample(row, meta["caption"], meta)
        references = self.dataset.references_of(index)
        caption = references[0] if references else ""
        meta = {"caption": caption, "references": references, "image_id": int(ann.eval_ids[index]),
                "source_key": ann.keys[index], "source_image": ann.images[index], "source": self.name,
                "source_index": index}
        return RawSample(index, caption, meta)

    def load_image(self, ref: int) -> StoredImage:
        stored = stored_file(self.annotations.images[ref], self.max_pixels, verified=ref in self._usable)
        self._usable.add(ref)
        return stored

    def image_label(self, ref: int) -> str:
        return self.annotations.images[ref]


class SyntheticSource:
    """``synthetic_shapes``: each index rendered at the dataset's image size, stored as PNG."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.name = dataset.name
        self.seed = int(dataset.config.seed)
        self.split = dataset.split
        self.size = int(dataset.image_size)
        self._length = len(dataset)

    def __len__(self) -> int:
        return self._length

    def sample(self, index: int) -> RawSample:
        from pgmm_data.synthetic import describe, labels

        colour, shape, place = labels(self.seed, self.split, index)
        references = describe(colour, shape, place)
        image_id: Any = f"shapes_{index}" if self.split == "train" else index
        meta = {"caption": references[0], "references": references, "image_id": image_id,
                "labels": {"colour": colour, "shape": shape, "place": place},
                "source": self.name, "source_index": index}
        return RawSample(index, references[0], meta)

    def load_image(self, ref: int) -> StoredImage:
        from pgmm_data.synthetic import render

        image, _ = render(self.seed, self.split, ref, self.size)
        return StoredImage(encode_png(image), "png", self.size, self.size, reencoded=False)

    def image_label(self, ref: int) -> str:
        return f"{self.name} #{ref}"


def source_of(dataset: Any, split: str) -> ShardSource:
    """The raw samples behind a dataset object built by a pgmm-data factory."""
    from pgmm_data.datasets import CaptionEvalSet, CaptionTrainSet
    from pgmm_data.synthetic import SyntheticShapes

    if isinstance(dataset, CaptionTrainSet):
        return AnnotationSource(dataset, train=True)
    if isinstance(dataset, CaptionEvalSet):
        return AnnotationSource(dataset, train=False)
    if isinstance(dataset, SyntheticShapes):
        return SyntheticSource(dataset)
    name = getattr(dataset, "name", type(dataset).__name__)
    raise DataError(
        f"data shard reads the annotation files and images of coco_caption, vg_caption, jsonl_captions, "
        f"coco_retrieval, flickr30k_retrieval and synthetic_shapes; {name} ({split}) is not one of them"
    )
