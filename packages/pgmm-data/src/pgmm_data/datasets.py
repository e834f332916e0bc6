"""The file-backed caption datasets and their factories (``coco_caption``, ``vg_caption``, ``jsonl_captions``).

Whatever the file format, a split is served in one of two shapes (what pgmm's trainer expects):

* ``split="train"``: one sample per caption, ``{"image", "caption", "image_id": str}``, the caption
  through ``blip_caption`` and the image through the configured train processor;
* ``split="val"`` / ``"test"``: one item per image, ``{"image", "image_id": int, "references": [...]}``,
  the image through ``blip_image_eval`` and the references as written (the scorer tokenizes them).

An image that cannot be used comes back as ``{"bad": "path: reason"}``; the loader drops it from the
batch and the trainer counts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pgmm_core.errors import DataError
from pgmm_core.images import BadImage, open_rgb
from pgmm_core.preprocessing import ImageSpec
from pgmm_data.annotations import (
    Annotations,
    StringTable,
    check_images_exist,
    load_coco_ground_truth,
    load_coco_karpathy,
    load_jsonl_captions,
    load_vg_captions,
    references_from,
)
from pgmm_data.configs import under
from pgmm_data.processors import blip_caption, dataset_image_spec, image_processor


class CaptionTrainSet:
    """One sample per caption."""

    def __init__(self, annotations: Annotations, *, name: str, transform: Callable, max_words: int,
                 max_pixels: int, max_samples: int | None = None) -> None:
        self.annotations = annotations
        self.name = name
        self.transform = transform
        self.max_words = max_words
        self.max_pixels = max_pixels
        total = len(annotations.captions)
        self._length = total if max_samples is None else min(total, max_samples)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        ann = self.annotations
        row = int(ann.caption_image[index])
        path = ann.images[row]
        try:
            image = open_rgb(path, self.max_pixels)
        except BadImage as exc:
            return {"bad": f"{path}: {exc}"}
        return {"image": self.transform(image), "caption": blip_caption(ann.captions[index], self.max_words),
                "image_id": ann.keys[row]}


class CaptionEvalSet:
    """One item per image with all its references."""

    def __init__(self, annotations: Annotations, references: tuple[StringTable, np.ndarray], *, name: str,
                 transform: Callable, max_pixels: int, max_samples: int | None = None) -> None:
        self.annotations = annotations
        self.references, self.offsets = references
        self.name = name
        self.transform = transform
        self.max_pixels = max_pixels
        total = len(annotations.images)
        self._length = total if max_samples is None else min(total, max_samples)

    def __len__(self) -> int:
        return self._length

    def references_of(self, index: int) -> list[str]:
        return [self.references[i] for i in range(int(self.offsets[index]), int(self.offsets[index + 1]))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        path = self.annotations.images[index]
        try:
            image = open_rgb(path, self.max_pixels)
        except BadImage as exc:
            return {"bad": f"{path}: {exc}"}
        return {"image": self.transform(image), "image_id": int(self.annotations.eval_ids[index]),
                "references": self.references_of(index)}


def _serve(config: Any, annotations: Annotations, *, kind: str, split: str, image_spec: ImageSpec,
           references: tuple[StringTable, np.ndarray] | None = None) -> CaptionTrainSet | CaptionEvalSet:
    train = split == "train"
    transform = image_processor(config.image_processor, image_spec, train=train,
                                min_scale=config.min_scale, max_scale=config.max_scale)
    name = f"{kind}[{split}]"
    if train:
        return CaptionTrainSet(annotations, name=name, transform=transform, max_words=config.max_words,
                               max_pixels=config.max_image_pixels, max_samples=config.max_samples)
    return CaptionEvalSet(annotations, references or annotations.grouped_captions(), name=name,
                          transform=transform, max_pixels=config.max_image_pixels,
                          max_samples=config.max_samples)


def image_root_of(root: Path, configured: str | None) -> Path:
    """``image_root`` if set, else ``root/images`` (LAVIS' layout) when it exists, else ``root``."""
    if configured is not None:
        return under(root, configured)  # type: ignore[return-value]
    return root / "images" if (root / "images").is_dir() else root


# --- coco_caption ---------------------------------------------------------------------------------------


def coco_ground_truth_path(config: Any, root: Path, split: str) -> Path | None:
    """The COCO-format references to use for ``split``, or None to build them from the Karpathy file."""
    if config.ground_truth is not None:
        path = under(root, config.ground_truth)
        if not path.is_file():
            raise DataError(f"coco_caption ground_truth not found: {path}")
        return path
    name = f"coco_karpathy_{split}_gt.json"
    for candidate in (root / "annotations" / name, root.parent / "coco_gt" / name):
        if candidate.is_file():
            return candidate
    return None


def build_coco_caption(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                       image_size: int | None = None) -> CaptionTrainSet | CaptionEvalSet:
    image_spec = dataset_image_spec(image_spec, image_size)
    root = Path(config.root).expanduser()
    karpathy_split = config.split or split
    annotation = under(root, config.annotation) or root / "annotations" / f"coco_karpathy_{karpathy_split}.json"
    image_root = image_root_of(root, config.image_root)
    annotations = load_coco_karpathy(annotation, image_root)
    check_images_exist(annotations, f"set 'root' (or 'image_root') to the folder holding train2014/ and val2014/")
    references = None
    if split != "train":
        gt_path = coco_ground_truth_path(config, root, karpathy_split)
        if gt_path is not None:
            references = references_from(load_coco_ground_truth(gt_path), annotations, gt_path)
    return _serve(config, annotations, kind="coco_caption", split=split, image_spec=image_spec,
                  references=references)


# --- vg_caption -------------------------------------------------------------------------------------------


def build_vg_caption(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                     image_size: int | None = None) -> CaptionTrainSet | CaptionEvalSet:
    image_spec = dataset_image_spec(image_spec, image_size)
    root = Path(config.root).expanduser()
    annotation = under(root, config.annotation) or root / "annotations" / "vg_caption.json"
    image_root = image_root_of(root, config.image_root)
    annotations = load_vg_captions(annotation, image_root, config.path_prefix)
    check_images_exist(annotations, "set 'root' (or 'image_root') to the folder holding VG_100K/ and VG_100K_2/, "
                       "or 'path_prefix' to the annotation's own prefix")
    return _serve(config, annotations, kind="vg_caption", split=split, image_spec=image_spec)


# --- jsonl_captions ---------------------------------------------------------------------------------------


def build_jsonl_captions(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                         image_size: int | None = None) -> CaptionTrainSet | CaptionEvalSet:
    image_spec = dataset_image_spec(image_spec, image_size)
    path = Path(config.path).expanduser()
    image_root = path.parent if config.image_root is None else path.parent / Path(config.image_root).expanduser()
    annotations = load_jsonl_captions(path, image_root)
    check_images_exist(annotations, "relative image paths are relative to 'image_root' (default: the JSONL file's "
                       "folder)")
    return _serve(config, annotations, kind="jsonl_captions", split=split, image_spec=image_spec)
